"""A chat turn is stored once when the loop's connection is lost at commit (issue 11, finding 9 and the soak's
"zero duplicated messages"). The group commit writes a batch on the loop's own connections; when a statement's
outcome is unknown (PostgreSQL committed it, then the connection was lost before the answer came back), the DB
step first finds the batch's turns already stored, by the key each turn got before its first write, and stores
only the others. A statement PostgreSQL refused (a bad row) is not looked up: it stored nothing."""

from __future__ import annotations

import asyncio
import time

import psycopg
import pytest
from asgiref.sync import async_to_sync
from django.db import OperationalError, connection, connections

from licenses.models import LicenseUsage
from widgets import chat as chat_module
from widgets.aio import pg_async_close
from widgets.models import Channel, Conversation, Message
from widgets.tests.conftest import chat_turn as turn
from widgets.tests.conftest import mixed_batch, record_batch

pytestmark = [
    pytest.mark.django_db(transaction=True),  # the loop's own connections see only what is committed
    pytest.mark.skipif(connection.vendor != "postgresql", reason="the loop path is PostgreSQL's (CI runs it)"),
]

LOST = "consuming input failed: server closed the connection unexpectedly"


def connection_lost() -> OperationalError:
    """The error a loop statement raises when PostgreSQL's connection drops: psycopg's, as Django's class."""
    try:
        with connections["default"].wrap_database_errors:
            raise psycopg.OperationalError(LOST)
    except OperationalError as error:
        return error
    raise AssertionError("not wrapped")


@pytest.fixture
def loop_path(monkeypatch, db_steps) -> dict[str, list[int]]:
    """The loop path on (PostgreSQL's pool on a server loop); the sizes of the batches the DB step stored
    (`chat_turns_record`) and of those it looked up by key first (`chat_turns_stored`)."""
    monkeypatch.setattr(chat_module, "pg_async_available", lambda: True)
    monkeypatch.setattr(chat_module, "chat_cache", chat_module._ChatCache())
    lookups: list[int] = []
    real = chat_module.chat_turns_stored

    def counted(turns, **kwargs):
        lookups.append(len(turns))
        return real(turns, **kwargs)

    monkeypatch.setattr(chat_module, "chat_turns_stored", counted)
    return {"stored": db_steps, "looked_up": lookups}


def lose_after_commit(monkeypatch, name: str) -> list[str]:
    """`pg_async_execute` or `pg_async` runs its statement (committed), then its connection is lost."""
    real = getattr(chat_module, name)
    ran: list[str] = []

    async def lost(sql, params):
        await real(sql, params)
        ran.append(name)
        raise connection_lost()

    monkeypatch.setattr(chat_module, name, lost)
    return ran


def lose_before(monkeypatch, name: str) -> None:
    """The connection is lost before the statement reached PostgreSQL (the same error: outcome unknown)."""

    async def lost(sql, params):
        raise connection_lost()

    monkeypatch.setattr(chat_module, name, lost)


def users(conv: Conversation) -> list[str]:
    return list(conv.messages.filter(role="user").order_by("id").values_list("text", flat=True))


def assert_each_turn_once(batch: list[dict], results: list) -> None:
    """Every turn of the batch: stored exactly once (both messages), in the conversation its result names."""
    for item, result in zip(batch, results, strict=True):
        assert isinstance(result, int), result
        rows = Message.objects.filter(
            conversation__widget=item["widget"], text__in=(item["user_text"], item["reply_text"])
        )
        assert sorted(rows.values_list("conversation_id", "role")) == [(result, "assistant"), (result, "user")]
        assert rows.get(role="user").item_id == item["key"]


def counted(widget) -> int:
    usage = LicenseUsage.objects.filter(license=widget.license).first()
    return usage.conversations if usage else 0


def test_a_continuing_batch_committed_before_its_connection_was_lost_is_not_stored_again(
    loop_path, n8n_widget, monkeypatch
):
    convs = [Conversation.objects.create(widget=n8n_widget, channel=Channel.CHAT, session_id=f"c{i}") for i in range(3)]
    batch = [turn(n8n_widget, f"c{i}", f"t{i}", convs[i].pk) for i in range(3)]
    ran = lose_after_commit(monkeypatch, "pg_async_execute")
    results = record_batch(batch)
    assert ran == ["pg_async_execute"]
    assert results == [c.pk for c in convs]
    assert_each_turn_once(batch, results)
    assert loop_path == {"stored": [], "looked_up": [3]}  # all three found by key: nothing stored again
    assert Message.objects.count() == 6


