"""POST /api/widget/<key>/voice/record: a WebRTC call's transcript turns and token counts, from the browser.

The browser is not trusted with money: it reports token counts only, the server computes the cost with
REALTIME_PRICES and bills our own clock's call time. Refusals: bad shape (400 `invalid` naming the field),
oversize (413), another license's token, another widget's conversation, a forged or expired token (403
`invalid_token`), a call over for more than the grace (409 `call_ended`), a foreign Origin (403).
"""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core import signing
from django.test import Client
from django.utils import timezone

from licenses.models import LicenseUsage
from realtime import services as svc
from realtime.tests.fakes import USAGE  # one response.done usage block (GA shape), as the browser sums them
from realtime.views import CALL_TOKEN_GRACE_SECONDS, tools_token_make
from widgets.models import Conversation, Message

pytestmark = pytest.mark.django_db

ORIGIN = "https://shop.example.com"
# USD per 1M tokens: easy sums. text in 100-50 cached, audio in 100, text out 30, audio out 100.
PRICES = {
    "text_in": 4.0,
    "text_in_cached": 0.4,
    "audio_in": 32.0,
    "audio_in_cached": 0.4,
    "text_out": 16.0,
    "audio_out": 64.0,
}
COST = Decimal("0.010300")  # (50*4 + 50*0.4 + 100*32 + 30*16 + 100*64) / 1e6 = 0.0103
TURNS = [
    {"role": "user", "text": "Do you have phones under 500 dollars?", "item_id": "item_u1"},
    {"role": "assistant", "text": "We have two phones.", "item_id": "item_a1"},
]


@pytest.fixture
def prices(settings):
    settings.REALTIME_PRICES = {settings.REALTIME_DEFAULT_MODEL: PRICES}


def start_call(widget) -> dict:
    body = {"license": widget.license.key, "widget": widget.public_id, "visitor_id": "visitor-1"}
    response = Client().post(
        "/api/realtime/client-secret", json.dumps(body), content_type="application/json", HTTP_ORIGIN=ORIGIN
    )
    assert response.status_code == 200, response.content
    return response.json()


def record(widget, body, *, origin=ORIGIN, key=None, raw=None):
    headers = {"HTTP_ORIGIN": origin} if origin else {}
    return Client().post(
        f"/api/widget/{key or widget.license.key}/voice/record",
        raw if raw is not None else json.dumps(body),
        content_type="application/json",
        **headers,
    )


def call_of(call: dict) -> Conversation:
    return Conversation.objects.get(pk=signing.loads(call["tools_token"], salt="switchboard.realtime.tools")["c"])


def age(conversation: Conversation, seconds: float) -> None:
    """Make the call `seconds` old (started_at moves back, on our clock)."""
    Conversation.objects.filter(pk=conversation.pk).update(started_at=timezone.now() - timedelta(seconds=seconds))


@pytest.fixture
def voice_widget_b(license_b, outsider, make_voice_widget):
    return make_voice_widget(license=license_b, user=outsider, name="Voice B")


