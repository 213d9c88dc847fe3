"""The relay's per-message hot path (issue 14.4): orjson for upstream events and browser events, the bounded
prefix check for audio appends, and frames going straight from the socket to the relay. Every guarantee of the
slow path must hold on the fast one."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from types import SimpleNamespace
from unittest.mock import patch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from realtime import events
from realtime.protocol import (
    AUDIO_BURST_BYTES,
    AUDIO_BYTES_PER_SECOND,
    BYTES_PER_SECOND,
    FRAMES_BURST,
    FRAMES_PER_SECOND,
    Filtered,
    append_fast_path,
    b64_alphabet_only,
    browser_event_filter,
)
from realtime.session_config import SAMPLE_RATE
from realtime.tests.conftest import FRAME, communicator, receive_until, wait_for
from widgets.models import Conversation

relay_db = pytest.mark.django_db(transaction=True)


async def start(widget):
    comm = communicator(widget)
    connected, _ = await comm.connect()
    assert connected
    await receive_until(comm, "session.ready")
    return comm


# --- JSON ------------------------------------------------------------------------------------------------


def test_events_are_compact_json_with_text_as_is():
    text = events.encode(events.transcript_final(role="assistant", text="Prix: 449 € — d'accord", item_id="i1"))
    assert text == ('{"type":"transcript.final","role":"assistant","text":"Prix: 449 € — d\'accord","item_id":"i1"}')


def test_text_orjson_refuses_is_escaped_as_before():
    """A lone surrogate (a browser can type one) cannot be UTF-8: the standard library escapes it."""
    text = events.encode(events.transcript_final(role="user", text="a\ud800b"))
    assert text == '{"type":"transcript.final","role":"user","text":"a\\ud800b","item_id":""}'
    assert json.loads(text)["text"] == "a\ud800b"


@relay_db
async def test_upstream_frames_that_are_not_json_objects_are_skipped(voice_widget, fake_realtime):
    fake_realtime.scenario = "idle"
    comm = await start(voice_widget)
    ws = fake_realtime.connections[0]
    for raw in (
        "not json",
        '{"type": "response.created"',  # cut off
        "[" * 2000 + "]" * 2000,  # nested past the parser's depth limit
        '{"type": NaN}',
        '["response.created"]',
        b'{"type": "\xff"}',  # a binary frame that is not UTF-8
    ):
        await ws.send(raw)
    await fake_realtime.send(ws, {"type": "response.output_audio_transcript.delta", "item_id": "a1", "delta": "Hi"})
    seen = await receive_until(comm, "transcript.partial")
    assert seen == [{"type": "transcript.partial", "role": "assistant", "text": "Hi", "item_id": "a1"}]
    await comm.disconnect()


# --- the bounded prefix check for audio appends --------------------------------------------------------

B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
HEAD = '{"type":"input_audio_buffer.append","audio":"'


def slow_path(raw):
    """What the filter decides with the full JSON parse only (no fast path)."""
    with patch("realtime.protocol.append_fast_path", return_value=-1):
        return browser_event_filter(raw)


def same_decision(fast, slow) -> bool:
    as_dict = json.loads(fast.upstream) if isinstance(fast.upstream, str) else fast.upstream
    return (as_dict, fast.error, fast.audio_bytes, fast.user_text) == (
        slow.upstream,
        slow.error,
        slow.audio_bytes,
        slow.user_text,
    )


@given(st.text())
def test_the_alphabet_check_is_the_set_test(text):
    assert b64_alphabet_only(text) == frozenset(B64).issuperset(text)


@settings(max_examples=400)
@given(st.text(alphabet=B64 + '"\\}{,: é\x00\n', max_size=24), st.sampled_from(['"}', "", '"', '"} ', '"}}']))
def test_an_append_with_the_right_prefix_is_decided_as_the_full_parse_decides(audio, end):
    raw = HEAD + audio + end
    fast = browser_event_filter(raw)
    assert same_decision(fast, slow_path(raw)), raw
    if fast.error is None:
        assert json.loads(raw)["type"] == "input_audio_buffer.append"


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (HEAD + "AAAA", "invalid_event"),  # cut off
        (HEAD + 'AAAA"}}', "invalid_event"),  # trailing garbage
        (HEAD + 'AAA"}', "invalid_audio"),  # not a whole number of base64 quads
        (HEAD + '"}', "invalid_audio"),  # empty
        (HEAD + 'AA\\"A"}', "invalid_audio"),  # an escaped quote inside the audio
        (HEAD + 'AAAA","type":"session.update"}', "event_not_allowed"),  # a second "type" wins in JSON
        (HEAD + "A" * (256 * 1024) + '"}', "frame_too_large"),  # the right shape, over the cap
    ],
)
def test_malformed_or_oversized_appends_with_the_right_prefix_are_refused(raw, code):
    assert browser_event_filter(raw).error["code"] == code
    assert slow_path(raw).error["code"] == code


def test_an_append_at_the_cap_is_forwarded_as_it_came():
    audio = "A" * ((256 * 1024 - len(HEAD) - 2) // 4 * 4)  # the largest whole base64 that fits
    raw = HEAD + audio + '"}'
    assert len(raw) <= 256 * 1024 < len(raw) + 4
    assert browser_event_filter(raw) == Filtered(raw, audio_bytes=len(audio) * 3 // 4)


def test_an_escaped_but_valid_append_takes_the_slow_path_and_is_rebuilt():
    result = browser_event_filter(HEAD + '\\u0041AAA"}')
    assert result.upstream == {"type": "input_audio_buffer.append", "audio": "AAAA"} and result.audio_bytes == 3


@relay_db
async def test_malformed_appends_are_refused_and_never_forwarded(voice_widget, fake_realtime):
    fake_realtime.scenario = "idle"
    comm = await start(voice_widget)
    for raw, code in [
        (HEAD + "AAAA", "invalid_event"),
        (HEAD + 'AAA"}', "invalid_audio"),
        (HEAD + 'AA\\"A"}', "invalid_audio"),
        (HEAD + 'AAAA","type":"session.update","session":{"instructions":"x"}}', "event_not_allowed"),
        (HEAD + "A" * (300 * 1024) + '"}', "frame_too_large"),
    ]:
        await comm.send_to(text_data=raw)
        assert (await receive_until(comm, "error"))[-1]["code"] == code
    await comm.send_to(text_data=HEAD + FRAME + '"}')
    await wait_for(lambda: fake_realtime.of_type("input_audio_buffer.append"))
    assert [e["type"] for e in fake_realtime.received] == ["session.update", "input_audio_buffer.append"]
    assert fake_realtime.received[1] == {"type": "input_audio_buffer.append", "audio": FRAME}
    await comm.disconnect()


@pytest.fixture
def frozen_buckets(monkeypatch):
    """The rate caps' token buckets see a clock that does not move, so what they let through is exact."""
    monkeypatch.setattr("realtime.protocol.time", SimpleNamespace(monotonic=lambda: 1000.0))


