"""The agency pages on a phone (390×844) and a tablet (768×1024) in Chromium: no page-level horizontal
scrolling, the main nav behind a menu button (touch and keyboard), the inbox's list → transcript → back,
main actions at least 40 px tall — and at 1280 px the desktop bar as before. Every page is screenshotted
into ARTIFACTS_DIR (mobile-<page>-<width>.png)."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from django.utils import timezone

from licenses.models import InstallOrigin, Membership
from licenses.tests.factories import MembershipFactory
from widgets.analytics import rollup_day
from widgets.models import Channel, Conversation, Incident, Lead, Message
from widgets.tests.conftest import product_cards_payload
from widgets.tests.factories import KnowledgeEntryFactory, ProductFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PHONE, TABLET, DESKTOP = 390, 768, 1280
HEIGHTS = {PHONE: 844, TABLET: 1024, DESKTOP: 800}

CARD = product_cards_payload("Pixel 7 Pro 256 GB, unlocked, obsidian black")


@pytest.fixture
def agency_data(owner, agency_b, license_a, widget_a):
    """Agency A's day: two conversations (one voice with a product card and a lead), a failed lead delivery,
    an open incident, the sites that used the license, the day rolled up for analytics. The owner is also a
    viewer of agency B, so the agency switcher shows."""
    MembershipFactory(user=owner, agency=agency_b, role=Membership.Role.VIEWER)
    now = timezone.now()
    voice = Conversation.objects.create(
        widget=widget_a,
        channel=Channel.VOICE,
        session_id="call-1",
        visitor_id="v_" + "8f3a" * 12,
        page_url="https://shop.example.com/collections/phones/pixel-7-pro-256gb-unlocked?utm_source=newsletter",
        audio_in_seconds=95,
        cost_usd="0.0750",
    )
    Message.objects.create(conversation=voice, role="user", text="Which phones are under 500 dollars?")
    Message.objects.create(
        conversation=voice, role="assistant", text="The Pixel 7 Pro fits, and it ships tomorrow.", payload=CARD
    )
    Lead.objects.create(
        widget=widget_a,
        conversation=voice,
        name="Ada Lovelace",
        email="ada.lovelace@analytical-engines.example.com",
        phone="+44 20 7946 0958",
        interest="Trade in an old phone for the Pixel 7 Pro",
        source="voice",
        delivery_status=Lead.Delivery.FAILED,
        delivery_attempts=3,
        last_error="HTTP 502 from https://crm.example.com/hooks/switchboard-leads",
    )
    chat = Conversation.objects.create(widget=widget_a, channel=Channel.CHAT, session_id="chat-1", visitor_id="v_chat")
    Message.objects.create(conversation=chat, role="user", text="What are your opening hours on Sundays?")
    Message.objects.create(conversation=chat, role="assistant", text="We open 10:00–16:00 on Sundays.")
    Incident.objects.create(
        widget=widget_a, opened_at=now - timedelta(minutes=30), attempts=12, failures=9, failure_kind="upstream_5xx"
    )
    for origin, outcome in (
        ("https://shop.example.com", "ok"),
        ("https://staging.unknown-shop.example", "domain_not_allowed"),
    ):
        InstallOrigin.objects.create(
            license=license_a, origin=origin, outcome=outcome, count=42, first_seen=now, last_seen=now
        )
    KnowledgeEntryFactory(widget=widget_a)
    ProductFactory(widget=widget_a, sku="P-7", title="Pixel 7 Pro 256 GB")
    rollup_day(now.date())
    return {"voice": voice, "chat": chat}


def pages(data, widget) -> list[tuple[str, str, str]]:
    """(name, path, what must be visible there) for every page an agency uses on the go."""
    key = widget.license.key
    return [
        ("home", "/app/", f"tr[data-widget='{widget.public_id}'] a.widget-name"),
        ("inbox", "/app/conversations/", "#conversation-table tbody tr >> nth=0"),
        ("conversation", f"/app/conversations/{data['voice'].pk}/", "#transcript .turn >> nth=0"),
        ("leads", "/app/leads/", "#lead-table tr[data-lead] >> nth=0"),
        ("analytics", "/app/analytics/", ".chart svg >> nth=0"),
        ("alerts", "/app/alerts/", "#incident-table tr[data-incident] >> nth=0"),
        ("licenses", "/app/licenses/", ".license-grid .card >> nth=0"),
        ("license-domains", f"/app/licenses/{key}/domains/", "#domain-table tr[data-domain] >> nth=0"),
        ("license-identity", f"/app/licenses/{key}/identity/", "#secret-state"),
        ("embed", f"/app/widgets/{widget.public_id}/embed/", "#snippet-script"),
        ("versions", f"/app/widgets/{widget.public_id}/versions/", ".version-row"),
        ("knowledge", f"/app/widgets/{widget.public_id}/knowledge/", "#main h2 >> nth=0"),
        ("products", f"/app/widgets/{widget.public_id}/products/", "#main h2 >> nth=0"),
        ("share", f"/app/widgets/{widget.public_id}/share/", "#main h2 >> nth=0"),
        ("configurator", f"/app/widgets/{widget.public_id}/", "#editor"),
        # The rest of the nav's places, so a link followed from the phone menu lands on a page that fits too.
        ("members", "/app/members/", "#main table"),
        ("privacy", "/app/privacy/", "#main h1"),
        ("brand", "/app/brand/", "#main h1"),
    ]


# The main actions of each page, each at least 40 px tall and wide below 1024 px.
ACTIONS = {
    "home": ["a:has-text('New widget')", "td.actions .btn"],
    "inbox": ["#export-csv", "form[role=search] button[type=submit]", "td.actions .btn"],
    "conversation": ["#main .crumb a"],
    "leads": ["#export-leads", "form[role=search] button[type=submit]", "td.actions .btn"],
    "analytics": ["#export-usage", "form.filters button[type=submit]"],
    "alerts": ["#main form button[type=submit]"],
    "license-domains": ["#domain-table .btn", "form[aria-labelledby=add-h] button[type=submit]"],
    "license-identity": ["button[value=rotate]"],
}

# A form field of each page that fills its card's width on a phone (forms are one column there).
FIELDS = {
    "inbox": "#f-q",
    "leads": "#l-q",
    "alerts": "#id_alert_webhook_url",
    "license-domains": "#id_domains",
    "members": "#id_email",
    "privacy": "#id_visitor_id",
    "share": "#sh-label",
}

PAGE_PROBE = """() => {
  const doc = document.documentElement;
  const main = document.querySelector('#main');
  // The smallest font of any visible text in the page body (SVG drawings aside).
  let smallest = Infinity;
  for (const el of main.querySelectorAll('*')) {
    if (el.closest('svg') || !el.childNodes.length) continue;
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    const box = el.getBoundingClientRect();
    if (own && box.width && box.height) smallest = Math.min(smallest, parseFloat(getComputedStyle(el).fontSize));
  }
  return {
    scrollWidth: doc.scrollWidth, innerWidth: window.innerWidth, smallestFont: smallest,
    overflowX: [getComputedStyle(doc).overflowX, getComputedStyle(document.body).overflowX],
  };
}"""


def sign_in(browser_contexts, live_server, user, width: int, artifacts_dir: str | None = None):
    """A page at that viewport, signed in through the real login form (screenshotted into artifacts_dir)."""
    context = browser_contexts(viewport={"width": width, "height": HEIGHTS[width]}, has_touch=width < 1024)
    page = context.new_page()
    page.set_default_timeout(10_000)
    page.goto(f"{live_server.url}/app/login/")
    if artifacts_dir:
        page.screenshot(path=os.path.join(artifacts_dir, f"mobile-login-{width}.png"))
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.get_by_label("Username").fill(user.username)
    page.get_by_label("Password").fill("pass-word-123")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Widgets").wait_for()
    # app.js (a module script: it runs before DOMContentLoaded) shows the phone menu's toggle and folds the menu;
    # the heading can be there before it has run.
    page.wait_for_load_state("domcontentloaded")
    return page


def small_targets(page, selectors: list[str]) -> list[tuple[str, float, float]]:
    found = []
    for selector in selectors:
        matches = page.locator(selector)
        if not matches.count():
            found.append((selector, "missing"))
        for index in range(matches.count()):
            box = matches.nth(index).bounding_box()
            if box and (box["height"] < 40 or box["width"] < 40):
                found.append((selector, box["width"], box["height"]))
    return found


@pytest.mark.parametrize("width", [PHONE, TABLET, DESKTOP])
def test_every_agency_page_fits_the_screen_without_sideways_scrolling(
    browser_contexts, live_server, owner, widget_a, agency_data, artifacts_dir, width
):
    page = sign_in(browser_contexts, live_server, owner, width, artifacts_dir)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    problems = []
    for name, path, content in pages(agency_data, widget_a):
        page.goto(live_server.url + path)
        page.locator(content).wait_for(state="visible")
        page.screenshot(path=os.path.join(artifacts_dir, f"mobile-{name}-{width}.png"), full_page=True)
        probe = page.evaluate(PAGE_PROBE)
        if probe["scrollWidth"] > probe["innerWidth"]:
            problems.append((name, "page scrolls sideways", probe["scrollWidth"], probe["innerWidth"]))
        if probe["overflowX"] != ["visible", "visible"]:  # clipping the page would only hide the overflow
            problems.append((name, "page clips its overflow", probe["overflowX"]))
        if probe["smallestFont"] < 12 and name != "configurator":  # desktop-first: 11.5 px section tabs
            problems.append((name, "text under 12 px", probe["smallestFont"]))
        if width < 1024:
            targets = small_targets(page, ["#menu-toggle", *ACTIONS.get(name, [])])
            if targets:
                problems.append((name, "touch targets under 40 px", targets))
        if width == PHONE and name in FIELDS:
            widths = page.eval_on_selector(
                FIELDS[name], "el => [el.getBoundingClientRect().width, el.closest('.card').clientWidth]"
            )
            if widths[0] < widths[1] - 40:  # the card's padding aside
                problems.append((name, "form field narrower than its card", widths))
        if name == "analytics":  # the charts scale to the page's width
            boxes = page.eval_on_selector_all(
                ".chart svg", "els => els.map((e) => [e.getBoundingClientRect().width, e.parentElement.clientWidth])"
            )
            assert len(boxes) == 4
            problems += [(name, "chart not at its figure's width", box) for box in boxes if box[0] != box[1]]
    assert problems == []
    assert errors == []


def test_the_phone_menu_opens_by_touch_and_keyboard_and_reaches_every_place(
    browser_contexts, live_server, owner, agency_b, agency_data, artifacts_dir
):
    page = sign_in(browser_contexts, live_server, owner, PHONE)
    toggle = page.locator("#menu-toggle")
    nav = page.locator("nav.mainnav")
    assert toggle.is_visible() and toggle.get_attribute("aria-expanded") == "false"
    assert not nav.is_visible() and not page.locator("#agency-select").is_visible()

    toggle.tap()
    assert toggle.get_attribute("aria-expanded") == "true" and nav.is_visible()
    page.screenshot(path=os.path.join(artifacts_dir, f"mobile-menu-open-{PHONE}.png"))
    links = nav.get_by_role("link")
    assert links.count() == 9
    for index in range(links.count()):
        box = links.nth(index).bounding_box()
        assert box["height"] >= 40 and box["x"] >= 0 and box["x"] + box["width"] <= PHONE, box
    # The agency switcher and the user menu are in the open menu too.
    assert page.locator("#agency-select").is_visible()
    assert page.get_by_role("button", name="Sign out").is_visible()
    nav.get_by_role("link", name="Leads").tap()
    page.wait_for_url("**/app/leads/")
    assert page.locator("#lead-table tr[data-lead]").first.is_visible()
    assert not nav.is_visible() and toggle.get_attribute("aria-expanded") == "false"

    # Keyboard: Enter opens the menu, Tab reaches its first link, Escape closes it and returns focus.
    toggle.focus()
    page.keyboard.press("Enter")
    assert toggle.get_attribute("aria-expanded") == "true"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Widgets"
    page.keyboard.press("Escape")
    assert toggle.get_attribute("aria-expanded") == "false" and not nav.is_visible()
    assert page.evaluate("document.activeElement.id") == "menu-toggle"

    # A tap outside the open menu closes it.
    toggle.tap()
    page.touchscreen.tap(PHONE // 2, HEIGHTS[PHONE] - 20)  # below the open menu
    assert toggle.get_attribute("aria-expanded") == "false"

    # Switching agency from the menu works on the phone.
    toggle.tap()
    page.locator("#agency-select").select_option(str(agency_b.pk))
    page.wait_for_function("() => document.querySelector('#agency-select option:checked').textContent === 'Agency B'")
    assert "Agency B" in page.locator("#main").inner_text()


def test_the_inbox_on_a_phone_list_then_transcript_then_back(
    browser_contexts, live_server, owner, agency_data, artifacts_dir
):
    page = sign_in(browser_contexts, live_server, owner, PHONE)
    page.goto(f"{live_server.url}/app/conversations/")
    first = page.locator("#conversation-table tbody tr").first
    assert first.get_attribute("data-conversation") == str(agency_data["chat"].pk)  # newest first
    assert first.is_visible() and "Client A" in first.inner_text()
    first.get_by_role("link", name="Open").tap()
    page.wait_for_url(f"**/app/conversations/{agency_data['chat'].pk}/")
    turn = page.locator("#transcript .turn").first
    assert turn.is_visible() and "opening hours" in turn.inner_text()
    box = turn.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE
    page.screenshot(path=os.path.join(artifacts_dir, f"mobile-transcript-{PHONE}.png"), full_page=True)
    page.locator("#main .crumb a").tap()
    page.wait_for_url("**/app/conversations/")
    assert page.locator("#conversation-table tbody tr").first.is_visible()


def test_the_desktop_bar_shows_the_nav_as_before(browser_contexts, live_server, owner, agency_data):
    page = sign_in(browser_contexts, live_server, owner, DESKTOP)
    page.goto(f"{live_server.url}/app/conversations/")
    assert not page.locator("#menu-toggle").is_visible()
    bar = page.locator("header.topbar").bounding_box()
    assert bar["height"] == 56
    links = page.locator("nav.mainnav a")
    assert links.count() == 9
    for index in range(9):  # every link shown in the one-row bar, none clipped
        box = links.nth(index).bounding_box()
        assert links.nth(index).is_visible() and box["y"] >= 0 and box["y"] + box["height"] <= 56, box
        assert box["x"] + box["width"] <= DESKTOP
    assert page.locator("nav.mainnav a[aria-current=page]").inner_text() == "Conversations"
    assert page.locator("#agency-select").is_visible()
    assert page.get_by_role("button", name="Sign out").is_visible()
    page.locator("nav.mainnav a", has_text="Alerts").click()
    page.wait_for_url("**/app/alerts/")
