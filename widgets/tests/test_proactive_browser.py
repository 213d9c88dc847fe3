"""Proactive rules (issue 15.4) on a customer's page: the real loader and bundle in Chromium, the real ASGI
app, pages at the paths the rules name. Page rules show or hide the launcher; the greeting bubble and its
unread badge; auto-open by timer and on exit intent (never on touch screens), without moving focus; once
per visitor per period across reloads, quiet when storage is blocked; two widgets each with their rules."""

from __future__ import annotations

import pytest

from widgets.loader import API_STUB
from widgets.tests.conftest import n8n_config
from widgets.tests.factories import WidgetFactory, publish

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def rules(**proactive) -> dict:
    return {"behaviour": {"proactive": {"enabled": True, **proactive}}}


@pytest.fixture
def make_widget(owner, license_a, fake_n8n):
    def make(name: str, position: str = "bottom-right", **proactive):
        config = {**n8n_config(fake_n8n.webhook), "embed": {"position": position}}
        config["appearance"] = {"n8n": {"title": name}}
        config["behaviour"] = {**config["behaviour"], **rules(**proactive)["behaviour"]}
        return publish(WidgetFactory(license=license_a, name=name), owner, config=config)

    return make


@pytest.fixture
def site(customer_site, asgi_live_server):
    """site(paths, *widgets) serves the same page, with the widgets' snippets, at each path."""

    def serve(paths: list[str], *widgets) -> None:
        tags = "".join(
            f'<script src="{asgi_live_server}/api/widget/{w.license.key}/chat-widget.js?widget={w.public_id}" '
            f'data-widget="{w.public_id}" async></script>'
            for w in widgets
        )
        html = f"""<!doctype html><html><head><meta charset="utf-8"><title>Shop</title></head><body>
<script>{API_STUB}
window.events = []; window.times = {{}};
["ready", "open", "close"].forEach(function (t) {{
  Switchboard.on(t, function (e) {{ events.push(e); times[t] = times[t] || performance.now(); }});
}});
</script>
<h1>Shop</h1><label>Search <input id="search"></label>{tags}</body></html>"""
        for path in paths:
            customer_site.add(path, html)

    serve.url = customer_site.url  # type: ignore[attr-defined]
    return serve


def visit(page, url: str, count: int = 1) -> None:
    page.goto(url)
    page.wait_for_function(f"() => window.events.filter(e => e.type === 'ready').length === {count}", timeout=15_000)


def part(widget, selector: str) -> str:
    return f"switchboard-widget[data-widget='{widget.public_id}'] >> {selector}"


def state_of(page, widget) -> dict:
    """What the page's widget shows: launcher, bubble, badge, panel (read in one go, no waiting)."""
    return page.evaluate(
        """(id) => {
        const root = document.querySelector(`switchboard-widget[data-widget='${id}']`).shadowRoot;
        const shown = (el) => !!el && !el.closest('[hidden]') && el.getClientRects().length > 0;
        const launcher = root.querySelector('.lau');
        return {launcher: shown(launcher), bubble: shown(root.querySelector('.pb')),
                badge: shown(root.querySelector('.lau .bd')), open: shown(root.querySelector('.pn')),
                label: launcher.getAttribute('aria-label')};
    }""",
        widget.public_id,
    )


def test_page_rules_show_or_hide_the_launcher_and_open_still_works_where_hidden(browser_contexts, site, make_widget):
    widget = make_widget("Sales", show_on=["/pricing", "/blog/*", "/über/*"], hide_on=["/blog/drafts/*"])
    paths = ["/pricing", "/Pricing/", "/blog", "/blog/post-1", "/blog/drafts/new", "/about", "/pricing-old"]
    paths.append("/%C3%BCber/uns")
    site(paths, widget)
    page = browser_contexts().new_page()
    expected = {
        "/pricing": True,
        "/Pricing/": True,  # case and a trailing slash make no difference
        "/blog": True,
        "/blog/post-1": True,
        "/%C3%BCber/uns": True,  # the browser's escaped path matches the pattern as typed
        "/blog/drafts/new": False,  # hide_on wins over show_on
        "/about": False,  # not on the show-only list
        "/pricing-old": False,  # the whole path must match
    }
    for path, shown in expected.items():
        visit(page, site.url(path))
        assert state_of(page, widget)["launcher"] is shown, path

    # Hidden there: no launcher at all, but the site's own button can still open the chat (README).
    page.evaluate("() => Switchboard.open()")
    page.locator(part(widget, ".pn")).wait_for(state="visible")
    assert state_of(page, widget)["launcher"] is False
    page.locator(part(widget, ".pn button[aria-label^='Close chat']")).click()
    page.locator(part(widget, ".pn")).wait_for(state="hidden")


