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
    deltas = [
        e["update"]["delta"]
        for e in events
        if e["type"] == "thread.item.updated" and e["update"]["type"] == "assistant_message.content_part.text_delta"
    ]
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
        ("user", "When do you open?"),
        ("assistant", "We open at nine."),
    ]
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


# --- tools: the same tools as voice, their UI events as ChatKit widgets ---------------------------


def test_product_question_runs_search_products_and_streams_the_card_widget(fake_openai, visitor, chatkit_widget):
    fake_openai.triggers["phone"] = ("search_products", {"query": "phone"})
    fake_openai.reply = "Here are two phones."

    response, events = visitor.send("Do you have a phone under $500?")

    assert response.status_code == 200
    widgets = [e["item"] for e in events if e["type"] == "thread.item.done" and e["item"]["type"] == "widget"]
    assert len(widgets) == 1
    card = widgets[0]["widget"]
    assert card["type"] == "ListView"
    titles = [item["children"][-1]["children"][0]["value"] for item in card["children"]]
    assert set(titles) == {"Pixel 7 phone", "iPhone 12 phone"}
    assert widgets[0]["copy_text"].startswith("I found 2 options")
    # The tool ran on the server with the tenant's data; the model got its JSON result.
    follow_up = fake_openai.responses()[1].body["input"]
    output = next(i for i in follow_up if i.get("type") == "function_call_output")
    assert '"ok": true' in output["output"] and "Pixel 7 phone" in output["output"]
    # The transcript keeps the card as the turn's UI event, like chat and voice.
    assistant = Message.objects.get(role="assistant")
    assert assistant.text == "Here are two phones."
    assert assistant.payload["ui"][0]["type"] == "ui.product_cards"


def test_tool_the_config_turns_off_is_not_offered(fake_openai, license_a, owner):
    from chatkit.tests.conftest import SERVER_CONFIG, ChatKitVisitor, make_chatkit_widget

    enabled = {name: name == "search_knowledge" for name in SERVER_CONFIG["tools"]["enabled"]}
    config = {**SERVER_CONFIG, "tools": {**SERVER_CONFIG["tools"], "enabled": enabled}}
    widget = make_chatkit_widget(license=license_a, user=owner, config=config)
    ChatKitVisitor(widget).send("Hello")

    tools = fake_openai.responses()[0].body["tools"]
    assert [t["name"] for t in tools] == ["search_knowledge"]
    assert tools[0].get("strict") is False


def _trade_in_form(fake_openai, visitor):
    fake_openai.triggers["trade"] = ("start_trade_in", {"device": "Pixel 7"})
    fake_openai.reply = "The form is on your screen."
    _, events = visitor.send("I want to trade in my phone")
    form = next(e["item"] for e in events if e["type"] == "thread.item.done" and e["item"]["type"] == "widget")
    return thread_id_of(events), form


def _submit(visitor, thread_id, form, payload):
    return visitor.call(
        {
            "type": "threads.custom_action",
            "params": {
                "thread_id": thread_id,
                "item_id": form["id"],
                "action": {"type": "trade_in.submit", "payload": payload},
            },
        }
    )


def test_trade_in_form_submit_stores_one_lead_through_the_lead_service(fake_openai, visitor, chatkit_widget):
    from widgets.models import Lead

    thread_id, form = _trade_in_form(fake_openai, visitor)
    assert form["widget"]["type"] == "Card"
    fields = form["widget"]["children"][1]
    assert fields["type"] == "Form" and fields["onSubmitAction"]["type"] == "trade_in.submit"
    device = next(c for c in fields["children"] if c.get("name") == "device")
    assert device["defaultValue"] == "Pixel 7"
    payload = {
        "device": "Pixel 7",
        "condition": "Good",
        "name": "Ada Lovelace",
        "email": "ada@example.com",
        "phone": "+44 20 7946 0000",
    }

    response, events = _submit(visitor, thread_id, form, payload)
    again, _ = _submit(visitor, thread_id, form, payload)

    assert response.status_code == 200 and again.status_code == 200
    lead = Lead.objects.get()
    assert (lead.source, lead.name, lead.email, lead.widget) == (
        "trade_in_form",
        "Ada Lovelace",
        "ada@example.com",
        chatkit_widget,
    )
    assert lead.data == {"device": "Pixel 7", "condition": "Good"}
    assert lead.conversation == Conversation.objects.get()
    replaced = next(e["item"] for e in events if e["type"] == "thread.item.replaced")
    assert replaced["id"] == form["id"] and replaced["widget"]["status"]["text"] == "Sent"
    # The model learns it next turn (hidden context), the visitor never sees that item.
    assert ChatKitItem.objects.filter(item_type="hidden_context_item").count() == 1
    visitor.send("thanks", thread_id)
    last_input = str(fake_openai.responses()[-1].body["input"])
    assert "submitted the trade-in form" in last_input


