"""The relay's per-message hot path (issue 14.4): orjson for upstream events and browser events, the bounded
prefix check for audio appends, and frames going straight from the socket to the relay. Every guarantee of the
slow path must hold on the fast one."""

from __future__ import annotations

import json

import pytest

from realtime import events
from realtime.tests.conftest import communicator, receive_until

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
