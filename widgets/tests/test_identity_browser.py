"""Verified identity in a real browser (issue 15.2): Switchboard('identify') on a customer's page with a
valid hash (n8n gets the verified identity), a forged hash (refused, logged, the chat stays anonymous)
and a changed user on the same browser (a new conversation, the old one not shown)."""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import logging
import re
import time
from urllib.parse import urlsplit

import pytest

from licenses import identity
from widgets.models import Conversation
from widgets.tests.factories import n8n_config, publish

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def sign(secret: str, user_id: str) -> str:
    return hmac.new(secret.encode(), user_id.encode(), hashlib.sha256).hexdigest()


@pytest.fixture
def setup(client, owner, widget_a, fake_n8n, live_server, customer_site):
    widget = publish(widget_a, owner, config=n8n_config(fake_n8n.webhook))
    secret = identity.identity_secret_rotate(actor=owner.memberships.get(), license=widget.license)
    client.force_login(owner)
    embed = client.get(f"/app/widgets/{widget.public_id}/embed/", HTTP_HOST=urlsplit(live_server.url).netloc)
    tag = html.unescape(re.search(r'<pre id="snippet-script">(.*?)</pre>', embed.content.decode(), re.S).group(1))

    def page_with(name: str, user: dict, user_hash: str) -> str:
        # The page identifies right after the snippet, before the loader has run (the stub queues it).
        call = f"Switchboard('identify', {json.dumps(user)}, {json.dumps({'user_hash': user_hash})});"
        script = "window.sbErrors = []; Switchboard.on('error', function (e) { window.sbErrors.push(e.code); });" + call
        return customer_site.page(
            name, f"<!doctype html><html><body><h1>Shop</h1>{tag}<script>{script}</script></body></html>"
        )

    return widget, secret, page_with


def wait_sent(page, fake_n8n, count: int) -> dict:
    """Wait (bounded) until the fake n8n has `count` turns and the widget shows the last answer."""
    deadline = time.monotonic() + 10
    while len(fake_n8n.sent) < count and time.monotonic() < deadline:
        page.wait_for_timeout(20)
    assert len(fake_n8n.sent) == count
    page.wait_for_function(
        """() => [...document.querySelector('switchboard-widget').shadowRoot.querySelectorAll('.m.a')]
            .some((m) => m.textContent.includes('Hello from n8n'))"""
    )
    return fake_n8n.sent[-1]


def chat(page, text: str, fake_n8n, count: int) -> dict:
    page.locator("switchboard-widget >> .lau").click()
    box = page.locator("switchboard-widget >> textarea")
    box.fill(text)
    box.press("Enter")
    return wait_sent(page, fake_n8n, count)


def test_identify_valid_forged_and_changed_user(browser_contexts, setup, fake_n8n, caplog):
    widget, secret, page_with = setup
    context = browser_contexts()  # one browser: localStorage is shared by the three pages
    ana = {"user_id": "42", "email": "ana@client.example", "name": "Ana", "attributes": {"plan": "pro"}}

    # 1. A valid hash: n8n gets the verified identity, the conversation carries it.
    page = context.new_page()
    page.goto(page_with("ana.html", ana, sign(secret, "42")))
    sent = chat(page, "Hello as Ana", fake_n8n, 1)
    assert sent["metadata"]["identity"] == {**ana, "verified": True}
    ana_session = sent["sessionId"]
    assert page.evaluate("() => window.sbErrors") == []
    page.close()

    # 2. A forged hash: refused and logged; the page hears error identity_invalid; the chat is anonymous.
    page = context.new_page()
    console = []
    page.on("console", lambda m: m.type == "error" and console.append(m.text))
    with caplog.at_level(logging.WARNING, logger="switchboard.identity"):
        page.goto(page_with("forged.html", {"user_id": "1", "name": "Admin"}, sign("guessed", "1")))
        page.wait_for_function("() => window.sbErrors.includes('identity_invalid')")
    assert any("identify was refused" in line and "(identity_invalid)" in line for line in console)
    assert any("Forged or wrong identity hash refused" in r.getMessage() for r in caplog.records)
    # The page claims another user than Ana: her conversation is not shown to this visitor.
    assert page.evaluate(f"() => localStorage.getItem('sb:{widget.public_id}:identity')") is None
    anonymous = chat(page, "Who am I?", fake_n8n, 2)
    assert "identity" not in anonymous["metadata"] and anonymous["sessionId"] != ana_session
    assert page.locator("switchboard-widget >> text=Hello as Ana").count() == 0
    page.close()

    # 3. Another user on the same browser: a new conversation; Ana's messages are not shown.
    page = context.new_page()
    bob = {"user_id": "77", "name": "Bob"}
    page.goto(page_with("bob.html", bob, sign(secret, "77")))
    # The widget's element may not exist yet (the loader is async): wait on the stored identity alone.
    page.wait_for_function(f"() => localStorage.getItem('sb:{widget.public_id}:identity') === '\"77\"'")
    assert page.locator("switchboard-widget >> text=Hello as Ana").count() == 0
    sent = chat(page, "Hello as Bob", fake_n8n, 3)
    assert sent["metadata"]["identity"] == {
        "user_id": "77",
        "email": "",
        "name": "Bob",
        "attributes": {},
        "verified": True,
    }
    assert sent["sessionId"] not in (ana_session, anonymous["sessionId"])
    assert page.locator("switchboard-widget >> text=Hello as Ana").count() == 0
    bob_session = sent["sessionId"]
    page.close()

    # 4. Ana again after Bob on this browser: Bob's conversation is cleared from the widget, a new one starts.
    page = context.new_page()
    page.goto(page_with("ana-again.html", ana, sign(secret, "42")))
    page.wait_for_function(f"() => localStorage.getItem('sb:{widget.public_id}:identity') === '\"42\"'")
    page.locator("switchboard-widget >> .lau").click()
    page.locator("switchboard-widget >> .m.a >> text=Hi! How can I help?").wait_for()
    assert page.locator("switchboard-widget >> text=Hello as Bob").count() == 0
    box = page.locator("switchboard-widget >> textarea")
    box.fill("Back as Ana")
    box.press("Enter")
    again = wait_sent(page, fake_n8n, 4)
    assert again["metadata"]["identity"]["user_id"] == "42" and again["sessionId"] != bob_session
    page.close()

    # Four conversations, one identity each; no conversation holds two users' messages.
    rows = sorted(
        (c.identity.get("user_id", ""), c.messages.filter(role="user").values_list("text", flat=True).first())
        for c in Conversation.objects.all()
    )
    assert rows == [("", "Who am I?"), ("42", "Back as Ana"), ("42", "Hello as Ana"), ("77", "Hello as Bob")]
    assert all(c.messages.filter(role="user").count() == 1 for c in Conversation.objects.all())
