"""New sessions' first turns written on the server loop (issue 11 bench): ONE statement per group-commit batch
(`widgets.services.turns.chat_sessions_open_statement`) opens the conversations, counts them in the month's
usage and stores the turns' messages, with the guarantees of the DB step's `_sessions_open`: one conversation
per session, counted once, every turn stored exactly once; what the statement did not open (the conversation
exists) or could not write falls back to the DB step."""

from __future__ import annotations

import asyncio
import json
import random
import threading

import pytest
from asgiref.sync import async_to_sync
from django.db import connection, connections
from django.test import AsyncClient

from licenses.models import LicenseUsage
from widgets import chat as chat_module
from widgets.aio import pg_async_close
from widgets.models import Channel, Conversation, Message
from widgets.services.turns import chat_turns_record
from widgets.tests.conftest import ORIGIN, chat_turn, mixed_batch, record_batch, run_in_threads

pytestmark = [
    pytest.mark.django_db(transaction=True),  # the loop's own connections see only what is committed
    pytest.mark.skipif(connection.vendor != "postgresql", reason="the loop path is PostgreSQL's (CI runs it)"),
]


turn = chat_turn


def texts(conv: Conversation) -> list[tuple[str, str]]:
    return list(conv.messages.order_by("id").values_list("role", "text"))


def counted(widget) -> int:
    usage = LicenseUsage.objects.filter(license=widget.license).first()
    return usage.conversations if usage else 0


@pytest.fixture
def loop_path(monkeypatch, db_steps) -> list[int]:
    """The loop path on (PostgreSQL's pool on a server loop), and the sizes of the batches that still took the
    DB step (`chat_turns_record`), in order."""
    monkeypatch.setattr(chat_module, "pg_async_available", lambda: True)
    monkeypatch.setattr(chat_module, "chat_cache", chat_module._ChatCache())
    return db_steps


def commit_together(batch: list[dict]) -> list:
    """The turns finishing at once on one loop: the first alone (no batch under way), the rest in one batch."""

    async def run():
        try:
            return await asyncio.gather(*(chat_module.turn_commit(**t) for t in batch), return_exceptions=True)
        finally:
            await pg_async_close()

    return async_to_sync(run)()


def test_a_new_sessions_first_turn_through_the_chat_endpoint_is_one_statement_on_the_loop(
    loop_path, n8n_widget, fake_n8n
):
    key = n8n_widget.license.key
    page = "https://shop.example.com/p/1"
    body = {"action": "sendMessage", "sessionId": "first", "chatInput": "hi", "metadata": {"page": page}}

    async def post():
        try:
            return await AsyncClient().post(
                f"/api/widget/{key}/chat",
                data=json.dumps(body),
                content_type="application/json",
                headers={"Origin": ORIGIN, "X-Switchboard-Visitor": "visitor-7"},
            )
        finally:
            await pg_async_close()

    response = async_to_sync(post)()
    assert response.status_code == 200, response.content
    assert loop_path == []  # no DB step: the loop's statement stored it
    [conv] = Conversation.objects.filter(widget=n8n_widget)
    assert (conv.channel, conv.session_id, conv.page_url, conv.is_preview) == (Channel.CHAT, "first", page, False)
    assert texts(conv) == [("user", "hi"), ("assistant", "Hello from n8n")]
    assert counted(n8n_widget) == 1
    assert chat_module.chat_cache.conversations[(n8n_widget.pk, "first")] == conv.pk

    # The rows are those the DB step's path writes for the same turn (its key on the user message).
    key = conv.messages.get(role="user").item_id
    assert key.startswith("chat:") and len(key) >= len("chat:") + 16
    by_step = chat_turns_record([turn(n8n_widget, "by-step", "hi", visitor_id=conv.visitor_id, page_url=page, key=key)])
    orm = Conversation.objects.get(pk=by_step[0])
    skip = ("id", "session_id", "started_at")
    as_row = lambda c: {f.attname: getattr(c, f.attname) for f in c._meta.concrete_fields if f.name not in skip}  # noqa: E731
    assert as_row(conv) == as_row(orm)
    fields = ("role", "payload", "item_id", "failure_kind", "upstream_status")
    ours = list(conv.messages.order_by("id").values_list(*fields))
    assert ours == list(orm.messages.order_by("id").values_list(*fields))
    assert all(m.created_at is not None for m in Message.objects.all())
    usage = LicenseUsage.objects.get(license=n8n_widget.license)  # the loop's upsert made it, the step's added one
    assert (usage.conversations, usage.chatkit_sessions, usage.voice_sessions, usage.voice_seconds) == (2, 0, 0, 0)
    assert usage.cost_usd == 0 and usage.month.day == 1 and usage.updated_at is not None


def test_first_messages_of_one_session_in_one_batch_open_one_conversation_counted_once(loop_path, n8n_widget):
    batch = [
        turn(n8n_widget, "warm-up", "zero"),  # alone in the first batch
        turn(n8n_widget, "s", "one", visitor_id="v-first", ui=[{"type": "card"}]),
        turn(n8n_widget, "other", "two"),
        turn(n8n_widget, "s", "three", visitor_id="v-second", latency_ms=40),
    ]
    results = commit_together(batch)
    s, other, warm = (Conversation.objects.get(widget=n8n_widget, session_id=x) for x in ("s", "other", "warm-up"))
    assert results == [warm.pk, s.pk, other.pk, s.pk]
    assert loop_path == []
    assert s.visitor_id == "v-first"  # the session's first turn in the batch opened it
    assert texts(s) == [("user", "one"), ("assistant", "re: one"), ("user", "three"), ("assistant", "re: three")]
    assert [m.payload for m in s.messages.order_by("id")] == [{}, {"ui": [{"type": "card"}]}, {}, {}]
    assert [m.latency_ms for m in s.messages.order_by("id")] == [None, 12, None, 40]
    assert texts(other) == [("user", "two"), ("assistant", "re: two")]
    assert counted(n8n_widget) == 3


