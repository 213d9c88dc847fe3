"""The built-in demo n8n Chat Trigger: DEBUG only, the real protocol, answers from the widget's data."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from asgiref.sync import async_to_sync
from django.core.management import call_command

from widgets.demo_n8n import demo_reply, demo_url
from widgets.models import Conversation, Widget
from widgets.n8n import history_parse
from widgets.tests.conftest import ORIGIN, publish
from widgets.tests.factories import KnowledgeEntryFactory, ProductFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def shop(widget_a, owner):
    ProductFactory(widget=widget_a, title="Pixel 8a", price=Decimal("449.00"), description="Great camera")
    ProductFactory(widget=widget_a, title="iPhone 15", price=Decimal("699.00"), description="USB-C")
    KnowledgeEntryFactory(
        widget=widget_a, question="What are your opening hours?", answer="We are open Monday to Saturday, 9am to 6pm."
    )
    return publish(
        widget_a,
        owner,
        config={"tools": {"trade_in_devices": ["Pixel 6", "iPhone 12"], "booking_url": "https://cal.example.com/shop"}},
    )


def chat(client, widget, text, *, session="s1", stream=True, action="sendMessage"):
    path = demo_url(base="", public_id=widget.public_id, stream=stream)
    return client.post(
        path,
        {"action": action, "sessionId": session, "chatInput": text, "metadata": {}},
        content_type="application/json",
    )


def ndjson(response) -> list[dict]:
    if getattr(response, "is_async", False):

        async def collect() -> bytes:
            return b"".join([chunk async for chunk in response.streaming_content])

        body = async_to_sync(collect)()
    else:
        body = b"".join(response.streaming_content) if response.streaming else response.content
    return [json.loads(line) for line in body.decode().splitlines() if line.strip()]


def test_demo_workflow_is_not_served_without_debug(client, shop):
    assert chat(client, shop, "hello").status_code == 404


def test_streams_like_a_chat_trigger_with_cards_on_the_end_line(client, shop, settings):
    settings.DEBUG = True
    response = chat(client, shop, "Phones under $500?")
    assert response.status_code == 200 and response["Content-Type"].startswith("application/json")
    events = ndjson(response)
    assert events[0]["type"] == "begin" and events[-1]["type"] == "end"
    items = [e["content"] for e in events if e["type"] == "item"]
    assert len(items) > 3 and "".join(items) == "Here is 1 option under $500: **Pixel 8a**."
    (cards,) = events[-1]["ui"]
    assert cards["type"] == "ui.product_cards" and [p["title"] for p in cards["products"]] == ["Pixel 8a"]


def test_whole_reply_mode_and_memory(client, shop, settings):
    settings.DEBUG = True
    reply = chat(client, shop, "What are your opening hours?", stream=False).json()
    assert reply == {"output": "We are open Monday to Saturday, 9am to 6pm.", "ui": []}
    history = chat(client, shop, "", action="loadPreviousSession").json()
    assert history_parse(history) == [
        {"role": "user", "text": "What are your opening hours?"},
        {"role": "assistant", "text": "We are open Monday to Saturday, 9am to 6pm."},
    ]
    assert chat(client, shop, "", session="other", action="loadPreviousSession").json() == {"data": []}


def test_answers_from_the_widgets_own_data(shop, widget_b):
    trade = demo_reply(widget=shop, text="Can I trade in my Pixel 6?")
    assert trade.ui[0]["type"] == "ui.trade_in_form" and trade.ui[0]["device"] == "Pixel 6"
    assert trade.ui[0]["devices"] == ["Pixel 6", "iPhone 12"]
    meeting = demo_reply(widget=shop, text="Can I book a call with a person?")
    assert meeting.ui == [
        {
            "type": "ui.meeting_link",
            "url": "https://cal.example.com/shop",
            "title": "Book a meeting",
            "name": "",
            "email": "",
        }
    ]
    assert demo_reply(widget=shop, text="hello").text.startswith("Hello! I'm the demo assistant of **")
    assert demo_reply(widget=shop, text="Do you have phones?").ui[0]["type"] == "ui.product_cards"
    # Another tenant's widget knows nothing of this one's products or knowledge.
    other = demo_reply(widget=widget_b, text="What are your opening hours? Any phones under $500?")
    assert other.ui == [] and "demo workflow" in other.text


def test_bad_requests_answer_like_n8n(client, shop, settings):
    settings.DEBUG = True
    assert (
        client.post("/demo/n8n/wgt_nope/chat", {"sessionId": "s"}, content_type="application/json").status_code == 404
    )
    assert (
        client.post(demo_url(base="", public_id=shop.public_id), "nope", content_type="application/json").status_code
        == 400
    )
    assert chat(client, shop, "  ").status_code == 400
    assert client.get(demo_url(base="", public_id=shop.public_id)).status_code == 405


def test_the_public_chat_reaches_the_demo_workflow(client, shop, owner, settings, live_server):
    """The whole path a visitor takes: the proxy calls the demo endpoint over HTTP and relays it."""
    settings.DEBUG = True
    publish(
        shop,
        owner,
        config={
            "connection": {
                "n8n": {"webhook_url": demo_url(base=live_server.url, public_id=shop.public_id), "streaming": True}
            }
        },
    )
    response = client.post(
        f"/api/widget/{shop.license.key}/chat",
        {"action": "sendMessage", "sessionId": "visitor-1", "chatInput": "Phones under $500?"},
        content_type="application/json",
        HTTP_ORIGIN=ORIGIN,
    )
    assert response.status_code == 200
    events = ndjson(response)
    assert events[-1]["type"] == "end" and events[-1]["ui"][0]["type"] == "ui.product_cards"
    assert "Pixel 8a" in events[-1]["output"]
    conversation = Conversation.objects.get(widget=shop)
    assert list(conversation.messages.values_list("role", flat=True)) == ["user", "assistant"]


def test_seed_points_the_demo_widget_at_this_servers_demo_workflow(settings, capsys):
    settings.DEBUG = True
    call_command("seed_demo", port=8123)
    widget = Widget.objects.get(name="Demo n8n chat")
    url = f"http://127.0.0.1:8123/demo/n8n/{widget.public_id}/chat"
    assert widget.config["connection"]["n8n"] == {
        **widget.config["connection"]["n8n"],
        "webhook_url": url,
        "streaming": True,
    }
    assert widget.published_version.config["connection"]["n8n"]["webhook_url"] == url
    assert widget.knowledge.exists() and widget.products.exists()
    call_command("seed_demo", port=9000)  # another port: follows it
    widget.refresh_from_db()
    assert widget.published_version.config["connection"]["n8n"]["webhook_url"].startswith("http://127.0.0.1:9000/")
    versions = widget.versions.count()
    call_command("seed_demo", port=9000)  # idempotent
    assert widget.versions.count() == versions
    # Once connected to a real n8n, the seed leaves it alone.
    widget.config["connection"]["n8n"]["webhook_url"] = "https://n8n.example.com/webhook/x/chat"
    widget.save()
    call_command("seed_demo", port=8000)
    widget.refresh_from_db()
    assert widget.config["connection"]["n8n"]["webhook_url"] == "https://n8n.example.com/webhook/x/chat"


def test_production_keeps_refusing_private_webhooks(settings):
    """The demo needs no hole in the SSRF guard: it runs where private addresses are allowed (DEBUG's default)."""
    from widgets.n8n import n8n_target_allowed

    settings.N8N_ALLOW_PRIVATE_NETWORKS = False
    assert not n8n_target_allowed("http://127.0.0.1:8000/demo/n8n/wgt_x/chat")
    settings.N8N_ALLOW_PRIVATE_NETWORKS = True
    assert n8n_target_allowed("http://127.0.0.1:8000/demo/n8n/wgt_x/chat")  # the switch is what refuses it
