"""The n8n chat proxy against a fake n8n on 127.0.0.1: forwarded bodies, auth, streaming, errors, DB state."""

from __future__ import annotations

import base64
import json
import time

import pytest

from licenses.models import LicenseUsage
from widgets.models import Conversation, Message
from widgets.tests.conftest import N8N_PASSWORD, N8N_USER, ORIGIN, n8n_config, publish

pytestmark = pytest.mark.django_db

PRODUCT = {
    "type": "ui.product_cards",
    "products": [
        {
            "id": "1",
            "title": "Pixel 8a",
            "description": "",
            "price": "449.00",
            "currency": "USD",
            "image_url": "https://shop.example.com/p.png",
            "url": "https://shop.example.com/p",
            "in_stock": True,
        }
    ],
}


def chat(client, key, body, origin=ORIGIN, **extra):
    return client.post(
        f"/api/widget/{key}/chat",
        data=json.dumps(body) if not isinstance(body, str) else body,
        content_type="application/json",
        HTTP_ORIGIN=origin,
        **extra,
    )


def send(client, widget, text="Hi there", session="sess-1", **extra):
    return chat(
        client,
        widget.license.key,
        {"action": "sendMessage", "sessionId": session, "chatInput": text, "metadata": {"visitorId": "v-1"}},
        **extra,
    )


def test_send_forwards_exactly_what_the_chat_trigger_expects(client, n8n_widget, fake_n8n):
    response = send(client, n8n_widget, HTTP_X_SWITCHBOARD_VISITOR="v-1")
    assert response.status_code == 200, response.content
    assert response.json() == {"output": "Hello from n8n", "ui": []}
    assert response["Access-Control-Allow-Origin"] == ORIGIN
    [req] = fake_n8n.requests
    assert req.method == "POST"
    assert req.path == "/webhook/secret-hook-7f3a/chat"
    assert req.headers["content-type"] == "application/json"
    assert req.body == {
        "action": "sendMessage",
        "sessionId": "sess-1",
        "chatInput": "Hi there",
        "metadata": {"visitorId": "v-1"},
    }
    assert "authorization" not in req.headers  # basic auth is off in the config


def test_basic_auth_from_the_encrypted_secrets(client, n8n_widget, fake_n8n, owner):
    publish(n8n_widget, owner, config={"connection": {"n8n": {"basic_auth": True}}})
    assert send(client, n8n_widget).status_code == 200
    expected = "Basic " + base64.b64encode(f"{N8N_USER}:{N8N_PASSWORD}".encode()).decode()
    assert fake_n8n.requests[0].headers["authorization"] == expected


def test_load_previous_session_has_no_chat_input_and_maps_langchain_messages(client, n8n_widget, fake_n8n):
    fake_n8n.history.extend(
        [
            {
                "lc": 1,
                "type": "constructor",
                "id": ["langchain_core", "messages", "HumanMessage"],
                "kwargs": {"content": "Do you buy phones?", "additional_kwargs": {}},
            },
            {
                "lc": 1,
                "type": "constructor",
                "id": ["langchain_core", "messages", "AIMessage"],
                "kwargs": {"content": "Yes, we **do**.", "tool_calls": []},
            },
            {
                "lc": 1,
                "type": "constructor",
                "id": ["langchain_core", "messages", "SystemMessage"],
                "kwargs": {"content": "internal"},
            },
        ]
    )
    response = chat(client, n8n_widget.license.key, {"action": "loadPreviousSession", "sessionId": "sess-1"})
    assert response.status_code == 200, response.content
    assert response.json()["messages"] == [
        {"role": "user", "text": "Do you buy phones?"},
        {"role": "assistant", "text": "Yes, we **do**."},
    ]
    assert fake_n8n.requests[0].body == {"action": "loadPreviousSession", "sessionId": "sess-1", "metadata": {}}
    assert Conversation.objects.count() == 0


@pytest.mark.parametrize(
    "reply,text",
    [
        ({"output": "from output"}, "from output"),
        ({"text": "from text"}, "from text"),
        ({"message": "from message"}, "from message"),
        ([{"output": "one"}, {"output": "two"}], "one\n\ntwo"),
    ],
)
def test_reply_shapes(client, n8n_widget, fake_n8n, reply, text):
    fake_n8n.reply(json=reply)
    response = send(client, n8n_widget)
    assert response.status_code == 200
    assert response.json()["output"] == text


def test_ui_events_pass_through_and_unknown_ones_are_dropped(client, n8n_widget, fake_n8n):
    fake_n8n.reply(json={"output": "Here you go", "ui": [PRODUCT, {"type": "evil", "html": "<script>"}]})
    response = send(client, n8n_widget)
    assert response.json()["ui"] == [PRODUCT]
    assistant = Message.objects.get(role="assistant")
    assert assistant.payload == {"ui": [PRODUCT]}