def test_a_conversation_opened_elsewhere_meanwhile_is_joined_and_not_counted(loop_path, n8n_widget):
    existing = Conversation.objects.create(widget=n8n_widget, channel=Channel.CHAT, session_id="taken")
    results = record_batch([turn(n8n_widget, "taken", "one"), turn(n8n_widget, "fresh", "two")])
    fresh = Conversation.objects.get(widget=n8n_widget, session_id="fresh")
    assert results == [existing.pk, fresh.pk]
    assert loop_path == [1]  # only the turn whose conversation the statement did not open took the DB step
    assert Conversation.objects.filter(widget=n8n_widget, session_id="taken").count() == 1
    assert texts(existing) == [("user", "one"), ("assistant", "re: one")]
    assert texts(fresh) == [("user", "two"), ("assistant", "re: two")]
    assert counted(n8n_widget) == 1  # "fresh" only


def test_a_failed_statement_falls_back_for_the_whole_batch_and_stores_each_turn_once(loop_path, n8n_widget):
    """A bad row (a negative latency breaks the message's check) fails the statement after its conversations
    were inserted: the statement is atomic, so nothing stays, and the DB step stores each turn whole."""
    batch = [
        turn(n8n_widget, "a", "one"),
        turn(n8n_widget, "bad", "two", latency_ms=-1),
        turn(n8n_widget, "b", "three"),
        turn(n8n_widget, "a", "four"),
    ]
    results = record_batch(batch)
    assert loop_path == [4]  # every opening turn of the batch fell back
    a, b = (Conversation.objects.get(widget=n8n_widget, session_id=x) for x in ("a", "b"))
    assert results[0] == a.pk and results[2] == b.pk and results[3] == a.pk
    assert isinstance(results[1], Exception)  # the bad turn alone is refused
    assert not Conversation.objects.filter(session_id="bad").exists()
    assert texts(a) == [("user", "one"), ("assistant", "re: one"), ("user", "four"), ("assistant", "re: four")]
    assert texts(b) == [("user", "three"), ("assistant", "re: three")]
    assert Message.objects.count() == 6  # nothing twice
    assert counted(n8n_widget) == 2


def test_a_forced_database_error_falls_back_and_counts_nothing_twice(loop_path, n8n_widget, monkeypatch):
    from django.db import OperationalError

    async def down(sql, params):
        raise OperationalError("the loop's connection went away")

    monkeypatch.setattr(chat_module, "pg_async", down)
    results = record_batch([turn(n8n_widget, "x", "one"), turn(n8n_widget, "y", "two")])
    x, y = (Conversation.objects.get(widget=n8n_widget, session_id=s) for s in ("x", "y"))
    assert results == [x.pk, y.pk] and loop_path == [2]
    assert texts(x) == [("user", "one"), ("assistant", "re: one")]
    assert texts(y) == [("user", "two"), ("assistant", "re: two")]
    assert counted(n8n_widget) == 2


def test_a_mixed_batch_of_continuing_and_opening_turns_is_written_on_the_loop(loop_path, n8n_widget):
    going, batch = mixed_batch(n8n_widget)
    batch.append(turn(n8n_widget, "n0", "five"))
    results = record_batch(batch)
    n0, n1 = (Conversation.objects.get(widget=n8n_widget, session_id=s) for s in ("n0", "n1"))
    assert results == [going[0].pk, n0.pk, going[1].pk, n1.pk, n0.pk]
    assert loop_path == []
    assert texts(going[0]) == [("user", "one"), ("assistant", "re: one")]
    assert texts(going[1]) == [("user", "three"), ("assistant", "re: three")]
    assert texts(n0) == [("user", "two"), ("assistant", "re: two"), ("user", "five"), ("assistant", "re: five")]
    assert texts(n1) == [("user", "four"), ("assistant", "re: four")]
    assert counted(n8n_widget) == 2


def test_loop_batches_and_db_steps_racing_on_the_same_sessions_open_each_once(loop_path, n8n_widget):
    """Concurrent writers of the same new sessions, as N web processes would be: loop batches (each on a loop
    and pool of its own) and DB-step batches (`chat_turns_record`), in shuffled orders. One conversation per
    session, counted once, every writer's turn stored exactly once, no error (no deadlock)."""
    sessions, writers = 12, 6
    barrier = threading.Barrier(writers)
    results: list[list] = []
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        batch = [turn(n8n_widget, f"race-{s}", f"w{n}") for s in range(sessions)]
        batch += [turn(n8n_widget, f"race-{s}", f"w{n}-again") for s in range(0, sessions, 3)]
        random.Random(n).shuffle(batch)
        try:
            barrier.wait()
            results.append(record_batch(batch) if n % 2 == 0 else chat_turns_record(batch))
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            connections.close_all()

    run_in_threads(writer, writers)
    assert errors == [] and len(results) == writers
    assert not [r for batch in results for r in batch if isinstance(r, Exception)]
    assert Conversation.objects.filter(widget=n8n_widget).count() == sessions
    assert counted(n8n_widget) == sessions
    for conv in Conversation.objects.filter(widget=n8n_widget):
        again = [f"w{n}-again" for n in range(writers)] if int(conv.session_id.split("-")[1]) % 3 == 0 else []
        users = sorted(conv.messages.filter(role="user").values_list("text", flat=True))
        assert users == sorted([f"w{n}" for n in range(writers)] + again)
        assert conv.messages.filter(role="assistant").count() == len(users)
