"""The configurator's Proactive section (issue 15.4): rules edited and validated as you type, a test URL the
preview's real bundle decides, and "Replay" running the greeting bubble, badge and timer in the preview."""

from __future__ import annotations

import pytest

from widgets.services.widgets import widget_update
from widgets.tests.factories import WidgetFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def open_proactive(page, live_server, widget) -> list[str]:
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{live_server.url}/app/widgets/{widget.public_id}/")
    page.wait_for_function("window.switchboardConfigurator !== undefined")
    page.get_by_role("tab", name="Proactive").click()
    return errors


def test_rules_are_validated_tested_on_a_url_and_replayed_in_the_preview(signed_in, live_server, owner, widget_a):
    page = signed_in(owner)
    errors = open_proactive(page, live_server, widget_a)
    frame = page.frame_locator("#preview-frame")
    frame.locator("switchboard-widget").wait_for(state="attached")
    verdict = page.locator("#proactive-verdict")
    verdict.filter(has_text="Proactive rules are off").wait_for()

    page.get_by_label("Use proactive rules").check()
    page.get_by_label("Show only on pages").fill("/pricing\n/blog/*")
    # A full URL is not a path pattern: the field says which line and how to write one.
    hide = page.get_by_label("Never show on pages")
    hide.fill("/blog/drafts/*\nhttps://shop.example.com/cart")
    error = page.locator("[data-error-for='behaviour.proactive.hide_on']")
    assert error.inner_text() == (
        "“https://shop.example.com/cart”: A page path such as /pricing or /blog/*: it starts with /, "
        "* matches anything; no host, ?, # or spaces."
    )
    assert hide.get_attribute("aria-invalid") == "true"
    hide.fill("/blog/drafts/*\n/cart")
    assert error.inner_text() == ""
    page.get_by_label("Greeting bubble").fill("Questions about plans? Ask me!")
    page.get_by_label("Show the bubble after (seconds)").fill("1")
    page.get_by_label("Open the chat after (seconds)").fill("2")

    # The test URL: the bundle in the frame decides, and the preview shows what a visitor there would see.
    test_url = page.get_by_label("Page URL or path to test")
    test_url.fill("https://shop.example.com/blog/drafts/new")
    verdict.filter(has_text="Hidden on /blog/drafts/new: it matches “/blog/drafts/*” (Never show on pages).").wait_for()
    frame.locator("#sb-preview-root[data-proactive=hidden]").wait_for(state="attached")
    frame.locator("#sb-preview-note").filter(has_text="Not shown on /blog/drafts/new").wait_for()
    assert frame.locator("switchboard-widget .lau").is_hidden()
    test_url.fill("/about")
    verdict.filter(has_text="Hidden on /about: it matches none of the “Show only on pages” patterns.").wait_for()
    test_url.fill("pricing")
    verdict.filter(has_text="Shown on /pricing: it matches “/pricing” (Show only on pages).").wait_for()
    frame.locator("#sb-preview-root[data-proactive=shown]").wait_for(state="attached")
    frame.locator("switchboard-widget .lau").wait_for(state="visible")
    assert frame.locator("#sb-preview-note").count() == 0

    # Replay: the popup closes, the bubble and badge come after 1 s, the chat opens itself after 2 s.
    page.get_by_role("button", name="Replay in the preview").click()
    bubble = frame.locator("switchboard-widget .pb")
    bubble.wait_for(state="visible")
    assert bubble.locator(".pbt").inner_text() == "Questions about plans? Ask me!"
    assert frame.locator("switchboard-widget .lau .bd").inner_text() == "1"
    frame.get_by_role("dialog").wait_for(state="visible")
    assert bubble.count() == 0 and frame.locator("switchboard-widget .lau .bd").count() == 0
    # Focus stays in the configurator while the preview's chat opens itself.
    assert page.evaluate("() => document.activeElement.id") == "proactive-replay"

    # The preview keeps the popup as the rules left it (open) when the next edit re-mounts the widget.
    page.get_by_label("Greeting bubble").fill("Questions about plans? Ask us!")
    page.wait_for_function("""() => (document.getElementById('preview-frame').contentWindow.SwitchboardWidgets || [])
        .some(w => w.config && w.config.behaviour.proactive.message.endsWith('us!') && w.ready && !w.panel.hidden)""")
    frame.get_by_role("dialog").wait_for(state="visible")

    # None of it was saved, and the test URL is not part of the draft; saving keeps the rules.
    widget_a.refresh_from_db()
    assert widget_a.config["behaviour"]["proactive"]["enabled"] is False
    assert page.locator("#save-state").inner_text() == "Unsaved changes"
    page.get_by_role("button", name="Save draft").click()
    page.locator("#save-state").filter(has_text="All changes saved").wait_for()
    widget_a.refresh_from_db()
    saved = widget_a.config["behaviour"]["proactive"]
    assert saved["show_on"] == ["/pricing", "/blog/*"] and saved["hide_on"] == ["/blog/drafts/*", "/cart"]
    assert (saved["message_delay_seconds"], saved["open_after_seconds"]) == (1, 2)
    assert not errors


def test_a_saved_chatkit_widget_replays_its_greeting_in_the_preview(signed_in, live_server, owner, license_a):
    """A ChatKit widget's frame is kept while the draft is equal by value (PostgreSQL's jsonb reorders the
    saved keys); a replay re-mounts it and the bundle shows the greeting bubble around the ChatKit frame."""
    widget = WidgetFactory(license=license_a, provider="chatkit", name="Kit")
    widget_update(
        widget=widget,
        membership=owner.memberships.get(),
        config={"behaviour": {"proactive": {"enabled": True, "message": "Hi from Kit", "message_delay_seconds": 0}}},
        secrets={"openai_api_key": "sk-test-abcd1234"},
    )
    page = signed_in(owner)
    errors = open_proactive(page, live_server, widget)
    frame = page.frame_locator("#preview-frame")
    frame.locator("#sb-preview-root[data-provider=chatkit]").wait_for(state="attached")
    frame.get_by_role("dialog").wait_for(state="visible")  # the preview opens the popup: the greeting is read
    page.get_by_role("button", name="Replay in the preview").click()
    frame.locator("switchboard-widget .pb").filter(has_text="Hi from Kit").wait_for()
    frame.locator("switchboard-widget .lau .bd").wait_for()
    frame.get_by_role("button", name="Hi from Kit").click()
    frame.get_by_role("dialog").wait_for(state="visible")
    assert frame.locator("switchboard-widget .pb").count() == 0
    assert not errors