@relay_db
async def test_the_frame_rate_cap_holds_for_canonical_appends(voice_widget, fake_realtime, frozen_buckets):
    fake_realtime.scenario = "idle"
    comm = await start(voice_widget)
    for _ in range(210):  # the bucket holds 200 frames
        await comm.send_to(text_data=HEAD + FRAME + '"}')
    refused = []
    while len(refused) < 10:
        refused.append((await receive_until(comm, "error"))[-1])
    assert (
        refused
        == [{"type": "error", "code": "rate_limited", "message": "Too many messages; slow down.", "fatal": False}] * 10
    )
    await wait_for(lambda: len(fake_realtime.of_type("input_audio_buffer.append")) >= 200)
    assert len(fake_realtime.of_type("input_audio_buffer.append")) == 200
    await comm.disconnect()
    conversation = await Conversation.objects.aget()
    assert conversation.audio_in_seconds == pytest.approx(200 * 0.02)


@relay_db
async def test_the_audio_rate_cap_holds_for_canonical_appends(voice_widget, fake_realtime, frozen_buckets):
    fake_realtime.scenario = "idle"
    comm = await start(voice_widget)
    one_second = base64.b64encode(b"\x00\x00" * 24000).decode()
    for _ in range(12):  # the budget holds 10 s of audio
        await comm.send_to(text_data=HEAD + one_second + '"}')
    refused = [(await receive_until(comm, "error"))[-1] for _ in range(2)]
    assert [e["message"] for e in refused] == ["Audio is arriving faster than real time."] * 2
    assert {e["code"] for e in refused} == {"rate_limited"}
    await wait_for(lambda: len(fake_realtime.of_type("input_audio_buffer.append")) >= 10)
    assert len(fake_realtime.of_type("input_audio_buffer.append")) == 10
    await comm.disconnect()
    conversation = await Conversation.objects.aget()
    assert conversation.audio_in_seconds == pytest.approx(10.0)