class TestRecord:
    def test_turns_and_usage_are_stored_and_cost_computed_here(self, voice_widget, fake_openai_http, prices):
        call = start_call(voice_widget)
        assert call["record_url"] == f"/api/widget/{voice_widget.license.key}/voice/record"
        assert call["calls_url"] == fake_openai_http.url + "/v1/realtime/calls"
        conversation = call_of(call)
        age(conversation, 12)
        response = record(voice_widget, {"token": call["tools_token"], "turns": TURNS, "usage": USAGE})
        assert response.status_code == 200, response.content
        assert response.json() == {"saved": 2, "end": None, "warning": None}
        assert response["Access-Control-Allow-Origin"] == ORIGIN
        conversation.refresh_from_db()
        assert list(conversation.messages.order_by("id").values_list("role", "text", "item_id")) == [
            ("user", "Do you have phones under 500 dollars?", "item_u1"),
            ("assistant", "We have two phones.", "item_a1"),
        ]
        assert conversation.usage == svc.usage_add({}, USAGE)
        assert conversation.cost_usd == COST
        assert 12 <= conversation.audio_in_seconds < 20  # our clock, not the browser's word
        assert conversation.ended_at is None and conversation.heartbeat_at is not None
        usage = LicenseUsage.objects.get(license=voice_widget.license)
        assert usage.cost_usd == COST and usage.voice_seconds == pytest.approx(conversation.audio_in_seconds)

    def test_a_replayed_or_stale_post_changes_nothing(self, voice_widget, fake_openai_http, prices):
        call = start_call(voice_widget)
        conversation = call_of(call)
        body = {"token": call["tools_token"], "turns": TURNS, "usage": USAGE}
        assert record(voice_widget, body).json()["saved"] == 2
        assert record(voice_widget, body).json()["saved"] == 0
        smaller = {"token": call["tools_token"], "usage": {"input_tokens": 1, "output_tokens": 1}}
        assert record(voice_widget, smaller).status_code == 200
        conversation.refresh_from_db()
        assert conversation.messages.count() == 2
        assert conversation.usage == svc.usage_add({}, USAGE) and conversation.cost_usd == COST
        assert LicenseUsage.objects.get(license=voice_widget.license).cost_usd == COST

    def test_a_cost_from_the_browser_is_refused(self, voice_widget, fake_openai_http, prices):
        call = start_call(voice_widget)
        for body, field in (
            ({"token": call["tools_token"], "cost_usd": 0}, "body"),
            ({"token": call["tools_token"], "usage": {**USAGE, "cost": 0.0}}, "usage"),
        ):
            response = record(voice_widget, body)
            assert response.status_code == 400
            error = response.json()["error"]
            assert error["code"] == "invalid" and list(error["fields"]) == [field]
            assert "Additional properties are not allowed" in error["message"]
        assert call_of(call).cost_usd == 0

    def test_token_counts_past_what_the_call_time_allows_are_capped(self, voice_widget, fake_openai_http, prices):
        """A browser claiming 100M tokens of each kind one second into its call (a $11,600 bill at these
        prices, and past PostgreSQL's numeric(12,6) once summed over a few dozen calls) is billed at most
        what the call's time on our clock allows."""
        call = start_call(voice_widget)
        conversation = call_of(call)
        age(conversation, 10)
        big = 100_000_000
        usage = {
            "input_tokens": big,
            "output_tokens": big,
            "input_token_details": {"text_tokens": big, "audio_tokens": big},
            "output_token_details": {"text_tokens": big, "audio_tokens": big},
        }
        assert record(voice_widget, {"token": call["tools_token"], "usage": usage}).status_code == 200
        conversation.refresh_from_db()
        seconds = 10 + svc.WEBRTC_USAGE_SLACK_SECONDS + 5  # the test's own run time included
        assert conversation.usage["input_audio_tokens"] <= seconds * svc.WEBRTC_MAX_INPUT_TOKENS_PER_SECOND
        assert conversation.usage["output_audio_tokens"] <= seconds * svc.WEBRTC_MAX_OUTPUT_TOKENS_PER_SECOND
        assert conversation.usage["input_audio_tokens"] >= 10 * svc.WEBRTC_MAX_INPUT_TOKENS_PER_SECOND
        assert conversation.cost_usd < Decimal("100")
        assert LicenseUsage.objects.get(license=voice_widget.license).cost_usd == conversation.cost_usd
        # An honest call's counts stay as reported (the cap is far above any real call's rate).
        honest = start_call(voice_widget)
        assert record(voice_widget, {"token": honest["tools_token"], "usage": USAGE}).status_code == 200
        assert call_of(honest).usage == svc.usage_add({}, USAGE)

    def test_reports_are_rate_limited_per_call(self, voice_widget, fake_openai_http, settings, frozen_minute):
        settings.WIDGET_CHAT_RATE_PER_MINUTE = 3
        call = start_call(voice_widget)
        statuses = [
            record(voice_widget, {"token": call["tools_token"], "turns": [{**TURNS[0], "item_id": f"item_{i}"}]})
            for i in range(5)
        ]
        assert [r.status_code for r in statuses] == [200, 200, 200, 429, 429]
        assert statuses[-1].json()["error"]["code"] == "rate_limited" and statuses[-1]["Retry-After"]
        assert call_of(call).messages.count() == 3
        other = start_call(voice_widget)  # another call of the same license has its own allowance
        assert record(voice_widget, {"token": other["tools_token"]}).status_code == 200

    def test_hangup_ends_the_call(self, voice_widget, fake_openai_http, prices):
        call = start_call(voice_widget)
        response = record(voice_widget, {"token": call["tools_token"], "usage": USAGE, "end": "hangup"})
        assert response.json()["end"] == {"reason": "hangup", "message": "The call ended."}
        conversation = call_of(call)
        assert conversation.ended_at is not None and conversation.end_reason == "hangup"
        assert conversation.cost_usd == COST
        # The tools stop working with the call.
        tool = Client().post(
            f"/api/widget/{voice_widget.license.key}/tools/search_products",
            json.dumps({"token": call["tools_token"], "arguments": {"query": "phone"}}),
            content_type="application/json",
            HTTP_ORIGIN=ORIGIN,
        )
        assert tool.status_code == 403 and tool.json()["error"]["code"] == "invalid_token"

    def test_a_late_post_after_the_end_stores_turns_in_the_grace_then_is_refused(
        self, voice_widget, fake_openai_http, prices
    ):
        call = start_call(voice_widget)
        token = call["tools_token"]
        assert record(voice_widget, {"token": token, "usage": USAGE, "end": "hangup"}).status_code == 200
        late = record(voice_widget, {"token": token, "turns": TURNS[1:], "usage": {**USAGE, "input_tokens": 9000}})
        assert late.status_code == 200 and late.json()["saved"] == 1
        conversation = call_of(call)
        assert conversation.cost_usd == COST and conversation.usage["input_tokens"] == 200  # nothing more billed
        Conversation.objects.filter(pk=conversation.pk).update(
            ended_at=timezone.now() - timedelta(seconds=svc.WEBRTC_TURN_GRACE_SECONDS + 1)
        )
        response = record(voice_widget, {"token": token, "turns": TURNS[:1]})
        assert response.status_code == 409
        assert response.json() == {"error": {"code": "call_ended", "message": "This call has ended."}}
        assert conversation.messages.count() == 1

    def test_minutes_cap_ends_the_call(self, voice_widget, fake_openai_http, prices):
        license = voice_widget.license
        license.limits = {**license.limits, "monthly_voice_minutes": 1}
        license.save()
        call = start_call(voice_widget)
        conversation = call_of(call)
        age(conversation, 20)
        response = record(voice_widget, {"token": call["tools_token"]})
        assert response.json()["warning"] == {
            "code": "voice_minutes_low",
            "message": "This site's voice minutes are almost used up.",
        }
        age(conversation, 61)
        response = record(voice_widget, {"token": call["tools_token"], "turns": TURNS})
        assert response.status_code == 200
        assert response.json() == {
            "saved": 2,
            "end": {
                "reason": "voice_minutes_exhausted",
                "message": "This site has used its voice minutes for the month.",
            },
            "warning": None,
        }
        conversation.refresh_from_db()
        assert conversation.end_reason == "voice_minutes_exhausted" and conversation.ended_at is not None
        assert LicenseUsage.objects.get(license=license).voice_seconds == pytest.approx(conversation.audio_in_seconds)

    def test_max_length_ends_the_call_and_caps_the_billed_seconds(self, voice_widget, fake_openai_http, prices):
        call = start_call(voice_widget)
        conversation = call_of(call)
        max_seconds = call["max_session_seconds"]
        assert max_seconds == 900
        age(conversation, max_seconds + 30)
        response = record(voice_widget, {"token": call["tools_token"], "usage": USAGE})
        assert response.json()["end"]["reason"] == "max_duration"
        conversation.refresh_from_db()
        assert conversation.audio_in_seconds == max_seconds and conversation.end_reason == "max_duration"


