"""The configurator's promises about the embed: publishing asks first, the inline preview fits."""

from __future__ import annotations

import os

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def open_editor(page, live_server, widget):
    page.goto(f"{live_server.url}/app/widgets/{widget.public_id}/")
    page.wait_for_function("window.switchboardConfigurator !== undefined")


def test_publish_asks_for_confirmation_naming_the_live_sites(signed_in, live_server, owner, widget_a, artifacts_dir):
    page = signed_in(owner)
    open_editor(page, live_server, widget_a)
    page.get_by_role("tab", name="Appearance").click()
    page.get_by_label("Title", exact=True).fill("Changed title")
    page.get_by_role("button", name="Publish", exact=True).click()
    dialog = page.get_by_role("dialog", name="Publish to the live sites?")
    dialog.wait_for()
    assert "shop.example.com" in dialog.inner_text() and "replacing the one they see now" in dialog.inner_text()
    page.screenshot(path=os.path.join(artifacts_dir, "configurator-publish-confirm.png"))
    dialog.get_by_role("button", name="Cancel").click()
    assert not dialog.is_visible()
    widget_a.refresh_from_db()
    assert widget_a.published_version.number == 1  # nothing went live, nothing was saved
    assert widget_a.config["appearance"]["n8n"]["title"] == "Chat with us"
    page.keyboard.press("Escape")
    page.get_by_role("button", name="Publish", exact=True).click()
    dialog.get_by_role("button", name="Publish now").click()
    page.locator("#status-badge").get_by_text("Published v2").wait_for()
    widget_a.refresh_from_db()
    assert widget_a.published_version.config["appearance"]["n8n"]["title"] == "Changed title"


@pytest.mark.parametrize("height", [600, 1000])
def test_inline_preview_shows_the_composer_without_scrolling(
    signed_in, live_server, owner, widget_a, height, artifacts_dir
):
    from widgets.services.widgets import widget_update

    widget_update(widget=widget_a, membership=owner.memberships.get(), config={"embed": {"height": height}})
    page = signed_in(owner, width=1280, height=800)
    open_editor(page, live_server, widget_a)
    page.get_by_role("button", name="Inline").click()
    frame = page.frame_locator("#preview-frame")
    composer = frame.locator("switchboard-widget >> .cp")
    composer.wait_for()
    page.wait_for_function("""() => {
        const doc = document.getElementById('preview-frame').contentDocument;
        const host = doc.querySelector('switchboard-widget');
        return host && host.shadowRoot.querySelector('.r.inline .cp') !== null; }""")
    fits = page.evaluate("""() => {
        const win = document.getElementById('preview-frame').contentWindow;
        const root = win.document.querySelector('switchboard-widget').shadowRoot;
        const cp = root.querySelector('.cp').getBoundingClientRect();
        const pn = root.querySelector('.pn').getBoundingClientRect();
        return {bottom: cp.bottom, panel: pn.bottom, viewport: win.innerHeight,
                scrolled: win.document.scrollingElement.scrollTop};
    }""")
    assert fits["bottom"] <= fits["viewport"] and fits["panel"] <= fits["viewport"], fits
    assert fits["scrolled"] == 0
    page.screenshot(path=os.path.join(artifacts_dir, f"configurator-inline-preview-{height}.png"))


def test_preview_follows_the_locale_and_text_overrides_before_saving(
    signed_in, live_server, owner, widget_a, artifacts_dir
):
    page = signed_in(owner, width=1440, height=900)
    open_editor(page, live_server, widget_a)
    frame = page.frame_locator("#preview-frame")
    box = frame.locator("switchboard-widget >> textarea")
    box.wait_for()
    assert box.get_attribute("placeholder") == "Type your message…"
    page.get_by_role("tab", name="Behaviour").click()
    page.get_by_label("Locale").fill("fr")
    # The preview re-mounts the widget on each change: wait for the new one to show the text.
    page.wait_for_function("""() => { const h = document.getElementById('preview-frame').contentDocument
        .querySelector('switchboard-widget'); const t = h && h.shadowRoot.querySelector('textarea');
        return !!t && t.placeholder === 'Écrivez votre message…'; }""")
    assert page.get_by_label("Retry", exact=True).get_attribute("placeholder") == "Réessayer"
    page.get_by_label("Send", exact=True).fill("Envoyer !")
    page.wait_for_function("""() => { const h = document.getElementById('preview-frame').contentDocument
        .querySelector('switchboard-widget'); const b = h && h.shadowRoot.querySelector('.sd');
        return !!b && b.getAttribute('aria-label') === 'Envoyer !'; }""")
    page.get_by_label("Send", exact=True).scroll_into_view_if_needed()
    page.screenshot(path=os.path.join(artifacts_dir, "configurator-widget-texts.png"))
    page.get_by_role("button", name="Save draft").click()
    page.get_by_text("All changes saved").wait_for()
    widget_a.refresh_from_db()
    assert widget_a.config["behaviour"]["locale"] == "fr"
    assert widget_a.config["behaviour"]["strings"]["send"] == "Envoyer !"
    assert widget_a.config["behaviour"]["strings"]["retry"] == ""  # empty: the locale's own text
