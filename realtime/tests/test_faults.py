"""Issue 11, finding 3: a Redis outage costs no live call, refuses new calls cleanly, and the relay never
outlives its consumer (upstream closed, slot released, conversation finalised on any exit)."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis
from asgiref.sync import sync_to_async

from realtime.relay import ACTIVE_SESSIONS
from realtime.tests.conftest import FRAME, communicator, receive_until, wait_for
from widgets.models import Conversation

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def fast_ticks(monkeypatch):
    monkeypatch.setattr("realtime.relay.TICK_SECONDS", 0.05)
    monkeypatch.setattr("realtime.relay.SLOT_REFRESH_SECONDS", 0.1)


def append() -> dict:
    return {"type": "input_audio_buffer.append", "audio": FRAME}


def slot_values(server, license_id: int) -> dict[str, str]:
    """The license's slot keys as stored on `server` (read through the Django cache, which pickles values)."""
    from django.core.cache import cache

    assert redis.Redis(port=server.port).ping()
    return cache.get_many([f"switchboard:voice-slot:{license_id}:{i}" for i in range(10)])


async def start_call(widget):
    comm = communicator(widget)
    connected, _ = await comm.connect()
    assert connected
    await receive_until(comm, "session.ready")
    return comm


async def test_a_live_call_survives_a_redis_outage(voice_widget, fake_realtime, own_redis):
    fake_realtime.scenario = "idle"
    comm = await start_call(voice_widget)
    relay = next(iter(ACTIVE_SESSIONS))
    assert list((await sync_to_async(slot_values)(own_redis, voice_widget.license_id)).values()) == [relay.slot_token]
    await sync_to_async(own_redis.stop)()
    await asyncio.sleep(0.3)  # a few slot refreshes fail while Redis is down
    for _ in range(3):
        await comm.send_json_to(append())
    await wait_for(lambda: len(fake_realtime.of_type("input_audio_buffer.append")) == 3)
    assert relay in ACTIVE_SESSIONS and not relay.ended  # the call goes on

    await sync_to_async(own_redis.start)()  # Redis is back, empty: the live call takes its slot back

    async def slot_back() -> bool:
        return list((await sync_to_async(slot_values)(own_redis, voice_widget.license_id)).values()) == [
            relay.slot_token
        ]

    for _ in range(100):
        if await slot_back():
            break
        await asyncio.sleep(0.05)
    assert await slot_back()
    await comm.send_json_to(append())
    await wait_for(lambda: len(fake_realtime.of_type("input_audio_buffer.append")) == 4)

    await comm.disconnect(code=1000)
    await asyncio.wait_for(fake_realtime.closed.wait(), 3)
    conversation = await Conversation.objects.aget()
    assert conversation.end_reason == "hangup" and conversation.ended_at is not None
    assert conversation.audio_in_seconds == pytest.approx(0.08)
    assert await sync_to_async(slot_values)(own_redis, voice_widget.license_id) == {}
    assert not ACTIVE_SESSIONS


async def test_a_new_call_while_redis_is_down_is_refused_server_busy(voice_widget, fake_realtime, own_redis):
    await sync_to_async(own_redis.stop)()
    comm = communicator(voice_widget)
    connected, _ = await comm.connect()  # not a failed (HTTP 500) handshake
    assert connected
    event = json.loads((await comm.receive_output(timeout=5))["text"])
    close = await comm.receive_output(timeout=3)
    assert event == {
        "type": "error",
        "code": "server_busy",
        "fatal": True,
        "message": "The voice service is busy right now. Please try again shortly.",
    }
    assert close == {"type": "websocket.close", "code": 4503, "reason": "server_busy"}
    assert not fake_realtime.paths and not ACTIVE_SESSIONS
    assert not await Conversation.objects.aexists()
    await comm.disconnect()


async def test_the_relay_ends_when_the_server_cancels_the_consumer(voice_widget, fake_realtime):
    fake_realtime.scenario = "idle"
    comm = await start_call(voice_widget)
    await comm.send_json_to(append())
    await wait_for(lambda: len(fake_realtime.of_type("input_audio_buffer.append")) == 1)
    relay = next(iter(ACTIVE_SESSIONS))
    comm.future.cancel()  # what a server does to an application it gives up on
    await asyncio.wait_for(fake_realtime.closed.wait(), 3)  # upstream socket closed
    await wait_for(lambda: not ACTIVE_SESSIONS and not relay.tasks)
    conversation = await Conversation.objects.aget()
    assert conversation.end_reason == "server_restart" and conversation.ended_at is not None
    assert conversation.audio_in_seconds == pytest.approx(0.02)
    from django.core.cache import cache

    assert not await sync_to_async(cache.get)(relay.slot_key or f"switchboard:voice-slot:{voice_widget.license_id}:0")


