"""Issue 11, finding 5: a crashed web worker loses no billing — usage is persisted at every response.done,
slots expire within seconds, and the beat reaper ends calls whose heartbeat stopped (`worker_lost`)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from licenses.models import LicenseUsage
from realtime import services as svc
from realtime.relay import ACTIVE_SESSIONS, SLOT_REFRESH_SECONDS, RelaySession
from realtime.tasks import voice_calls_reap
from realtime.tests.conftest import FRAME, communicator, receive_until, wait_for
from widgets.models import Channel, Conversation
from widgets.tests.factories import WidgetFactory

pytestmark = [pytest.mark.django_db(transaction=True)]


async def test_usage_is_on_the_record_when_the_browser_hears_response_done(voice_widget, fake_realtime):
    comm = communicator(voice_widget)
    assert (await comm.connect())[0]
    await receive_until(comm, "session.ready")
    await comm.send_json_to({"type": "input_audio_buffer.append", "audio": FRAME})
    await receive_until(comm, "response.done")
    # The call is live; a SIGKILL now would lose nothing of what was answered so far.
    conversation = await Conversation.objects.aget()
    assert conversation.ended_at is None and conversation.heartbeat_at is not None
    assert conversation.usage["input_tokens"] == 200 and conversation.cost_usd > 0
    assert conversation.audio_in_seconds == pytest.approx(0.02)
    usage = await LicenseUsage.objects.aget(license=voice_widget.license)
    assert usage.voice_seconds == pytest.approx(0.02) and usage.cost_usd == conversation.cost_usd
    await receive_until(comm, "response.done")  # the answer after the tool call
    conversation = await Conversation.objects.aget()
    assert conversation.usage["input_tokens"] == 400 and conversation.ended_at is None
    await comm.disconnect()
    # The end adds the rest, billed once.
    await wait_for(lambda: not ACTIVE_SESSIONS)
    conversation = await Conversation.objects.aget()
    usage = await LicenseUsage.objects.aget(license=voice_widget.license)
    assert conversation.ended_at is not None and conversation.usage["input_tokens"] == 400
    assert usage.cost_usd == conversation.cost_usd and usage.voice_seconds == pytest.approx(0.02)


async def test_a_call_of_a_dead_worker_is_reaped_with_the_usage_so_far(voice_widget, fake_realtime, monkeypatch):
    comm = communicator(voice_widget)
    assert (await comm.connect())[0]
    await receive_until(comm, "session.ready")
    await comm.send_json_to({"type": "input_audio_buffer.append", "audio": FRAME})
    await receive_until(comm, "response.done")

    async def killed(self, reason):  # SIGKILL: the process never gets to finalise anything
        return None

    monkeypatch.setattr(RelaySession, "_finalise", killed)
    await comm.disconnect()
    await wait_for(lambda: not ACTIVE_SESSIONS)
    conversation = await Conversation.objects.aget()
    assert conversation.ended_at is None  # left open, as a dead worker leaves it

    assert await sync_to_async(voice_calls_reap.apply)() and (await Conversation.objects.aget()).ended_at is None
    stale = conversation.heartbeat_at - timedelta(seconds=61)
    await Conversation.objects.filter(pk=conversation.pk).aupdate(heartbeat_at=stale)
    assert (await sync_to_async(voice_calls_reap.apply)()).get() == 1
    conversation = await Conversation.objects.aget()
    assert conversation.end_reason == "worker_lost" and conversation.ended_at == stale
    assert conversation.usage["input_tokens"] == 200 and conversation.audio_in_seconds == pytest.approx(0.02)
    usage = await LicenseUsage.objects.aget(license=voice_widget.license)
    assert usage.cost_usd == conversation.cost_usd and usage.voice_seconds == pytest.approx(0.02)
    assert (await sync_to_async(voice_calls_reap.apply)()).get() == 0


def test_the_reaper_leaves_live_webrtc_and_ended_calls_alone(voice_widget):
    now = timezone.now()
    live = svc.voice_conversation_start(widget=voice_widget, visitor_id="a", relayed=True)
    webrtc = svc.voice_conversation_start(widget=voice_widget, visitor_id="b")  # no relay, no heartbeat
    ended = svc.voice_conversation_start(widget=voice_widget, visitor_id="c", relayed=True)
    Conversation.objects.filter(pk=ended.pk).update(
        ended_at=now, end_reason="hangup", heartbeat_at=now - timedelta(hours=1)
    )
    chat = Conversation.objects.create(widget=voice_widget, channel=Channel.CHAT, heartbeat_at=now - timedelta(hours=1))
    lost = svc.voice_conversation_start(widget=WidgetFactory(), visitor_id="d", relayed=True)
    Conversation.objects.filter(pk=lost.pk).update(heartbeat_at=now - timedelta(seconds=120))
    assert voice_calls_reap.apply().get() == 1
    reasons = dict(Conversation.objects.values_list("pk", "end_reason"))
    assert reasons == {live.pk: "", webrtc.pk: "", ended.pk: "hangup", chat.pk: "", lost.pk: "worker_lost"}


def test_a_checkpoint_bills_once_however_often_it_is_retried(voice_widget):
    conversation = svc.voice_conversation_start(widget=voice_widget, visitor_id="v", relayed=True)
    totals = {
        "conversation_id": conversation.pk,
        "license_id": voice_widget.license_id,
        "usage": {"input_tokens": 5},
        "audio_in_seconds": 3.5,
        "audio_out_seconds": 1.0,
        "cost_usd": Decimal("0.010000"),
    }
    assert svc.voice_usage_checkpoint(**totals) == pytest.approx(3.5)
    assert svc.voice_usage_checkpoint(**totals) == 0  # e.g. the commit's acknowledgement was lost
    svc.voice_usage_checkpoint(
        **{**totals, "audio_in_seconds": 5.0, "cost_usd": Decimal("0.015000")}, end_reason="hangup"
    )
    svc.voice_usage_checkpoint(**{**totals, "audio_in_seconds": 9.0}, end_reason="hangup")  # ended: no-op
    usage = LicenseUsage.objects.get(license=voice_widget.license)
    assert usage.voice_seconds == pytest.approx(5.0) and usage.cost_usd == Decimal("0.015")
    conversation.refresh_from_db()
    assert (conversation.audio_in_seconds, conversation.end_reason) == (5.0, "hangup")


def test_a_call_wrongly_reaped_during_a_database_outage_is_taken_back(voice_widget):
    conversation = svc.voice_conversation_start(widget=voice_widget, visitor_id="v", relayed=True)
    totals = {
        "conversation_id": conversation.pk,
        "license_id": voice_widget.license_id,
        "usage": {},
        "audio_in_seconds": 2.0,
        "audio_out_seconds": 0.0,
        "cost_usd": Decimal(0),
    }
    svc.voice_usage_checkpoint(**totals)
    Conversation.objects.filter(pk=conversation.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=90))
    assert voice_calls_reap.apply().get() == 1
    svc.voice_usage_checkpoint(**{**totals, "audio_in_seconds": 4.0})  # the call was alive after all
    conversation.refresh_from_db()
    assert conversation.ended_at is None and conversation.end_reason == ""
    svc.voice_usage_checkpoint(**{**totals, "audio_in_seconds": 6.0}, end_reason="hangup")
    conversation.refresh_from_db()
    assert conversation.end_reason == "hangup"
    assert LicenseUsage.objects.get(license=voice_widget.license).voice_seconds == pytest.approx(6.0)


async def test_slots_of_a_dead_worker_free_themselves_within_seconds(voice_widget, fake_realtime, own_redis):
    import redis

    fake_realtime.scenario = "idle"
    comm = communicator(voice_widget)
    assert (await comm.connect())[0]
    await receive_until(comm, "session.ready")
    ttl = redis.Redis(port=own_redis.port).ttl(f":1:switchboard:voice-slot:{voice_widget.license_id}:0")
    assert 0 < ttl <= 15 and SLOT_REFRESH_SECONDS * 2 < svc.SLOT_TTL_SECONDS
    await comm.disconnect()
    await asyncio.wait_for(fake_realtime.closed.wait(), 3)
