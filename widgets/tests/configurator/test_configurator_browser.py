"""Browser tests of the configurator: Playwright driving Debian's Chromium against the live server."""

from __future__ import annotations

import json
import os
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from playwright.sync_api import expect

from licenses.tests.factories import UserFactory
from widgets.loader import API_STUB
from widgets.models import PreviewLink, Widget
from widgets.services.preview_links import preview_link_token
from widgets.services.widgets import widget_publish, widget_update
from widgets.tests.factories import KnowledgeEntryFactory, ProductFactory, WidgetFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def frame_of(page):
    page.wait_for_selector("#preview-frame")
    return page.frame_locator("#preview-frame")


def open_editor(page, live_server, widget):
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{live_server.url}/app/widgets/{widget.public_id}/")
    page.wait_for_function("window.switchboardConfigurator !== undefined")
    return errors


def test_create_chatkit_widget_through_the_form(signed_in, live_server, owner, license_a):
    page = signed_in(owner)
    page.goto(live_server.url + "/app/")
    page.get_by_role("link", name="+ New widget").click()
    page.get_by_label("Name").fill("Support Kit")
    page.get_by_text("OpenAI ChatKit").click()
    page.get_by_role("button", name="Create widget").click()
    page.wait_for_url("**/app/widgets/wgt_*/")
    widget = Widget.objects.get(name="Support Kit")
    assert widget.widget_type == "chatkit"
    assert page.locator("#type-badge").inner_text() == "OpenAI ChatKit"


def chatkit_accent(page, expected: str, timeout_s: float = 45.0) -> None:
    """Wait until the ChatKit page framed in the preview has mounted ChatKit with the `expected` accent
    (the frame is looked up again on each try: the preview may re-mount it while the draft settles)."""
    script = f"() => !!(window.__chatkit && window.__chatkit.options.theme.color.accent.primary === {expected!r})"
    for _ in range(int(timeout_s * 10)):
        for frame in page.frames:
            if "/widget/chatkit/" in frame.url:
                try:
                    if frame.evaluate(script):
                        return
                except Exception:  # detached or still loading: look again
                    pass
        page.wait_for_timeout(100)
    raise AssertionError(f"ChatKit never showed accent {expected} in {[f.url for f in page.frames]}")


def chatkit_page(page):
    """The ChatKit page the bundle frames inside the preview frame."""
    for _ in range(600):  # up to 60 s on a loaded machine
        for frame in page.frames:
            if "/widget/chatkit/" in frame.url:
                return frame
        page.wait_for_timeout(100)
    raise AssertionError(f"no ChatKit frame in {[f.url for f in page.frames]}")


def test_accent_colour_updates_preview_without_saving(signed_in, live_server, owner, license_a, chatkit_stand_in):
    """The preview is the real bundle framing the real ChatKit page; a theme edit reaches ChatKit's
    options (mapped by the server) without saving; an invalid value never leaves the configurator."""
    widget = WidgetFactory(license=license_a, provider="chatkit", name="Kit")
    widget_update(widget=widget, membership=owner.memberships.get(), secrets={"openai_api_key": "sk-test-abcd1234"})
    page = signed_in(owner)
    chatkit_stand_in(page.context)
    drafts: list[str] = []  # every draft the ChatKit page asked the server to map
    page.on("request", lambda r: drafts.append(r.post_data or "") if r.url.endswith("/preview-options") else None)
    errors = open_editor(page, live_server, widget)
    page.get_by_role("tab", name="Appearance").click()
    chatkit_accent(page, "#4f46e5")
    field = page.get_by_label("Accent colour", exact=True)
    field.fill("#0f766e")
    chatkit_accent(page, "#0f766e")
    widget.refresh_from_db()
    assert widget.config["appearance"]["chatkit"]["accent_color"] == "#4f46e5"  # not saved
    assert page.locator("#save-state").inner_text() == "Unsaved changes"
    # An invalid value shows the schema's message next to the field and never reaches the preview.
    field.fill("teal")
    assert "hex colour" in page.locator("[data-error-for='appearance.chatkit.accent_color']").inner_text()
    field.fill("#0f766f")
    chatkit_accent(page, "#0f766f")
    assert any("#0f766f" in d for d in drafts) and not any('"teal"' in d for d in drafts)
    assert not errors