async def test_the_relay_ends_when_the_consumer_fails(voice_widget, fake_realtime, monkeypatch):
    fake_realtime.scenario = "idle"
    comm = await start_call(voice_widget)
    relay = next(iter(ACTIVE_SESSIONS))

    async def broken(raw):
        raise RuntimeError("a bug in the consumer")

    monkeypatch.setattr(relay, "from_browser", broken)
    await comm.send_json_to(append())
    with pytest.raises(RuntimeError):
        await comm.wait(timeout=3)
    await asyncio.wait_for(fake_realtime.closed.wait(), 3)
    assert not ACTIVE_SESSIONS
    conversation = await Conversation.objects.aget()
    assert conversation.end_reason == "server_error" and conversation.ended_at is not None


def test_client_secret_while_redis_is_down_is_a_json_503(voice_widget, fake_openai_http, own_redis):
    from django.test import Client

    own_redis.stop()
    response = Client().post(
        "/api/realtime/client-secret",
        json.dumps({"license": voice_widget.license.key, "widget": voice_widget.public_id}),
        content_type="application/json",
        HTTP_ORIGIN="https://shop.example.com",
    )
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "server_busy"
    assert fake_openai_http.requests == [] and not Conversation.objects.exists()


async def test_a_dropped_database_connection_costs_no_call_and_no_billing(voice_widget, fake_realtime, monkeypatch):
    """pg_terminate_backend() between two queries: the first query on the dead connection fails, the relay
    tries once more on a new connection — at call start and at the response.done checkpoint."""
    from django.db import OperationalError

    from realtime import services as svc

    failures = {"voice_conversation_start": 1, "voice_usage_checkpoint": 1}

    def fail_once(name):
        real = getattr(svc, name)

        def call(**kwargs):
            if failures[name]:
                failures[name] -= 1
                raise OperationalError("terminating connection due to administrator command")
            return real(**kwargs)

        return call

    for name in failures:
        monkeypatch.setattr(svc, name, fail_once(name))
    comm = await start_call(voice_widget)
    await comm.send_json_to(append())
    await receive_until(comm, "response.done")
    assert failures == {"voice_conversation_start": 0, "voice_usage_checkpoint": 0}
    conversation = await Conversation.objects.aget()
    assert conversation.usage["input_tokens"] == 200 and conversation.audio_in_seconds == pytest.approx(0.02)
    await comm.disconnect()


async def test_a_hangup_racing_a_send_is_recorded_as_a_hangup(voice_widget, fake_realtime):
    """The visitor hangs up (1000) while the relay is sending them audio: the failed send must not win the
    race and record `browser_gone`; the disconnect's code decides."""
    fake_realtime.scenario = "echo"
    comm = await start_call(voice_widget)
    relay = next(iter(ACTIVE_SESSIONS))

    async def closing(text):
        raise RuntimeError("Unexpected ASGI message 'websocket.send', after sending 'websocket.close'")

    relay._send_browser = closing
    await comm.send_json_to(append())
    await wait_for(lambda: relay.audio_out_bytes > 0)
    await asyncio.sleep(0.1)  # the pump has tried to send the echoed audio and failed
    await comm.disconnect(code=1000)
    await wait_for(lambda: not ACTIVE_SESSIONS)
    conversation = await Conversation.objects.aget()
    assert conversation.end_reason == "hangup"


async def test_a_browser_that_vanishes_without_a_close_is_browser_gone(voice_widget, fake_realtime, monkeypatch):
    monkeypatch.setattr("realtime.relay.BROWSER_GONE_GRACE_SECONDS", 0.1)
    fake_realtime.scenario = "echo"
    comm = await start_call(voice_widget)
    relay = next(iter(ACTIVE_SESSIONS))

    async def vanished(text):
        raise ConnectionResetError("gone")

    relay._send_browser = vanished
    await comm.send_json_to(append())
    await wait_for(lambda: not ACTIVE_SESSIONS)
    conversation = await Conversation.objects.aget()
    assert conversation.end_reason == "browser_gone"
    await comm.disconnect()


async def test_a_server_restart_close_is_recorded_as_server_restart(voice_widget, fake_realtime):
    """Under a plain `uvicorn` (no config.serve drain) a shutdown closes every socket with 1012: the call is
    recorded as `server_restart`, not `browser_gone` (voice.js reconnects on a bare 1012)."""
    fake_realtime.scenario = "idle"
    comm = await start_call(voice_widget)
    await comm.disconnect(code=1012)
    await wait_for(lambda: not ACTIVE_SESSIONS)
    assert (await Conversation.objects.aget()).end_reason == "server_restart"
