"""A webhook's stream is read in bounded memory and in time linear in its length: every tenant's streams share
a process (and, under ASGI, its one event loop), so one runaway or hostile webhook must not hold the others up.
Lines are split as they arrive (`NdjsonLines`), wherever the reads cut them."""

from __future__ import annotations

import json
import threading
import time
import tracemalloc

import pytest

from widgets import n8n
from widgets.models import Message
from widgets.n8n import NdjsonLines
from widgets.tests.conftest import ORIGIN, publish

pytestmark = pytest.mark.django_db


def _send(client, widget, session="s-lim"):
    response = client.post(
        f"/api/widget/{widget.license.key}/chat",
        {"action": "sendMessage", "sessionId": session, "chatInput": "Hi there"},
        content_type="application/json",
        HTTP_ORIGIN=ORIGIN,
    )
    assert response.status_code == 200 and response.streaming
    return [json.loads(line) for line in b"".join(response.streaming_content).splitlines()]


@pytest.fixture
def streaming_widget(n8n_widget, owner):
    return publish(n8n_widget, owner, config={"connection": {"n8n": {"streaming": True}}})


def test_lines_are_split_wherever_the_reads_cut_them():
    lines = NdjsonLines()
    assert lines.feed("") == []
    assert lines.feed('{"a":') == []
    assert lines.feed("1") == []
    assert lines.feed('}\n{"b":2}{"c"') == ['{"a":1}', '{"b":2}']  # `}{` without a newline is split
    assert lines.feed(":3}") == []
    assert lines.feed('{"d":4}\n\n') == ['{"c":3}', '{"d":4}', ""]  # `}{` across two reads too
    assert lines.feed('{"e":5}') == []
    assert lines.rest() == '{"e":5}'  # the last line, when the stream ends without a newline


def test_a_long_line_in_small_pieces_costs_linear_time():
    """300,000 one-character reads of one line: rescanning the line with every read (as before) took minutes;
    each piece scanned once takes well under a second."""
    lines = NdjsonLines()
    content = "x" * 300_000
    started = time.process_time()
    pieces = ['{"type":"item","content":"', *content, '"}']
    assert all(lines.feed(piece) == [] for piece in pieces)
    assert lines.feed("\n") == [f'{{"type":"item","content":"{content}"}}']
    assert time.process_time() - started < 5


def test_a_long_line_in_small_pieces_is_held_in_about_its_own_size():
    """A webhook dripping one line: the pending line is kept as one growing text, not one object per read (a list
    of 2-character strings held ~30x the line: 59 MB for 2 MB)."""
    lines = NdjsonLines()
    tracemalloc.start()
    try:
        lines.feed('{"type":"item","content":"')
        for _ in range(500_000):
            lines.feed("xy")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3_000_000  # the line is 1 MB
    assert len(lines.rest()) == 1_000_026


def test_a_stream_cut_anywhere_is_relayed_whole(client, streaming_widget, fake_n8n):
    """End to end, the fake sending a line, a `}{` pair and a multi-byte character in separate chunks (how the
    reads cut them is the network's: the splitting itself is `test_lines_are_split_wherever_the_reads_cut_them`)."""
    ndjson = (
        json.dumps({"type": "item", "content": "Héllo "}, ensure_ascii=False)
        + json.dumps({"type": "item", "content": "wörld 👋"}, ensure_ascii=False)
        + "\n"
        + json.dumps({"type": "end"})
    ).encode()
    cuts = [5, ndjson.index("é".encode()) + 1, ndjson.index(b"}{") + 1, ndjson.index("👋".encode()) + 2]
    pieces = [ndjson[a:b] for a, b in zip([0, *cuts], [*cuts, len(ndjson)], strict=True)]
    fake_n8n.reply(chunks=pieces, delay=0.01)
    assert _send(client, streaming_widget) == [
        {"type": "item", "content": "Héllo "},
        {"type": "item", "content": "wörld 👋"},
        {"type": "end", "output": "Héllo wörld 👋", "ui": []},
    ]


def test_a_stream_past_its_size_limit_is_cut_with_an_error_line_and_a_failed_turn(
    client, streaming_widget, fake_n8n, monkeypatch
):
    monkeypatch.setattr(n8n, "MAX_STREAM_BYTES", 50_000)
    # The fake holds all but the first item until that one reached the visitor: a first read cannot take the whole
    # ~200 kB at once, however the machine schedules the two sides.
    gate = threading.Event()
    fake_n8n.reply(stream=[{"type": "item", "content": "y" * 1_000} for _ in range(200)], gate=gate)
    response = client.post(
        f"/api/widget/{streaming_widget.license.key}/chat",
        {"action": "sendMessage", "sessionId": "s-lim", "chatInput": "Hi there"},
        content_type="application/json",
        HTTP_ORIGIN=ORIGIN,
    )
    parts = iter(response.streaming_content)
    first = next(parts)
    gate.set()
    lines = [json.loads(line) for line in b"".join([first, *parts]).splitlines()]
    assert lines[0] == {"type": "item", "content": "y" * 1_000}
    assert lines[-1]["type"] == "error" and lines[-1]["code"] == "upstream_error"
    assert 0 < len(lines) - 1 < 60  # what came before the limit was relayed, nothing after it
    [message] = Message.objects.all()
    assert (message.role, message.failure_kind) == ("user", "upstream_error")  # no answer stored


def test_a_single_endless_line_is_cut_at_the_limit(client, streaming_widget, fake_n8n, monkeypatch):
    monkeypatch.setattr(n8n, "MAX_STREAM_BYTES", 50_000)
    fake_n8n.reply(chunks=[b'{"type":"item","content":"', *[b"z" * 1_000] * 200])  # never a newline
    lines = _send(client, streaming_widget)
    assert lines == [lines[-1]] and lines[-1]["type"] == "error"