def test_chatkit_preview_is_the_bundle_framing_the_preview_page(signed_in, live_server, owner, license_a):
    widget = WidgetFactory(license=license_a, provider="chatkit", name="Kit")
    widget_update(widget=widget, membership=owner.memberships.get(), secrets={"openai_api_key": "sk-test-abcd1234"})
    page = signed_in(owner)
    open_editor(page, live_server, widget)
    root = frame_of(page).locator("#sb-preview-root[data-renderer=bundle][data-provider=chatkit]")
    root.wait_for(state="attached")
    inner = frame_of(page).locator("iframe")
    inner.wait_for(state="attached")
    assert (
        inner.get_attribute("src")
        == f"{live_server.url}/widget/chatkit/preview/{widget.public_id}?widget={widget.public_id}"
    )
    assert "sk-test" not in page.content()


def test_chatkit_preview_without_a_key_says_what_is_missing(signed_in, live_server, owner, license_a, settings):
    settings.OPENAI_API_KEY = ""
    widget = WidgetFactory(license=license_a, provider="chatkit", name="Kit")
    page = signed_in(owner)
    open_editor(page, live_server, widget)
    problem = chatkit_page(page).locator("[data-testid=problem]")
    problem.wait_for()
    assert "API key" in problem.inner_text()


def test_switching_provider_keeps_settings_and_changes_type_on_save(signed_in, live_server, owner, widget_a):
    widget_update(
        widget=widget_a, membership=owner.memberships.get(), config={"appearance": {"n8n": {"title": "Keep me"}}}
    )
    page = signed_in(owner)
    open_editor(page, live_server, widget_a)
    assert page.get_by_label("Webhook URL").is_visible()
    page.get_by_text("OpenAI ChatKit", exact=True).click()
    page.get_by_label("Mode", exact=True).wait_for()
    assert not page.get_by_label("Webhook URL").is_visible()
    frame_of(page).locator("#sb-preview-root[data-provider=chatkit]").wait_for(state="attached")
    widget_a.refresh_from_db()
    assert widget_a.widget_type == "n8n"  # nothing saved yet
    page.get_by_role("button", name="Save draft").click()
    page.locator("#type-badge", has_text="OpenAI ChatKit").wait_for()
    widget_a.refresh_from_db()
    assert widget_a.widget_type == "chatkit" and widget_a.config["appearance"]["n8n"]["title"] == "Keep me"


def test_sections_work_from_the_keyboard(signed_in, live_server, member, widget_a):
    page = signed_in(member)
    open_editor(page, live_server, widget_a)
    page.get_by_role("tab", name="Connection").focus()
    page.keyboard.press("ArrowDown")
    assert page.get_by_role("tab", name="Appearance").get_attribute("aria-selected") == "true"
    assert page.evaluate("document.activeElement.dataset.section") == "appearance"
    assert page.locator("#panel-appearance").is_visible() and not page.locator("#panel-connection").is_visible()
    # Focus is visible (an outline) on keyboard focus.
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"


def test_device_frames_change_preview_size(signed_in, live_server, owner, widget_a):
    page = signed_in(owner)
    open_editor(page, live_server, widget_a)
    frame = page.locator("#preview-frame")
    desktop = frame.bounding_box()
    page.get_by_role("button", name="Mobile").click()
    page.wait_for_timeout(100)
    mobile = frame.bounding_box()
    assert round(mobile["width"]) == 390 and mobile["width"] < desktop["width"]
    assert page.locator("#readout").inner_text().startswith("390 ×")
    page.get_by_role("button", name="Tablet").click()
    page.wait_for_timeout(100)
    assert round(frame.bounding_box()["width"]) == 768
    # Modes: full page fills the frame; inline sits in the page.
    page.get_by_role("button", name="Full page").click()
    panel = page.frame_locator("#preview-frame").get_by_role("region", name="Chat with us")
    panel.wait_for()
    box, outer = panel.bounding_box(), frame.bounding_box()
    assert abs(box["width"] - outer["width"]) < 2 and abs(box["height"] - outer["height"]) < 2
    page.get_by_role("button", name="Dark").click()
    page.wait_for_function("document.getElementById('preview-frame').contentDocument.body.dataset.host === 'dark'")