def test_chat_records_one_conversation_and_a_message_per_turn(client, n8n_widget, fake_n8n):
    send(client, n8n_widget, "First", HTTP_X_SWITCHBOARD_VISITOR="visitor-9")
    send(client, n8n_widget, "Second", HTTP_X_SWITCHBOARD_VISITOR="visitor-9")
    conversation = Conversation.objects.get()
    assert conversation.channel == "chat"
    assert conversation.session_id == "sess-1"
    assert conversation.visitor_id == "visitor-9"
    assert conversation.widget == n8n_widget
    assert [(m.role, m.text) for m in conversation.messages.all()] == [
        ("user", "First"),
        ("assistant", "Hello from n8n"),
        ("user", "Second"),
        ("assistant", "Hello from n8n"),
    ]
    usage = LicenseUsage.objects.get(license=n8n_widget.license)
    assert usage.conversations == 1  # counted once per new session


def test_new_session_counts_again(client, n8n_widget, fake_n8n):
    send(client, n8n_widget, session="a")
    send(client, n8n_widget, session="b")
    assert LicenseUsage.objects.get(license=n8n_widget.license).conversations == 2


def test_streaming_is_relayed_and_aggregated_into_one_message(client, n8n_widget, fake_n8n, owner):
    publish(n8n_widget, owner, config={"connection": {"n8n": {"streaming": True}}})
    fake_n8n.reply(
        stream=[
            {"type": "begin", "metadata": {"nodeId": "a"}},
            {"type": "item", "content": "Hel", "metadata": {}},
            {"type": "item", "content": "lo ", "metadata": {}},
            {"type": "item", "content": "world", "metadata": {}},
            {"type": "end", "metadata": {}},
        ],
        delay=0.01,
    )
    response = send(client, n8n_widget)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-ndjson"
    assert response.streaming
    lines = [json.loads(line) for line in b"".join(response.streaming_content).splitlines()]
    assert lines == [
        {"type": "item", "content": "Hel"},
        {"type": "item", "content": "lo "},
        {"type": "item", "content": "world"},
        {"type": "end", "output": "Hello world", "ui": []},
    ]
    assert [(m.role, m.text) for m in Message.objects.all()] == [("user", "Hi there"), ("assistant", "Hello world")]
    assert fake_n8n.requests[0].body["chatInput"] == "Hi there"


def failed_turn(widget, text="Hi there"):
    """Issue 10.5: a message that got no answer is kept as the user turn with its failure, no reply."""
    [message] = Message.objects.all()
    assert (message.role, message.text, message.conversation.widget) == ("user", text, widget)
    widget.refresh_from_db()
    assert widget.chat_failures == 1 and widget.last_chat_failure_at is not None
    return message


def test_stream_error_event_becomes_an_error_line_and_a_failed_turn(client, n8n_widget, fake_n8n, owner):
    publish(n8n_widget, owner, config={"connection": {"n8n": {"streaming": True}}})
    fake_n8n.reply(
        stream=[
            {"type": "begin"},
            {"type": "item", "content": "Hal"},
            {"type": "error", "content": f"boom at {fake_n8n.webhook}"},
        ]
    )
    response = send(client, n8n_widget)
    body = b"".join(response.streaming_content)
    last = json.loads(body.splitlines()[-1])
    assert last["type"] == "error" and last["code"] == "upstream_error"
    assert fake_n8n.webhook.encode() not in body
    assert failed_turn(n8n_widget).failure_kind == "upstream_error"  # and no assistant message


def test_streaming_widget_accepts_a_plain_json_reply(client, n8n_widget, fake_n8n, owner):
    publish(n8n_widget, owner, config={"connection": {"n8n": {"streaming": True}}})
    fake_n8n.reply(json={"output": "Not streamed", "ui": [PRODUCT]})
    lines = [json.loads(x) for x in b"".join(send(client, n8n_widget).streaming_content).splitlines()]
    assert lines[-1] == {"type": "end", "output": "Not streamed", "ui": [PRODUCT]}


def test_upstream_timeout_is_504_without_the_url(client, n8n_widget, fake_n8n, settings):
    settings.N8N_TOTAL_TIMEOUT = 0.3
    fake_n8n.reply(sleep=1.0)
    response = send(client, n8n_widget)
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"
    assert fake_n8n.url.encode() not in response.content
    message = failed_turn(n8n_widget)
    assert (message.failure_kind, message.upstream_status) == ("upstream_timeout", None)
    assert 250 <= message.latency_ms < 1000


