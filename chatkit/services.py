"""ChatKit server mode's writes: per-owner rate limits, the monthly cap a new thread reserves, a failed
conversation, and each run's tokens and estimated cost on the conversation and the license's month
(`chatkit_usage_record`). Turns land as `widgets.Message` rows through widgets.services.turns. The page's
options live in chatkit.options, the visitor and page tokens in chatkit.tokens.
"""

from __future__ import annotations

import hashlib
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import BooleanField, CharField, DateField, DateTimeField, F, Field, JSONField, Model
from django.utils import timezone

from chatkit.client import ChatKitError
from chatkit.models import ChatKitThread
from licenses.models import DEFAULT_LIMITS, License, LicenseUsage, month_start
from licenses.selectors import REASON_MESSAGES
from licenses.services import usage_increment
from widgets.aio import loop_db, pg_async, pg_json_param
from widgets.models import Conversation, Widget
from widgets.ratelimit import rate_hits_peek, rate_hits_peek_async
from widgets.services.turns import chatkit_turn_record

# --- server mode: limits, the monthly cap, turns and usage -----------------------------------


def chatkit_rate_check(
    *, license: License, owner: str, generates: bool, peek: str | None = None
) -> tuple[int | None, object]:
    """Per visitor and per license: model calls (`generates`) per minute, and every request per visitor
    (the shared limiter, widgets/ratelimit.py), in ONE Redis round trip that also reads the cache key
    `peek` (the license's cache generation); a visitor over its own limit uses none of its license's.
    (Seconds to wait when over a limit else None, the peeked value.)"""
    return rate_hits_peek(_rate_checks(license=license, owner=owner, generates=generates), peek=peek)


async def chatkit_rate_check_async(
    *, license: License, owner: str, generates: bool, peek: str | None = None
) -> tuple[int | None, object]:
    """`chatkit_rate_check` awaited on the running loop (REDIS_URL must be set)."""
    return await rate_hits_peek_async(_rate_checks(license=license, owner=owner, generates=generates), peek=peek)


def _rate_checks(*, license: License, owner: str, generates: bool) -> tuple[tuple[str, int], ...]:
    visitor = hashlib.sha256(owner.encode()).hexdigest()[:24]
    if not generates:
        return ((f"chatkit:reads:{license.pk}:{visitor}", settings.CHATKIT_READ_RATE_PER_MINUTE),)
    return (
        (f"chatkit:visitor:{license.pk}:{visitor}", settings.CHATKIT_VISITOR_RATE_PER_MINUTE),
        (f"chatkit:license:{license.pk}", settings.CHATKIT_LICENSE_RATE_PER_MINUTE),
    )


# The monthly cap of a new public thread, in ONE statement (both backends): count it only while the month's
# conversations + ChatKit threads are under the cap read from the license's row in the same statement. Exact
# under concurrency (PostgreSQL re-checks the condition on the newest row after waiting for a concurrent
# increment) and the month's row is locked only while the statement runs, so concurrent new threads of one
# license never queue behind a transaction that waits for its thread (bench/chatkit_server.py). Used by
# `chatkit_thread_reserve` and, inside one data-modifying statement with the thread's rows, by
# `chatkit_thread_open_async`.
RESERVE_SQL = f"""
UPDATE {LicenseUsage._meta.db_table} SET chatkit_sessions = chatkit_sessions + 1, updated_at = %(now)s
 WHERE license_id = %(license_id)s AND month = %(month)s
   AND conversations + chatkit_sessions < (
     SELECT COALESCE(CAST(limits ->> 'monthly_conversations' AS integer), %(default_cap)s)
       FROM {License._meta.db_table} WHERE id = %(license_id)s)
RETURNING id"""  # noqa: S608 - the models' table names; values are parameters


