"""Transcript writes every channel shares: chat turns and failures, voice and tool turns, ChatKit turns.

One home for the rows the inbox, analytics and bot health read (`Message` on a `Conversation`)."""

from __future__ import annotations

import contextlib
import json
import secrets
from functools import cache
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from licenses.api import storable
from licenses.services import usage_increment
from widgets.aio import pg_array
from widgets.models import Channel, Conversation, Message, Widget
from widgets.selectors import chat_conversation_find

if TYPE_CHECKING:
    from widgets.n8n import N8nError
    from widgets.tools import ToolResult


def chat_conversation_open(
    *,
    widget: Widget,
    session_id: str,
    visitor_id: str,
    page_url: str = "",
    identity: dict[str, Any] | None = None,
    looked: bool = False,
) -> Conversation:
    """The session's conversation, opened (and counted in the monthly usage) by the first message.

    Race-safe: concurrent first messages of one session all try the insert; the unique constraint
    `conversation_unique_chat_session` lets one win (it alone counts usage), the others wait for it
    and join its conversation (issue 11.8). `looked`: the caller found none a moment ago, so the insert
    is tried first (a conversation opened meanwhile is found by the constraint, as in a race). Call
    inside a transaction."""
    if not looked:
        conversation = chat_conversation_find(widget=widget, session_id=session_id)
        if conversation is not None:
            return conversation
    try:
        with transaction.atomic():
            conversation = Conversation.objects.create(
                widget=widget,
                channel=Channel.CHAT,
                session_id=session_id,
                visitor_id=visitor_id,
                page_url=page_url,
                identity=identity or {},
            )
            usage_increment(license=widget.license_id, conversations=1)
            return conversation
    except IntegrityError:
        conversation = chat_conversation_find(widget=widget, session_id=session_id)
        if conversation is None:
            raise
        return conversation


def chat_turn_record(
    *,
    widget: Widget,
    session_id: str,
    visitor_id: str,
    user_text: str,
    reply_text: str,
    ui: list[dict[str, Any]] | None = None,
    latency_ms: int | None = None,
    conversation_id: int | None = None,
    page_url: str = "",
    identity: dict[str, Any] | None = None,
    key: str = "",
) -> int:
    """One user message and one assistant message; a new session opens a conversation and counts it.
    Returns the conversation's id. `key` (`chat_turn_key`, the group commit's turns) is stored with the user
    message, so `chat_turns_stored` can tell whether the turn is stored already.

    A continuing session (`conversation_id` known) is ONE multi-row INSERT, atomic on its own: both
    messages or neither. If that conversation is gone meanwhile (deleted by retention), the turn
    opens the session's conversation again as a first message would."""

    turn = {"user_text": user_text, "reply_text": reply_text, "ui": ui, "latency_ms": latency_ms, "key": key}
    if conversation_id is not None:
        try:
            _messages_insert(_turn_rows(conversation_id, turn))  # one INSERT, atomic on its own
            return conversation_id
        except IntegrityError:  # the conversation is gone (retention): open the session's again below
            pass
    with transaction.atomic():
        conversation = chat_conversation_open(
            widget=widget,
            session_id=session_id,
            visitor_id=visitor_id,
            page_url=page_url,
            identity=identity,
            looked=conversation_id is None,  # the chat's checks looked for it just before the upstream call
        )
        _messages_insert(_turn_rows(conversation.pk, turn))
    return conversation.pk


def chat_turns_record(turns: list[dict[str, Any]]) -> list[int | Exception]:
    """Several visitors' turns (`chat_turn_record`'s arguments each) in as few statements as possible: the
    continuing sessions' messages in ONE multi-row INSERT (atomic: all of them or none), the new sessions'
    first turns in one transaction of a few statements (`_sessions_open`). Every turn stays whole: when a
    shared write fails (a conversation deleted or opened elsewhere meanwhile, a bad row), each of its turns
    is stored on its own through `chat_turn_record` (race-safe open), so one turn's trouble is never
    another's. Returns, per turn and in order, its conversation id or the exception that refused it."""
    results: list[int | Exception | None] = [None] * len(turns)
    continuing = [i for i, turn in enumerate(turns) if turn.get("conversation_id") is not None]
    if continuing:
        rows = [row for i in continuing for row in _turn_rows(turns[i]["conversation_id"], turns[i])]
        try:
            _messages_insert(rows)
        except DatabaseError:
            pass  # one by one below
        else:
            for i in continuing:
                results[i] = turns[i]["conversation_id"]
    opening = [i for i, turn in enumerate(turns) if turn.get("conversation_id") is None]
    if opening:
        try:
            opened = _sessions_open([turns[i] for i in opening])
        except DatabaseError:
            pass  # one by one below
        else:
            for i, conversation_id in zip(opening, opened, strict=True):
                results[i] = conversation_id
    for i, turn in enumerate(turns):
        if results[i] is None:
            try:
                results[i] = chat_turn_record(**turn)
            except DatabaseError as exc:
                results[i] = exc
    return results  # type: ignore[return-value]