class TestRecordRefusals:
    def test_bad_shapes_name_the_field(self, voice_widget, fake_openai_http):
        token = start_call(voice_widget)["tools_token"]
        cases = [
            ({"turns": TURNS}, "body", "body: 'token' is a required property"),
            ({"token": token, "turns": "hello"}, "turns", "turns: 'hello' is not of type 'array'"),
            (
                {"token": token, "turns": [{**TURNS[0], "role": "system"}]},
                "turns[0].role",
                "turns[0].role: 'system' is not one of ['user', 'assistant']",
            ),
            (
                {"token": token, "turns": [{**TURNS[0], "text": "x" * 4001}]},
                "turns[0].text",
                "turns[0].text is too long (at most 4000 characters).",
            ),
            ({"token": token, "turns": [TURNS[0]] * 17}, "turns", "turns has too many items (at most 16)."),
            (
                {"token": token, "turns": [{**TURNS[0], "item_id": "a b"}]},
                "turns[0].item_id",
                "turns[0].item_id: 'a b' does not match '^[A-Za-z0-9_-]{1,64}$'",
            ),
            (
                {"token": token, "usage": {"input_tokens": -5}},
                "usage.input_tokens",
                "usage.input_tokens: -5 is less than the minimum of 0",
            ),
            (
                {"token": token, "usage": {"output_tokens": 10**9}},
                "usage.output_tokens",
                "usage.output_tokens is too large (at most 100000000).",
            ),
            ({"token": token, "end": "exploded"}, "end", "end: 'exploded' is not one of"),
        ]
        for body, field, message in cases:
            response = record(voice_widget, body)
            assert response.status_code == 400, body
            error = response.json()["error"]
            assert error["code"] == "invalid" and list(error["fields"]) == [field], error
            assert error["message"].startswith(message), error
        assert Message.objects.count() == 0

    def test_not_json_and_oversize(self, voice_widget, fake_openai_http):
        token = start_call(voice_widget)["tools_token"]
        response = record(voice_widget, None, raw="[1, 2]")
        assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"
        # 4 turns of 3000 characters each, sent as JSON escapes (6 bytes each): 72 KB.
        big = {"token": token, "turns": [{**TURNS[0], "text": "\u00e9" * 3000, "item_id": f"i{n}"} for n in range(4)]}
        response = record(voice_widget, big)
        assert response.status_code == 413
        assert response.json() == {
            "error": {"code": "payload_too_large", "message": "The request body is larger than 64 KB."}
        }
        assert Message.objects.count() == 0

    def test_another_licenses_token_is_refused(self, voice_widget, voice_widget_b, fake_openai_http):
        token_b = start_call(voice_widget_b)["tools_token"]
        response = record(voice_widget, {"token": token_b, "turns": TURNS})
        assert response.status_code == 403
        assert response.json() == {
            "error": {"code": "invalid_token", "message": "The call token is missing, expired or not for this call."}
        }
        assert Message.objects.count() == 0

    def test_another_widgets_conversation_is_refused(
        self, voice_widget, voice_widget_b, fake_openai_http, owner, make_voice_widget
    ):
        # A token of license A whose claims pair one of A's widgets with a conversation of another widget
        # (of license B, or of another widget of A) finds nothing.
        foreign = call_of(start_call(voice_widget_b))
        other_a = make_voice_widget(license=voice_widget.license, user=owner, name="Other A")
        own_other = Conversation.objects.create(widget=other_a, channel="voice")
        for conversation in (foreign, own_other):
            token = tools_token_make(
                license=voice_widget.license, widget_id=voice_widget.pk, conversation_id=conversation.pk
            )
            response = record(voice_widget, {"token": token, "turns": TURNS})
            assert response.status_code == 403 and response.json()["error"]["code"] == "invalid_token"
        assert Message.objects.count() == 0

    def test_forged_and_expired_tokens_are_refused(self, voice_widget, fake_openai_http, monkeypatch, settings):
        call = start_call(voice_widget)
        conversation = call_of(call)
        forged = signing.dumps(
            {"l": voice_widget.license.pk, "w": voice_widget.pk, "c": conversation.pk}, salt="another.salt"
        )
        assert record(voice_widget, {"token": forged}).status_code == 403
        # Past the call's maximum length + grace, on our clock.
        age(conversation, call["max_session_seconds"] + CALL_TOKEN_GRACE_SECONDS + 1)
        response = record(voice_widget, {"token": call["tools_token"], "turns": TURNS})
        assert response.status_code == 403 and response.json()["error"]["code"] == "invalid_token"
        # A signature older than the platform ceiling, whatever the conversation says.
        age(conversation, 0)
        later = signing.time.time() + settings.REALTIME_MAX_SESSION_SECONDS + CALL_TOKEN_GRACE_SECONDS + 1
        monkeypatch.setattr(signing.time, "time", lambda: later)
        response = record(voice_widget, {"token": call["tools_token"], "turns": TURNS})
        assert response.status_code == 403 and response.json()["error"]["code"] == "invalid_token"
        assert Message.objects.count() == 0

    def test_foreign_or_missing_origin_is_refused(self, voice_widget, fake_openai_http):
        token = start_call(voice_widget)["tools_token"]
        response = record(voice_widget, {"token": token, "turns": TURNS}, origin="https://evil.example.net")
        assert response.status_code == 403 and response.json()["error"]["code"] == "domain_not_allowed"
        response = record(voice_widget, {"token": token, "turns": TURNS}, origin=None)
        assert response.status_code == 403 and response.json()["error"]["code"] == "origin_missing"
        assert Message.objects.count() == 0

    def test_text_plain_is_accepted_for_the_pagehide_beacon(self, voice_widget, fake_openai_http):
        token = start_call(voice_widget)["tools_token"]
        response = Client().post(
            f"/api/widget/{voice_widget.license.key}/voice/record",
            json.dumps({"token": token, "turns": TURNS, "end": "browser_gone"}),
            content_type="text/plain;charset=UTF-8",
            HTTP_ORIGIN=ORIGIN,
        )
        assert response.status_code == 200 and response.json()["end"]["reason"] == "browser_gone"