def test_trade_in_submit_with_a_bad_email_stores_nothing_and_says_why(fake_openai, visitor):
    from widgets.models import Lead

    thread_id, form = _trade_in_form(fake_openai, visitor)
    response, events = _submit(
        visitor, thread_id, form, {"device": "Pixel 7", "condition": "Good", "name": "Ada", "email": "not-an-email"}
    )

    assert response.status_code == 200
    assert Lead.objects.count() == 0
    said = [
        e["item"]["content"][0]["text"]
        for e in events
        if e["type"] == "thread.item.done" and e["item"]["type"] == "assistant_message"
    ]
    assert "valid email" in said[0]


# --- ownership: threads belong to one visitor of one widget ---------------------------------------


def test_thread_list_shows_only_this_visitors_threads(fake_openai, visitor, chatkit_widget):
    from chatkit.tests.conftest import ChatKitVisitor

    _, mine1 = visitor.send("one")
    _, mine2 = visitor.send("two")
    ChatKitVisitor(chatkit_widget).send("someone else's")

    response, (page,) = visitor.call({"type": "threads.list", "params": {"limit": 10, "order": "desc"}})

    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    assert [t["id"] for t in page["data"]] == [thread_id_of(mine2), thread_id_of(mine1)]
    assert page["has_more"] is False
    # Keyset paging on (created_at, seq): one per page, in order, nothing twice.
    response, (first,) = visitor.call({"type": "threads.list", "params": {"limit": 1, "order": "desc"}})
    _, (second,) = visitor.call(
        {"type": "threads.list", "params": {"limit": 1, "order": "desc", "after": first["after"]}}
    )
    assert first["has_more"] is True and [t["id"] for t in first["data"] + second["data"]] == [
        thread_id_of(mine2),
        thread_id_of(mine1),
    ]


def _foreign_requests(thread_id: str, item_id: str = "msg_x") -> list[dict]:
    content = {"content": [{"type": "input_text", "text": "hi"}], "attachments": [], "inference_options": {}}
    return [
        {"type": "threads.get_by_id", "params": {"thread_id": thread_id}},
        {"type": "threads.add_user_message", "params": {"thread_id": thread_id, "input": content}},
        {"type": "items.list", "params": {"thread_id": thread_id}},
        {"type": "threads.update", "params": {"thread_id": thread_id, "title": "mine now"}},
        {"type": "threads.delete", "params": {"thread_id": thread_id}},
        {"type": "threads.retry_after_item", "params": {"thread_id": thread_id, "item_id": item_id}},
        {
            "type": "threads.custom_action",
            "params": {
                "thread_id": thread_id,
                "item_id": item_id,
                "action": {"type": "trade_in.submit", "payload": {}},
            },
        },
        {"type": "items.feedback", "params": {"thread_id": thread_id, "item_ids": [item_id], "kind": "positive"}},
    ]


@pytest.mark.parametrize("who", ["other_visitor", "other_tenant"])
def test_another_visitors_or_tenants_thread_is_404_before_any_byte_streams(
    fake_openai, visitor, chatkit_widget, who, license_b, outsider
):
    from chatkit.tests.conftest import SERVER_CONFIG, ChatKitVisitor, make_chatkit_widget

    _, events = visitor.send("my secret question")
    thread_id = thread_id_of(events)
    item_id = next(e["item"]["id"] for e in events if e["type"] == "thread.item.done")
    if who == "other_visitor":
        intruder = ChatKitVisitor(chatkit_widget)
    else:
        license_b.allowed_domains = ["shop.example.com"]
        license_b.save()
        intruder = ChatKitVisitor(make_chatkit_widget(license=license_b, user=outsider, config=SERVER_CONFIG))
    calls = len(fake_openai.responses())

    for body in _foreign_requests(thread_id, item_id):
        response, (error,) = intruder.call(body)
        assert response.status_code == 404, body["type"]
        assert not response.streaming
        assert error == {"error": {"code": "not_found", "message": "No such conversation."}}

    assert len(fake_openai.responses()) == calls
    thread = ChatKitThread.objects.get(thread_id=thread_id)
    assert thread.data.get("title") is None and thread.items.count() == 2


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ("{", "invalid_json"),
        ("[]", "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
        ('{"type": "threads.nope", "params": {}}', "invalid_request"),
        ('{"type": "threads.create", "params": {}}', "invalid_request"),
        ('{"type": "threads.list", "params": {}, "metadata": {"x": "a\\u0000b"}}', "invalid_text"),
        ('{"type": "threads.list", "params": {}, "metadata": {"x": "\\ud800"}}', "invalid_text"),
    ],
)
def test_malformed_body_is_400_in_our_error_shape(fake_openai, visitor, body, code):
    response, (error,) = visitor.call(body)
    assert response.status_code == 400, body
    assert error["error"]["code"] == code
    assert not ChatKitThread.objects.exists()