# A chat turn's key (`chat_turn_key`) is kept in its user message's `Message.item_id`, which chat turns had empty
# (voice uses it for upstream item ids, and reads it only on voice conversations: `turns_save_new`); the prefix has
# a ':' that no voice item id has (the browser's report allows [A-Za-z0-9_-]), and nothing shows the column.
TURN_KEY_PREFIX = "chat:"


def chat_turn_key() -> str:
    """A new answered turn's unique key: 128 random bits (`chat_turns_stored`)."""
    return TURN_KEY_PREFIX + secrets.token_urlsafe(16)


def chat_turn_fence() -> int:
    """A key for the advisory lock that fences one batch's statements on the loop (`chat_turns_stored`)."""
    return secrets.randbits(63)


def chat_turns_stored(turns: list[dict[str, Any]], *, fence: int | None = None) -> list[int | None]:
    """For turns whose write's outcome is unknown (the loop's statement may have committed before its connection
    was lost), each turn's conversation id if it is stored already (its `key` is on a user message), else None.

    `fence`: the advisory lock the batch's statements held (shared) until they ended: taking it here waits for a
    statement that is still running on the server (its client gone) to commit or roll back, so what is found is
    final. The search goes through the conversations' indexes (the known conversation ids, the sessions'
    `conversation_unique_chat_session`) and then the messages' conversation foreign key: no index on the key."""
    keys = {turn["key"] for turn in turns if turn.get("key")}
    if not keys:
        return [None] * len(turns)
    with transaction.atomic():
        if fence is not None and connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [fence])
        conversation_ids = {turn["conversation_id"] for turn in turns if turn.get("conversation_id") is not None}
        opening = [turn for turn in turns if turn.get("conversation_id") is None]
        if opening:
            conversation_ids.update(
                Conversation.objects.filter(
                    widget_id__in={turn["widget"].pk for turn in opening},
                    session_id__in={turn["session_id"] for turn in opening},
                    channel=Channel.CHAT,
                    is_preview=False,
                )
                .order_by()
                .values_list("pk", flat=True)
            )
        found = dict(
            Message.objects.filter(conversation_id__in=conversation_ids, role=Message.Role.USER, item_id__in=keys)
            .order_by()
            .values_list("item_id", "conversation_id")
        )
    return [found.get(turn.get("key") or "") for turn in turns]


def _sessions_open(turns: list[dict[str, Any]]) -> list[int]:
    """The first turns of new sessions (several turns of one session included), all in ONE transaction:
    the conversations that exist by now are found in one query, the others inserted in one, the monthly
    usage counted once per license for the conversations inserted here, and every turn's messages in one
    INSERT. A session opened elsewhere meanwhile breaks the unique constraint and rolls the whole batch
    back (the caller then stores each turn on its own, race-safe), so a conversation is counted only by the
    insert that created it. Returns each turn's conversation id, in order."""

    def key(turn: dict[str, Any]) -> tuple[int, str]:
        return turn["widget"].pk, turn["session_id"]

    keys = {key(turn) for turn in turns}
    with transaction.atomic():
        found: dict[tuple[int, str], int] = {}
        existing = Conversation.objects.filter(
            widget_id__in={widget for widget, _ in keys},
            session_id__in={session for _, session in keys},
            channel=Channel.CHAT,
            is_preview=False,
        ).order_by("-started_at", "-id")  # the oldest last, so it is the one kept (chat_conversation_find's)
        for conversation_id, widget_id, session_id in existing.values_list("id", "widget_id", "session_id"):
            found[(widget_id, session_id)] = conversation_id
        opening: dict[tuple[int, str], dict[str, Any]] = {}
        for turn in sorted(turns, key=key):  # one insert order for every process (no lock-order deadlock)
            if key(turn) not in found and key(turn) not in opening:
                opening[key(turn)] = turn
        counted: dict[int, int] = {}
        for (widget_id, session_id), conversation_id in zip(
            opening, _conversations_insert(list(opening.values())), strict=True
        ):
            license_id = opening[(widget_id, session_id)]["widget"].license_id
            counted[license_id] = counted.get(license_id, 0) + 1
            found[(widget_id, session_id)] = conversation_id
        for license_id in sorted(counted):
            usage_increment(license=license_id, conversations=counted[license_id])
        _messages_insert([row for turn in turns for row in _turn_rows(found[key(turn)], turn)])
    return [found[key(turn)] for turn in turns]