def test_a_webrtc_tool_call_is_recorded_as_a_tool_turn(voice_widget, fake_openai_http):
    call = start_call(voice_widget)
    response = Client().post(
        f"/api/widget/{voice_widget.license.key}/tools/search_products",
        json.dumps({"token": call["tools_token"], "arguments": {"query": "phone", "max_price": 500}}),
        content_type="application/json",
        HTTP_ORIGIN=ORIGIN,
    )
    assert response.status_code == 200
    tool = call_of(call).messages.get()
    assert tool.role == "tool" and tool.payload["tool"] == "search_products" and tool.payload["ok"] is True
    assert tool.payload["ui_events"] == [response.json()["ui_event"]]


def test_webrtc_tool_calls_are_rate_limited_per_call(voice_widget, fake_openai_http, settings, frozen_minute):
    """A browser replaying its call token cannot run tools (leads, searches) without bound."""
    settings.WIDGET_CHAT_RATE_PER_MINUTE = 3
    call = start_call(voice_widget)

    def tool():
        return Client().post(
            f"/api/widget/{voice_widget.license.key}/tools/search_products",
            json.dumps({"token": call["tools_token"], "arguments": {"query": "phone"}}),
            content_type="application/json",
            HTTP_ORIGIN=ORIGIN,
        )

    statuses = [tool() for _ in range(5)]
    assert [r.status_code for r in statuses] == [200, 200, 200, 429, 429]
    assert statuses[-1].json()["error"]["code"] == "rate_limited" and statuses[-1]["Retry-After"]
    assert call_of(call).messages.count() == 3