def test_a_stream_that_stalls_ends_with_a_timeout_line_within_the_total_time(
    client, n8n_widget, fake_n8n, owner, settings
):
    """N8N_TOTAL_TIMEOUT runs from the request to the stream's last byte, whichever task reads it."""
    publish(n8n_widget, owner, config={"connection": {"n8n": {"streaming": True}}})
    settings.N8N_TOTAL_TIMEOUT = 0.5
    fake_n8n.reply(stream=[{"type": "item", "content": "Hel"}, {"type": "item", "content": "lo"}], delay=2.0)
    started = time.monotonic()
    response = send(client, n8n_widget)
    lines = [json.loads(line) for line in b"".join(response.streaming_content).splitlines()]
    assert time.monotonic() - started < 1.5
    assert lines[0] == {"type": "item", "content": "Hel"}
    assert lines[-1]["type"] == "error" and lines[-1]["code"] == "upstream_timeout"
    assert failed_turn(n8n_widget).failure_kind == "upstream_timeout"


@pytest.mark.parametrize(
    "spec",
    [
        {"json": {"error": "bad"}, "status": 500},
        {"json": {"message": "Workflow not found"}, "status": 404},
        {"raw": "{not json", "content_type": "application/json"},
        # JSON nested past the parser's recursion limit (a hostile or broken webhook): 502, never a 500.
        {"raw": "[" * 100_000 + "]" * 100_000, "content_type": "application/json"},
        {"json": {"nothing": "here"}},
    ],
)
def test_upstream_failures_are_502_without_the_url(client, n8n_widget, fake_n8n, spec, caplog):
    fake_n8n.reply(**spec)
    response = send(client, n8n_widget)
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_error"
    assert fake_n8n.url.encode() not in response.content
    # Our own log lines never carry the webhook URL (httpx's INFO request log is the operator's choice).
    assert all(fake_n8n.url not in r.getMessage() for r in caplog.records if r.name != "httpx")
    message = failed_turn(n8n_widget)
    assert (message.failure_kind, message.upstream_status) == ("upstream_error", spec.get("status"))


def test_unreachable_upstream_is_502(client, widget_a, owner):
    widget = publish(widget_a, owner, config=n8n_config("http://127.0.0.1:9/webhook/x"))
    response = send(client, widget)
    assert response.status_code == 502
    assert b"127.0.0.1:9" not in response.content


def test_webhook_not_configured_is_503(client, widget_a, fake_n8n):
    response = send(client, widget_a)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "not_configured"


def test_webhook_in_the_draft_only_is_not_used(client, widget_a, owner, fake_n8n):
    from widgets.services.widgets import widget_update

    widget_update(widget=widget_a, membership=owner.memberships.get(), config=n8n_config(fake_n8n.webhook))
    assert send(client, widget_a).status_code == 503
    assert fake_n8n.requests == []


