"""The relay between one browser and one OpenAI Realtime session, independent of Channels.

`realtime.protocol` decides what a browser may send upstream; `RelaySession` owns the upstream
socket, tool calls, transcripts-as-turns, usage and limits. The consumer (realtime/consumers.py) only
checks access, accepts and hands frames over.

The hot path has no queue hop and no extra task per frame (issue 14.4): a browser frame is written to the
upstream socket by the task that received it, and an upstream event is sent to the browser by the task that
read it. Each direction keeps a bounded backlog for when the other side cannot take a message at once: the
upstream socket paused by flow control (`to_upstream`, 256 messages, then frames are dropped with an
`overloaded` error — as before), or a server whose `send` suspends (`outbox`, 256 messages, then the
upstream reader waits — Uvicorn's and Daphne's `send` never suspend). Order is kept in both directions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import orjson
from channels.db import database_sync_to_async
from django.conf import settings
from websockets.exceptions import ConnectionClosed

from realtime import events
from realtime import services as svc
from realtime.protocol import (
    ASSISTANT_DELTA,
    ASSISTANT_DONE,
    AUDIO_BURST_BYTES,
    AUDIO_BYTES_PER_SECOND,
    AUDIO_DELTA,
    BYTES_PER_SECOND,
    FATAL_UPSTREAM_CODES,
    FRAMES_BURST,
    FRAMES_PER_SECOND,
    UPSTREAM_ERROR_WORDS,
    USER_DELTA,
    USER_DONE,
    TokenBucket,
    append_fast_path,
    audio_delta_fast_path,
    b64_decoded_len,
    browser_event_filter,
)
from realtime.upstream import UpstreamError, upstream_connect, upstream_send_now
from widgets.models import Widget
from widgets.selectors import openai_api_key
from widgets.services.turns import turn_save

logger = logging.getLogger(__name__)

QUEUE_SIZE = 256
TICK_SECONDS = 1.0
HEARTBEAT_SECONDS = 15.0  # usage checkpoint + heartbeat the reaper watches (also at every response.done)
SLOT_REFRESH_SECONDS = 5.0  # well inside services.SLOT_TTL_SECONDS
BROWSER_GONE_GRACE_SECONDS = 2.0
WARN_BEFORE_SECONDS = 60.0


# Live sessions of this process (the per-process cap and the "no leftovers" tests read it).
ACTIVE_SESSIONS: set[RelaySession] = set()
_DRAINING = False
RESTART_CLOSE_CODE = 1012  # RFC 6455 "Service Restart"


def relay_draining() -> bool:
    """True once this process is shutting down: new calls are refused with `server_restart`."""
    return _DRAINING


async def relay_drain(*, reason: str = "server_restart", timeout: float = 10.0) -> int:
    """End every live call of this process (server shutdown): each browser gets `session.ended` with
    `reason` (the widget reconnects on `server_restart`), each conversation is finalised with it.
    Returns how many calls were ended."""
    global _DRAINING
    _DRAINING = True
    sessions = list(ACTIVE_SESSIONS)
    if sessions:
        ends = [asyncio.ensure_future(s.end(reason, close_code=RESTART_CLOSE_CODE)) for s in sessions]
        await asyncio.wait(ends, timeout=timeout)
    return len(sessions)


class RelaySession:
    """One voice call: browser <-> this object <-> OpenAI Realtime."""

    def __init__(
        self,
        *,
        widget: Widget,
        config: dict[str, Any],
        session: dict[str, Any],
        visitor_id: str,
        send_browser: Callable[[str], Awaitable[None]],
        close_browser: Callable[[int, str], Awaitable[None]],
        preview: bool = False,
    ):
        self.widget = widget
        self.license_id = widget.license_id
        self.config = config
        self.session = session
        self.model = session["model"]
        self.visitor_id = visitor_id
        self._send_browser = send_browser
        self._close_browser = close_browser
        # The cache slots this call holds (one of the license's; a preview call: the member's and the agency's
        # preview slots), refreshed while it lives and freed at its end.
        self.slot_keys: list[str] = []
        self.slot_token = ""
        # A configurator test call (realtime/preview.py): a preview conversation, never billed, and the
        # license's minutes neither end nor warn it; its own length cap instead.
        self.preview = preview
        self.context: svc.VoiceContext | None = None  # who calls from which page (the consumer reads it)
        voice = config.get("voice") or {}
        ceiling = settings.REALTIME_MAX_SESSION_SECONDS
        if preview:
            ceiling = min(ceiling, settings.REALTIME_PREVIEW_MAX_SECONDS)
        self.max_seconds = min(int(voice.get("max_session_seconds", 900)), ceiling)
        self.conversation_id: int | None = None
        self.upstream: Any = None
        self.to_upstream: asyncio.Queue[str] = asyncio.Queue(QUEUE_SIZE)  # only while upstream cannot take one
        self.upstream_busy = False  # the pump holds a message it is sending (order: nothing may overtake it)
        self.outbox: deque[str] = deque()  # only while a send to the browser is suspended
        self.browser_sending = False
        self.browser_failed = False
        self._outbox_room = asyncio.Event()
        self.tasks: set[asyncio.Task] = set()
        self.frames = TokenBucket(rate=FRAMES_PER_SECOND, capacity=FRAMES_BURST)
        self.audio_budget = TokenBucket(rate=AUDIO_BYTES_PER_SECOND, capacity=AUDIO_BURST_BYTES)
        self.audio_in_bytes = 0
        self.audio_out_bytes = 0
        self.usage: dict[str, int] = svc.usage_add({}, None)
        self.flushed_seconds = 0.0  # audio seconds billed by the last checkpoint
        self._checkpoint_lock = asyncio.Lock()
        self.quota_left_seconds = float("inf")
        self.started = time.monotonic()
        self.partials: dict[str, str] = {}
        self.handled_calls: set[str] = set()
        self.pending_tools = 0
        self.response_active = False
        self.need_response = False
        self.warned: set[str] = set()
        self.ended = False
        self.end_reason = ""
        self._ended_event = asyncio.Event()

    @property
    def slot_key(self) -> str | None:
        return self.slot_keys[0] if self.slot_keys else None

    # --- lifecycle ---------------------------------------------------------------------------

    def reserve(self) -> bool:
        """Count this call against the per-process cap (synchronously: no await between check and add)."""
        if len(ACTIVE_SESSIONS) >= settings.REALTIME_MAX_SESSIONS_PER_PROCESS:
            return False
        ACTIVE_SESSIONS.add(self)
        return True

    def unreserve(self) -> None:
        """Give the reservation back when the call is refused before it starts."""
        ACTIVE_SESSIONS.discard(self)

    async def start(self) -> bool:
        """Open upstream, configure it, start the pumps. On failure: tell the browser and end."""
        ACTIVE_SESSIONS.add(self)
        try:
            self.upstream = await upstream_connect(
                model=self.model, api_key=openai_api_key(secrets=self.widget.secrets)
            )
            await self.upstream.send(json.dumps({"type": "session.update", "session": self.session}))
            try:
                opened = await database_sync_to_async(self._open_conversation)()
            except Exception:  # a terminated database connection is replaced on the second try
                logger.warning("realtime: opening the conversation failed; retrying once", exc_info=True)
                opened = await database_sync_to_async(self._open_conversation)()
            self.conversation_id, self.quota_left_seconds = opened
        except UpstreamError as exc:
            await self.end(exc.code, close_code=4502)
            return False
        except Exception:
            logger.exception("realtime start failed")
            await self.end("server_error", close_code=4500)
            return False
        for coro in (self._pump_to_upstream(), self._read_upstream(), self._tick()):
            self._spawn(coro)
        await self._emit(events.session_ready(max_session_seconds=self.max_seconds))
        return True

    def _open_conversation(self) -> tuple[int, float]:
        """One trip to the database thread at call start (connect storms queue on that one thread)."""
        conversation = svc.voice_conversation_start(
            widget=self.widget,
            visitor_id=self.visitor_id,
            relayed=True,
            is_preview=self.preview,
            context=self.context,
        )
        if self.preview:
            return conversation.pk, float("inf")
        return conversation.pk, svc.voice_quota_left_seconds(license_id=self.license_id)

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def end(self, reason: str, *, notify: bool = True, close_code: int = 1000) -> None:
        """End both sides once: stop the pumps, close upstream, finalise the conversation and usage.

        Safe to call from any task, any number of times; later callers wait for the first to finish.
        """
        if self.ended:
            await self._ended_event.wait()
            return
        self.ended, self.end_reason = True, reason
        try:
            await self._end(reason, notify=notify, close_code=close_code)
        finally:
            ACTIVE_SESSIONS.discard(self)
            self._ended_event.set()

    async def _end(self, reason: str, *, notify: bool, close_code: int) -> None:
        current = asyncio.current_task()
        others = [t for t in self.tasks if t is not current]
        for task in others:
            task.cancel()
        for task in others:
            with contextlib.suppress(BaseException):
                await task
        await self._close_upstream()
        await self._release_slot()
        try:
            await self._finalise(reason)
        except Exception:
            logger.exception("realtime: finalising conversation %s failed", self.conversation_id)
        queued = list(self.outbox)
        self.outbox.clear()
        self._outbox_room.set()  # unblocks anyone waiting for room
        if not notify or reason == "browser_gone" or self.browser_failed:
            return
        with contextlib.suppress(Exception):
            for message in queued:  # what was already queued (e.g. a final transcript) goes first
                await self._send_browser(message)
            if reason.startswith("upstream_") or reason == "server_error":
                await self._send_browser(
                    json.dumps(
                        events.error(
                            code=reason, message=events.END_MESSAGES.get(reason, "The call ended."), fatal=True
                        )
                    )
                )
            await self._send_browser(json.dumps(events.session_ended(reason=reason)))
            await self._close_browser(close_code, reason)

    async def _close_upstream(self) -> None:
        if self.upstream is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.upstream.close(), timeout=3)

    async def _release_slot(self) -> None:
        keys, self.slot_keys = self.slot_keys, []
        for key in keys:
            with contextlib.suppress(Exception):
                await database_sync_to_async(svc.voice_slot_release)(key=key, token=self.slot_token)

    @property
    def audio_in_seconds(self) -> float:
        return self.audio_in_bytes / BYTES_PER_SECOND

    @property
    def audio_out_seconds(self) -> float:
        return self.audio_out_bytes / BYTES_PER_SECOND

    @property
    def cost(self) -> Decimal:
        return svc.usage_cost(model=self.model, usage=self.usage)

    async def _checkpoint(self, end_reason: str = "") -> None:
        """Persist usage so far on the conversation and bill the license the difference (one transaction,
        idempotent: realtime.services.voice_usage_checkpoint); the reaper reads the heartbeat it writes.
        Raises when the database is unreachable: the next checkpoint carries everything."""
        if self.conversation_id is None:
            return
        async with self._checkpoint_lock:
            seconds = self.audio_in_seconds
            billed = await database_sync_to_async(svc.voice_usage_checkpoint)(
                conversation_id=self.conversation_id,
                license_id=self.license_id,
                usage=dict(self.usage),
                audio_in_seconds=seconds,
                audio_out_seconds=self.audio_out_seconds,
                cost_usd=self.cost,
                end_reason=end_reason,
            )
            self.quota_left_seconds -= billed
            self.flushed_seconds = max(self.flushed_seconds, seconds)

    async def _try_checkpoint(self) -> bool:
        for attempt in (1, 2):  # a connection the database terminated is replaced on the second try
            try:
                await self._checkpoint()
                return True
            except Exception:  # a database blip costs no call: the next checkpoint carries everything
                if attempt == 2:
                    logger.warning("realtime: usage checkpoint failed; the next one carries it", exc_info=True)
        return False

    async def _finalise(self, reason: str) -> None:
        if self.conversation_id is None:
            return
        for item_id, text in list(self.partials.items()):  # a turn cut off mid-way still counts once
            if text.strip() and item_id.startswith("a:"):
                try:
                    await self._save_turn("assistant", text.strip(), item_id[2:])
                except Exception:  # the usage below matters more than a cut-off line
                    logger.warning("realtime: saving the last partial turn failed", exc_info=True)
        self.partials.clear()
        for delay in (0.2, 1.0, None):  # a terminated database connection is replaced on the next try
            try:
                await self._checkpoint(end_reason=reason)
                return
            except Exception:
                if delay is None:
                    raise  # the reaper ends it (worker_lost) with the usage of the last checkpoint
                await asyncio.sleep(delay)

    # --- browser -> upstream -----------------------------------------------------------------

    async def from_browser(self, raw: str | bytes | None) -> None:
        if self.ended:
            return
        if not self.frames.take():
            await self._emit(events.error(code="rate_limited", message="Too many messages; slow down."))
            return
        if isinstance(raw, str) and (audio_bytes := append_fast_path(raw)) >= 0:
            text, user_text = raw, ""  # the canonical append, forwarded as it came (realtime.protocol)
        else:
            result = browser_event_filter(raw)
            if result.error is not None:
                await self._emit(result.error)
                return
            upstream = result.upstream
            text = upstream if isinstance(upstream, str) else events.encode(upstream)
            audio_bytes, user_text = result.audio_bytes, result.user_text
        if audio_bytes and not self.audio_budget.take(audio_bytes):
            await self._emit(events.error(code="rate_limited", message="Audio is arriving faster than real time."))
            return
        # Straight to the socket unless a backlog is waiting (it goes first) or upstream cannot take it now.
        if self.upstream_busy or not self.to_upstream.empty() or not upstream_send_now(self.upstream, text):
            try:
                self.to_upstream.put_nowait(text)
            except asyncio.QueueFull:
                await self._emit(events.error(code="overloaded", message="The call is lagging; audio was dropped."))
                return
        self.audio_in_bytes += audio_bytes
        if user_text and self.conversation_id is not None:
            await self._save_turn("user", user_text, "")
            await self._emit(events.transcript_final(role="user", text=user_text))

    async def _pump_to_upstream(self) -> None:
        """Sends the backlog `from_browser` could not write at once (flow control), in order; idle otherwise."""
        try:
            while True:
                message = await self.to_upstream.get()
                self.upstream_busy = True
                await self.upstream.send(message)
                self.upstream_busy = False
        except ConnectionClosed:
            self._spawn(self.end("upstream_closed", close_code=4502))

    async def _to_browser(self, text: str) -> None:
        """Send one message to the browser, in order, from the calling task (no queue hop, no pump task).

        Should a send suspend, later messages wait in `outbox` and the send in flight delivers them in order;
        past QUEUE_SIZE waiting, callers wait for room (backpressure on the upstream reader, as the bounded
        queue gave before)."""
        if self.ended or self.browser_failed:
            return
        while self.browser_sending:
            if len(self.outbox) < QUEUE_SIZE:
                self.outbox.append(text)
                return
            self._outbox_room.clear()
            await self._outbox_room.wait()
            if self.ended or self.browser_failed:
                return
        self.browser_sending = True
        try:
            await self._send_browser(text)
            while self.outbox and not self.ended:
                message = self.outbox.popleft()
                self._outbox_room.set()
                await self._send_browser(message)
        except Exception:  # the browser went away under us (servers raise different errors)
            # Its close code (a hang-up or not) arrives with the disconnect the consumer receives, which
            # ends the call with the right reason; only if none comes is it `browser_gone`.
            self.browser_failed = True
            self.outbox.clear()
            self._spawn(self._end_later("browser_gone", after=BROWSER_GONE_GRACE_SECONDS))
        finally:
            self.browser_sending = False
            self._outbox_room.set()

    async def _end_later(self, reason: str, *, after: float) -> None:
        await asyncio.sleep(after)
        await self.end(reason, notify=False)

    async def _emit(self, event: dict[str, Any]) -> None:
        if not self.ended:
            await self._to_browser(events.encode(event))

    # --- upstream -> browser -----------------------------------------------------------------

    async def _read_upstream(self) -> None:
        reason, code = "upstream_closed", 4502
        recv = self.upstream.recv
        try:
            while True:  # recv() itself, not `async for` (one async generator step less per event)
                raw = await recv()
                if isinstance(raw, str) and (delta := audio_delta_fast_path(raw)) is not None:
                    self.audio_out_bytes += b64_decoded_len(delta)
                    await self._to_browser('{"type":"audio.delta","delta":"' + delta + '"}')
                    continue
                try:
                    event = orjson.loads(raw)
                except ValueError:  # not JSON (orjson.JSONDecodeError), or nested past orjson's 1024 levels
                    continue
                if isinstance(event, dict):
                    fatal = await self.handle_upstream(event)
                    if fatal:
                        reason = fatal
                        break
        except ConnectionClosed:
            pass
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("realtime: upstream reader failed")
            reason = "server_error"
        self._spawn(self.end(reason, close_code=code))

    async def handle_upstream(self, event: dict[str, Any]) -> str | None:
        """Translate one upstream event. Returns an end reason when the session must end."""
        kind = event.get("type", "")
        if kind in AUDIO_DELTA:
            delta = event.get("delta") or ""
            self.audio_out_bytes += b64_decoded_len(delta)
            await self._emit(events.audio_delta(delta))
        elif kind in ASSISTANT_DELTA:
            key = "a:" + str(event.get("item_id", ""))
            self.partials[key] = self.partials.get(key, "") + str(event.get("delta") or "")
            await self._emit(events.transcript_partial(role="assistant", text=self.partials[key], item_id=key[2:]))
        elif kind in ASSISTANT_DONE:
            key = "a:" + str(event.get("item_id", ""))
            text = str(event.get("transcript") or event.get("text") or self.partials.get(key, "")).strip()
            self.partials.pop(key, None)
            if text:
                await self._save_turn("assistant", text, key[2:])
                await self._emit(events.transcript_final(role="assistant", text=text, item_id=key[2:]))
        elif kind == USER_DELTA:
            key = "u:" + str(event.get("item_id", ""))
            self.partials[key] = self.partials.get(key, "") + str(event.get("delta") or "")
            await self._emit(events.transcript_partial(role="user", text=self.partials[key], item_id=key[2:]))
        elif kind == USER_DONE:
            key = "u:" + str(event.get("item_id", ""))
            text = str(event.get("transcript") or self.partials.get(key, "")).strip()
            self.partials.pop(key, None)
            if text:
                await self._save_turn("user", text, key[2:])
                await self._emit(events.transcript_final(role="user", text=text, item_id=key[2:]))
        elif kind == "input_audio_buffer.speech_started":
            await self._emit(events.speech_started())
        elif kind == "input_audio_buffer.speech_stopped":
            await self._emit(events.speech_stopped())
        elif kind == "response.created":
            self.response_active = True
            await self._emit(events.response_started())
        elif kind == "response.done":
            response = event.get("response") or {}
            self.response_active = False
            self.usage = svc.usage_add(self.usage, response.get("usage"))
            await self._try_checkpoint()  # persisted before the browser hears the answer is done
            await self._emit(events.response_done(status=str(response.get("status") or "completed")))
            await self._maybe_continue()
        elif kind == "response.function_call_arguments.done":
            call_id = str(event.get("call_id") or "")
            if call_id and call_id not in self.handled_calls:
                self.handled_calls.add(call_id)
                self.pending_tools += 1
                await self._emit(events.tool_started(name=str(event.get("name") or "")))
                self._spawn(self._run_tool(call_id, str(event.get("name") or ""), event.get("arguments")))
        elif kind == "error":
            error = event.get("error") or {}
            code = str(error.get("code") or error.get("type") or "")
            if code in FATAL_UPSTREAM_CODES:
                return FATAL_UPSTREAM_CODES[code]
            await self._emit(
                events.error(
                    code="upstream_error",
                    message=UPSTREAM_ERROR_WORDS.get(code, "The voice service couldn't handle that; please try again."),
                )
            )
        # session.created / session.updated / conversation.item.* and the rest are not forwarded.
        return None

    async def _run_tool(self, call_id: str, name: str, arguments: Any) -> None:
        try:
            result = await database_sync_to_async(self._tool_sync)(name, arguments)
            await self.upstream.send(
                json.dumps(
                    {
                        "type": "conversation.item.create",
                        "item": {"type": "function_call_output", "call_id": call_id, "output": result.output()},
                    }
                )
            )
            for event in events.tool_events(result):
                await self._emit(event)
            self.need_response = True
        except ConnectionClosed:
            return
        finally:
            self.pending_tools -= 1
        await self._maybe_continue()

    def _tool_sync(self, name: str, arguments: Any) -> Any:
        return svc.voice_tool_run(
            widget=self.widget, config=self.config, conversation_id=self.conversation_id, name=name, arguments=arguments
        )

    async def _maybe_continue(self) -> None:
        """After tool outputs: one response.create, once the calling response is done."""
        if self.need_response and self.pending_tools == 0 and not self.response_active and not self.ended:
            self.need_response = False
            with contextlib.suppress(ConnectionClosed):
                await self.upstream.send(json.dumps({"type": "response.create"}))

    async def _save_turn(self, role: str, text: str, item_id: str) -> None:
        if self.conversation_id is None:
            return
        await database_sync_to_async(turn_save)(
            conversation_id=self.conversation_id, role=role, text=text, item_id=item_id
        )

    # --- limits ------------------------------------------------------------------------------

    async def _tick(self) -> None:
        last_checkpoint = last_refresh = time.monotonic()
        while True:
            await asyncio.sleep(TICK_SECONDS)
            elapsed = time.monotonic() - self.started
            if elapsed >= self.max_seconds:
                self._spawn(self.end("max_duration", close_code=4408))
                return
            if self.max_seconds - elapsed <= min(30, self.max_seconds / 2) and "time" not in self.warned:
                self.warned.add("time")
                await self._emit(
                    events.warning(code="session_time_low", message="This call will end in less than 30 seconds.")
                )
            left = self.quota_left_seconds - (self.audio_in_seconds - self.flushed_seconds)
            if left <= 0:
                self._spawn(self.end("voice_minutes_exhausted", close_code=4429))
                return
            if left <= WARN_BEFORE_SECONDS and "minutes" not in self.warned:
                self.warned.add("minutes")
                await self._emit(
                    events.warning(code="voice_minutes_low", message="This site's voice minutes are almost used up.")
                )
            if time.monotonic() - last_checkpoint >= HEARTBEAT_SECONDS:
                last_checkpoint = time.monotonic()
                if await self._try_checkpoint() and not self.preview:
                    with contextlib.suppress(Exception):
                        self.quota_left_seconds = await database_sync_to_async(svc.voice_quota_left_seconds)(
                            license_id=self.license_id
                        )
            if self.slot_keys and time.monotonic() - last_refresh >= SLOT_REFRESH_SECONDS:
                last_refresh = time.monotonic()
                try:
                    for key in list(self.slot_keys):
                        await database_sync_to_async(svc.voice_slot_refresh)(key=key, token=self.slot_token)
                except Exception:  # a Redis blip costs no call; the slot is taken back when Redis returns
                    logger.warning("realtime: slot refresh failed; the call goes on", exc_info=True)
