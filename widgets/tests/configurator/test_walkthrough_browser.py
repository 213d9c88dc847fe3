"""The walk a new customer takes, end to end in Chromium (issue 10, "Done when"):

staff creates a license with plain domains → the agency adds a domain, builds two widgets, tests the
connection against a failing and a working webhook, publishes → a customer page embeds both
snippets and chats with each.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import pytest

from licenses.models import License
from widgets.models import Conversation, Widget

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def build_widget(
    page,
    live_server,
    *,
    name: str,
    client: str,
    broken: str,
    working: str,
    title: str,
    inline: bool,
    fake_n8n,
    artifacts_dir,
) -> Widget:
    page.goto(f"{live_server.url}/app/widgets/new/")
    page.get_by_label("Name").fill(name)
    page.get_by_label("License").select_option(label=client)
    page.get_by_role("button", name="Create widget").click()
    page.wait_for_url("**/app/widgets/wgt_*/")
    page.wait_for_function("window.switchboardConfigurator !== undefined")
    result = page.locator("#test-result")
    if broken:
        fake_n8n.reply(json={"message": "Error in workflow"}, status=500)
        page.get_by_label("Webhook URL").fill(broken)
        page.get_by_role("button", name="Test connection").click()
        result.get_by_text("The workflow failed with a server error (500)").wait_for()
        assert "n8n said: “Error in workflow”" in result.inner_text()
        result.scroll_into_view_if_needed()
        page.screenshot(path=os.path.join(artifacts_dir, "walkthrough-test-connection-failing.png"))
    page.get_by_label("Webhook URL").fill(working)
    page.get_by_role("button", name="Test connection").click()
    result.get_by_text("Connected. The workflow answered in").wait_for()
    assert "“Hello from n8n”" in result.inner_text()
    if broken:
        result.scroll_into_view_if_needed()
        page.screenshot(path=os.path.join(artifacts_dir, "walkthrough-test-connection-working.png"))
    page.get_by_role("tab", name="Appearance").click()
    page.get_by_label("Title", exact=True).fill(title)
    if inline:
        page.get_by_label("Default embed mode").select_option("inline")
    page.get_by_role("button", name="Publish", exact=True).click()
    page.get_by_role("dialog").get_by_role("button", name="Publish now").click()
    page.locator("#status-badge").get_by_text("Published v1").wait_for()
    return Widget.objects.get(name=name)


def snippet(page, live_server, widget: Widget) -> str:
    page.goto(f"{live_server.url}/app/widgets/{widget.public_id}/embed/")
    return page.locator("#snippet-script").inner_text()


def test_staff_license_to_agency_widgets_to_customer_chat(
    signed_in, live_server, staff, owner, agency_a, fake_n8n, customer_site, browser_contexts, artifacts_dir
):
    # 1. Staff creates the license in the admin, with plain domains.
    admin = signed_in(staff)
    admin.goto(f"{live_server.url}/admin/licenses/license/add/")
    assert "lic_" not in admin.content()  # no key before it exists
    admin.locator("#id_agency").select_option(label="Agency A")
    admin.get_by_label("Client name").fill("Acme Phones")
    admin.locator("#id_domains").fill("Shop.Acme-Phones.example\nhttps://www.acme-phones.example/")
    admin.get_by_label("Conversations per month").fill("2500")
    admin.screenshot(path=os.path.join(artifacts_dir, "walkthrough-admin-license-form.png"), full_page=True)
    admin.get_by_role("button", name="Save", exact=True).click()
    admin.get_by_text("was added successfully").wait_for()
    license = License.objects.get(client_name="Acme Phones")
    assert license.allowed_domains == ["shop.acme-phones.example", "www.acme-phones.example"]
    assert license.limits["monthly_conversations"] == 2500
    admin.goto(f"{live_server.url}/admin/licenses/license/{license.pk}/change/")
    assert license.key in admin.content()
    admin.screenshot(path=os.path.join(artifacts_dir, "walkthrough-admin-license-saved.png"), full_page=True)

    # 2. The agency owner adds the domain of the page they are building on.
    page = signed_in(owner)
    page.goto(f"{live_server.url}/app/licenses/")
    page.get_by_role("link", name="Manage domains").click()
    page.get_by_label("Domains, one per line").fill("127.0.0.1")
    page.get_by_role("button", name="Add", exact=True).click()
    page.get_by_text("Added 127.0.0.1: widgets load there now.").wait_for()
    page.screenshot(path=os.path.join(artifacts_dir, "walkthrough-agency-domains.png"), full_page=True)
    assert License.objects.get(pk=license.pk).allowed_domains[-1] == "127.0.0.1"

    # 3. Two widgets, each tested against its webhook and published.
    sales = build_widget(
        page,
        live_server,
        name="Sales",
        client="Acme Phones",
        title="Sales desk",
        inline=False,
        broken=fake_n8n.url + "/webhook/broken/chat",
        working=fake_n8n.webhook,
        fake_n8n=fake_n8n,
        artifacts_dir=artifacts_dir,
    )
    support = build_widget(
        page,
        live_server,
        name="Support",
        client="Acme Phones",
        title="Support desk",
        inline=True,
        broken="",
        working=fake_n8n.webhook,
        fake_n8n=fake_n8n,
        artifacts_dir=artifacts_dir,
    )
    assert not Conversation.objects.exists()  # tests of the connection are not conversations
    sales_tag, support_tag = snippet(page, live_server, sales), snippet(page, live_server, support)
    assert 'data-mode="inline"' in support_tag and 'data-target="#chat"' in support_tag

    # 4. The customer's page embeds both snippets and chats with each.
    url = customer_site.page(
        "acme.html",
        f"""<!doctype html><html><head><meta charset="utf-8"><title>Acme</title></head>