class TestConcurrency:
    """A WebRTC call counts against the license's concurrent calls as a relayed one does."""

    def secret(self, widget):
        body = {"license": widget.license.key, "widget": widget.public_id}
        return Client().post(
            "/api/realtime/client-secret", json.dumps(body), content_type="application/json", HTTP_ORIGIN=ORIGIN
        )

    def test_a_call_holds_a_slot_until_it_ends(self, voice_widget, fake_openai_http):
        license = voice_widget.license
        license.limits = {**license.limits, "max_concurrent_voice_sessions": 1}
        license.save()
        call = start_call(voice_widget)
        assert svc.voice_slots_in_use(license=license) == 1
        response = self.secret(voice_widget)
        assert response.status_code == 429
        assert response.json() == {
            "error": {
                "code": "too_many_sessions",
                "message": "Too many voice calls are running on this site right now. Please try again shortly.",
            }
        }
        assert len(fake_openai_http.requests) == 1 and Conversation.objects.count() == 1
        assert record(voice_widget, {"token": call["tools_token"], "end": "hangup"}).status_code == 200
        assert svc.voice_slots_in_use(license=license) == 0
        assert self.secret(voice_widget).status_code == 200

    def test_reports_keep_the_slot(self, voice_widget, fake_openai_http):
        from django.core.cache import cache

        call = start_call(voice_widget)
        key = signing.loads(call["tools_token"], salt="switchboard.realtime.tools")["k"][0]
        cache.delete(key)  # as if its TTL ran out during a cache restart
        assert svc.voice_slots_in_use(license=voice_widget.license) == 0
        assert record(voice_widget, {"token": call["tools_token"], "turns": TURNS}).status_code == 200
        assert svc.voice_slots_in_use(license=voice_widget.license) == 1

    def test_a_refused_key_frees_the_slot(self, voice_widget, fake_openai_http):
        fake_openai_http.responses = [(401, {"error": {"message": "Incorrect API key provided"}})]
        response = self.secret(voice_widget)
        assert response.status_code == 502 and response.json()["error"]["code"] == "upstream_auth_failed"
        assert svc.voice_slots_in_use(license=voice_widget.license) == 0 and not Conversation.objects.exists()


def test_a_reaped_call_is_taken_back_by_its_next_report(voice_widget, fake_openai_http, prices):
    """A browser that stopped reporting for REALTIME_STALE_SECONDS is reaped (`worker_lost`); if it was alive
    after all (a long network outage), its next report takes the call back and bills it."""
    call = start_call(voice_widget)
    conversation = call_of(call)
    reaped = svc.voice_conversations_reap(stale_seconds=60, now=timezone.now() + timedelta(seconds=61))
    assert reaped == 1
    conversation.refresh_from_db()
    assert conversation.end_reason == "worker_lost"
    response = record(voice_widget, {"token": call["tools_token"], "turns": TURNS, "usage": USAGE})
    assert response.status_code == 200 and response.json()["end"] is None
    conversation.refresh_from_db()
    assert conversation.ended_at is None and conversation.end_reason == "" and conversation.cost_usd == COST
    assert conversation.messages.count() == 2