def test_oversized_body_is_413(fake_openai, visitor, settings):
    settings.CHATKIT_MAX_BODY_BYTES = 1024
    response, (error,) = visitor.send("x" * 2000)
    assert response.status_code == 413 and fake_openai.requests == []


def test_attachments_are_refused_in_server_mode(fake_openai, visitor):
    response, (error,) = visitor.call(
        {
            "type": "threads.create",
            "params": {
                "input": {
                    "content": [{"type": "input_text", "text": "see file"}],
                    "attachments": ["atc_1"],
                    "inference_options": {},
                }
            },
        }
    )
    assert response.status_code == 400 and error["error"]["code"] == "attachments_disabled"
    assert ChatKitThread.objects.count() == 0


def test_get_is_405(fake_openai, visitor):
    from django.test import Client

    response = Client().get(visitor.url, HTTP_ORIGIN="http://testserver")
    assert response.status_code == 405 and response.json()["error"]["code"] == "method_not_allowed"


# --- who may call: origin, page token, visitor ----------------------------------------------------


def test_own_origin_without_page_token_is_refused(fake_openai, visitor):
    response, (error,) = visitor.call({"type": "threads.list", "params": {}}, **{"X-Switchboard-Page-Token": ""})
    assert response.status_code == 403 and error["error"]["code"] == "page_token_missing"


@pytest.mark.parametrize("origin", [None, "null", "https://evil.example.net", "https://shop.example.com"])
def test_calls_not_from_our_chatkit_page_are_refused(fake_openai, visitor, origin):
    """Only the ChatKit page (our origin + its token) may call; even an allowed customer origin
    cannot call directly (it holds no visitor token and would read other pages' streams)."""
    headers = {"Origin": origin} if origin else {"Origin": ""}
    response, (error,) = visitor.call({"type": "threads.list", "params": {}}, **headers)
    assert response.status_code == 403
    assert error["error"]["code"] in ("origin_missing", "domain_not_allowed", "wrong_origin")


def test_page_token_for_a_site_no_longer_allowed_is_refused(fake_openai, visitor, chatkit_widget):
    license = chatkit_widget.license
    license.allowed_domains = ["other.example.com"]
    license.save()

    response, (error,) = visitor.call({"type": "threads.list", "params": {}})
    assert response.status_code == 403 and error["error"]["code"] == "domain_not_allowed"


@pytest.mark.parametrize("token", ["", "forged", "visitor-123"])
def test_visitor_must_be_a_token_we_signed(fake_openai, visitor, token):
    response, (error,) = visitor.call({"type": "threads.list", "params": {}}, **{"X-Switchboard-Visitor": token})
    assert response.status_code == 403 and error["error"]["code"] == "visitor_invalid"


def test_visitor_token_of_another_license_is_refused(fake_openai, visitor, license_b):
    from chatkit.tokens import visitor_token_issue

    token = visitor_token_issue(license=license_b)
    response, (error,) = visitor.call({"type": "threads.list", "params": {}}, **{"X-Switchboard-Visitor": token})
    assert response.status_code == 403 and error["error"]["code"] == "visitor_invalid"


@pytest.mark.parametrize("status", ["suspended", "revoked"])
def test_inactive_license_is_refused(fake_openai, visitor, chatkit_widget, status):
    license = chatkit_widget.license
    license.status = status
    license.save()
    response, (error,) = visitor.call({"type": "threads.list", "params": {}})
    assert response.status_code == 403 and error["error"]["code"] == status


# --- limits: per visitor, per license, the monthly cap --------------------------------------------