def _reserve_params(license: License, *, now: datetime, month: date) -> dict[str, Any]:
    ops = loop_db().ops
    return {
        "now": ops.adapt_datetimefield_value(now),
        "license_id": license.pk,
        "month": ops.adapt_datefield_value(month),
        "default_cap": DEFAULT_LIMITS["monthly_conversations"],
    }


def chatkit_thread_reserve(*, license: License) -> None:
    """Count a new public ChatKit thread against the monthly cap (`RESERVE_SQL`), before anything streams.
    Raises 429. The month's row is created on first use."""
    now = timezone.now()
    month = month_start(now.date())
    params = _reserve_params(license, now=now, month=month)
    for _ in range(2):
        with connection.cursor() as cursor:
            cursor.execute(RESERVE_SQL, params)
            if cursor.fetchone() is not None:
                return
        if LicenseUsage.objects.filter(license_id=license.pk, month=month).exists():
            break
        try:
            with transaction.atomic():
                LicenseUsage.objects.create(license_id=license.pk, month=month)
        except IntegrityError:
            pass  # another request created the row first
    raise ChatKitError("quota_exceeded", REASON_MESSAGES["quota_exceeded"], 429)


def _insert_sql(model: type[Model], name: str, source: str, fill: dict[str, str]) -> tuple[str, list[Field]]:
    """`INSERT INTO <model> (...) SELECT ... FROM <source>`: every concrete column but the primary key, each
    `%(<name>__<column>)s` unless `fill` gives it an expression over `source`."""
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    columns = ", ".join(f.column for f in fields)
    values = ", ".join(fill.get(f.column, f"%({name}__{f.column})s") for f in fields)
    sql = f"INSERT INTO {model._meta.db_table} ({columns}) SELECT {values} FROM {source}"  # noqa: S608 - names only
    return sql, [f for f in fields if f.column not in fill]


# pre_save methods that return the attribute as it is (a DateField's without auto_now/auto_now_add).
_PLAIN_PRE_SAVE = (Field.pre_save, DateField.pre_save, DateTimeField.pre_save)
_AS_IS: dict[type[Field], type] = {CharField: str, BooleanField: bool}
_CONSTANT = (str, int, float, bool, Decimal, type(None))  # defaults whose database value can be computed once