def test_timer_auto_opens_the_chat_without_taking_focus(browser_contexts, site, make_widget):
    widget = make_widget("Sales", open_after_seconds=1, frequency="page_view")
    site(["/"], widget)
    page = browser_contexts().new_page()
    visit(page, site.url("/"))
    page.locator("#search").focus()
    page.locator(part(widget, ".pn")).wait_for(state="visible")
    assert page.evaluate("() => times.open - times.ready") >= 950  # after the 1 s timer, not at load
    assert page.evaluate("() => document.activeElement.id") == "search"  # focus stays where the visitor is
    assert [e for e in page.evaluate("() => events") if e["type"] == "open"] == [
        {"type": "open", "widget": widget.public_id, "proactive": True}
    ]
    # The widget's greeting is there, the chat works as if opened by hand.
    page.locator(part(widget, ".m.a >> text=Hi! How can I help?")).wait_for()


def test_exit_intent_opens_the_chat_on_desktop_only_through_the_top(browser_contexts, site, make_widget):
    widget = make_widget("Sales", open_on_exit_intent=True, frequency="page_view")
    site(["/"], widget)
    page = browser_contexts(viewport={"width": 1200, "height": 800}).new_page()
    visit(page, site.url("/"))
    # Leaving through the side or bottom is not exit intent (the handler runs synchronously: no wait needed).
    page.evaluate("() => document.body.dispatchEvent(new MouseEvent('mouseout', {bubbles: true, clientY: 400}))")
    assert state_of(page, widget)["open"] is False
    page.mouse.move(600, 400)
    page.mouse.move(600, 5)
    assert state_of(page, widget)["open"] is False
    page.mouse.move(600, -20)  # the real mouse leaves the window through the top
    page.locator(part(widget, ".pn")).wait_for(state="visible")
    assert page.evaluate("() => events.filter(e => e.type === 'open')")[0]["proactive"] is True

    # A touch screen has no exit intent: the same leave does nothing.
    touch = browser_contexts(viewport={"width": 400, "height": 800}, has_touch=True, is_mobile=True).new_page()
    visit(touch, site.url("/"))
    touch.mouse.move(200, 400)
    touch.mouse.move(200, -20)
    touch.evaluate("() => document.body.dispatchEvent(new MouseEvent('mouseout', {bubbles: true, clientY: -5}))")
    assert state_of(touch, widget)["open"] is False and state_of(touch, widget)["launcher"] is True


def test_greeting_bubble_and_unread_badge_until_the_chat_is_opened(browser_contexts, site, make_widget):
    widget = make_widget("Sales", message="Questions about our plans?", message_delay_seconds=1)
    site(["/", "/other"], widget)
    page = browser_contexts(reduced_motion="reduce").new_page()
    visit(page, site.url("/"))
    page.locator("#search").focus()
    bubble = page.locator(part(widget, ".pb"))
    bubble.wait_for(state="visible")
    assert bubble.locator(".pbt").inner_text() == "Questions about our plans?"
    shown = state_of(page, widget)
    assert shown["badge"] and shown["label"] == "Open chat: Sales (1 unread message)"
    assert page.locator(part(widget, ".lau .bd")).inner_text() == "1"
    # Announced politely, no focus taken, no animation when the visitor asks for reduced motion.
    assert page.locator(part(widget, ".pl")).get_attribute("aria-live") == "polite"
    assert page.evaluate("() => document.activeElement.id") == "search"
    assert bubble.evaluate("(el) => getComputedStyle(el).animationName") == "none"

    # Escape dismisses the bubble (focus goes to the launcher); the badge stays until the chat is read.
    bubble.locator(".pbt").focus()
    page.keyboard.press("Escape")
    bubble.wait_for(state="detached")
    assert page.evaluate("() => document.querySelector('switchboard-widget').shadowRoot.activeElement.className") == (
        "lau"
    )
    assert state_of(page, widget)["badge"] is True

    # Once per session (the default): the next page keeps the badge, shows no bubble again.
    visit(page, site.url("/other"))
    shown = state_of(page, widget)
    assert shown["badge"] is True and shown["bubble"] is False
    page.locator(part(widget, ".lau")).click()
    page.locator(part(widget, ".pn")).wait_for(state="visible")
    assert state_of(page, widget)["badge"] is False
    visit(page, site.url("/"))
    assert state_of(page, widget) == {
        "launcher": True,
        "bubble": False,
        "badge": False,
        "open": False,
        "label": "Open chat: Sales",
    }