def test_the_widgets_frame_is_what_the_bench_sends_and_fits_the_caps():
    """FRAME_MS in voice.js is the one place the microphone frame is set: bench/relay.py reads it there (its load is
    the widget's), and the relay's caps leave it room: a frame takes the fast path whole, the widget's appends use at
    most half the message rate cap (the rest is for control events), and real time is half the audio cap."""
    from bench.relay import PCM_BYTES_PER_MS, VOICE_JS, frame, frame_setup, widget_frame_ms

    ms = widget_frame_ms()
    assert re.search(r"var RATE = (\d+);", VOICE_JS.read_text()).group(1) == str(SAMPLE_RATE)
    assert PCM_BYTES_PER_MS * 1000 == BYTES_PER_SECOND
    frame_setup(ms)
    raw = HEAD + frame(7) + '"}'
    assert append_fast_path(raw) == BYTES_PER_SECOND * ms // 1000
    assert 1000 / ms <= FRAMES_PER_SECOND / 2 and 2 * 1000 / ms <= FRAMES_BURST
    assert AUDIO_BYTES_PER_SECOND >= 2 * BYTES_PER_SECOND and AUDIO_BURST_BYTES >= 2 * BYTES_PER_SECOND


# --- frames straight from the socket to the relay -------------------------------------------------------


@relay_db
async def test_frames_skip_channels_dispatch(voice_widget, fake_realtime, monkeypatch):
    """No task, no handler lookup, no database clean-up per frame: Channels' receive loop is not used, and
    only the connect (and the disconnect) go through dispatch."""
    from channels.consumer import AsyncConsumer

    from realtime.consumers import RealtimeRelayConsumer

    def no_loop(*args):
        raise AssertionError("Channels' await_many_dispatch used")

    dispatched = []
    original = AsyncConsumer.dispatch

    async def dispatch(self, message):
        dispatched.append(message["type"])
        await original(self, message)

    monkeypatch.setattr("channels.consumer.await_many_dispatch", no_loop)
    monkeypatch.setattr(RealtimeRelayConsumer, "dispatch", dispatch)
    fake_realtime.scenario = "echo"
    comm = await start(voice_widget)
    for _ in range(20):
        await comm.send_to(text_data=HEAD + FRAME + '"}')
    for _ in range(20):
        assert (await receive_until(comm, "audio.delta"))[-1] == {"type": "audio.delta", "delta": FRAME}
    assert dispatched == ["websocket.connect"]
    await comm.disconnect()
    conversation = await Conversation.objects.aget()
    assert (conversation.end_reason, conversation.audio_in_seconds) == ("hangup", pytest.approx(0.4))
    assert dispatched == ["websocket.connect", "websocket.disconnect"]


# --- no queue hop per frame; the backlogs keep order and their bounds ------------------------------------


def numbered(i: int) -> str:
    return base64.b64encode(i.to_bytes(2, "big") + b"\x00" * 958).decode()


