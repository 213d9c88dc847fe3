"""The LiveKit agent's logic (realtime/livekit_call.py), called directly: what it trusts, the one session,
tools, transcripts-as-turns, usage billing and limits, in the relay's shapes."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from django.core.cache import cache
from django.test import Client
from livekit import api
from livekit.agents.metrics.usage import LLMModelUsage, STTModelUsage

from licenses.models import License, LicenseUsage
from realtime import events
from realtime import services as svc
from realtime.livekit_call import CallRefused, LiveKitCall, realtime_model_options
from realtime.session_config import session_config
from realtime.tests.conftest import KEY, SECRET, post_token
from widgets import ui_events
from widgets.models import Conversation, Message, Product, WidgetVersion

pytestmark = pytest.mark.django_db


def dispatch(widget) -> tuple[str, str]:
    """The agent dispatch the token endpoint wrote: (metadata, room), read back from the token."""
    response = post_token(widget)
    assert response.status_code == 200, response.content
    claims = api.TokenVerifier(KEY, SECRET).verify(response.json()["participant_token"])
    return claims.room_config.agents[0].metadata, claims.room_config.name


@pytest.fixture
def call(livekit_widget) -> LiveKitCall:
    metadata, room = dispatch(livekit_widget)
    return LiveKitCall.open(metadata_text=metadata, room=room)


def llm_usage(**tokens) -> dict:
    return LLMModelUsage(provider="openai", model="gpt-realtime-1.5", **tokens).model_dump()


class TestOpen:
    def test_the_one_session_from_the_published_version(self, call, livekit_widget, member):
        assert call.conversation_id == Conversation.objects.get().pk
        assert call.config == livekit_widget.published_version.config
        assert call.session == session_config(config=livekit_widget.published_version.config, widget=livekit_widget)
        client = Client()
        client.force_login(member)
        shown = client.get(
            "/api/realtime/config", {"license": livekit_widget.license.key, "widget": livekit_widget.public_id}
        ).json()
        assert call.session == shown  # what the configurator shows is what the agent runs
        assert [t["name"] for t in call.tool_schemas()] == [t["name"] for t in call.session["tools"]]
        assert call.tool_schemas()[0] == {k: call.session["tools"][0][k] for k in ("name", "description", "parameters")}
        assert call.ready_events() == [events.session_ready(max_session_seconds=900)]

    def test_realtime_model_options_follow_the_session(self, call):
        options = realtime_model_options(call.session)
        audio = call.session["audio"]
        assert options["model"] == call.session["model"] == "gpt-realtime-1.5"
        assert options["voice"] == "coral" and options["speed"] == 1.0
        assert options["modalities"] == ["audio"] and options["tool_choice"] == "auto"
        assert options["input_audio_noise_reduction"] == "near_field"
        assert options["input_audio_transcription"].model_dump(exclude_none=True) == audio["input"]["transcription"]
        assert options["turn_detection"].model_dump(exclude_none=True) == audio["input"]["turn_detection"]
        assert set(options) == {
            "model",
            "voice",
            "speed",
            "modalities",
            "input_audio_transcription",
            "input_audio_noise_reduction",
            "turn_detection",
            "tool_choice",
        }

    def test_the_plugin_accepts_the_options(self, call):
        from livekit.plugins.openai.realtime import RealtimeModel

        model = RealtimeModel(**realtime_model_options(call.session), api_key="sk-test", base_url="http://127.0.0.1:9")
        assert model._opts.model == "gpt-realtime-1.5" and model._opts.voice == "coral"
        assert model._opts.turn_detection.type == "server_vad" and model._opts.turn_detection.silence_duration_ms == 500

    @pytest.mark.parametrize(
        "metadata",
        [
            "",
            "not json",
            "[]",
            '{"license": 1}',
        ],
    )
    def test_metadata_not_exactly_ours_is_refused(self, livekit_widget, metadata):
        _, room = dispatch(livekit_widget)
        with pytest.raises(CallRefused) as refused:
            LiveKitCall.open(metadata_text=metadata, room=room)
        assert refused.value.code == "bad_metadata"

    def test_extra_key_or_wrong_type_is_refused(self, livekit_widget):
        metadata, room = dispatch(livekit_widget)
        for change in ({"extra": 1}, {"conversation": "1"}, {"v": 1}, {"identity": "42"}, {"page_context": []}):
            with pytest.raises(CallRefused) as refused:
                LiveKitCall.open(metadata_text=json.dumps({**json.loads(metadata), **change}), room=room)
            assert refused.value.code == "bad_metadata"

    def test_another_room_is_refused(self, livekit_widget):
        metadata, _ = dispatch(livekit_widget)
        _, other_room = dispatch(livekit_widget)
        with pytest.raises(CallRefused) as refused:
            LiveKitCall.open(metadata_text=metadata, room=other_room)
        assert refused.value.code == "wrong_room"

    def test_another_licenses_conversation_is_refused(self, livekit_widget, widget_b):
        metadata, room = dispatch(livekit_widget)
        foreign = Conversation.objects.create(widget=widget_b, channel="voice", session_id="x")
        for change in ({"conversation": foreign.pk}, {"license": widget_b.license_id}, {"widget": widget_b.pk}):
            with pytest.raises(CallRefused) as refused:
                LiveKitCall.open(metadata_text=json.dumps({**json.loads(metadata), **change}), room=room)
            assert refused.value.code == "unknown_call"

    @pytest.mark.parametrize("refusal", ["quota_exceeded", "license_inactive", "voice_disabled"])
    def test_a_call_that_may_not_go_on_is_closed_and_its_slot_freed(self, livekit_widget, owner, refusal):
        metadata, room = dispatch(livekit_widget)
        assert svc.voice_slots_in_use(license=livekit_widget.license) == 1
        if refusal == "quota_exceeded":
            LicenseUsage.objects.filter(license_id=livekit_widget.license_id).update(voice_seconds=300 * 60)
        elif refusal == "license_inactive":
            License.objects.filter(pk=livekit_widget.license_id).update(status="suspended")
        else:  # the version the token named has voice off (a hand-made dispatch; ours never names one)
            WidgetVersion.objects.filter(pk=livekit_widget.published_version_id).update(
                config={**livekit_widget.published_version.config, "voice": {"enabled": False}}
            )
        with pytest.raises(CallRefused) as refused:
            LiveKitCall.open(metadata_text=metadata, room=room)
        assert refused.value.code == refusal
        conversation = Conversation.objects.get()
        assert conversation.ended_at is not None and conversation.end_reason == refusal
        assert svc.voice_slots_in_use(license=livekit_widget.license) == 0
        with pytest.raises(CallRefused) as again:  # an ended call is never served
            LiveKitCall.open(metadata_text=metadata, room=room)
        assert again.value.code == "unknown_call"


class TestToolsAndTurns:
    def test_tool_runs_as_on_the_relay(self, call, livekit_widget):
        output, evts = call.tool("search_products", {"query": "phone", "max_price": 500})
        phone_x = Product.objects.get(widget=livekit_widget, title="Phone X")
        assert json.loads(output) == {
            "ok": True,
            "say": "I found 1 option: Phone X (USD 449.00). They're on your screen now.",
            "products": [{"title": "Phone X", "price": "449.00", "in_stock": True}],
        }
        assert evts == [{"type": "ui.event", "event": ui_events.product_cards([phone_x])}]
        message = Message.objects.get(role="tool")
        assert message.conversation_id == call.conversation_id
        assert message.payload == {"tool": "search_products", "ok": True, "ui_events": [evts[0]["event"]]}

    def test_form_tool_and_bad_arguments(self, call):
        output, evts = call.tool("start_trade_in", json.dumps({"device": "iPhone 12"}))
        assert evts == [
            {"type": "ui.event", "event": ui_events.trade_in_form(device="iPhone 12", devices=["iPhone 12", "Pixel 7"])}
        ]
        output, evts = call.tool("search_products", {"query": 3})
        assert json.loads(output)["error"] == "invalid_arguments" and evts == []
        output, evts = call.tool("delete_everything", {})
        assert json.loads(output)["error"] == "unknown_tool" and evts == []

    def test_turns_are_messages_and_final_events(self, call):
        assert call.user_transcript("Do you have", final=False, item_id="it_1") == [
            {"type": "transcript.partial", "role": "user", "text": "Do you have", "item_id": "it_1"}
        ]
        assert call.user_transcript("Do you have phones?", final=True, item_id="it_1") == []
        assert call.turn("user", " Do you have phones? ", item_id="it_1") == [
            {"type": "transcript.final", "role": "user", "text": "Do you have phones?", "item_id": "it_1"}
        ]
        assert call.turn("assistant", "Yes, two.", item_id="it_2") == [
            {"type": "transcript.final", "role": "assistant", "text": "Yes, two.", "item_id": "it_2"}
        ]
        assert call.turn("assistant", "   ") == [] and call.turn("system", "You are") == []
        rows = list(Message.objects.order_by("id").values_list("role", "text", "item_id"))
        assert rows == [("user", "Do you have phones?", "it_1"), ("assistant", "Yes, two.", "it_2")]

    def test_states_become_relay_events(self, call):
        assert call.user_state("speaking") == [{"type": "speech.started"}]
        assert call.user_state("speaking") == []
        assert call.user_state("listening") == [{"type": "speech.stopped"}]
        assert call.agent_state("listening", "thinking", now=10.0) == [{"type": "response.started"}]
        assert call.agent_state("thinking", "speaking", now=11.0) == []
        assert call.agent_state("speaking", "listening", now=13.5) == [{"type": "response.done", "status": "completed"}]
        assert call.audio_out_seconds == pytest.approx(2.5)


class TestUsageAndEnd:
    def test_checkpoints_bill_once_and_end_releases_the_slot(self, call, livekit_widget):
        first = llm_usage(input_tokens=300, output_tokens=200, input_audio_tokens=250, input_text_tokens=50)
        assert call.usage_totals([{**first, "output_audio_tokens": 200}]) is True
        totals = llm_usage(
            input_tokens=400,
            output_tokens=250,
            input_audio_tokens=350,
            input_text_tokens=50,
            output_audio_tokens=200,
            output_text_tokens=50,
        )
        stt = STTModelUsage(provider="openai", model="gpt-4o-mini-transcribe", input_tokens=999).model_dump()
        assert call.usage_totals([totals, stt]) is True  # the SDK's running totals; STT is in the model's usage
        assert call.usage_totals([totals, stt]) is False
        now = call.started + 12.0
        billed = call.checkpoint(now=now)
        assert billed == pytest.approx(12.0)
        assert call.checkpoint(now=now) == 0.0  # a retried checkpoint bills nothing
        conversation = Conversation.objects.get()
        assert conversation.usage["input_audio_tokens"] == 350 and conversation.usage["output_text_tokens"] == 50
        assert (
            conversation.usage["input_tokens"] == 400
            and conversation.usage["output_tokens"] == 250
            and conversation.usage["output_audio_tokens"] == 200
        )
        # gpt-realtime-1.5: 50 text in x 4 + 350 audio in x 32 + 50 text out x 16 + 200 audio out x 64 per 1M
        assert conversation.cost_usd == Decimal("0.025000") == call.cost()
        assert conversation.audio_in_seconds == pytest.approx(12.0)
        usage = LicenseUsage.objects.get(license=livekit_widget.license)
        assert usage.voice_seconds == pytest.approx(12.0) and usage.cost_usd == Decimal("0.025000")
        assert usage.voice_sessions == 1

        assert svc.voice_slots_in_use(license=livekit_widget.license) == 1
        assert call.end("hangup") == [events.session_ended(reason="hangup")]
        assert call.end("hangup") == []
        conversation.refresh_from_db()
        assert conversation.ended_at is not None and conversation.end_reason == "hangup"
        assert svc.voice_slots_in_use(license=livekit_widget.license) == 0
        assert LicenseUsage.objects.get(license=livekit_widget.license).voice_seconds == pytest.approx(
            conversation.audio_in_seconds
        )

    def test_limits(self, call):
        call.max_seconds = 60
        warnings, reason = call.tick(now=call.started + 10)
        assert warnings == [] and reason == ""
        warnings, reason = call.tick(now=call.started + 31)
        assert warnings == [
            events.warning(code="session_time_low", message="This call will end in less than 30 seconds.")
        ]
        assert reason == ""
        assert call.tick(now=call.started + 40) == ([], "")
        assert call.tick(now=call.started + 60) == ([], "max_duration")

    def test_minutes_run_out(self, call):
        call.quota_left_seconds = 40.0
        warnings, reason = call.tick(now=call.started + 11)
        assert warnings == [
            events.warning(code="voice_minutes_low", message="This site's voice minutes are almost used up.")
        ]
        assert call.tick(now=call.started + 41) == ([], "voice_minutes_exhausted")

    def test_slot_is_the_one_the_token_took(self, call, livekit_widget):
        assert cache.get(call.metadata.slot) == call.metadata.slot_token
        svc.voice_slot_refresh(key=call.metadata.slot, token=call.metadata.slot_token)
        assert cache.get(call.metadata.slot) == call.metadata.slot_token
