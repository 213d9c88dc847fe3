"""widgets.aio.pg_array: the loop statements' array parameters as PostgreSQL array literals (issue 11 bench: psycopg's
Python list dumper was a large part of the chat's one INSERT per batch). Whatever a visitor or n8n sends comes back
exactly, through PostgreSQL's own array parser, and through the chat's two loop statements."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync
from django.db import connection

from widgets import chat as chat_module
from widgets.aio import pg_array, pg_async, pg_async_close
from widgets.models import Conversation
from widgets.tests.conftest import chat_turn, record_batch

pytestmark = [
    pytest.mark.django_db(transaction=True),  # the loop's own connections see only what is committed
    pytest.mark.skipif(connection.vendor != "postgresql", reason="the loop path is PostgreSQL's (CI runs it)"),
]

HOSTILE = [
    'say "hi"',
    "back\\slash",
    "trailing backslash\\",
    "\\",
    '\\"',
    "{braces}",
    "{",
    "}",
    "a,b",
    ",",
    "NULL",
    "null",
    "",
    " ",
    "  leading and trailing  ",
    "new\nline\ttab\r\n",
    "unicode é 漢字 ✓ and 🤖",
    "'single' quotes; DROP TABLE x; --",
    "x" * 100_000,
]


def loop_select(sql: str, params: dict) -> tuple:
    async def run():
        try:
            (row,) = await pg_async(sql, params)
            return row
        finally:
            await pg_async_close()

    return async_to_sync(run)()


def test_text_arrays_come_back_exactly():
    values = [*HOSTILE, None, "after a NULL"]
    (back,) = loop_select("SELECT %(a)s::text[]", {"a": pg_array(values)})
    assert back == values


@pytest.mark.parametrize("cast", ["bigint", "integer"])
def test_integer_arrays_come_back_exactly(cast):
    values = [0, -1, 7, None, 2**31 - 1, -(2**31)] + ([2**62, -(2**62)] if cast == "bigint" else [])
    (back,) = loop_select(f"SELECT %(a)s::{cast}[]", {"a": pg_array(values)})
    assert back == values


def test_varchar_and_empty_arrays():
    (varchar, empty, lengths) = loop_select(
        "SELECT %(v)s::varchar[], %(e)s::text[], array_length(%(v)s::varchar[], 1)",
        {"v": pg_array(HOSTILE[:12]), "e": pg_array([])},
    )
    assert varchar == HOSTILE[:12] and empty == [] and lengths == 12


@pytest.mark.parametrize("value", [True, 1.5, {"a": 1}, b"bytes", ["nested"]])
def test_anything_but_str_int_or_none_is_refused(value):
    with pytest.raises(TypeError):
        pg_array(["ok", value])


def test_a_nul_is_refused_not_sent():
    with pytest.raises(ValueError, match="NUL"):
        pg_array(["fine", "bad\x00byte"])


@pytest.fixture
def loop_path(monkeypatch, db_steps) -> list[int]:
    monkeypatch.setattr(chat_module, "pg_async_available", lambda: True)
    monkeypatch.setattr(chat_module, "chat_cache", chat_module._ChatCache())
    return db_steps


def test_the_chat_statements_store_hostile_turns_exactly(loop_path, n8n_widget):
    """New sessions' first turns (`chat_sessions_open_statement`) and continuing ones (`chat_turns_insert_statement`),
    in one batch, with hostile texts, visitor ids, pages, identities, UI events and item keys: stored as sent."""
    going = Conversation.objects.create(widget=n8n_widget, channel="chat", session_id='s"1')
    texts = HOSTILE[:12] + HOSTILE[-3:]
    batch = []
    for i, text in enumerate(texts):
        extra = {
            "visitor_id": f'v,{{"{i}"}}\\',
            "page_url": f"https://shop.example.com/p?q={text[:20]}",
            "identity": {"name": text[:50], "i": i},
            "ui": [{"type": "card", "title": text[:30]}] if i % 2 else [],
            "key": f'chat:{{{i}}}\\"key',
            "latency_ms": None if i % 3 == 0 else i,
        }
        new_session = i % 2 == 0
        batch.append(
            chat_turn(
                n8n_widget, f"new,{i}" if new_session else 's"1', text, None if new_session else going.pk, **extra
            )
        )
        batch[-1]["reply_text"] = text[::-1] + '"\\'
    record_batch(batch)
    assert loop_path == []  # both statements ran on the loop
    for turn in batch:
        conv = Conversation.objects.get(widget=n8n_widget, session_id=turn["session_id"])
        user = conv.messages.get(role="user", item_id=turn["key"], text=turn["user_text"])
        reply = conv.messages.filter(role="assistant", id__gt=user.id).order_by("id").first()
        assert reply.text == turn["reply_text"]
        assert reply.latency_ms == turn["latency_ms"]
        assert reply.payload == ({"ui": turn["ui"]} if turn["ui"] else {})
        if turn["conversation_id"] is None:  # opened by this turn: its visitor, page and identity
            assert (conv.visitor_id, conv.page_url, conv.identity) == (
                turn["visitor_id"],
                turn["page_url"],
                turn["identity"],
            )