def _conversations_insert(turns: list[dict[str, Any]]) -> list[int]:
    """Open a chat conversation for each turn (its widget, session, visitor, page and identity; every other
    column as `Conversation(channel=chat)` would have it), in this order; their ids. On PostgreSQL ONE
    fixed-text statement (issue 11 bench: the ORM's bulk_create of the 200 first turns that arrive together
    cost ~25 ms of CPU in its DB-step thread, the GIL held from the loop); elsewhere the ORM."""
    if not turns:
        return []
    rows = [
        Conversation(
            widget=turn["widget"],
            channel=Channel.CHAT,
            session_id=turn["session_id"],
            visitor_id=turn["visitor_id"],
            page_url=turn.get("page_url", ""),
            identity=turn.get("identity") or {},
        )
        for turn in turns
    ]
    if connection.vendor != "postgresql":
        Conversation.objects.bulk_create(rows)
        return [row.pk for row in rows]
    sql, fixed = _conversations_insert_sql()
    template = rows[0]  # the columns every row shares: their value as the ORM writes it (started_at: now)
    params = [field.get_db_prep_save(field.pre_save(template, True), connection) for field in fixed]
    params += [
        [row.widget_id for row in rows],
        [row.visitor_id for row in rows],
        [row.session_id for row in rows],
        [row.page_url for row in rows],
        [json.dumps(row.identity) for row in rows],
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [conversation_id for (conversation_id,) in cursor.fetchall()]  # in the rows' order (see the SQL)


PER_ROW = {"widget": "w", "visitor_id": "v", "session_id": "s", "page_url": "p", "identity": "i"}


@cache
def _conversations_insert_sql() -> tuple[str, list[Any]]:
    """`_conversations_insert`'s statement (PostgreSQL): the per-row columns from UNNEST (WITH ORDINALITY, so
    the ids come back in the rows' order), every other column one parameter; and those columns' fields."""
    quote = connection.ops.quote_name
    meta = Conversation._meta
    fields = [f for f in meta.concrete_fields if not f.primary_key]
    fixed = [f for f in fields if f.name not in PER_ROW]
    select = ", ".join(
        (f"c.{PER_ROW[f.name]}::jsonb" if f.name == "identity" else f"c.{PER_ROW[f.name]}")
        if f.name in PER_ROW
        else "%s"
        for f in fields
    )
    field = {f.name: f for f in fields}
    arrays = ", ".join(f"%s::{field[name].db_type(connection) if name != 'identity' else 'text'}[]" for name in PER_ROW)
    pk = quote(meta.pk.column)
    sql = (
        f"WITH opened AS (INSERT INTO {quote(meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) "  # noqa: S608
        f"SELECT {select} FROM UNNEST({arrays}) WITH ORDINALITY AS c ({', '.join(PER_ROW.values())}, n) "
        f"ORDER BY c.n RETURNING {pk}) SELECT {pk} FROM opened ORDER BY {pk}"
    )
    return sql, fixed


# A chat turn's two messages as rows for `_messages_insert`: (conversation, role, text, payload JSON, item id,
# latency). The item id is the turn's key (`chat_turn_key`) on the user message, else empty.
MessageRow = tuple[int, str, str, str, str, int | None]


def _turn_rows(conversation_id: int, turn: dict[str, Any]) -> list[MessageRow]:
    ui = turn.get("ui")
    return [
        (conversation_id, Message.Role.USER.value, turn["user_text"], "{}", turn.get("key") or "", None),
        (
            conversation_id,
            Message.Role.ASSISTANT.value,
            turn["reply_text"],
            json.dumps({"ui": ui}) if ui else "{}",
            "",
            turn.get("latency_ms"),
        ),
    ]


def chat_turns_insert_statement(turns: list[dict[str, Any]], *, fence: int) -> tuple[str, dict[str, Any]]:
    """The messages of continuing sessions' turns (`chat_turn_record`'s arguments, `conversation_id` set) as
    `_messages_insert`'s PostgreSQL statement with named parameters, for a caller on the event loop
    (`widgets.aio.pg_async_execute`, autocommit: atomic on its own, all of them or none). It holds the
    advisory lock `fence` (shared) from before its first row until it ends (`chat_turns_stored`). One text
    for any number of rows, so the loop's connections prepare it once."""
    rows = [row for turn in turns for row in _turn_rows(turn["conversation_id"], turn)]
    names = ("conversation", "role", "text", "payload", "item", "latency")
    columns = [pg_array(column) for column in zip(*rows, strict=True)]
    params = {"now": timezone.now(), "fence": fence, **dict(zip(names, columns, strict=True))}
    return _messages_insert_sql("named"), params


def chat_sessions_open_statement(turns: list[dict[str, Any]], *, fence: int) -> tuple[str, dict[str, Any]]:
    """New sessions' first turns (`chat_turn_record`'s arguments, no `conversation_id`; several turns of one
    session may come together) as ONE PostgreSQL statement with named parameters, for a caller on the event
    loop (`widgets.aio.pg_async`, autocommit: atomic on its own). It does what `_sessions_open` does in its
    transaction, for the sessions it opens:

    - opens each session's conversation (the columns `_conversations_insert` writes; visitor, page and identity
      of the session's first turn in the list) with ON CONFLICT DO NOTHING on `conversation_unique_chat_session`:
      a session whose conversation exists (found, or opened by another request meanwhile) is not opened here;
    - counts the conversations it inserted in their license's month (`usage_increment`'s row, upserted);
    - inserts the two messages (`_turn_rows`, the turn's key on the user message) of every turn whose session it
      opened;
    - holds the advisory lock `fence` (shared) from before its first row until it ends (`chat_turns_stored`).

    Rows are written in one order for every process (conversations by widget and session, usage by license), as
    `_sessions_open`'s. Returns rows (widget id, session id, conversation id) of the conversations it opened;
    the caller stores every other turn as today (`chat_turn_record`: race-safe, joins the conversation that
    exists, counts nothing). One text for any number of rows, so the loop's connections prepare it once."""
    from licenses.models import LicenseUsage, month_start
    from widgets.aio import loop_db

    sql, conversation_fixed, usage_fixed = _sessions_open_sql()
    db = loop_db()  # the values adapted as the ORM would, without a DatabaseWrapper per loop task (widgets.aio)
    now = timezone.now()
    template = Conversation(channel=Channel.CHAT)  # the columns every row shares, as the ORM writes them
    usage_template = LicenseUsage()
    params: dict[str, Any] = {
        f"c_{field.column}": field.get_db_prep_save(field.pre_save(template, True), db) for field in conversation_fixed
    }
    params.update(
        {f"u_{field.column}": field.get_db_prep_save(getattr(usage_template, field.attname), db)
         for field in usage_fixed}
    )  # fmt: skip
    ui = [turn.get("ui") for turn in turns]
    params.update(
        {
            "now": now,
            "month": month_start(now.date()),
            "widget": pg_array([turn["widget"].pk for turn in turns]),
            "license": pg_array([turn["widget"].license_id for turn in turns]),
            "session": pg_array([turn["session_id"] for turn in turns]),
            "visitor": pg_array([turn["visitor_id"] for turn in turns]),
            "page": pg_array([turn.get("page_url", "") for turn in turns]),
            "identity": pg_array([json.dumps(turn.get("identity") or {}) for turn in turns]),
            "user_text": pg_array([turn["user_text"] for turn in turns]),
            "reply_text": pg_array([turn["reply_text"] for turn in turns]),
            "payload": pg_array([json.dumps({"ui": value}) if value else "{}" for value in ui]),
            "latency": pg_array([turn.get("latency_ms") for turn in turns]),
            "key": pg_array([turn.get("key") or "" for turn in turns]),
            "fence": fence,
        }
    )
    return sql, params


@cache
def _sessions_open_sql() -> tuple[str, list[Any], list[Any]]:
    """`chat_sessions_open_statement`'s text, from the models' names; and the fields given as one parameter
    each (conversation: every column but the per-row ones; usage: every counter but `conversations`)."""
    from licenses.models import LicenseUsage

    quote = connection.ops.quote_name
    conv = Conversation._meta
    cfield = {f.name: f for f in conv.concrete_fields}
    c_cols = [f for f in conv.concrete_fields if not f.primary_key]
    c_fixed = [f for f in c_cols if f.name not in PER_ROW]
    per_row = {"widget": "f.w", "visitor_id": "f.v", "session_id": "f.s", "page_url": "f.p", "identity": "f.i::jsonb"}
    # Every parameter cast to its column's type: the loop binds them server-side, where a string's type is unknown.
    c_select = ", ".join(
        per_row[f.name] if f.name in per_row else f"%(c_{f.column})s::{f.db_type(connection)}" for f in c_cols
    )
    usage = LicenseUsage._meta
    ufield = {f.name: f for f in usage.concrete_fields}
    u_cols = [f for f in usage.concrete_fields if not f.primary_key]
    u_own = {
        "license": "f.l",
        "month": "%(month)s::date",
        "conversations": "count(*)",
        "updated_at": "%(now)s::timestamptz",
    }
    u_fixed = [f for f in u_cols if f.name not in u_own]
    u_select = ", ".join(
        u_own[f.name] if f.name in u_own else f"%(u_{f.column})s::{f.db_type(connection)}" for f in u_cols
    )
    m_meta = Message._meta
    mfield = {f.name: f for f in m_meta.concrete_fields}
    m_names = ("conversation", "role", "text", "payload", "item_id", "failure_kind", "upstream_status", "latency_ms")
    m_cols = ", ".join(quote(mfield[n].column) for n in (*m_names, "created_at"))

    def array(name: str, field: Any) -> str:
        return f"%({name})s::{field.db_type(connection)}[]"

    # The session's conditions of `conversation_unique_chat_session` (widgets.models): the arbiter index.
    arbiter = (
        f"({quote(cfield['widget'].column)}, {quote(cfield['session_id'].column)}) "
        f"WHERE {quote(cfield['channel'].column)} = '{Channel.CHAT.value}' "
        f"AND NOT {quote(cfield['is_preview'].column)} "
        f"AND {quote(cfield['session_id'].column)} <> ''"
    )
    counter = quote(ufield["conversations"].column)
    user, assistant = Message.Role.USER.value, Message.Role.ASSISTANT.value
    sql = (  # names from the models; every value a parameter
        "WITH t AS (SELECT t.* FROM UNNEST("  # noqa: S608
        f"{array('widget', cfield['widget'])}, {array('license', ufield['license'])}, "
        f"{array('session', cfield['session_id'])}, {array('visitor', cfield['visitor_id'])}, "
        f"{array('page', cfield['page_url'])}, %(identity)s::text[], %(user_text)s::text[], "
        f"%(reply_text)s::text[], %(payload)s::text[], {array('latency', mfield['latency_ms'])}, "
        f"{array('key', mfield['item_id'])}) WITH ORDINALITY AS t (w, l, s, v, p, i, ut, rt, pl, lat, k, n) "
        # Every row comes through the lock's one row: no row is written before the fence is held.
        "CROSS JOIN (SELECT pg_advisory_xact_lock_shared(%(fence)s::bigint)) AS fence), "
        # One row per session: its first turn's visitor, page and identity. Sorted as Python sorts the keys
        # (`_sessions_open`; code points: COLLATE "C"), so every process inserts in one order.
        "f AS (SELECT DISTINCT ON (w, s) w, l, s, v, p, i FROM t ORDER BY w, s, n), "
        f"opened AS (INSERT INTO {quote(conv.db_table)} ({', '.join(quote(f.column) for f in c_cols)}) "
        f'SELECT {c_select} FROM f ORDER BY f.w, f.s COLLATE "C" '
        f"ON CONFLICT {arbiter} DO NOTHING "
        f"RETURNING {quote(conv.pk.column)} AS id, {quote(cfield['widget'].column)} AS w, "
        f"{quote(cfield['session_id'].column)} AS s), "
        f"counted AS (INSERT INTO {quote(usage.db_table)} ({', '.join(quote(f.column) for f in u_cols)}) "
        f"SELECT {u_select} FROM opened o JOIN f ON f.w = o.w AND f.s = o.s GROUP BY f.l ORDER BY f.l "
        f"ON CONFLICT ({quote(ufield['license'].column)}, {quote(ufield['month'].column)}) DO UPDATE SET "
        f"{counter} = {quote(usage.db_table)}.{counter} + EXCLUDED.{counter}, "
        f"{quote(ufield['updated_at'].column)} = EXCLUDED.{quote(ufield['updated_at'].column)}), "
        f"messages AS (INSERT INTO {quote(m_meta.db_table)} ({m_cols}) "
        "SELECT o.id, m.r, m.x, m.pl::jsonb, m.key, '', NULL, m.lat, %(now)s::timestamptz "
        "FROM t JOIN opened o ON o.w = t.w AND o.s = t.s "
        f"CROSS JOIN LATERAL (VALUES (0, '{user}', t.ut, '{{}}', t.k, NULL::integer), "
        f"(1, '{assistant}', t.rt, t.pl, '', t.lat)) AS m (k, r, x, pl, key, lat) ORDER BY t.n, m.k) "
        "SELECT o.w, o.s, o.id FROM opened o"
    )
    return sql, c_fixed, u_fixed


def _messages_insert(rows: list[MessageRow]) -> None:
    """Insert chat messages (the rows `Message.objects.bulk_create` would write for them: no failure, created
    now) in ONE fixed-text statement, atomic on its own (a savepoint inside a caller's
    transaction). Issue 11 bench: the ORM's bulk_create spent ~0.2 ms of CPU per turn compiling the INSERT
    and preparing every field of every row; so did its BEGIN/COMMIT around one statement."""
    if not rows:
        return
    columns = [list(column) for column in zip(*rows, strict=True)]
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    if connection.vendor == "postgresql":
        sql, params = _messages_insert_sql("postgresql"), [now, *columns]
    else:  # one VALUES row per message (SQLite: tests and development)
        sql = _messages_insert_sql(connection.vendor) + ", ".join(
            ["(%s, %s, %s, %s, %s, '', NULL, %s, %s)"] * len(rows)
        )
        params = [value for row in rows for value in (*row, now)]
    savepoint = transaction.atomic() if connection.in_atomic_block else contextlib.nullcontext()
    with savepoint, connection.cursor() as cursor:
        cursor.execute(sql, params)


@cache
def _messages_insert_sql(vendor: str) -> str:
    """`_messages_insert`'s statement, from the model's names: on PostgreSQL one text for any number of rows
    (one array per column, UNNEST, as Django's own bulk_create there), elsewhere the head of a VALUES list.
    "named" (`chat_turns_insert_statement`) joins the rows to the batch's advisory lock `fence`, taken (shared)
    before the first row is written and held until the statement ends."""
    quote = connection.ops.quote_name
    meta = Message._meta
    field = {f.name: f for f in meta.concrete_fields}
    names = ("conversation", "role", "text", "payload", "item_id", "failure_kind", "upstream_status", "latency_ms")
    head = f"INSERT INTO {quote(meta.db_table)} ({', '.join(quote(field[n].column) for n in (*names, 'created_at'))}) "
    if vendor not in ("postgresql", "named"):
        return head + "VALUES "
    # "named": PostgreSQL with named parameters (messages_insert_statement), else positional (Django's cursor).
    names = {
        "conversation": "conversation",
        "role": "role",
        "text": "text",
        "payload": "payload",
        "item_id": "item",
        "latency_ms": "latency",
    }
    mark = (lambda name: f"%({name})s") if vendor == "named" else (lambda name: "%s")
    arrays = ", ".join(
        f"{mark(names[n])}::{field[n].db_type(connection) if n != 'payload' else 'text'}[]" for n in names
    )
    rows = f"UNNEST({arrays}) AS m (c, r, t, p, i, l)"
    if vendor == "named":  # every row comes through the lock's one row: no row is written before it is held
        rows += " CROSS JOIN (SELECT pg_advisory_xact_lock_shared(%(fence)s::bigint)) AS fence"
    return head + f"SELECT c, r, t, p::jsonb, i, '', NULL, l, {mark('now')} FROM {rows}"  # noqa: S608


def chat_failure_record(
    *,
    widget: Widget,
    session_id: str,
    visitor_id: str,
    user_text: str,
    error: N8nError,
    latency_ms: int,
    page_url: str = "",
    identity: dict[str, Any] | None = None,
) -> Conversation:
    """A visitor's message that got no answer (n8n timed out, failed, or is not allowed): the user turn
    with the failure (kind, n8n's status, latency) on its conversation, and the widget's failure count
    (issue 10.5), so the agency can see that their client's bot is down."""
    with transaction.atomic():
        conversation = chat_conversation_open(
            widget=widget, session_id=session_id, visitor_id=visitor_id, page_url=page_url, identity=identity
        )
        Message.objects.create(
            conversation=conversation,
            role=Message.Role.USER,
            text=user_text,
            failure_kind=error.code[:32],
            upstream_status=error.upstream_status,
            latency_ms=latency_ms,
        )
        Widget.objects.filter(pk=widget.pk).update(
            chat_failures=F("chat_failures") + 1, last_chat_failure_at=timezone.now()
        )
    return conversation


def turn_save(
    *, conversation_id: int, role: str, text: str, item_id: str = "", payload: dict[str, Any] | None = None
) -> Message:
    """One transcript row. A voice call's text is OpenAI's transcript and may hold a NUL, which PostgreSQL refuses
    (a failed save would end the call's relay): mended (licenses.api.storable)."""
    return Message.objects.create(
        conversation_id=conversation_id, role=role, text=storable(text), item_id=item_id[:100], payload=payload or {}
    )


def chatkit_turn_record(
    *,
    conversation_id: int,
    user_text: str,
    assistant_text: str,
    ui: list[dict[str, Any]] | None = None,
    role: str = Message.Role.USER,
) -> None:
    """One completed turn as transcript rows (the shape chat and voice use); a failed turn writes none.
    Both rows in one INSERT; inside the caller's transaction (the ChatKit usage record) without a savepoint."""
    rows = []
    if user_text:
        rows.append(Message(conversation_id=conversation_id, role=role, text=user_text[:20000]))
    if assistant_text or ui:
        rows.append(
            Message(
                conversation_id=conversation_id,
                role=Message.Role.ASSISTANT,
                text=assistant_text[:20000],
                payload={"ui": ui} if ui else {},
            )
        )
    with transaction.atomic(savepoint=False):
        Message.objects.bulk_create(rows)
        Conversation.objects.filter(pk=conversation_id, end_reason__startswith="failed:").update(end_reason="")


def tool_turn_save(*, conversation_id: int, name: str, result: ToolResult) -> Message:
    """A tool the model ran during a call: what it said and the UI it showed (a card, a form)."""
    return turn_save(
        conversation_id=conversation_id,
        role=Message.Role.TOOL,
        text=result.speak,
        payload={"tool": name, "ok": result.ok, "ui_events": [result.ui_event] if result.ui_event else []},
    )


def turns_save_new(*, conversation_id: int, turns: list[dict[str, str]]) -> int:
    """Turns reported by a browser (a WebRTC voice call): one Message per `{role, text, item_id}` not
    stored yet for this conversation, so a retried report stores nothing twice. Returns how many."""
    if not turns:
        return 0
    with transaction.atomic():
        seen = set(
            Message.objects.filter(
                conversation_id=conversation_id, item_id__in=[t["item_id"] for t in turns]
            ).values_list("role", "item_id")
        )
        saved = 0
        for turn in turns:
            key = (turn["role"], turn["item_id"])
            if key in seen:
                continue
            seen.add(key)
            turn_save(conversation_id=conversation_id, role=turn["role"], text=turn["text"], item_id=turn["item_id"])
            saved += 1
    return saved