<body style="margin:0;font-family:sans-serif"><h1 style="margin:20px">Acme Phones</h1>
<div id="chat" style="width:600px;height:500px;margin-left:20px"></div>{sales_tag}{support_tag}</body></html>""",
    )
    customer = browser_contexts(viewport={"width": 1280, "height": 900}).new_page()
    errors = []
    customer.on("console", lambda m: m.type == "error" and errors.append(m.text))
    customer.goto(url)
    inline = f"switchboard-widget[data-widget='{support.public_id}']"
    popup = f"switchboard-widget[data-widget='{sales.public_id}']"
    customer.locator(f"{inline} >> .hd b").get_by_text("Support desk").wait_for()
    box = customer.locator(f"{inline} >> .pn").bounding_box()
    chat_box = customer.locator("#chat").bounding_box()
    assert (box["x"], box["y"], box["width"], box["height"]) == (chat_box["x"], chat_box["y"], 600, 500)
    customer.locator(f"{inline} >> textarea").fill("My screen is broken")
    customer.locator(f"{inline} >> textarea").press("Enter")
    customer.locator(f"{inline} >> .m.a >> text=Hello from n8n").wait_for()
    customer.locator(f"{popup} >> .lau").click()
    customer.locator(f"{popup} >> .hd b").get_by_text("Sales desk").wait_for()
    customer.locator(f"{popup} >> textarea").fill("Which phone should I buy?")
    customer.locator(f"{popup} >> textarea").press("Enter")
    customer.locator(f"{popup} >> .m.a >> text=Hello from n8n").wait_for()
    customer.wait_for_timeout(300)  # entry animations
    customer.screenshot(path=os.path.join(artifacts_dir, "walkthrough-customer-page.png"))
    texts = {
        c.widget.name: list(c.messages.filter(role="user").values_list("text", flat=True))
        for c in Conversation.objects.select_related("widget")
    }
    assert texts == {"Support": ["My screen is broken"], "Sales": ["Which phone should I buy?"]}
    assert [e for e in errors if "Switchboard" in e] == []
    assert urlsplit(url).hostname == "127.0.0.1"