def test_n8n_preview_is_the_real_bundle_and_chats_with_the_draft_webhook(
    signed_in, live_server, owner, widget_a, fake_upstream
):
    fake_upstream.body = {"output": "Draft webhook says hi"}
    widget_update(
        widget=widget_a,
        membership=owner.memberships.get(),
        config={"connection": {"n8n": {"webhook_url": fake_upstream.url + "/webhook/draft"}}},
    )
    page = signed_in(owner)
    open_editor(page, live_server, widget_a)
    frame = frame_of(page)
    frame.locator("switchboard-widget").wait_for(state="attached")
    assert page.frame_locator("#preview-frame").locator("#sb-preview-root").get_attribute("data-renderer") == "bundle"
    # Live, unsaved: the primary colour reaches the real widget's header.
    page.get_by_role("tab", name="Appearance").click()
    page.get_by_label("Primary colour", exact=True).fill("#0f766e")
    header = frame.get_by_role("dialog").locator("header")
    page.wait_for_function("""() => {
        const doc = document.getElementById('preview-frame').contentDocument;
        const host = doc.querySelector('switchboard-widget');
        const hd = host && host.shadowRoot.querySelector('header');
        return hd && getComputedStyle(hd).backgroundColor === 'rgb(15, 118, 110)'; }""")
    assert header.is_visible()
    # Chat goes to the draft webhook through the preview chat (no usage counted).
    frame.get_by_role("textbox", name="Message").fill("Hello?")
    frame.get_by_role("textbox", name="Message").press("Enter")
    frame.get_by_text("Draft webhook says hi").wait_for()
    sent = [r for r in fake_upstream.requests if (r["body"] or {}).get("action") == "sendMessage"]
    assert sent and sent[0]["path"] == "/webhook/draft" and sent[0]["body"]["chatInput"] == "Hello?"
    from licenses.models import LicenseUsage

    assert not LicenseUsage.objects.exists()


def test_save_publish_and_rollback(signed_in, live_server, owner, widget_a):
    page = signed_in(owner)
    open_editor(page, live_server, widget_a)
    page.get_by_label("Widget name").fill("Acme widget")
    page.get_by_role("tab", name="Appearance").click()
    page.get_by_label("Title", exact=True).fill("Acme help")
    page.get_by_role("button", name="Publish", exact=True).click()
    page.get_by_role("button", name="Publish now").click()  # the confirmation
    page.locator("#status-badge").get_by_text("Published v2").wait_for()
    widget_a.refresh_from_db()
    assert widget_a.published_version.number == 2 and widget_a.name == "Acme widget"
    assert page.locator("#widget-title").inner_text() == "Acme widget"
    assert widget_a.published_version.config["appearance"]["n8n"]["title"] == "Acme help"
    # What the embed serves: the loader carries the new version and its public config at once.
    loader = page.evaluate(
        f"fetch('/api/widget/{widget_a.license.key}/chat-widget.js', {{cache: 'no-store'}}).then(r => r.text())"
    )
    assert '"version":2' in loader.replace(" ", "") and "Acme help" in loader
    # Versions page shows the diff and rolls back.
    page.get_by_role("link", name="Versions").click()
    assert "appearance.n8n.title" in page.locator("[data-version='2']").inner_text()
    page.on("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Roll back to v1").click()
    page.get_by_text("Rolled back").wait_for()
    widget_a.refresh_from_db()
    assert widget_a.published_version.number == 3
    assert widget_a.published_version.config["appearance"]["n8n"]["title"] == "Chat with us"
    assert widget_a.config["appearance"]["n8n"]["title"] == "Chat with us"
    loader = page.evaluate(
        f"fetch('/api/widget/{widget_a.license.key}/chat-widget.js', {{cache: 'no-store'}}).then(r => r.text())"
    )
    assert '"version":3' in loader.replace(" ", "") and "Acme help" not in loader


def test_a_value_typed_before_the_schema_arrives_is_validated_when_it_does(signed_in, live_server, member, widget_a):
    """The form validates against the server's JSON Schema, fetched after the page loads: a value typed before it
    arrived went unchecked until the next keystroke (a CI run typed first and waited for the message in vain)."""
    page = signed_in(member)
    held = []
    page.route("**" + reverse("api-widget-config-schema") + "*", lambda route: held.append(route))  # held by the test
    open_editor(page, live_server, widget_a)
    page.get_by_role("tab", name="Voice").click()
    page.get_by_label("Silence (ms)").fill("99999")
    page.wait_for_function("document.readyState === 'complete'")
    assert len(held) == 1  # typed while the schema was still on its way
    error = page.locator("[data-error-for='voice.turn_detection.silence_duration_ms']")
    expect(error).to_have_text("")
    held[0].continue_()
    expect(error).to_contain_text("between 100 and 5000")