def test_visitor_rate_limit_is_429_with_retry_after(fake_openai, visitor, settings, frozen_minute):
    settings.CHATKIT_VISITOR_RATE_PER_MINUTE = 2
    visitor.send("one")
    visitor.send("two")

    response, (error,) = visitor.send("three")

    assert response.status_code == 429 and error["error"]["code"] == "rate_limited"
    assert int(response["Retry-After"]) == 40
    assert len(fake_openai.responses()) == 2
    # Another visitor of the same site is not slowed down by this one.
    from chatkit.tests.conftest import ChatKitVisitor

    assert ChatKitVisitor(visitor.widget).send("hello")[0].status_code == 200


def test_license_rate_limit_covers_all_visitors(fake_openai, visitor, settings, frozen_minute):
    from chatkit.tests.conftest import ChatKitVisitor

    settings.CHATKIT_LICENSE_RATE_PER_MINUTE = 2
    visitor.send("one")
    ChatKitVisitor(visitor.widget).send("two")

    response, (error,) = ChatKitVisitor(visitor.widget).send("three")
    assert response.status_code == 429 and error["error"]["code"] == "rate_limited"


def test_monthly_cap_refuses_new_threads_before_streaming_but_lets_open_ones_go_on(
    fake_openai, visitor, chatkit_widget
):
    from licenses.models import License

    _, events = visitor.send("first")
    License.objects.filter(pk=chatkit_widget.license.pk).update(
        limits={**chatkit_widget.license.limits, "monthly_conversations": 1}
    )

    response, (error,) = visitor.send("a new conversation")
    going_on, _ = visitor.send("more in the first one", thread_id_of(events))

    assert response.status_code == 429 and error["error"]["code"] == "quota_exceeded"
    assert going_on.status_code == 200
    assert ChatKitThread.objects.count() == 1
    assert LicenseUsage.objects.get().chatkit_sessions == 1