@pytest.mark.parametrize(
    "body,code",
    [
        ("not json", "invalid_json"),
        ("[1, 2]", "invalid_json"),
        ({"action": "sendMessage", "chatInput": "hi"}, "invalid_session_id"),
        ({"action": "sendMessage", "sessionId": "s", "chatInput": ""}, "empty_message"),
        ({"action": "sendMessage", "sessionId": "s", "chatInput": "x" * 4001}, "message_too_long"),
        ({"action": "deleteEverything", "sessionId": "s"}, "invalid_action"),
        ({"action": "sendMessage", "sessionId": "s", "chatInput": "hi", "metadata": "nope"}, "invalid_metadata"),
    ],
)
def test_invalid_bodies_are_400_and_write_nothing(client, n8n_widget, fake_n8n, body, code):
    response = chat(client, n8n_widget.license.key, body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code
    assert fake_n8n.requests == []
    assert Conversation.objects.count() == 0


def test_rate_limit_per_visitor(client, n8n_widget, fake_n8n, settings, frozen_minute):
    settings.WIDGET_CHAT_RATE_PER_MINUTE = 3
    for _ in range(3):
        assert send(client, n8n_widget, HTTP_X_SWITCHBOARD_VISITOR="v-rate").status_code == 200
    response = send(client, n8n_widget, HTTP_X_SWITCHBOARD_VISITOR="v-rate")
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(response["Retry-After"]) <= 60
    assert len(fake_n8n.requests) == 3
    assert Message.objects.count() == 6
    # Another visitor is not affected.
    assert send(client, n8n_widget, session="other", HTTP_X_SWITCHBOARD_VISITOR="v-other").status_code == 200


def test_quota_blocks_new_conversations_but_lets_existing_ones_continue(client, n8n_widget, fake_n8n):
    license = n8n_widget.license
    license.limits = {**license.limits, "monthly_conversations": 1}
    license.save()
    assert send(client, n8n_widget, session="first").status_code == 200
    assert send(client, n8n_widget, session="first").status_code == 200
    response = send(client, n8n_widget, session="second")
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "quota_exceeded"
    assert Conversation.objects.count() == 1
    assert len(fake_n8n.requests) == 2


def test_widget_of_another_license_is_404(client, n8n_widget, widget_b, fake_n8n):
    response = client.post(
        f"/api/widget/{widget_b.license.key}/chat?widget={n8n_widget.public_id}",
        data=json.dumps({"sessionId": "s", "chatInput": "hi"}),
        content_type="application/json",
        HTTP_ORIGIN=ORIGIN,
    )
    # License B allows this origin too (same factory), so the refusal comes from the widget check.
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "widget_not_found"
    assert fake_n8n.requests == []


def test_chatkit_widget_cannot_use_the_n8n_proxy(client, license_a, owner, fake_n8n):
    from widgets.tests.factories import WidgetFactory

    widget = publish(WidgetFactory(license=license_a, provider="chatkit"), owner)
    response = chat(client, license_a.key, {"sessionId": "s", "chatInput": "hi", "widget": widget.public_id})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "wrong_widget_type"


def test_async_client_streams_through_the_asgi_path(n8n_widget, fake_n8n, owner):
    """Under ASGI (Daphne) the relay is an async iterator; Django's AsyncClient drives that path."""
    from asgiref.sync import async_to_sync
    from django.test import AsyncClient

    publish(n8n_widget, owner, config={"connection": {"n8n": {"streaming": True}}})
    fake_n8n.reply(
        stream=[
            {"type": "begin"},
            {"type": "item", "content": "As"},
            {"type": "item", "content": "ync"},
            {"type": "end"},
        ]
    )

    key = n8n_widget.license.key

    async def run():
        client = AsyncClient()
        response = await client.post(
            f"/api/widget/{key}/chat",
            data=json.dumps({"action": "sendMessage", "sessionId": "as-1", "chatInput": "hi"}),
            content_type="application/json",
            headers={"Origin": ORIGIN},
        )
        assert response.is_async
        return b"".join([chunk async for chunk in response.streaming_content])

    body = async_to_sync(run)()
    assert json.loads(body.splitlines()[-1]) == {"type": "end", "output": "Async", "ui": []}
    assert Message.objects.filter(role="assistant").get().text == "Async"


@pytest.mark.django_db(transaction=True)
def test_stream_is_relayed_as_it_arrives_over_a_real_server(live_server, n8n_widget, owner, fake_n8n):
    """Over a real server (the live server), the first item arrives before n8n has finished."""
    import time

    import httpx

    publish(n8n_widget, owner, config={"connection": {"n8n": {"streaming": True}}})
    fake_n8n.reply(
        stream=[
            {"type": "begin"},
            {"type": "item", "content": "first"},
            {"type": "item", "content": " second"},
            {"type": "end"},
        ],
        delay=0.6,
    )
    started = time.monotonic()
    arrivals = []
    with httpx.stream(
        "POST",
        f"{live_server.url}/api/widget/{n8n_widget.license.key}/chat",
        json={"action": "sendMessage", "sessionId": "live-1", "chatInput": "hi"},
        headers={"Origin": ORIGIN},
        timeout=10,
    ) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line:
                arrivals.append((time.monotonic() - started, line))
    assert [line for _, line in arrivals][0] == '{"type":"item","content":"first"}'
    assert arrivals[0][0] < arrivals[-1][0] - 0.8  # the first item did not wait for the end


def test_stream_is_relayed_as_it_arrives_under_asgi(asgi_live_server, n8n_widget, owner, fake_n8n):
    """The production path (ASGI): the relay is an async iterator and the first item does not wait."""
    import time

    import httpx

    publish(n8n_widget, owner, config={"connection": {"n8n": {"streaming": True}}})
    fake_n8n.reply(
        stream=[
            {"type": "begin"},
            {"type": "item", "content": "first"},
            {"type": "item", "content": " second"},
            {"type": "end"},
        ],
        delay=0.6,
    )
    started = time.monotonic()
    arrivals = []
    with httpx.stream(
        "POST",
        f"{asgi_live_server}/api/widget/{n8n_widget.license.key}/chat",
        json={"action": "sendMessage", "sessionId": "asgi-1", "chatInput": "hi"},
        headers={"Origin": ORIGIN},
        timeout=10,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/x-ndjson"
        for line in response.iter_lines():
            if line:
                arrivals.append((time.monotonic() - started, json.loads(line)))
    assert arrivals[0][1] == {"type": "item", "content": "first"}
    assert arrivals[-1][1] == {"type": "end", "output": "first second", "ui": []}
    assert arrivals[0][0] < arrivals[-1][0] - 0.8
    assert Message.objects.filter(role="assistant").get().text == "first second"
