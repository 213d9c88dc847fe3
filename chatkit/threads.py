"""openai-chatkit's `Store` on Django: every read and write is scoped to one widget and one visitor.

The SDK checks nothing itself: thread and item ids come from the browser, so each method resolves
the thread through `_thread(thread_id, ctx)` (widget + owner + preview flag) and raises the SDK's
`NotFoundError` for anything else, which the endpoint answers 404 before any byte is streamed.

- Ids carry 96 random bits (`thr_`/`msg_`/... + 24 hex), not the SDK's 32.
- `save_thread`, `add_thread_item` and `save_item` are upserts (the SDK saves an open workflow
  twice, and a retried turn may re-save an item).
- Pages are keyset on (created_at, seq): `after` names the last item of the previous page.
- A new thread opens its `widgets.Conversation` (channel chatkit) in the same transaction. The endpoint
  opens a `threads.create` request's thread before streaming (`thread_open`, in the transaction that
  takes the monthly count), so the SDK's first save of it only updates the row in memory; that change
  is written with the thread's next write (its first item), and until then the thread's items are
  the ones this request added (no read).
- Attachments are off in server mode (no attachment store): their methods find nothing.

The ORM runs in short `widgets.aio.db_step`s (on the process's DB step threads) that hand the
connection back, so a visitor waiting on OpenAI holds no database connection.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from pydantic import TypeAdapter

from chatkit.admission import yield_to_admissions
from chatkit.models import ChatKitItem, ChatKitThread
from chatkit.services import chatkit_thread_open_async
from chatkit.store import NotFoundError, Store, StoreItemType
from chatkit.types import Attachment, Page, ThreadItem, ThreadMetadata
from licenses.api import storable
from licenses.models import License
from widgets.aio import db_step, pg_async, pg_async_available, pg_json_param
from widgets.models import Channel, Conversation, Widget

ID_PREFIXES: dict[str, str] = {
    "thread": "thr",
    "message": "msg",
    "tool_call": "tc",
    "workflow": "wf",
    "task": "tsk",
    "attachment": "atc",
    "sdk_hidden_context": "shcx",
}
MAX_PAGE = 100
_ITEM = TypeAdapter(ThreadItem)


def new_id(kind: str) -> str:
    """`<prefix>_<24 hex>`: 96 random bits (the SDK's default has 32: ~1% collisions at 10k items)."""
    return f"{ID_PREFIXES.get(kind, kind[:4])}_{secrets.token_hex(12)}"


@dataclass
class RequestContext:
    """Who a ChatKit request is for. Built by the endpoint after the license, page token, visitor
    and widget checks; passed to every store call, `respond` and `action`."""

    license: License
    widget: Widget
    config: dict[str, Any]
    owner: str
    api_key: str
    model: str
    preview: bool = False
    reserved_thread: bool = False  # the endpoint already counted the thread this request creates
    # Whom the per-visitor rate limits count ("" = the owner): a share link's chats count per link, since
    # anyone holding it can open its page again for a new signed visitor.
    rate_key: str = ""
    # The embedding page's context (widgets.page_context), when the widget sends it; None otherwise.
    page_context: dict[str, Any] | None = None
    # Switchboard('identify') (licenses/identity.py): the visitor's identity, {} when none.
    identity: dict[str, Any] = field(default_factory=dict)
    # Filled during a turn (server.respond / tools): what the transcript records.
    ui_events: list[dict[str, Any]] = field(default_factory=list)
    conversation_id: int | None = None
    threads: dict[str, ChatKitThread] = field(default_factory=dict)  # rows already checked in this request
    # `thread_open`: the thread this request opened before streaming, whether the SDK saved it yet, whether
    # that save still has to be written, and the items added to it in this request (its only items).
    opened: str = ""
    opened_given: bool = False
    opened_saved: bool = False
    opened_dirty: bool = False
    opened_items: dict[str, tuple[datetime, ThreadItem]] = field(default_factory=dict)


def _aware(value: datetime) -> datetime:
    # The SDK stamps items with naive local `datetime.now()`.
    return value.astimezone(UTC) if timezone.is_naive(value) else value


class DjangoStore(Store[RequestContext]):
    def generate_thread_id(self, context: RequestContext) -> str:
        if context.opened and not context.opened_given:
            context.opened_given = True
            return context.opened  # the thread the endpoint opened for this request
        return new_id("thread")

    def generate_item_id(self, item_type: StoreItemType, thread: ThreadMetadata, context: RequestContext) -> str:
        return new_id(item_type)

    # --- sync core (each call runs in the ORM thread) ---------------------------------------

    @staticmethod
    def _thread(thread_id: str, ctx: RequestContext) -> ChatKitThread:
        """The visitor's own thread of this widget (once per request), else NotFoundError."""
        cached = ctx.threads.get(thread_id) if isinstance(thread_id, str) else None
        if cached is not None:
            return cached
        if not isinstance(thread_id, str) or not thread_id or len(thread_id) > 64:
            raise NotFoundError("thread not found")
        thread = ChatKitThread.objects.filter(
            thread_id=thread_id, widget_id=ctx.widget.pk, owner=ctx.owner, is_preview=ctx.preview
        ).first()
        if thread is None:
            raise NotFoundError("thread not found")
        if ctx.conversation_id is None:
            ctx.conversation_id = thread.conversation_id
        ctx.threads[thread_id] = thread
        return thread

    # Sync checks for the endpoint's one trip to the ORM thread (before streaming).
    def thread_row(self, thread_id: str, ctx: RequestContext) -> ChatKitThread:
        return self._thread(thread_id, ctx)

    @staticmethod
    def item_row(thread: ChatKitThread, item_id: str) -> ChatKitItem:
        row = ChatKitItem.objects.filter(thread=thread, item_id=item_id).first() if isinstance(item_id, str) else None
        if row is None:
            raise NotFoundError("item not found")
        return row

    @staticmethod
    def _metadata(row: ChatKitThread) -> ThreadMetadata:
        return ThreadMetadata.model_validate(row.data)

    @staticmethod
    def _thread_rows(thread: ThreadMetadata, data: dict[str, Any], ctx: RequestContext) -> ChatKitThread:
        """A new thread's two rows, unsaved: its `ChatKitThread` and (as `.conversation`) its Conversation."""
        conversation, row = _thread_values(thread, data, ctx)
        return ChatKitThread(widget=ctx.widget, conversation=Conversation(widget=ctx.widget, **conversation), **row)

    @staticmethod
    def _remember(row: ChatKitThread, ctx: RequestContext) -> ChatKitThread:
        ctx.threads[row.thread_id] = row
        ctx.conversation_id = row.conversation_id
        return row

    def _create_thread(self, thread: ThreadMetadata, data: dict[str, Any], ctx: RequestContext) -> ChatKitThread:
        row = self._thread_rows(thread, data, ctx)
        row.conversation.save(force_insert=True)
        row.save(force_insert=True)
        return self._remember(row, ctx)

    def thread_open(self, ctx: RequestContext) -> str:
        """Sync, before streaming (the endpoint's step, inside its transaction): the rows of the thread a
        `threads.create` request makes, under a new id that `generate_thread_id` then hands the SDK."""
        thread = ThreadMetadata(id=new_id("thread"), created_at=datetime.now())
        self._create_thread(thread, _thread_data(thread), ctx)
        ctx.opened = thread.id
        return thread.id

    async def thread_open_counted(self, ctx: RequestContext) -> bool:
        """`chatkit_thread_reserve` + `thread_open` for a public request on the running loop, in ONE statement
        (`chatkit.services.chatkit_thread_open_async`). False when nothing was counted or written (no month row
        yet, or the cap is reached): the endpoint then takes its step, which creates the row or refuses."""
        thread = ThreadMetadata(id=new_id("thread"), created_at=datetime.now())
        conversation, values = _thread_values(thread, _thread_data(thread), ctx)
        row = await chatkit_thread_open_async(
            license=ctx.license, widget=ctx.widget, conversation=conversation, thread=values
        )
        if row is None:
            return False
        self._remember(row, ctx)
        ctx.opened = thread.id
        ctx.reserved_thread = True
        return True

    def _flush_opened(self, ctx: RequestContext) -> None:
        """Write the SDK's first save of the opened thread (kept in memory until the thread's next write)."""
        if ctx.opened_dirty:
            row = ctx.threads[ctx.opened]
            ChatKitThread.objects.filter(pk=row.pk).update(data=row.data, created_at=row.created_at)
            ctx.opened_dirty = False

    def _save_thread(self, thread: ThreadMetadata, ctx: RequestContext) -> None:
        data = _thread_data(thread)
        if thread.id == ctx.opened:
            ctx.opened_dirty = False  # written now, with whatever the SDK changed since
        with transaction.atomic():
            row = ChatKitThread.objects.select_for_update().filter(thread_id=thread.id).first()
            if row is not None:
                if row.widget_id != ctx.widget.pk or row.owner != ctx.owner or row.is_preview != ctx.preview:
                    raise NotFoundError("thread not found")
                row.data = data
                row.save(update_fields=["data", "updated_at"])
                ctx.threads[thread.id] = row
                return
            self._create_thread(thread, data, ctx)

    def _load_threads(self, limit: int, after: str | None, order: str, ctx: RequestContext) -> Page[ThreadMetadata]:
        qs = ChatKitThread.objects.filter(widget_id=ctx.widget.pk, owner=ctx.owner, is_preview=ctx.preview)
        if after:
            anchor = qs.filter(thread_id=after).values_list("created_at", "seq").first()
            if anchor is None:
                raise NotFoundError("thread not found")
            qs = qs.filter(_keyset(anchor, order))
        rows = list(qs.order_by(*_ordering(order))[: _limit(limit) + 1])
        return _page([self._metadata(r) for r in rows], _limit(limit))

    def _load_items(
        self, thread_id: str, after: str | None, limit: int, order: str, ctx: RequestContext
    ) -> Page[ThreadItem]:
        thread = self._thread(thread_id, ctx)
        qs = ChatKitItem.objects.filter(thread=thread)
        if after:
            anchor = qs.filter(item_id=after).values_list("created_at", "seq").first()
            if anchor is None:
                raise NotFoundError("item not found")
            qs = qs.filter(_keyset(anchor, order))
        rows = list(qs.order_by(*_ordering(order))[: _limit(limit) + 1])
        return _page([_ITEM.validate_python(r.data) for r in rows], _limit(limit))

    def _upsert_item(self, thread_id: str, item: ThreadItem, ctx: RequestContext) -> None:
        thread = self._thread(thread_id, ctx)
        if thread_id == ctx.opened:
            self._flush_opened(ctx)
        row = ChatKitItem(
            thread=thread,
            item_id=item.id[:100],
            item_type=item.type[:32],
            created_at=_aware(item.created_at),
            data=_item_data(item),
        )
        # INSERT ... ON CONFLICT (thread, item_id) DO UPDATE: a real upsert on PostgreSQL and SQLite;
        # the first created_at (the item's place in the thread) is kept.
        ChatKitItem.objects.bulk_create(
            [row], update_conflicts=True, unique_fields=["thread", "item_id"], update_fields=["item_type", "data"]
        )

    @staticmethod
    async def _upsert_item_async(thread: ChatKitThread, item: ThreadItem, ctx: RequestContext) -> None:
        """`_upsert_item` on the running loop (widgets.aio.pg_async) for a thread this request already holds: ONE
        statement, with the opened thread's pending first save (`_flush_opened`) when there is one."""
        item_data = ChatKitItem._meta.get_field("data")
        params = {
            "thread": thread.pk,
            "item_id": item.id[:100],
            "item_type": item.type[:32],
            "created_at": _aware(item.created_at),
            "data": pg_json_param(item_data, _item_data(item)),
        }
        sql = ITEM_UPSERT_SQL
        flush = thread.thread_id == ctx.opened and ctx.opened_dirty
        if flush:
            thread_data = ChatKitThread._meta.get_field("data")
            params.update(opened_data=pg_json_param(thread_data, thread.data), opened_at=thread.created_at)
            sql = f"WITH opened AS ({OPENED_FLUSH_SQL}) {sql}"
        await pg_async(sql, params)
        if flush:
            ctx.opened_dirty = False

    def _load_item(self, thread_id: str, item_id: str, ctx: RequestContext) -> ThreadItem:
        return _ITEM.validate_python(self.item_row(self._thread(thread_id, ctx), item_id).data)

    def _delete_thread(self, thread_id: str, ctx: RequestContext) -> None:
        thread = self._thread(thread_id, ctx)
        with transaction.atomic():
            # The agency keeps its transcript (widgets.Message); the visitor's thread is gone.
            Conversation.objects.filter(pk=thread.conversation_id, ended_at__isnull=True).update(
                ended_at=timezone.now(), end_reason="deleted_by_visitor"
            )
            thread.delete()
        ctx.threads.pop(thread_id, None)

    def _delete_item(self, thread_id: str, item_id: str, ctx: RequestContext) -> None:
        thread = self._thread(thread_id, ctx)
        ChatKitItem.objects.filter(thread=thread, item_id=item_id).delete()
        if thread_id == ctx.opened:
            ctx.opened_items.pop(item_id, None)

    # --- the SDK's async interface -----------------------------------------------------------

    async def thread_own_async(self, thread_id: str, ctx: RequestContext) -> bool:
        """`_thread` for a public request on the running loop (widgets.aio.pg_async): whether `thread_id` is the
        visitor's own thread of this widget; its row is then this request's (no step reads it again). False
        also for anything unusual: the endpoint's step then decides (404)."""
        if not isinstance(thread_id, str) or not thread_id or len(thread_id) > 64 or ctx.preview:
            return False
        fields = list(ChatKitThread._meta.concrete_fields)
        rows = await pg_async(
            f"SELECT {', '.join(f.column for f in fields)} FROM {ChatKitThread._meta.db_table} "  # noqa: S608
            "WHERE thread_id = %(thread_id)s AND widget_id = %(widget_id)s AND owner = %(owner)s "
            "AND is_preview = false",
            {"thread_id": thread_id, "widget_id": ctx.widget.pk, "owner": ctx.owner},
        )
        if not rows:
            return False
        row = ChatKitThread.from_db("default", [f.attname for f in fields], rows[0])
        if ctx.conversation_id is None:
            ctx.conversation_id = row.conversation_id
        ctx.threads[thread_id] = row
        return True

    async def load_thread(self, thread_id: str, context: RequestContext) -> ThreadMetadata:
        row = context.threads.get(thread_id) if isinstance(thread_id, str) else None  # read in this request
        if row is None:
            row = await _step(self._thread, thread_id, context)
        return self._metadata(row)

    async def save_thread(self, thread: ThreadMetadata, context: RequestContext) -> None:
        if thread.id == context.opened and not context.opened_saved:
            # The SDK's first save of the thread the endpoint opened: its row exists (ours, checked);
            # the new metadata goes with the thread's next write.
            context.opened_saved = True
            row = context.threads[thread.id]
            row.data, row.created_at = _thread_data(thread), _aware(thread.created_at)
            context.opened_dirty = True
            return
        await _step(self._save_thread, thread, context)

    async def load_thread_items(
        self, thread_id: str, after: str | None, limit: int, order: str, context: RequestContext
    ) -> Page[ThreadItem]:
        if thread_id == context.opened and after is None:
            # Opened by this request: its items are the ones this request added (the history `respond` reads).
            # Ordered as the table is: by the first created_at, then by when it was added.
            items = [item for _, item in sorted(context.opened_items.values(), key=lambda kept: kept[0])]
            if order == "desc":
                items.reverse()
            return _page([item.model_copy(deep=True) for item in items], _limit(limit))
        return await _step(self._load_items, thread_id, after, limit, order, context)

    async def load_threads(
        self, limit: int, after: str | None, order: str, context: RequestContext
    ) -> Page[ThreadMetadata]:
        return await _step(self._load_threads, limit, after, order, context)

    async def add_thread_item(self, thread_id: str, item: ThreadItem, context: RequestContext) -> None:
        await self.save_item(thread_id, item, context)

    async def save_item(self, thread_id: str, item: ThreadItem, context: RequestContext) -> None:
        if isinstance(thread_id, str) and thread_id in context.threads and pg_async_available():
            await yield_to_admissions()
            await self._upsert_item_async(context.threads[thread_id], item, context)
        else:
            await _step(self._upsert_item, thread_id, item, context)
        if thread_id == context.opened:
            kept = context.opened_items.get(item.id)
            # An upsert keeps the first created_at (the item's place in the thread).
            first = kept[0] if kept is not None else _aware(item.created_at)
            context.opened_items[item.id] = (first, item.model_copy(deep=True))

    async def load_item(self, thread_id: str, item_id: str, context: RequestContext) -> ThreadItem:
        return await _step(self._load_item, thread_id, item_id, context)

    async def delete_thread(self, thread_id: str, context: RequestContext) -> None:
        await _step(self._delete_thread, thread_id, context)

    async def delete_thread_item(self, thread_id: str, item_id: str, context: RequestContext) -> None:
        await _step(self._delete_item, thread_id, item_id, context)

    async def save_attachment(self, attachment: Attachment, context: RequestContext) -> None:
        raise NotFoundError("attachments are not available in server mode")

    async def load_attachment(self, attachment_id: str, context: RequestContext) -> Attachment:
        raise NotFoundError("attachments are not available in server mode")

    async def delete_attachment(self, attachment_id: str, context: RequestContext) -> None:
        raise NotFoundError("attachments are not available in server mode")


def _item_data(item: ThreadItem) -> dict[str, Any]:
    """An item as stored (JSONB): the model's text may hold a NUL, which PostgreSQL refuses (licenses.api.storable)."""
    return storable(item.model_dump(mode="json"))


async def _step(fn: Any, /, *args: Any) -> Any:
    """A store step of a running answer: after the requests still before their first byte (chatkit.admission)."""
    await yield_to_admissions()
    return await db_step(fn, *args)


# `_upsert_item_async`'s statements (the ORM's upsert in `_upsert_item` and `_flush_opened`, as one statement).
ITEM_UPSERT_SQL = (
    f"INSERT INTO {ChatKitItem._meta.db_table} (thread_id, item_id, item_type, created_at, data) "  # noqa: S608
    "VALUES (%(thread)s, %(item_id)s, %(item_type)s, %(created_at)s, %(data)s) "
    "ON CONFLICT (thread_id, item_id) DO UPDATE SET item_type = EXCLUDED.item_type, data = EXCLUDED.data "
    "RETURNING seq"
)
OPENED_FLUSH_SQL = (
    f"UPDATE {ChatKitThread._meta.db_table} SET data = %(opened_data)s, created_at = %(opened_at)s "  # noqa: S608
    "WHERE seq = %(thread)s"
)


def _thread_values(
    thread: ThreadMetadata, data: dict[str, Any], ctx: RequestContext
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A new thread's own values (beyond its widget): its Conversation's and its ChatKitThread's, by attname;
    the step path (`DjangoStore._thread_rows`) and the loop path (`thread_open_counted`) save the same."""
    conversation = {
        "channel": Channel.CHATKIT,
        "visitor_id": ctx.owner[:128],
        "session_id": thread.id,
        "is_preview": ctx.preview,
        "usage": {"model": ctx.model},
        "identity": ctx.identity,
    }
    row = {
        "thread_id": thread.id,
        "owner": ctx.owner,
        "is_preview": ctx.preview,
        "created_at": _aware(thread.created_at),
        "data": data,
    }
    return conversation, row


def _thread_data(thread: ThreadMetadata) -> dict[str, Any]:
    data = thread.model_dump(mode="json", exclude={"items"} if hasattr(thread, "items") else None)
    data.pop("items", None)
    return data


def _limit(limit: int | None) -> int:
    return max(1, min(int(limit or 20), MAX_PAGE))


def _ordering(order: str) -> tuple[str, str]:
    return ("-created_at", "-seq") if order == "desc" else ("created_at", "seq")


def _keyset(anchor: tuple[datetime, int], order: str) -> Q:
    created_at, seq = anchor
    if order == "desc":
        return Q(created_at__lt=created_at) | Q(created_at=created_at, seq__lt=seq)
    return Q(created_at__gt=created_at) | Q(created_at=created_at, seq__gt=seq)


def _page(data: list[Any], limit: int) -> Page[Any]:
    has_more = len(data) > limit
    data = data[:limit]
    return Page(data=data, has_more=has_more, after=data[-1].id if has_more and data else None)
