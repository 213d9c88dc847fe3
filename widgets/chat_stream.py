"""The streaming n8n chat: the upstream's items relayed to the visitor as NDJSON lines while the turn is
recorded once at the end (sync ORM in a DB step), under the license's upstream slot."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from django.db import DatabaseError

from licenses.api import json_compact
from widgets.aio import db_step, upstream_await, upstream_loop, upstream_loop_here, upstream_submit
from widgets.chat import (
    ChatRequest,
    UpstreamSlot,
    chat_upstream_slot,
    ms_since,
    stored,
    turn_commit,
    turn_fields,
    turn_record,
)
from widgets.models import Widget
from widgets.n8n import N8nError, N8nStream, N8nTarget
from widgets.services.turns import chat_failure_record

logger = logging.getLogger(__name__)


NOT_STORED = {
    "type": "error",
    "code": "not_stored",
    "message": "The answer could not be saved. Please send your message again.",
}


def _line(event: dict[str, Any]) -> bytes:
    """One NDJSON line (issue 11 bench: one per streamed item)."""
    return json_compact(event) + b"\n"


async def _next_batch(batches: AsyncIterator[list[dict[str, Any]]]) -> list[dict[str, Any]] | None:
    return await anext(batches, None)


class _Relay:
    """The NDJSON body of a streamed turn: batches of events from the upstream loop, relayed as lines.
    The turn is recorded once, before the final line: the aggregated reply before `end`, or the failed
    user turn before `error`; an `end` that cannot be stored becomes an `error` line (issue 11.9).
    `close()` (called by Django when the response ends, or the visitor leaves) frees the license's
    permit and the upstream."""

    def __init__(
        self,
        *,
        stream: N8nStream,
        widget: Widget,
        chat: ChatRequest,
        slot: UpstreamSlot,
        started: float,
        record: bool = True,
        conversation_id: int | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ):
        self._record = record
        self._conversation_id = conversation_id
        self._stream = stream
        self._batches = stream.batches()
        self._widget = widget
        self._chat = chat
        self._slot = slot
        self._started = started
        self._lines: list[bytes] = []
        self._finished = False
        self._loop = loop or upstream_loop()  # where the stream was opened (its generator lives there)

    def _take(self, batch: list[dict[str, Any]] | None) -> dict[str, Any] | None:
        """Queue the batch's lines; returns the final event (end or error) for `_settle`."""
        if batch is None:
            self._finished = True
            return None
        for event in batch:
            if event["type"] in ("end", "error"):
                self._finished = True
                self._slot.release()
                return event
            self._lines.append(_line(event))
        return None

    def _answered(self) -> dict[str, Any]:
        """`turn_record`'s arguments for the answered turn."""
        return {
            **turn_fields(self._widget, self._chat),
            "reply_text": self._stream.text,
            "ui": self._stream.ui,
            "latency_ms": ms_since(self._started),
            "conversation_id": self._conversation_id,
        }

    def _failed(self, final: dict[str, Any]) -> None:
        """Record the failed user turn (sync ORM)."""
        error = self._stream.error or N8nError(final["code"], final["message"], 502)
        stored(
            chat_failure_record,
            **turn_fields(self._widget, self._chat),
            error=error,
            latency_ms=ms_since(self._started),
        )

    def _settle(self, final: dict[str, Any], *, kept: bool = True) -> None:
        """Queue the last line: `end` only when the answered turn was stored (`kept`), else `error`."""
        if final["type"] == "end" and not kept:
            final = NOT_STORED
        self._lines.append(_line(final))

    @property
    def exhausted(self) -> bool:
        """Every line is out (the final one included): the next read would end the iteration."""
        return self._finished and not self._lines

    def close(self) -> None:
        self._slot.release()
        if not self._finished:
            self._finished = True
            upstream_submit(self._batches.aclose(), self._loop)


class SyncRelay(_Relay):
    """For WSGI (and Django's sync test client): pulls each batch from the upstream loop."""

    def __iter__(self) -> SyncRelay:
        return self

    def __next__(self) -> bytes:
        while not self._lines:
            if self._finished:
                raise StopIteration
            final = self._take(upstream_submit(_next_batch(self._batches)).result())
            if final is None:
                continue
            if not self._record:
                self._settle(final)
            elif final["type"] == "end":
                self._settle(final, kept=stored(turn_record, **self._answered()))
            else:
                self._failed(final)
                self._settle(final)
        return self._lines.pop(0)


class AsyncRelay(_Relay):
    """For ASGI (Uvicorn, Daphne): awaits each batch; the answered turn goes in the loop's group commit
    (`widgets.chat.turn_commit`), a failed one in a short DB step."""

    async def _commit(self) -> bool:
        try:
            await turn_commit(**self._answered())
        except DatabaseError:
            logger.exception("chat turn could not be stored (widget %s)", self._widget.pk)
            return False
        return True

    def __aiter__(self) -> AsyncRelay:
        return self

    async def _next(self) -> list[dict[str, Any]] | None:
        """The next batch: read right here when the stream lives on the running loop (a server loop, the
        chat route's: no wrapper coroutines per read — issue 11 bench), else on the stream's loop."""
        if self._loop is asyncio.get_running_loop():
            return await anext(self._batches, None)
        return await upstream_await(_next_batch(self._batches))

    async def __anext__(self) -> bytes:
        while not self._lines:
            if self._finished:
                raise StopAsyncIteration
            final = self._take(await self._next())
            if final is None:
                continue
            if not self._record:
                self._settle(final)
            elif final["type"] == "end":
                self._settle(final, kept=await self._commit())
            else:
                await db_step(self._failed, final)
                self._settle(final)
        lines, self._lines = self._lines, []
        return b"".join(lines)  # what one upstream read produced, in one send to the visitor


async def chat_stream(
    *,
    widget: Widget,
    target: N8nTarget,
    chat: ChatRequest,
    asgi: bool,
    record: bool = True,
    conversation_id: int | None = None,
) -> _Relay:
    """Open the upstream stream now (errors raise N8nError before any byte is sent), then relay it."""
    slot = chat_upstream_slot(license=widget.license)
    stream = N8nStream(target=target, session_id=chat.session_id, chat_input=chat.chat_input, metadata=chat.metadata)
    started = time.monotonic()
    try:
        await upstream_await(stream.open())
    except N8nError as error:
        slot.release()
        if record:
            await db_step(
                stored, chat_failure_record, **turn_fields(widget, chat), error=error, latency_ms=ms_since(started)
            )
        raise
    except BaseException:
        slot.release()
        raise
    relay = AsyncRelay if asgi else SyncRelay
    return relay(
        stream=stream,
        widget=widget,
        chat=chat,
        slot=slot,
        started=started,
        record=record,
        conversation_id=conversation_id,
        loop=upstream_loop_here(),
    )
