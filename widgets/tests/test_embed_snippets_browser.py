"""Every snippet the product prints selects exactly its widget, in a real browser.

A license with three published widgets (two n8n, one ChatKit); the customer's page embeds the
snippets the Embed code tab prints, plus a hand-written `data-widget` tag without `?widget=`.
"""

from __future__ import annotations

import html
import re
from urllib.parse import urlsplit

import pytest

from widgets.models import Conversation
from widgets.tests.conftest import n8n_config, publish
from widgets.tests.factories import WidgetFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def printed_snippet(client, widget, live_url: str) -> str:
    """The script tag exactly as the Embed code tab shows it (served on the live server's host)."""
    response = client.get(f"/app/widgets/{widget.public_id}/embed/", HTTP_HOST=urlsplit(live_url).netloc)
    assert response.status_code == 200
    match = re.search(r'<pre id="snippet-script">(.*?)</pre>', response.content.decode(), re.S)
    return html.unescape(match.group(1))


def shadow_of(widget_id: str, selector: str) -> str:
    return f"switchboard-widget[data-widget='{widget_id}'] >> {selector}"


def test_two_widgets_of_one_license_on_one_page_each_the_right_one(
    client, browser_contexts, customer_site, live_server, license_a, owner, fake_n8n
):
    client.force_login(owner)
    sales = publish(
        WidgetFactory(license=license_a, name="Sales"),
        owner,
        config={
            **n8n_config(fake_n8n.webhook),
            "appearance": {"n8n": {"title": "Sales desk"}},
            "embed": {"mode": "inline"},
        },
    )
    support = publish(
        WidgetFactory(license=license_a, name="Support"),
        owner,
        config={**n8n_config(fake_n8n.webhook), "appearance": {"n8n": {"title": "Support desk"}}},
    )
    chatkit = publish(WidgetFactory(license=license_a, name="Assistant", provider="chatkit"), owner)

    sales_tag = printed_snippet(client, sales, live_server.url)
    chatkit_tag = printed_snippet(client, chatkit, live_server.url)
    for widget, tag in ((sales, sales_tag), (chatkit, chatkit_tag)):
        assert f'data-widget="{widget.public_id}"' in tag
        assert f"chat-widget.js?widget={widget.public_id}" in tag
    # A tag someone writes by hand from the attribute table: data-widget alone, no ?widget=.
    support_tag = (
        f'<script src="{live_server.url}/api/widget/{license_a.key}/chat-widget.js" '
        f'data-widget="{support.public_id}" data-mode="inline" data-target="#support" async></script>'
    )
    url = customer_site.page(
        "two.html",
        f"""<!doctype html><html><head><meta charset="utf-8"><title>Shop</title></head>
<body><h1>Shop</h1><div id="chat" style="width:420px"></div><div id="support" style="width:420px"></div>
{sales_tag}{support_tag}{chatkit_tag}</body></html>""",
    )

    page = browser_contexts(viewport={"width": 1280, "height": 1400}).new_page()
    errors = []
    page.on("console", lambda m: m.type == "error" and m.text.startswith("Switchboard") and errors.append(m.text))
    page.goto(url)
    page.locator(shadow_of(sales.public_id, ".hd b")).wait_for()
    page.locator(shadow_of(support.public_id, ".hd b")).wait_for()
    assert page.locator(shadow_of(sales.public_id, ".hd b")).inner_text() == "Sales desk"
    assert page.locator(shadow_of(support.public_id, ".hd b")).inner_text() == "Support desk"
    assert page.evaluate("() => document.querySelector('#chat > switchboard-widget').dataset.widget") == sales.public_id
    assert (
        page.evaluate("() => document.querySelector('#support > switchboard-widget').dataset.widget")
        == support.public_id
    )

    # The ChatKit snippet shows the ChatKit widget (an iframe of its page), not an n8n chat.
    page.locator(shadow_of(chatkit.public_id, ".lau")).click()
    frame = page.locator(shadow_of(chatkit.public_id, "iframe"))
    frame.wait_for(state="attached")
    assert frame.get_attribute("src").endswith(f"/widget/chatkit/{license_a.key}?widget={chatkit.public_id}")
    assert page.locator(shadow_of(chatkit.public_id, "textarea")).count() == 0

    # Each n8n widget chats as itself: the turn is recorded on its own widget.
    page.locator(shadow_of(support.public_id, "textarea")).fill("Need support")
    page.locator(shadow_of(support.public_id, "textarea")).press("Enter")
    page.locator(shadow_of(support.public_id, ".m.a >> text=Hello from n8n")).wait_for()
    page.locator(shadow_of(sales.public_id, "textarea")).fill("Want to buy")
    page.locator(shadow_of(sales.public_id, "textarea")).press("Enter")
    page.locator(shadow_of(sales.public_id, ".m.a >> text=Hello from n8n")).wait_for()
    texts = {
        c.widget_id: list(c.messages.filter(role="user").values_list("text", flat=True))
        for c in Conversation.objects.filter(is_preview=False)
    }
    assert texts == {support.pk: ["Need support"], sales.pk: ["Want to buy"]}
    assert errors == []