def test_invalid_value_shows_next_to_field_and_stale_draft_conflict(signed_in, live_server, owner, member, widget_a):
    page = signed_in(member)
    open_editor(page, live_server, widget_a)
    page.get_by_role("tab", name="Voice").click()
    page.get_by_label("Silence (ms)").fill("99999")
    # The field validates as you type (debounced): wait for the message, never read it at once.
    expect(page.locator("[data-error-for='voice.turn_detection.silence_duration_ms']")).to_contain_text(
        "between 100 and 5000"
    )
    page.get_by_role("button", name="Save draft").click()
    expect(page.locator("#save-state")).to_have_text("Fix the highlighted fields")
    page.get_by_label("Silence (ms)").fill("700")
    # Someone else saves meanwhile: our save must not overwrite it.
    widget_update(widget=widget_a, membership=owner.memberships.get(), config={"behaviour": {"greeting": "Theirs"}})
    page.get_by_role("button", name="Save draft").click()
    page.locator("#conflict-banner.show").wait_for()
    assert "Someone else saved" in page.locator("#conflict-banner").inner_text()
    widget_a.refresh_from_db()
    assert widget_a.config["voice"]["turn_detection"]["silence_duration_ms"] == 500


def test_viewer_cannot_edit(signed_in, live_server, viewer, widget_a):
    page = signed_in(viewer)
    open_editor(page, live_server, widget_a)
    assert page.locator("#save-btn").count() == 0 and page.locator("#publish-btn").count() == 0
    page.get_by_role("tab", name="Appearance").click()
    assert page.get_by_label("Title", exact=True).is_disabled()
    assert page.locator("[data-path]:not([disabled])").count() == 0
    status = page.evaluate(
        """async (id) => {
        const csrf = document.cookie.match(/csrftoken=([^;]+)/)[1];
        const r = await fetch(`/api/v1/widgets/${id}/`, {method: 'PATCH', headers: {'Content-Type': 'application/json',
          'X-CSRFToken': csrf}, body: JSON.stringify({config: {appearance: {n8n: {title: 'Hacked'}}}})});
        return r.status; }""",
        widget_a.public_id,
    )
    assert status == 403
    widget_a.refresh_from_db()
    assert widget_a.config["appearance"]["n8n"]["title"] == "Chat with us"


def test_copy_embed_code(signed_in, live_server, owner, widget_a):
    page = signed_in(owner)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    page.goto(f"{live_server.url}/app/widgets/{widget_a.public_id}/embed/")
    page.locator("[data-copy='#snippet-script']").click()
    page.get_by_text("Copied to the clipboard").wait_for()
    copied = page.evaluate("navigator.clipboard.readText()")
    stub, tag = copied.split("\n")
    assert stub == f"<script>{API_STUB}</script>"  # the page API's queue, before the loader
    assert tag.startswith(
        f'<script src="{live_server.url}/api/widget/{widget_a.license.key}/chat-widget.js'
        f'?widget={widget_a.public_id}" data-widget="{widget_a.public_id}"'
    )
    assert 'data-mode="popup"' in copied and copied.endswith("async></script>")


def test_share_link_opens_preview_signed_out(signed_in, live_server, owner, widget_a, browser):
    widget_update(
        widget=widget_a, membership=owner.memberships.get(), config={"appearance": {"n8n": {"title": "For sign-off"}}}
    )
    page = signed_in(owner)
    page.goto(f"{live_server.url}/app/widgets/{widget_a.public_id}/share/")
    page.get_by_label("Label").fill("Acme review")
    page.get_by_role("button", name="Create link").click()
    share_url = page.locator("pre[id^=share-url-]").first.inner_text().strip()
    link = PreviewLink.objects.get(widget=widget_a)
    anonymous = browser.new_context()
    try:
        visitor = anonymous.new_page()
        visitor.goto(share_url)
        visitor.frame_locator("#preview-frame").get_by_text("For sign-off").wait_for()
        # Revoked: a friendly page.
        page.on("dialog", lambda dialog: dialog.accept())
        page.get_by_role("button", name="Revoke").click()
        page.get_by_text("Link revoked").wait_for()
        link.refresh_from_db()
        assert link.revoked_at is not None
        response = visitor.goto(share_url)
        assert response.status == 410
        assert "turned off" in visitor.content()
    finally:
        anonymous.close()


def test_login_page_and_sign_in(browser, live_server, owner, artifacts_dir):
    context = browser.new_context(viewport={"width": 1024, "height": 768})
    try:
        page = context.new_page()
        page.goto(live_server.url + "/app/")
        page.wait_for_url("**/app/login/**")
        page.screenshot(path=os.path.join(artifacts_dir, "configurator-login-1024.png"))
        page.get_by_label("Username").fill(owner.username)
        page.get_by_label("Password").fill("pass-word-123")
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("heading", name="Widgets").wait_for()
    finally:
        context.close()