@pytest.mark.django_db(transaction=True)
def test_monthly_cap_is_exact_under_concurrency(license_a, owner):
    import threading

    from django.db import connection

    from chatkit.client import ChatKitError
    from chatkit.services import chatkit_thread_reserve
    from licenses.models import License

    if connection.vendor == "sqlite":
        pytest.skip("SQLite serialises writers; the race this guards against needs PostgreSQL (CI runs it).")
    License.objects.filter(pk=license_a.pk).update(limits={**license_a.limits, "monthly_conversations": 10})
    license_a.refresh_from_db()
    refused: list[int] = []

    def work(i: int) -> None:
        try:
            chatkit_thread_reserve(license=license_a)
        except ChatKitError:
            refused.append(i)
        finally:
            connection.close()

    pool = [threading.Thread(target=work, args=(i,)) for i in range(30)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()

    assert LicenseUsage.objects.get(license=license_a).chatkit_sessions == 10
    assert len(refused) == 20


# --- usage and errors ------------------------------------------------------------------------------


def test_usage_is_recorded_per_conversation_and_month_with_estimated_cost(fake_openai, visitor, chatkit_widget):
    from decimal import Decimal

    fake_openai.triggers["phone"] = ("search_products", {"query": "phone"})
    visitor.send("a phone please")

    conversation = Conversation.objects.get()
    # Two upstream responses of 50 in (10 cached) / 7 out each, on gpt-6-sol ($2 / $0.20 / $10 per 1M).
    assert conversation.usage["requests"] == 2
    assert conversation.usage["input_tokens"] == 100 and conversation.usage["input_cached_tokens"] == 20
    assert conversation.usage["output_tokens"] == 14 and conversation.usage["model"] == "gpt-6-sol"
    expected = Decimal("0.000304")  # (80*2 + 20*0.2 + 14*10) / 1e6
    assert conversation.cost_usd == expected
    assert LicenseUsage.objects.get(license=chatkit_widget.license).cost_usd == expected


@pytest.mark.parametrize(
    ("mode", "code", "words"),
    [
        ("401", "invalid_api_key", "API key was refused"),
        ("404", "model_not_found", "model is not available"),
        ("429", "upstream_rate_limited", "busy right now"),
        ("500", "upstream_error", "could not answer"),
    ],
)
def test_upstream_errors_become_a_chatkit_error_in_plain_words(fake_openai, visitor, mode, code, words):
    fake_openai.reset(mode=mode)

    response, events = visitor.send("hello")

    assert response.status_code == 200  # the stream had started: ChatKit shows the error event
    error = events[-1]
    assert error["type"] == "error" and error["code"] == "custom" and words in error["message"]
    assert TENANT_KEY not in str(events) and "sk-tena" not in str(events)
    conversation = Conversation.objects.get()
    assert conversation.end_reason == f"failed:{code}"
    assert not conversation.messages.exists()  # nothing half-saved in the transcript
    assert not ChatKitItem.objects.filter(item_type="assistant_message").exists()


def test_upstream_timeout_is_a_plain_error_and_the_next_good_turn_clears_the_failure(fake_openai, visitor, settings):
    settings.CHATKIT_TIMEOUT = 0.3
    fake_openai.reset(mode="slow", delay=1.0)
    _, events = visitor.send("hello")
    assert events[-1]["type"] == "error" and "took too long" in events[-1]["message"]
    assert events[-1]["allow_retry"] is True
    assert Conversation.objects.get().end_reason == "failed:upstream_timeout"

    fake_openai.reset()
    response, _ = visitor.send("hello again", thread_id_of(events))
    assert response.status_code == 200
    assert Conversation.objects.get().end_reason == ""


def test_failure_after_a_tool_card_removes_what_the_turn_streamed(fake_openai, visitor):
    fake_openai.steps.append({"call": "search_products", "arguments": {"query": "phone"}})
    fake_openai.fail_follow_up = 429  # the call after the tool fails: the card streamed before it must go too

    _, events = visitor.send("phones?")

    assert events[-1]["type"] == "error"
    removed = [e["item_id"] for e in events if e["type"] == "thread.item.removed"]
    widget_ids = [e["item"]["id"] for e in events if e["type"] == "thread.item.done" and e["item"]["type"] == "widget"]
    # The card is streamed and removed again, or (when the failure wins the race with the tool's event
    # queue) never streamed at all; either way nothing of the turn stays.
    assert removed == widget_ids and len(widget_ids) <= 1
    assert list(ChatKitItem.objects.values_list("item_type", flat=True)) == ["user_message"]
    assert not Message.objects.exists()


def test_usage_is_recorded_after_a_client_disconnect(fake_openai, visitor, chatkit_widget):
    """The visitor closes the tab while the answer streams: what the run used so far still counts,
    and the upstream call is stopped. Django cancels the response iterator on disconnect."""
    import asyncio

    from asgiref.sync import async_to_sync

    fake_openai.steps.extend(
        [{"call": "search_products", "arguments": {"query": "phone"}}, {"text": "A long answer " * 20}]
    )
    fake_openai.chunks, fake_openai.chunk_delay = 20, 0.2
    seen: list[bytes] = []

    async def visit_then_leave():
        body = {
            "type": "threads.create",
            "params": {
                "input": {
                    "content": [{"type": "input_text", "text": "phones?"}],
                    "attachments": [],
                    "inference_options": {},
                }
            },
        }
        response = await visitor.apost(body)
        assert response.status_code == 200

        async def read():
            async for chunk in response.streaming_content:
                seen.append(chunk)

        reader = asyncio.ensure_future(read())
        while not any(b"text_delta" in c for c in seen):  # the answer has started streaming
            await asyncio.sleep(0.02)
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader

    async_to_sync(visit_then_leave)()

    conversation = Conversation.objects.get()
    # The tool round (one completed response) is billed; the interrupted answer had no usage yet.
    assert conversation.usage["requests"] == 1 and conversation.usage["input_tokens"] == 50
    assert conversation.cost_usd > 0
    assert LicenseUsage.objects.get(license=chatkit_widget.license).cost_usd == conversation.cost_usd
    # No transcript row for a turn that never finished.
    assert not Message.objects.exists()


def test_an_answer_holding_a_nul_is_streamed_and_stored_mended(fake_openai, visitor, chatkit_widget):
    """A model can be led to write a NUL, which PostgreSQL refuses in text and JSONB: before, the visitor got a
    stream error, the answer was not stored and neither turn reached the transcript. Now both do, the NUL as
    U+FFFD (licenses.api.storable)."""
    fake_openai.reply = "We open\u0000 at nine."
    response, events = visitor.send("When do you open?")
    assert response.status_code == 200
    assert not [e for e in events if e["type"] == "error"]
    done = [e["item"] for e in events if e["type"] == "thread.item.done" and e["item"]["type"] == "assistant_message"]
    assert len(done) == 1
    assert [(m.role, m.text) for m in Message.objects.order_by("id")] == [
        ("user", "When do you open?"),
        ("assistant", "We open\ufffd at nine."),
    ]
    stored = ChatKitItem.objects.get(item_type="assistant_message").data
    assert stored["content"][0]["text"] == "We open\ufffd at nine."