@relay_db
async def test_frames_go_straight_to_the_upstream_socket(voice_widget, fake_realtime):
    """An open, unpaused upstream is written by the task that received the frame: the pump never sends."""
    from realtime.relay import ACTIVE_SESSIONS

    fake_realtime.scenario = "echo"
    comm = await start(voice_widget)
    relay = next(iter(ACTIVE_SESSIONS))
    pumped = []
    original_send = relay.upstream.send

    async def send(message, *args, **kwargs):
        pumped.append(message)
        await original_send(message, *args, **kwargs)

    relay.upstream.send = send
    for i in range(20):
        await comm.send_to(text_data=HEAD + numbered(i) + '"}')
    for i in range(20):
        assert (await receive_until(comm, "audio.delta"))[-1]["delta"] == numbered(i)
    assert pumped == []
    await comm.disconnect()


@relay_db
async def test_a_paused_upstream_queues_frames_in_order_then_drops_with_overloaded(
    voice_widget, fake_realtime, monkeypatch
):
    """Flow control paused the upstream socket: frames wait in the bounded backlog (then `overloaded`), nothing
    overtakes them once it resumes, and the direct path comes back."""
    from realtime.relay import ACTIVE_SESSIONS

    monkeypatch.setattr("realtime.relay.QUEUE_SIZE", 8)
    fake_realtime.scenario = "idle"
    comm = await start(voice_widget)
    relay = next(iter(ACTIVE_SESSIONS))
    relay.upstream.pause_writing()  # what the transport does when the kernel's send buffer is full
    for i in range(20):
        await comm.send_to(text_data=HEAD + numbered(i) + '"}')
    await wait_for(lambda: relay.upstream_busy)  # the pump holds the first frame, waiting for the socket
    accepted = relay.to_upstream.qsize() + 1  # 8 queued, or 7 when the pump took one after the queue filled
    assert accepted in (8, 9)
    overloaded = [(await receive_until(comm, "error"))[-1] for _ in range(20 - accepted)]
    assert {e["code"] for e in overloaded} == {"overloaded"}
    relay.upstream.resume_writing()
    for i in range(20, 25):
        await comm.send_to(text_data=HEAD + numbered(i) + '"}')

    def appends():
        return [e["audio"] for e in fake_realtime.of_type("input_audio_buffer.append")]

    await wait_for(lambda: len(appends()) == accepted + 5)
    assert appends() == [numbered(i) for i in [*range(accepted), *range(20, 25)]]
    assert relay.to_upstream.empty() and not relay.upstream_busy
    await comm.disconnect()


@relay_db
async def test_a_browser_send_that_suspends_keeps_order_and_bounds_the_outbox(voice_widget, fake_realtime, monkeypatch):
    """Uvicorn's and Daphne's `send` never suspend; if a server's does, messages other tasks emit meanwhile wait
    in order in the outbox (bounded: past it, the emitting task waits) and every one is delivered."""
    from realtime.relay import ACTIVE_SESSIONS

    monkeypatch.setattr("realtime.relay.QUEUE_SIZE", 3)
    fake_realtime.scenario = "echo"
    comm = await start(voice_widget)
    relay = next(iter(ACTIVE_SESSIONS))
    original = relay._send_browser
    waiting = []

    async def slow(text):
        await asyncio.sleep(0.005)
        waiting.append(len(relay.outbox))
        await original(text)

    relay._send_browser = slow
    for i in range(30):  # the consumer's task emits the refusals while the upstream reader sends the echoes
        await comm.send_to(text_data=HEAD + numbered(i) + '"}')
        await comm.send_to(text_data="not json")
    seen = []
    while len(seen) < 60:
        output = await comm.receive_output(timeout=10)
        seen.append(json.loads(output["text"]))
    assert [e["delta"] for e in seen if e["type"] == "audio.delta"] == [numbered(i) for i in range(30)]
    assert [e["code"] for e in seen if e["type"] == "error"] == ["invalid_event"] * 30
    assert 0 < max(waiting) <= 3 and not relay.outbox
    await comm.disconnect()