def test_an_opening_batch_committed_before_its_connection_was_lost_is_not_opened_or_counted_again(
    loop_path, n8n_widget, monkeypatch
):
    existing = Conversation.objects.create(widget=n8n_widget, channel=Channel.CHAT, session_id="taken")
    batch = [
        turn(n8n_widget, "n0", "one"),
        turn(n8n_widget, "taken", "two"),  # the statement does not open it: the DB step stores it
        turn(n8n_widget, "n1", "three"),
        turn(n8n_widget, "n0", "four"),  # a second first message of n0 in the batch
    ]
    ran = lose_after_commit(monkeypatch, "pg_async")
    results = record_batch(batch)
    assert ran == ["pg_async"]
    n0, n1 = (Conversation.objects.get(widget=n8n_widget, session_id=s) for s in ("n0", "n1"))
    assert results == [n0.pk, existing.pk, n1.pk, n0.pk]
    assert_each_turn_once(batch, results)
    assert loop_path == {"stored": [1], "looked_up": [4]}  # only "taken"'s turn was not stored by the statement
    assert Conversation.objects.filter(widget=n8n_widget).count() == 3
    assert counted(n8n_widget) == 2  # n0 and n1, once each
    assert users(n0) == ["one", "four"] and users(existing) == ["two"] and users(n1) == ["three"]
    # The conversations found are remembered as those the statement opened would have been.
    assert chat_module.chat_cache.conversations[(n8n_widget.pk, "n0")] == n0.pk
    assert chat_module.chat_cache.conversations[(n8n_widget.pk, "n1")] == n1.pk


def test_a_mixed_batch_stores_once_what_one_statement_committed_and_what_the_other_never_sent(
    loop_path, n8n_widget, monkeypatch
):
    going, batch = mixed_batch(n8n_widget)
    lose_after_commit(monkeypatch, "pg_async_execute")  # the continuing turns: committed, then lost
    lose_before(monkeypatch, "pg_async")  # the opening turns: lost before PostgreSQL saw them
    results = record_batch(batch)
    n0, n1 = (Conversation.objects.get(widget=n8n_widget, session_id=s) for s in ("n0", "n1"))
    assert results == [going[0].pk, n0.pk, going[1].pk, n1.pk]
    assert_each_turn_once(batch, results)
    assert loop_path == {"stored": [2], "looked_up": [4]}  # the two opening turns, not found, stored by the step
    assert Message.objects.count() == 8
    assert counted(n8n_widget) == 2


def test_a_refused_statement_is_not_looked_up_and_every_turn_is_stored_once(loop_path, n8n_widget):
    """A bad row (a negative latency breaks the message's check) fails the continuing INSERT: PostgreSQL answered,
    nothing was stored, so the DB step stores every turn (the bad one alone is refused) without a lookup."""
    going = [Conversation.objects.create(widget=n8n_widget, channel=Channel.CHAT, session_id=f"c{i}") for i in (0, 1)]
    batch = [
        turn(n8n_widget, "c0", "one", going[0].pk),
        turn(n8n_widget, "c1", "bad", going[1].pk, latency_ms=-1),
        turn(n8n_widget, "n0", "two"),
        turn(n8n_widget, "c0", "three", going[0].pk),
    ]
    results = record_batch(batch)
    n0 = Conversation.objects.get(widget=n8n_widget, session_id="n0")
    assert results[0] == going[0].pk and results[2] == n0.pk and results[3] == going[0].pk
    assert isinstance(results[1], Exception)
    good = [batch[0], batch[2], batch[3]]
    assert_each_turn_once(good, [results[0], results[2], results[3]])
    assert loop_path == {"stored": [3], "looked_up": []}  # the continuing INSERT's turns; "two" was on the loop
    assert Message.objects.count() == 6 and users(going[1]) == []


def test_a_statement_still_running_when_its_connection_was_lost_is_waited_for(loop_path, n8n_widget, monkeypatch):
    """The client saw the connection drop while PostgreSQL was still running the statement (it commits later):
    the DB step's lookup waits on the batch's fence (an advisory lock the statement holds until it ends), so it
    finds the turns once they are committed instead of storing them a second time."""
    convs = [Conversation.objects.create(widget=n8n_widget, channel=Channel.CHAT, session_id=f"c{i}") for i in (0, 1)]
    batch = [turn(n8n_widget, f"c{i}", f"t{i}", convs[i].pk) for i in (0, 1)]
    db = connection.settings_dict
    conninfo = {"dbname": db["NAME"], "user": db["USER"], "password": db["PASSWORD"], "host": db["HOST"]}
    conninfo = {k: v for k, v in {**conninfo, "port": db["PORT"]}.items() if v}
    committers: list[asyncio.Task] = []
    waited: list[bool] = []

    async def in_flight(sql, params):
        """The statement runs in a transaction that is not committed yet when the client gives up on it."""
        conn = await psycopg.AsyncConnection.connect(**conninfo)
        await conn.execute(sql, params)
        committers.append(asyncio.get_running_loop().create_task(commit_once_the_step_waits(conn)))
        raise connection_lost()

    async def commit_once_the_step_waits(conn):
        async with await psycopg.AsyncConnection.connect(**conninfo, autocommit=True) as watcher:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                cursor = await watcher.execute("SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
                if await cursor.fetchone():
                    waited.append(True)
                    break
                await asyncio.sleep(0.01)
        await conn.commit()
        await conn.close()

    async def run():
        try:
            return await chat_module._batch_record(batch)
        finally:
            await asyncio.gather(*committers)  # committed in any case: no transaction left open
            await pg_async_close()

    monkeypatch.setattr(chat_module, "pg_async_execute", in_flight)
    results = async_to_sync(run)()
    assert results == [c.pk for c in convs]
    assert_each_turn_once(batch, results)
    assert len(committers) == 1 and waited == [True]  # the lookup waited for the statement still holding its fence
    assert loop_path == {"stored": [], "looked_up": [2]}
    assert Message.objects.count() == 4