@pytest.mark.parametrize("width", [1440, 1024])
def test_screenshots(signed_in, live_server, owner, license_a, agency_a, width, artifacts_dir):
    from licenses.models import Membership
    from licenses.services import usage_increment

    m = owner.memberships.get()
    n8n = WidgetFactory(license=license_a, name="Acme support chat", created_by=owner)
    widget_update(
        widget=n8n,
        membership=m,
        config={
            "connection": {"n8n": {"webhook_url": "https://n8n.acme.test/webhook/chat"}},
            "appearance": {"n8n": {"title": "Acme Support", "subtitle": "Typically replies in a minute"}},
            "behaviour": {"starter_prompts": ["Track my order", "Return an item"]},
        },
    )
    widget_publish(widget=n8n, user=owner, membership=m)
    widget_update(
        widget=n8n,
        membership=m,
        config={"appearance": {"n8n": {"primary_color": "#0f766e", "bubble_user_color": "#0f766e"}}},
    )
    widget_publish(widget=n8n, user=owner, membership=m, note="Brand colours")
    kit = WidgetFactory(license=license_a, provider="chatkit", name="Sales assistant (ChatKit)")
    widget_update(
        widget=kit, membership=m, config={"behaviour": {"starter_prompts": ["What's on sale?", "Compare plans"]}}
    )
    KnowledgeEntryFactory(widget=n8n)
    ProductFactory(widget=n8n, sku="P-1")
    usage_increment(license=license_a, conversations=640, voice_seconds=7200)
    for name, role in [("dana@acme.test", "admin"), ("eli@acme.test", "editor"), ("fay@acme.test", "viewer")]:
        Membership.objects.create(user=UserFactory(username=name, email=name), agency=agency_a, role=role)

    page = signed_in(owner, width=width, height=900)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    def shot(name: str, path: str, full_page: bool = True):
        page.goto(live_server.url + path)
        page.wait_for_load_state("networkidle")
        page.wait_for_timeout(250)
        page.screenshot(path=os.path.join(artifacts_dir, f"configurator-{name}-{width}.png"), full_page=full_page)
        # Nothing overflows the viewport horizontally.
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), name

    shot("widgets-list", "/app/")
    shot("editor-n8n", f"/app/widgets/{n8n.public_id}/", full_page=False)
    page.get_by_role("tab", name="Appearance").click()
    page.wait_for_timeout(200)
    page.screenshot(path=os.path.join(artifacts_dir, f"configurator-editor-n8n-appearance-{width}.png"))
    shot("editor-chatkit", f"/app/widgets/{kit.public_id}/", full_page=False)
    page.get_by_role("tab", name="Appearance").click()
    page.get_by_role("button", name="Mobile").click()
    page.wait_for_timeout(200)
    page.screenshot(path=os.path.join(artifacts_dir, f"configurator-editor-chatkit-mobile-{width}.png"))
    shot("versions", f"/app/widgets/{n8n.public_id}/versions/")
    shot("embed", f"/app/widgets/{n8n.public_id}/embed/")
    shot("licenses", "/app/licenses/")
    shot("members", "/app/members/")
    shot("products", f"/app/widgets/{n8n.public_id}/products/")
    shot("knowledge", f"/app/widgets/{n8n.public_id}/knowledge/")
    link = PreviewLink.objects.create(
        widget=n8n, label="Acme sign-off", created_by=owner, expires_at=timezone.now() + timedelta(days=7)
    )
    shot("share-links", f"/app/widgets/{n8n.public_id}/share/")
    shot("share-page", reverse("app-share", kwargs={"token": preview_link_token(link)}), full_page=False)
    # The voice panel shows the exact session the relay sends (the one session_config function).
    from realtime.session_config import session_config

    page.goto(f"{live_server.url}/app/widgets/{n8n.public_id}/")
    page.get_by_role("tab", name="Voice").click()
    page.get_by_role("button", name="Load session").click()
    shown = page.locator("#session-out pre")
    shown.wait_for()
    shown.scroll_into_view_if_needed()
    n8n.refresh_from_db()
    assert json.loads(shown.inner_text()) == session_config(config=n8n.published_version.config, widget=n8n)
    page.screenshot(path=os.path.join(artifacts_dir, f"configurator-editor-voice-{width}.png"))
    assert not errors