class _NewRow:
    """What the ORM would INSERT for a new `model` row built as `model(**given)` — each field's given value, else
    its default, auto_now/auto_now_add stamped, adapted by `get_db_prep_save` — without building the instance
    first: `Model.__init__` with keyword arguments, then `pre_save` and `get_db_prep_save` on every field, was a
    third of the CPU of `chatkit_thread_open_async` (bench/chatkit_server.py: a burst's first bytes leave one
    request's pre-stream CPU apart). The instance is built afterwards positionally (`row`), as the ORM builds
    rows it reads. Columns that `skip` names are not parameters (the statement fills them). A field whose class
    changes its value in `pre_save` in another way is refused when the plan is built (a new column is then
    noticed by the loop-path tests, never written wrong)."""

    def __init__(self, model: type[Model], name: str, skip: tuple[str, ...] = ()) -> None:
        self.model = model
        self.fields = [f for f in model._meta.concrete_fields if not f.primary_key and f.column not in skip]
        self.keys = {f.attname: f"{name}__{f.column}" for f in self.fields}
        self.stamped: set[str] = set()
        for f in self.fields:
            if isinstance(f, DateTimeField) and (f.auto_now or f.auto_now_add):
                self.stamped.add(f.attname)
            elif (
                type(f).pre_save not in _PLAIN_PRE_SAVE
                or getattr(f, "auto_now", False)
                or getattr(f, "auto_now_add", False)
            ):
                raise TypeError(f"{model.__name__}.{f.name}: its pre_save is not one this statement runs")
        self._constants: dict[str, Any] | None = None  # the adapted constant defaults, on first use
        # Fields whose database value is the value itself for these exact types (CharField.to_python of a str,
        # BooleanField.to_python of a bool: no adaptation on any backend), so get_db_prep_save is skipped.
        self.as_is = {f.attname: _AS_IS[type(f)] for f in self.fields if type(f) in _AS_IS}
        self.json = {f.attname for f in self.fields if isinstance(f, JSONField)}  # pg_json_param's

    def params(self, given: dict[str, Any], *, now: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
        """(the statement's parameters, every field's value by attname) for a row with the `given` values."""
        db = loop_db()  # not `connections["default"]`: a new DatabaseWrapper per request task on the loop
        if self._constants is None:
            self._constants = {
                f.attname: f.get_db_prep_save(f.get_default(), db)
                for f in self.fields
                if f.attname not in self.stamped and not callable(f.default) and isinstance(f.get_default(), _CONSTANT)
            }
        params: dict[str, Any] = {}
        values: dict[str, Any] = {}
        for f in self.fields:
            attname = f.attname
            if attname in self.stamped:
                value = now
            elif attname in given:
                value = given[attname]
            elif attname in self._constants:
                values[attname] = f.get_default()
                params[self.keys[attname]] = self._constants[attname]
                continue
            else:
                value = f.get_default()
            values[attname] = value
            if value is None or type(value) is self.as_is.get(attname):
                params[self.keys[attname]] = value
            elif attname in self.json:
                params[self.keys[attname]] = pg_json_param(f, value)
            else:
                params[self.keys[attname]] = f.get_db_prep_save(value, db)
        return params, values

    def row(self, pk: Any, values: dict[str, Any]) -> Model:
        """The saved instance: `values` by attname (and `pk`), as `Model.from_db` builds one."""
        pk_attname = self.model._meta.pk.attname
        obj = self.model(
            *[pk if f.attname == pk_attname else values.get(f.attname) for f in self.model._meta.concrete_fields]
        )
        obj._state.adding, obj._state.db = False, "default"
        return obj


class _OpenStatement:
    """`chatkit_thread_open_async`'s statement, built once from the models (so a new column is never missed)."""

    def __init__(self) -> None:
        self._built: tuple[str, _NewRow, _NewRow] | None = None

    def get(self) -> tuple[str, _NewRow, _NewRow]:
        if self._built is None:
            conversation_sql, _ = _insert_sql(Conversation, "conversation", "counted", {})
            fill = {"conversation_id": "opened_conversation.id"}
            thread_sql, _ = _insert_sql(ChatKitThread, "thread", "opened_conversation", fill)
            sql = (
                f"WITH counted AS ({RESERVE_SQL}), "
                f"opened_conversation AS ({conversation_sql} RETURNING id) "
                f"{thread_sql} RETURNING seq, conversation_id"
            )
            self._built = (
                sql,
                _NewRow(Conversation, "conversation"),
                _NewRow(ChatKitThread, "thread", skip=tuple(fill)),
            )
        return self._built


_open_statement = _OpenStatement()


async def chatkit_thread_open_async(
    *, license: License, widget: Widget, conversation: dict[str, Any], thread: dict[str, Any]
) -> ChatKitThread | None:
    """A new public thread of `widget` on the running loop (widgets.aio.pg_async): the monthly count
    (`RESERVE_SQL`) and the thread's two rows (`conversation`, `thread`: the values `Conversation(widget=widget,
    **conversation)` and `ChatKitThread(widget=widget, conversation=..., **thread)` would save) in ONE statement, so
    all or nothing is written. The saved `ChatKitThread` (its `.conversation` the saved Conversation) when
    written; None when nothing was counted (the month's row does not exist yet, or the cap is reached): the
    caller then takes the endpoint's step (`chatkit_thread_reserve`), which creates the row or refuses. Raises
    psycopg's errors (the caller falls back to the step too)."""
    sql, conversation_plan, thread_plan = _open_statement.get()
    now = timezone.now()
    conversation_params, conversation_values = conversation_plan.params(
        {**conversation, "widget_id": widget.pk}, now=now
    )
    thread_params, thread_values = thread_plan.params({**thread, "widget_id": widget.pk}, now=now)
    params = {
        **_reserve_params(license, now=now, month=month_start(now.date())),
        **conversation_params,
        **thread_params,
    }
    rows = await pg_async(sql, params)
    if not rows:
        return None
    seq, conversation_id = rows[0]
    saved_conversation = conversation_plan.row(conversation_id, conversation_values)
    saved_conversation.widget = widget  # as `Conversation(widget=widget)` holds it: never a lazy query
    saved = thread_plan.row(seq, thread_values)
    saved.widget = widget
    saved.conversation = saved_conversation
    return saved


def chatkit_thread_unreserve(*, license: License) -> None:
    """Give back a count taken by `chatkit_thread_reserve` for a thread that could not be opened."""
    usage_increment(license=license, chatkit_sessions=-1)


def chatkit_conversation_fail(*, conversation_id: int, code: str) -> None:
    """Mark the conversation failed (the agency sees why); the next good turn clears it."""
    Conversation.objects.filter(pk=conversation_id).exclude(end_reason="deleted_by_visitor").update(
        end_reason=f"failed:{code}"[:64],
        failed_at=timezone.now(),  # failed_at: bot health (widgets/health.py)
    )


USAGE_KEYS = ("requests", "input_tokens", "input_cached_tokens", "output_tokens", "reasoning_tokens", "total_tokens")


def chatkit_cost(*, model: str, usage: dict[str, int]) -> Decimal:
    """Estimated USD from settings.CHATKIT_MODELS (list prices per 1M tokens)."""
    prices = settings.CHATKIT_MODELS.get(model) or settings.CHATKIT_MODELS[settings.CHATKIT_DEFAULT_MODEL]
    cached = usage.get("input_cached_tokens", 0)
    micro = (
        prices["input"] * max(usage.get("input_tokens", 0) - cached, 0)
        + prices["input_cached"] * cached
        + prices["output"] * usage.get("output_tokens", 0)
    )
    return (Decimal(str(micro)) / Decimal(1_000_000)).quantize(Decimal("0.000001"))


def chatkit_usage_record(
    *,
    conversation_id: int,
    model: str,
    usage: dict[str, int],
    counted: bool,
    turn: dict[str, Any] | None = None,
) -> Decimal:
    """Add one run's tokens and estimated cost to its conversation and (unless a preview) the license's month,
    and the run's completed turn (`turn`: chatkit_turn_record's arguments) in the same transaction.

    Called from `finally`, so a run cut short by a disconnect still counts what it used (with no turn)."""
    usage = {k: int(usage.get(k) or 0) for k in USAGE_KEYS}
    cost = chatkit_cost(model=model, usage=usage) if any(usage.values()) else Decimal(0)
    with transaction.atomic():
        if turn is not None:
            chatkit_turn_record(conversation_id=conversation_id, **turn)
        if not any(usage.values()):
            return cost
        # Locks the conversation row only (`of`): locking its widget's row too would hold up the commit of
        # every new thread of the widget (its foreign keys are checked at commit) for this whole transaction;
        # with the monthly count in the same transaction as the thread rows that was a deadlock (found by
        # bench/chatkit_server.py on PostgreSQL).
        row = (
            Conversation.objects.select_for_update(of=("self",))
            .filter(pk=conversation_id)
            .values_list("usage", "widget__license_id")
            .first()
        )
        if row is None:
            return cost
        stored, license_id = row
        totals = dict(stored or {})
        for key, value in usage.items():
            totals[key] = int(totals.get(key, 0)) + value
        totals["model"] = model
        Conversation.objects.filter(pk=conversation_id).update(usage=totals, cost_usd=F("cost_usd") + cost)
        if counted:
            usage_increment(license=license_id, cost_usd=cost)
    return cost