def test_clicking_the_bubble_opens_the_chat_and_the_dismiss_button_keeps_the_badge(browser_contexts, site, make_widget):
    widget = make_widget("Sales", message="Need a hand?", message_delay_seconds=0, frequency="page_view")
    site(["/"], widget)
    page = browser_contexts().new_page()
    visit(page, site.url("/"))
    page.locator(part(widget, ".pb")).wait_for()
    page.get_by_role("button", name="Dismiss message").click()
    page.locator(part(widget, ".pb")).wait_for(state="detached")
    assert state_of(page, widget)["badge"] is True
    visit(page, site.url("/"))  # every page view: the bubble again
    page.locator(part(widget, ".pbt")).click()
    page.locator(part(widget, ".pn")).wait_for(state="visible")
    assert state_of(page, widget)["badge"] is False and state_of(page, widget)["bubble"] is False
    # Opened by the visitor's click: the composer has the focus.
    assert page.evaluate("() => document.querySelector('switchboard-widget').shadowRoot.activeElement.tagName") == (
        "TEXTAREA"
    )


def test_once_every_n_days_is_remembered_across_reloads_and_expires(browser_contexts, site, make_widget):
    widget = make_widget("Sales", message="Welcome back!", message_delay_seconds=0, frequency="days", frequency_days=2)
    site(["/"], widget)
    context = browser_contexts()
    page = context.new_page()
    visit(page, site.url("/"))
    page.locator(part(widget, ".pb")).wait_for()
    page.locator(part(widget, ".pbt")).click()  # read
    key = f"sb:{widget.public_id}:proactive"
    saved = page.evaluate("(key) => JSON.parse(localStorage.getItem(key))", key)
    assert saved["unread"] is False and isinstance(saved["at"], int)

    # Another tab (a new session), still within the 2 days: nothing proactive.
    other = context.new_page()
    visit(other, site.url("/"))
    assert state_of(other, widget)["bubble"] is False and state_of(other, widget)["badge"] is False

    # Three days later the visitor is greeted again.
    other.evaluate("(key) => localStorage.setItem(key, JSON.stringify({at: Date.now() - 3 * 86400000}))", key)
    visit(other, site.url("/"))
    other.locator(part(widget, ".pb")).wait_for()


def test_once_per_session_is_per_tab_and_storage_blocked_means_quiet(browser_contexts, site, make_widget):
    session = make_widget("Session", message="Hello from Session", message_delay_seconds=0, frequency="session")
    every = make_widget(
        "Every", "bottom-left", message="Hello from Every", message_delay_seconds=1, frequency="page_view"
    )
    site(["/"], session, every)
    context = browser_contexts()
    page = context.new_page()
    visit(page, site.url("/"), count=2)
    page.locator(part(session, ".pb")).wait_for()
    page.locator(part(every, ".pb")).wait_for()
    page.reload()
    page.wait_for_function("() => window.events.filter(e => e.type === 'ready').length === 2")
    page.locator(part(every, ".pb")).wait_for()  # every page view
    assert state_of(page, session)["bubble"] is False and state_of(page, session)["badge"] is True  # once per session
    fresh = context.new_page()  # a new tab is a new session
    visit(fresh, site.url("/"), count=2)
    fresh.locator(part(session, ".pb")).wait_for()

    # A browser that blocks storage: the widget cannot remember, so the session widget never greets (its bubble
    # would come at 0 s, before the other widget's at 1 s); nothing breaks on the page.
    blocked = browser_contexts()
    blocked.add_init_script(
        """for (const name of ["localStorage", "sessionStorage"]) {
             Object.defineProperty(window, name, {get() { throw new DOMException("blocked", "SecurityError"); }});
           }"""
    )
    quiet = blocked.new_page()
    errors: list[str] = []
    quiet.on("pageerror", lambda e: errors.append(str(e)))
    visit(quiet, site.url("/"), count=2)
    quiet.locator(part(every, ".pb")).wait_for()
    assert state_of(quiet, session) == {
        "launcher": True,
        "bubble": False,
        "badge": False,
        "open": False,
        "label": "Open chat: Session",
    }
    assert not errors


def test_two_widgets_on_one_page_each_follow_their_own_rules(browser_contexts, site, make_widget):
    sales = make_widget("Sales", show_on=["/pricing"], message="Talk to sales?", message_delay_seconds=0)
    support = make_widget("Support", "bottom-left", hide_on=["/pricing"], open_after_seconds=1, frequency="page_view")
    site(["/pricing", "/help"], sales, support)
    page = browser_contexts(viewport={"width": 1280, "height": 900}).new_page()

    visit(page, site.url("/pricing"), count=2)
    page.locator(part(sales, ".pb")).wait_for()
    assert state_of(page, sales)["launcher"] is True
    assert state_of(page, support)["launcher"] is False
    # Hidden widgets arm nothing: no timer for Support on this page.
    assert page.evaluate(
        "(id) => SwitchboardWidgets.find(w => w.options.widget === id).proactive === undefined", support.public_id
    )

    visit(page, site.url("/help"), count=2)
    page.locator(part(support, ".pn")).wait_for(state="visible")  # its own timer
    assert state_of(page, sales)["launcher"] is False and state_of(page, sales)["bubble"] is False
    assert state_of(page, support)["launcher"] is True
