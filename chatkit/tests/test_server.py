"""POST /api/chatkit/<key>/ against the fake Responses API: our whole ChatKit server path, headers and bodies."""

from __future__ import annotations

import pytest

from chatkit.models import ChatKitItem, ChatKitThread
from chatkit.tests.conftest import PLATFORM_KEY, TENANT_KEY, thread_id_of
from licenses.models import LicenseUsage
from widgets.models import Channel, Conversation, Message

pytestmark = pytest.mark.django_db


def test_a_message_streams_a_reply_stored_as_turns(fake_openai, visitor, chatkit_widget):
    fake_openai.reply = "We open at nine."

    response, events = visitor.send("When do you open?")

    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    assert response["Cache-Control"] == "no-store"
    assert response["X-Accel-Buffering"] == "no"
    types = [e["type"] for e in events]
    assert types[:3] == ["thread.created", "thread.item.done", "stream_options"]
    deltas = [e["update"]["delta"] for e in events if e["type"] == "thread.item.updated"
              and e["update"]["type"] == "assistant_message.content_part.text_delta"]
    assert "".join(deltas) == "We open at nine." and len(deltas) == 3
    done = [e["item"] for e in events if e["type"] == "thread.item.done" and e["item"]["type"] == "assistant_message"]
    assert done[0]["id"] == fake_openai.message_ids[0]
    # The upstream request: the tenant's key, the widget's model, streaming, stored nowhere at OpenAI.
    (upstream,) = fake_openai.responses()
    assert upstream.headers["authorization"] == f"Bearer {TENANT_KEY}"
    assert upstream.body["model"] == "gpt-6-sol"
    assert upstream.body["stream"] is True and upstream.body["store"] is False
    assert "Demo Shop" in upstream.body["instructions"] and "Open Monday to Friday" in upstream.body["instructions"]
    assert {t["name"] for t in upstream.body["tools"]} >= {"search_products", "start_trade_in"}
    # Stored: the thread and its items, and the turn as transcript rows beside chat and voice.
    thread = ChatKitThread.objects.get()
    assert thread.thread_id == thread_id_of(events) and len(thread.thread_id) == 4 + 24
    conversation = thread.conversation
    assert conversation.channel == Channel.CHATKIT and conversation.widget == chatkit_widget
    assert [(m.role, m.text) for m in conversation.messages.all()] == [
        ("user", "When do you open?"), ("assistant", "We open at nine.")]
    assert sorted(ChatKitItem.objects.values_list("item_type", flat=True)) == ["assistant_message", "user_message"]


def test_second_turn_feeds_the_history_and_gets_a_unique_message_id(fake_openai, visitor):
    _, first = visitor.send("Hi")
    thread_id = thread_id_of(first)
    fake_openai.reply = "Sure."

    response, events = visitor.send("And on Saturday?", thread_id)

    assert response.status_code == 200
    second = fake_openai.responses()[-1].body["input"]
    texts = [part.get("text") for item in second for part in (item.get("content") or []) if isinstance(part, dict)]
    assert "Hi" in texts and "And on Saturday?" in texts and "Hello! How can I help you today?" in texts
    assert len(set(fake_openai.message_ids)) == 2
    assert ChatKitItem.objects.filter(item_type="assistant_message").count() == 2
    assert Message.objects.count() == 4


def test_platform_key_is_used_when_the_widget_has_none(fake_openai, license_a, owner):
    from chatkit.tests.conftest import SERVER_CONFIG, ChatKitVisitor, make_chatkit_widget

    widget = make_chatkit_widget(license=license_a, user=owner, config=SERVER_CONFIG, secrets={})
    response, _ = ChatKitVisitor(widget).send("Hello")

    assert response.status_code == 200
    assert fake_openai.responses()[0].headers["authorization"] == f"Bearer {PLATFORM_KEY}"


def test_new_thread_counts_once_against_the_month(fake_openai, visitor, chatkit_widget):
    _, events = visitor.send("Hi")
    visitor.send("Again", thread_id_of(events))

    usage = LicenseUsage.objects.get(license=chatkit_widget.license)
    assert usage.chatkit_sessions == 1
    assert Conversation.objects.count() == 1
