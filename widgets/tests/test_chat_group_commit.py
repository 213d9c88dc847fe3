"""Group commit of answered chat turns (issue 11 bench): the turns that finish while one batch is being
written go together in the next — one DB step, one multi-row INSERT — and every turn stays whole and
gets its own result; a visitor is answered only once their turn is committed."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.db import connection
from django.test.utils import CaptureQueriesContext

from widgets import chat as chat_module
from widgets.models import Channel, Conversation, Message
from widgets.services.turns import chat_turns_record
from widgets.tests.conftest import chat_turn, run_in_threads


def turn(widget, session: str, conversation_id: int | None, text: str) -> dict:
    return chat_turn(widget, session, text, conversation_id)


def conversation(widget, session: str) -> Conversation:
    return Conversation.objects.create(widget=widget, channel=Channel.CHAT, session_id=session)


def texts(conv: Conversation) -> list[tuple[str, str]]:
    return list(conv.messages.order_by("id").values_list("role", "text"))


@pytest.mark.django_db
def test_continuing_turns_are_one_insert_and_new_sessions_open_their_conversation(n8n_widget):
    a, b = conversation(n8n_widget, "a"), conversation(n8n_widget, "b")
    batch = [turn(n8n_widget, "a", a.pk, "one"), turn(n8n_widget, "new", None, "two"), turn(n8n_widget, "b", b.pk, "3")]
    with CaptureQueriesContext(connection) as ctx:
        results = chat_turns_record(batch)
    opened = Conversation.objects.get(widget=n8n_widget, session_id="new")
    assert results == [a.pk, opened.pk, b.pk]
    inserts = [q["sql"] for q in ctx.captured_queries if q["sql"].startswith('INSERT INTO "widgets_message"')]
    assert len(inserts) == 2  # the two continuing turns (4 rows) in one, the new session's turn in one
    assert texts(a) == [("user", "one"), ("assistant", "re: one")]
    assert texts(b) == [("user", "3"), ("assistant", "re: 3")]
    assert texts(opened) == [("user", "two"), ("assistant", "re: two")]


@pytest.mark.django_db(transaction=True)  # the foreign key is checked at COMMIT
def test_a_deleted_conversation_in_a_batch_costs_no_other_turn(n8n_widget):
    a, b = conversation(n8n_widget, "a"), conversation(n8n_widget, "b")
    a_id = a.pk
    a.delete()  # retention removed it after the turn started
    results = chat_turns_record([turn(n8n_widget, "a", a_id, "one"), turn(n8n_widget, "b", b.pk, "two")])
    reopened = Conversation.objects.get(widget=n8n_widget, session_id="a")
    assert results == [reopened.pk, b.pk] and reopened.pk != a_id
    assert texts(reopened) == [("user", "one"), ("assistant", "re: one")]
    assert texts(b) == [("user", "two"), ("assistant", "re: two")]
    assert Message.objects.count() == 4  # every turn whole, none twice


@pytest.mark.django_db
def test_turns_finishing_together_share_a_step_and_each_waits_for_its_commit(db_steps, n8n_widget, monkeypatch):
    convs = [conversation(n8n_widget, f"s{i}") for i in range(6)]

    async def six_visitors():
        async def one(i: int) -> tuple[int, int]:
            conversation_id = await chat_module.turn_commit(**turn(n8n_widget, f"s{i}", convs[i].pk, f"t{i}"))
            count = Message.objects.filter(conversation_id=conversation_id).count
            return conversation_id, await sync_to_async(count)()  # answered only once committed

        return await asyncio.gather(*(one(i) for i in range(6)))

    results = async_to_sync(six_visitors)()
    assert results == [(c.pk, 2) for c in convs]
    assert db_steps == [1, 5]  # the first turn found no batch under way; the others went in the next one
    for i, conv in enumerate(convs):
        assert texts(conv) == [("user", f"t{i}"), ("assistant", f"re: t{i}")]


@pytest.mark.django_db
def test_a_refused_batch_refuses_each_of_its_turns(n8n_widget, monkeypatch):
    from django.db import OperationalError

    def down(turns):
        raise OperationalError("the database went away")

    monkeypatch.setattr(chat_module, "chat_turns_record", down)

    async def two():
        return await asyncio.gather(
            chat_module.turn_commit(**turn(n8n_widget, "x", None, "one")),
            chat_module.turn_commit(**turn(n8n_widget, "y", None, "two")),
            return_exceptions=True,
        )

    results = async_to_sync(two)()
    assert all(isinstance(result, OperationalError) for result in results)
    assert not Message.objects.exists()


@pytest.mark.django_db
def test_new_sessions_in_a_batch_open_together_and_count_once_each(n8n_widget):
    from licenses.models import LicenseUsage

    joined = conversation(n8n_widget, "opened-meanwhile")  # its first turn's checks found none
    batch = [
        turn(n8n_widget, "n1", None, "one"),
        turn(n8n_widget, "n2", None, "two"),
        turn(n8n_widget, "opened-meanwhile", None, "three"),
        turn(n8n_widget, "n1", None, "four"),  # a second first message of n1 in the same batch
    ]
    with CaptureQueriesContext(connection) as ctx:
        results = chat_turns_record(batch)
    n1, n2 = (Conversation.objects.get(widget=n8n_widget, session_id=s) for s in ("n1", "n2"))
    assert results == [n1.pk, n2.pk, joined.pk, n1.pk]
    inserts = [
        table
        for q in ctx.captured_queries
        for table in ("widgets_conversation", "widgets_message")
        if f'INSERT INTO "{table}"' in q["sql"]
    ]
    assert inserts == ["widgets_conversation", "widgets_message"]  # one statement each
    assert LicenseUsage.objects.get(license=n8n_widget.license).conversations == 2  # n1 and n2, once each
    assert texts(n1) == [("user", "one"), ("assistant", "re: one"), ("user", "four"), ("assistant", "re: four")]
    assert texts(n2) == [("user", "two"), ("assistant", "re: two")]
    assert texts(joined) == [("user", "three"), ("assistant", "re: three")]


@pytest.mark.django_db(transaction=True)
def test_batches_opening_the_same_sessions_at_once_open_each_once(n8n_widget):
    """Concurrent batches (as N web processes would write them) with the same new sessions: the batch that
    loses a session's insert rolls back and stores its turns one by one, race-safe; nothing is lost,
    nothing is stored twice, and each conversation is counted once."""
    import random
    import threading

    from django.db import connections

    from licenses.models import LicenseUsage

    if connection.vendor != "postgresql":
        pytest.skip("SQLite serialises writers with a file lock; this runs on PostgreSQL in CI")
    sessions, writers = 10, 6
    barrier = threading.Barrier(writers)
    results: list[list] = []

    def writer(n: int) -> None:
        batch = [turn(n8n_widget, f"race-{s}", None, f"w{n}") for s in range(sessions)]
        random.Random(n).shuffle(batch)
        try:
            barrier.wait()
            results.append(chat_turns_record(batch))
        finally:
            connections.close_all()

    run_in_threads(writer, writers)
    assert len(results) == writers
    assert not [r for batch in results for r in batch if isinstance(r, Exception)]
    assert Conversation.objects.filter(widget=n8n_widget).count() == sessions
    assert LicenseUsage.objects.get(license=n8n_widget.license).conversations == sessions
    for conv in Conversation.objects.filter(widget=n8n_widget):
        assert sorted(conv.messages.filter(role="user").values_list("text", flat=True)) == [
            f"w{n}" for n in range(writers)
        ]
        assert conv.messages.count() == 2 * writers


@pytest.mark.django_db(transaction=True)  # the loop's own connections see only what is committed
def test_on_a_server_loop_continuing_turns_are_written_by_the_loop_and_a_deleted_one_by_the_step(
    db_steps, n8n_widget, monkeypatch
):
    """With PostgreSQL's pool on a server loop (`pg_async_available`), a batch's continuing turns are ONE
    INSERT on the loop's own connections, no DB step; the rows are those the step writes. A batch whose
    insert fails (a conversation deleted meanwhile) goes through the step, which stores each turn whole."""
    from widgets.aio import pg_async_close

    if connection.vendor != "postgresql":
        pytest.skip("the loop path runs on PostgreSQL (CI runs it)")
    monkeypatch.setattr(chat_module, "pg_async_available", lambda: True)
    convs = [conversation(n8n_widget, f"s{i}") for i in range(4)]
    by_step = chat_turns_record([{**turn(n8n_widget, "s0", convs[0].pk, "step"), "ui": [{"type": "card"}]}])

    async def commit(batch):
        try:
            return await asyncio.gather(*(chat_module.turn_commit(**t) for t in batch))
        finally:
            await pg_async_close()

    batch = [turn(n8n_widget, f"s{i}", convs[i].pk, f"t{i}") for i in range(4)]
    batch[0]["ui"] = [{"type": "card"}]
    assert async_to_sync(commit)(batch) == [c.pk for c in convs]
    assert db_steps == []  # no DB step: the loop wrote them
    for i, conv in enumerate(convs):
        assert texts(conv)[-2:] == [("user", f"t{i}"), ("assistant", f"re: t{i}")]
    fields = ("role", "payload", "item_id", "failure_kind", "upstream_status", "latency_ms")
    rows = list(Message.objects.filter(conversation=convs[0]).order_by("id").values_list(*fields))
    keys = [row[2] for row in rows]
    assert keys[0] == keys[1] == keys[3] == "" and keys[2].startswith("chat:")  # the turn's key, on its user message
    assert [row[:2] + row[3:] for row in rows[2:]] == [row[:2] + row[3:] for row in rows[:2]]  # the step's rows
    assert by_step == [convs[0].pk]
    assert all(m.created_at is not None for m in Message.objects.all())

    gone = convs[1].pk
    convs[1].delete()  # retention removed it after the turn started
    again = [turn(n8n_widget, "s1", gone, "after"), turn(n8n_widget, "s2", convs[2].pk, "also")]
    reopened_id, kept_id = async_to_sync(commit)(again)
    reopened = Conversation.objects.get(widget=n8n_widget, session_id="s1")
    assert (reopened_id, kept_id) == (reopened.pk, convs[2].pk) and reopened.pk != gone
    assert db_steps == [1]  # the first turn (a batch alone) failed on the loop and went through the step; s2 did not
    assert texts(reopened) == [("user", "after"), ("assistant", "re: after")]
    assert texts(convs[2])[-2:] == [("user", "also"), ("assistant", "re: also")]
    assert Message.objects.filter(conversation=convs[2]).count() == 4  # nothing twice


@pytest.mark.django_db
def test_conversations_opened_by_the_batch_statement_are_the_orms_rows(n8n_widget):
    """PostgreSQL opens a batch's conversations with one fixed statement: every column is what the ORM writes
    for the same conversation, and the ids come back in the turns' order."""
    from widgets.services.turns import _conversations_insert

    if connection.vendor != "postgresql":
        pytest.skip("the statement is PostgreSQL's (elsewhere the ORM opens them)")
    identity = {"user_id": "u-1", "verified": True, "attributes": {"plan": "pro"}}
    turns = [
        {**turn(n8n_widget, f"raw-{i}", None, "x"), "visitor_id": f"v-{i}", "page_url": "https://a.example/p",
         "identity": identity if i == 1 else {}}
        for i in (3, 1, 2)
    ]  # fmt: skip
    ids = _conversations_insert(turns)
    opened = [Conversation.objects.get(pk=pk) for pk in ids]
    assert [c.session_id for c in opened] == ["raw-3", "raw-1", "raw-2"]  # in the turns' order
    orm = Conversation.objects.create(
        widget=n8n_widget,
        channel=Channel.CHAT,
        session_id="orm-1",
        visitor_id="v-1",
        page_url="https://a.example/p",
        identity=identity,
    )
    skip = ("id", "session_id", "started_at")
    as_row = lambda c: {f.attname: getattr(c, f.attname) for f in c._meta.concrete_fields if f.name not in skip}  # noqa: E731
    orm.refresh_from_db()
    assert as_row(opened[1]) == as_row(orm)
    assert opened[1].started_at is not None and abs((opened[1].started_at - orm.started_at).total_seconds()) < 60
