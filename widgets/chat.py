"""Rules of the public n8n chat: request validation, rate limit, quota, the per-process caches, the upstream
slots, a plain reply and the record of each turn. Streaming answers: widgets.chat_stream."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
import weakref
from collections.abc import Coroutine
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any

import redis
from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError, DataError, IntegrityError, NotSupportedError, ProgrammingError
from django.utils import timezone

from licenses.api import ApiError, json_loads
from licenses.identity import Identity, identity_session_id
from licenses.models import License, month_start
from licenses.redis import redis_client
from licenses.selectors import license_cache_generation, license_cache_key, license_check
from widgets.aio import (
    db_step,
    pg_async,
    pg_async_available,
    pg_async_execute,
    upstream_await,
    upstream_is_home,
)
from widgets.models import Widget
from widgets.n8n import N8nError, N8nReply, N8nTarget, n8n_history_async, n8n_send_async, n8n_target
from widgets.page_context import chat_metadata_clean
from widgets.ratelimit import rate_hit, rate_hit_peek, rate_hit_peek_async
from widgets.selectors import chat_session_lookup, chat_session_lookup_async, widget_get_published
from widgets.services.turns import (
    chat_failure_record,
    chat_sessions_open_statement,
    chat_turn_fence,
    chat_turn_key,
    chat_turn_record,
    chat_turns_insert_statement,
    chat_turns_record,
    chat_turns_stored,
)

logger = logging.getLogger(__name__)

MAX_CHAT_INPUT = 4000
MAX_SESSION_ID = 200
ACTIONS = ("sendMessage", "loadPreviousSession")
BUSY_RETRY_AFTER = 5


@dataclass(frozen=True)
class ChatRequest:
    action: str
    session_id: str
    chat_input: str
    metadata: dict[str, Any]
    visitor_id: str
    widget_id: str
    page_url: str = ""  # the inbox's record of the visitor's page (whatever the page-context setting)
    identity: dict[str, Any] = field(default_factory=dict)  # Switchboard('identify'), issue 15.2


def _str(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def chat_request_parse(*, body: bytes, widget_param: str = "", visitor_header: str = "") -> ChatRequest:
    """Validate the widget's body: {action, sessionId, chatInput, metadata?, widget?}. Raises ApiError (400)."""
    data = json_loads(body or b"")
    if not isinstance(data, dict):
        raise ApiError("invalid_json", "Send a JSON object.")
    return chat_request_from(data=data, widget_param=widget_param, visitor_header=visitor_header)


def chat_request_from(*, data: dict[str, Any], widget_param: str = "", visitor_header: str = "") -> ChatRequest:
    """The one set of rules for a chat request, public or preview (issue 10.6). Raises ApiError (400)."""
    action = data.get("action", "sendMessage")
    if action not in ACTIONS:
        raise ApiError("invalid_action", "action must be sendMessage or loadPreviousSession.")
    session_id = _str(data.get("sessionId"))
    if not session_id or len(session_id) > MAX_SESSION_ID:
        raise ApiError("invalid_session_id", f"sessionId is required (at most {MAX_SESSION_ID} characters).")
    chat_input = data.get("chatInput") if isinstance(data.get("chatInput"), str) else ""
    if action == "sendMessage":
        if not chat_input.strip():
            raise ApiError("empty_message", "chatInput must not be empty.")
        if len(chat_input) > MAX_CHAT_INPUT:
            raise ApiError("message_too_long", f"chatInput is limited to {MAX_CHAT_INPUT} characters.")
    # Validated whatever the widget's page-context setting; what goes to n8n is page_context_upstream's.
    metadata = chat_metadata_clean(data.get("metadata"))
    visitor_id = (visitor_header or metadata.get("visitorId", ""))[:128]
    widget_id = (widget_param or _str(data.get("widget")))[:40]
    return ChatRequest(action, session_id, chat_input, metadata, visitor_id, widget_id, visitor_page_url(metadata))


def chat_with_identity(chat: ChatRequest, identity: Identity | None) -> ChatRequest:
    """The turn as n8n and the inbox see it: the identity (`chat.identity`, added to n8n's metadata by the
    view) is ours alone — a page cannot claim one in its metadata — and the session is scoped to it, so two
    users never share a history."""
    metadata = {key: value for key, value in chat.metadata.items() if key != "identity"}
    return replace(
        chat,
        session_id=identity_session_id(session_id=chat.session_id, identity=identity),
        metadata=metadata,
        identity=identity.as_dict() if identity is not None else {},
    )


def chat_rate_check(*, license: License, visitor_id: str, session_id: str, ip: str) -> int | None:
    """Count one request of this visitor (or session) from this IP; seconds to wait when over the limit."""
    who = hashlib.sha256(f"{visitor_id or session_id}|{ip}".encode()).hexdigest()[:24]
    count, left = rate_hit(f"chat:{license.pk}:{who}")
    if count > settings.WIDGET_CHAT_RATE_PER_MINUTE:
        return left
    return None


def stored(record: Any, **kwargs: Any) -> bool:
    """Run a record function; False (logged) when the database cannot take it right now."""
    try:
        record(**kwargs)
    except DatabaseError:
        logger.exception("chat turn could not be stored (widget %s)", kwargs["widget"].pk)
        return False
    return True


def ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def published_widget_or_404(*, license: License, public_id: str = "") -> Widget:
    widget = widget_get_published(license=license, public_id=public_id[:40] or None)
    if widget is None:
        raise ApiError("widget_not_found", "This widget does not exist or is not published.", status_code=404)
    return widget


def rate_limit_or_429(*, license: License, visitor_id: str, session_id: str, ip: str) -> None:
    retry_after = chat_rate_check(license=license, visitor_id=visitor_id, session_id=session_id, ip=ip)
    if retry_after:
        raise ApiError(
            "rate_limited",
            "Too many messages; wait a moment and try again.",
            status_code=429,
            fields={"retry_after": retry_after},
        )


class _Resolved:
    """What one license key serves, as read from the database under one cache generation."""

    __slots__ = ("license", "token", "widgets")

    def __init__(self, license: License, token: object) -> None:
        self.license = license
        self.token = token
        self.widgets: dict[str, tuple[Widget, N8nTarget]] = {}


@dataclass
class _QuotaRead:
    """A license's monthly conversations as this process last read them (see `_ChatCache.quota_ample`)."""

    month: date
    used: int  # the month's chat conversations + ChatKit sessions, when read
    at: float  # time.monotonic() of the read
    opened: int = 0  # conversations this process opened since


class _ChatCache:
    """Per-process caches of the public chat's hot path (issue 11 bench: ~20 ms CPU per turn was
    mostly the license, widget and conversation queries and their pool checkouts).

    - `resolved`: license key -> the license and its published widgets + n8n targets, valid only
      while the license's cache generation (licenses.selectors.license_cache_generation, bumped by
      every publish, suspend, revoke, domain or key change) still has the value read with it. The
      generation is read in the rate limiter's own Redis round trip on every request, so a change
      made in any process takes effect on the next request everywhere; without a readable generation
      (Redis away) nothing is served from here.
    - `conversations`: (widget, session) -> the conversation's id once it exists, so a continuing
      session needs no lookup (the quota only gates a new conversation). A deleted conversation is
      found out by the insert (see `chat_turn_record`).
    - `quota`: license id -> its month's usage as last read here (`quota_ample`), so a new session's first turn
      needs no database read while the monthly allowance is far from spent."""

    MAX = 50_000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.resolved: dict[str, _Resolved] = {}
        self.conversations: dict[tuple[int, str], int] = {}
        self.quota: dict[int, _QuotaRead] = {}

    def quota_read(self, license_id: int, used: int) -> None:
        """Note the month's usage (conversations + ChatKit sessions) a session check just read."""
        with self._lock:
            if len(self.quota) >= self.MAX:
                self.quota.clear()
            self.quota[license_id] = _QuotaRead(month_start(timezone.now().date()), used, time.monotonic())

    def quota_opened(self, license_id: int) -> None:
        """Count a conversation this process opened on top of the last read."""
        with self._lock:
            read = self.quota.get(license_id)
            if read is not None:
                read.opened += 1

    def quota_ample(self, license: License) -> bool:
        """May a new session start without reading the month's usage? Only while the last read is recent
        (WIDGET_CHAT_QUOTA_READ_SECONDS, this month) and, with what this process opened since, leaves more than
        a headroom (WIDGET_CHAT_QUOTA_HEADROOM, or a tenth of the allowance when that is more). The headroom
        covers what the read cannot see: the turns in flight (the session check never could: it reads
        committed rows) and, within the read's age, other processes' new sessions and ChatKit threads. Near
        the allowance every new session reads the database, so the 429 `quota_exceeded` comes where it did."""
        read = self.quota.get(license.pk)
        if read is None or time.monotonic() - read.at > settings.WIDGET_CHAT_QUOTA_READ_SECONDS:
            return False
        cap = license.monthly_conversations
        left = cap - read.used - read.opened
        return left > max(settings.WIDGET_CHAT_QUOTA_HEADROOM, cap // 10) and read.month == month_start(
            timezone.now().date()
        )

    def license(self, key: str) -> License | None:
        entry = self.resolved.get(key)
        return entry.license if entry is not None else None

    def remember_conversation(self, widget_id: int, session_id: str, conversation_id: int) -> None:
        with self._lock:
            if len(self.conversations) >= self.MAX:
                self.conversations.clear()
            self.conversations[(widget_id, session_id)] = conversation_id

    def forget_conversation(self, widget_id: int, session_id: str) -> None:
        with self._lock:
            self.conversations.pop((widget_id, session_id), None)

    def put(self, key: str, entry: _Resolved) -> None:
        with self._lock:
            if len(self.resolved) >= self.MAX:
                self.resolved.clear()
            self.resolved[key] = entry

    def drop(self, key: str) -> None:
        with self._lock:
            self.resolved.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self.resolved.clear()
            self.conversations.clear()
            self.quota.clear()


chat_cache = _ChatCache()


def chat_license_cached(key: str) -> License | None:
    """The license a chat request names, from this process's cache (no database), or None. Not yet
    proven current: `chat_prepare` checks the generation before anything is served."""
    return chat_cache.license(key)


def _widget_resolve(*, license: License, public_id: str) -> tuple[Widget, N8nTarget]:
    widget = published_widget_or_404(license=license, public_id=public_id)
    widget.license = license  # the async caller must not trigger a lazy load
    version = widget.published_version
    if version.widget_type != "n8n":
        raise ApiError("wrong_widget_type", "This widget does not use the n8n chat.", status_code=400)
    target = n8n_target(config=version.config, secrets=widget.secrets)
    if target is None:
        raise ApiError("not_configured", "This widget's chat is not connected yet.", status_code=503)
    return widget, target


def _license_fresh(*, key: str, origin: str | None) -> License:
    """Read the license again (its cached copy is out of date) and check it with the Origin, as the
    public guard does. Raises ApiError with the check's reason when it may no longer serve."""
    license = License.objects.select_related("agency").filter(key=key).first()
    check = license_check(license=license, origin=origin)
    if not check.ok:
        raise ApiError(check.reason, check.message, status_code=check.http_status)
    assert license is not None
    return license


def _generation_token(key: str) -> object:
    """The license's cache generation as the rate limiter's peek reads it (raw, as stored), given one first
    when it has none yet (a new license, or its generation expired): the request that finds none caches
    under the one it made, so the requests after it are warm, instead of every request of a burst that
    peeked before it reading the license and widget again. None when the cache cannot be reached (rate
    limits degrade, the chat goes on uncached)."""
    try:
        license_cache_generation(key=key)
        if not settings.REDIS_URL:
            return cache.get(license_cache_key(key))
        return redis_client().get(cache.make_and_validate_key(license_cache_key(key)))
    except (redis.RedisError, OSError) as exc:
        logger.info("license cache generation unreadable (%s): chat served uncached", exc.__class__.__name__)
        return None


@dataclass(frozen=True)
class ChatPrepared:
    license: License
    widget: Widget
    target: N8nTarget
    conversation_id: int | None  # the session's conversation, when it already exists


def _rate_key(*, license: License, chat: ChatRequest, ip: str) -> str:
    who = hashlib.sha256(f"{chat.visitor_id or chat.session_id}|{ip}".encode()).hexdigest()[:24]
    return f"chat:{license.pk}:{who}"


def _rate_limited(retry_after: int) -> ApiError:
    return ApiError(
        "rate_limited",
        "Too many messages; wait a moment and try again.",
        status_code=429,
        fields={"retry_after": retry_after},
    )


async def chat_prepare_async(
    *, license: License, chat: ChatRequest, ip: str, origin: str | None = None
) -> ChatPrepared:
    """`chat_prepare` for an async view. On a server loop (widgets.aio.upstream_home) with Redis, the
    rate limiter's round trip is awaited on the loop, and a turn whose license generation still matches
    the cache, whose widget is resolved and whose session's conversation is known is prepared right here,
    with no thread and no database (the same rules, in the same order, as `chat_prepare`'s cached path).
    Anything else is `chat_prepare` in a DB step, given the count already taken."""
    if not settings.REDIS_URL or not upstream_is_home():
        return await db_step(chat_prepare, license=license, chat=chat, ip=ip, origin=origin)
    peeked = await rate_hit_peek_async(
        _rate_key(license=license, chat=chat, ip=ip), peek=license_cache_key(license.key)
    )
    count, retry_after, token = peeked
    entry = chat_cache.resolved.get(license.key)
    if entry is not None and token is not None and entry.token == token:
        resolved = entry.widgets.get(chat.widget_id)
        if resolved is not None:
            widget, target = resolved
            if count > settings.WIDGET_CHAT_RATE_PER_MINUTE:
                raise _rate_limited(retry_after)
            if chat.action != "sendMessage":
                return ChatPrepared(entry.license, widget, target, None)
            conversation_id = chat_cache.conversations.get((widget.pk, chat.session_id))
            if conversation_id is not None:
                return ChatPrepared(entry.license, widget, target, conversation_id)
            if chat_cache.quota_ample(entry.license):
                # A session this process has not seen, with the allowance far from spent: no session check
                # (issue 11 bench: a third of a first turn's CPU). Its turn's statement opens the conversation,
                # or finds it open (another process's session, or one from before a restart) and the DB step
                # adds the turn to it, as for two first turns of one session at once.
                return ChatPrepared(entry.license, widget, target, None)
            if pg_async_available():  # a new session (or one this process has not seen): one statement
                try:
                    return await _session_prepare_async(entry.license, widget, target, chat)
                except DatabaseError:
                    # A loop connection PostgreSQL dropped within its alive-bypass window (widgets.aio): the
                    # step's health-checked pool answers instead, with the count already taken.
                    logger.info("chat session check on the loop failed; the DB step checks it", exc_info=True)
    return await db_step(chat_prepare, license=license, chat=chat, ip=ip, origin=origin, peeked=peeked)


async def _session_prepare_async(
    license: License, widget: Widget, target: N8nTarget, chat: ChatRequest
) -> ChatPrepared:
    """`chat_prepare`'s session step for a cached license and widget, on the loop's own PostgreSQL connections
    (issue 11 bench: a session's first turn spent more in its DB step's thread hop and pooled checkout than in
    the statement): the same statement, the same quota rule."""
    found, quota_left = await chat_session_lookup_async(widget=widget, license=license, session_id=chat.session_id)
    chat_cache.quota_read(license.pk, license.monthly_conversations - quota_left)
    if found is None:
        if quota_left <= 0:
            raise ApiError("quota_exceeded", "This license has used its monthly allowance.", status_code=429)
        return ChatPrepared(license, widget, target, None)
    chat_cache.remember_conversation(widget.pk, chat.session_id, found)
    return ChatPrepared(license, widget, target, found)


def chat_prepare(
    *,
    license: License,
    chat: ChatRequest,
    ip: str,
    origin: str | None = None,
    peeked: tuple[int, int, object] | None = None,
) -> ChatPrepared:
    """Every rule before n8n is called: widget, type, webhook, rate limit, quota. Raises ApiError.

    One Redis round trip counts the request and reads the license's cache generation (`peeked`: the
    caller made it already); when it still matches this process's cache, the license and widget come
    from the cache and a continuing session needs no database read at all."""
    key = license.key
    if peeked is None:
        peeked = rate_hit_peek(_rate_key(license=license, chat=chat, ip=ip), peek=license_cache_key(key))
    count, retry_after, token = peeked
    if token is None:  # no generation yet (or the cache is unreachable): read after making one
        token = _generation_token(key)
    entry = chat_cache.resolved.get(key)
    if entry is None or token is None or entry.token != token:
        # Out of date (or never cached): the guard's license is the cached copy when it came from the
        # entry, so read it and check it again; one the guard read from the database is current.
        chat_cache.drop(key)
        if entry is not None and entry.license is license:
            license = _license_fresh(key=key, origin=origin)
        entry = _Resolved(license, token)
        if token is not None:
            chat_cache.put(key, entry)
    license = entry.license
    resolved = entry.widgets.get(chat.widget_id)
    if resolved is None:
        resolved = _widget_resolve(license=license, public_id=chat.widget_id)
        entry.widgets[chat.widget_id] = resolved
    widget, target = resolved
    if count > settings.WIDGET_CHAT_RATE_PER_MINUTE:
        raise _rate_limited(retry_after)
    conversation_id = None
    if chat.action == "sendMessage":
        conversation_id = chat_cache.conversations.get((widget.pk, chat.session_id))
        if conversation_id is None:
            # A new session needs monthly quota; an existing one may continue (one statement for both).
            found, quota_left = chat_session_lookup(widget=widget, license=license, session_id=chat.session_id)
            if found is None:
                if quota_left <= 0:
                    raise ApiError("quota_exceeded", "This license has used its monthly allowance.", status_code=429)
            else:
                conversation_id = found
                chat_cache.remember_conversation(widget.pk, chat.session_id, conversation_id)
    return ChatPrepared(license, widget, target, conversation_id)


def chat_is_streaming(*, widget: Widget) -> bool:
    return bool(widget.published_version.config["connection"]["n8n"].get("streaming"))


# --- concurrent upstream calls per license (per process) --------------------------------------


class _UpstreamSlots:
    """How many upstream calls each license has in flight in this process.

    Waiting on n8n costs no DB connection and no thread, but it still holds a pooled upstream
    connection, memory and a socket: one license whose webhook hangs may hold at most its cap, so
    the others always find room (issue 11.1). Per process on purpose: no Redis round trip (or Redis
    outage) on the hot path; N workers allow N x the cap, which the README states."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._used: dict[int, int] = {}

    def acquire(self, key: int, limit: int) -> bool:
        with self._lock:
            if self._used.get(key, 0) >= limit:
                return False
            self._used[key] = self._used.get(key, 0) + 1
            return True

    def release(self, key: int) -> None:
        with self._lock:
            left = self._used.get(key, 0) - 1
            if left > 0:
                self._used[key] = left
            else:
                self._used.pop(key, None)

    def in_use(self, key: int) -> int:
        with self._lock:
            return self._used.get(key, 0)


upstream_slots = _UpstreamSlots()


class UpstreamSlot:
    """One license's permit for one upstream call; `release()` is idempotent (and thread-safe)."""

    def __init__(self, license_id: int):
        self.license_id = license_id
        self._released = threading.Event()

    def release(self) -> None:
        if not self._released.is_set():
            self._released.set()
            upstream_slots.release(self.license_id)


def chat_concurrency_limit(*, license: License) -> int:
    value = (license.limits or {}).get("max_concurrent_chats")
    return int(value) if value else settings.WIDGET_CHAT_MAX_CONCURRENT_PER_LICENSE


def chat_upstream_slot(*, license: License) -> UpstreamSlot:
    """Take one of the license's upstream permits, or raise ApiError 429 `license_busy` (Retry-After)."""
    if not upstream_slots.acquire(license.pk, chat_concurrency_limit(license=license)):
        logger.warning("license %s: concurrent chat cap reached", license.pk)
        raise ApiError(
            "license_busy",
            "This assistant is answering many visitors right now. Please try again in a few seconds.",
            status_code=429,
            fields={"retry_after": BUSY_RETRY_AFTER},
        )
    return UpstreamSlot(license.pk)


# --- one turn ----------------------------------------------------------------------------------


async def chat_history(*, target: N8nTarget, chat: ChatRequest) -> list[dict[str, str]]:
    return await upstream_await(n8n_history_async(target=target, session_id=chat.session_id, metadata=chat.metadata))


async def chat_reply(
    *,
    widget: Widget,
    target: N8nTarget,
    chat: ChatRequest,
    record: bool = True,
    conversation_id: int | None = None,
) -> N8nReply:
    """One non-streaming turn: ask n8n (holding no DB connection), then record it in a short DB step.
    A failed call is recorded as a failed user turn, then raised (the visitor gets 502/504).
    `record=False` (the configurator's preview) writes nothing."""
    slot = chat_upstream_slot(license=widget.license)
    started = time.monotonic()
    try:
        reply = await upstream_await(
            n8n_send_async(
                target=target, session_id=chat.session_id, chat_input=chat.chat_input, metadata=chat.metadata
            )
        )
    except N8nError as error:
        if record:
            await db_step(
                stored, chat_failure_record, **turn_fields(widget, chat), error=error, latency_ms=ms_since(started)
            )
        raise
    finally:
        slot.release()
    if record:
        await turn_commit(
            **turn_fields(widget, chat),
            reply_text=reply.text,
            ui=reply.ui,
            latency_ms=ms_since(started),
            conversation_id=conversation_id,
        )
    return reply


def turn_record(**turn: Any) -> int:
    """Store a turn (`widgets.services.turns.chat_turn_record`) and remember the session's conversation."""
    conversation_id = chat_turn_record(**turn)
    if conversation_id != turn.get("conversation_id"):
        chat_cache.remember_conversation(turn["widget"].pk, turn["session_id"], conversation_id)
    return conversation_id


def _turns_record(
    turns: list[dict[str, Any]], unsure: list[int] | None = None, fence: int | None = None
) -> list[int | Exception]:
    """The DB step of a group commit. `unsure`: the turns (positions) a statement on the loop may have stored
    (its connection was lost: it may have committed first); those found stored (`chat_turns_stored`, after the
    statements' `fence`) get their conversation, and only the others are stored."""
    results: list[int | Exception | None] = [None] * len(turns)
    if unsure:
        for i, conversation_id in zip(unsure, chat_turns_stored([turns[i] for i in unsure], fence=fence), strict=True):
            results[i] = conversation_id
    rest = [i for i, result in enumerate(results) if result is None]
    if rest:
        for i, result in zip(rest, chat_turns_record([turns[i] for i in rest]), strict=True):
            results[i] = result
    for turn, result in zip(turns, results, strict=True):
        if isinstance(result, int) and result != turn.get("conversation_id"):
            chat_cache.remember_conversation(turn["widget"].pk, turn["session_id"], result)
    return results  # type: ignore[return-value]


# The errors of a statement PostgreSQL answered (rolled back: it stored nothing). Any other database error on the
# loop (the connection lost or closed, the server shutting down) leaves the statement's outcome unknown.
_STATEMENT_ERRORS = (IntegrityError, DataError, ProgrammingError, NotSupportedError)


async def _batch_record(turns: list[dict[str, Any]]) -> list[int | Exception]:
    """`_turns_record` for a group commit. On a server loop with PostgreSQL's pool (`pg_async_available`) the
    batch is written on the loop's own connections (issue 11 bench: the DB step's thread hop, pooled checkout
    and GIL hand-offs cost more than the statements), both statements at once: the continuing sessions'
    messages in ONE INSERT, the new sessions' first turns in ONE statement (`chat_sessions_open_statement`:
    conversations, usage, messages). What they did not store takes the DB step as before, race-safe and whole:
    a turn whose conversation the statement did not open (it exists: found, or opened elsewhere meanwhile),
    and every turn of a statement that failed (a conversation deleted meanwhile, a bad row).

    Each turn is stored once even when a statement's connection is lost after it committed: every turn gets a
    random key before its first write (`chat_turn_key`, kept with its user message), and the turns of a
    statement whose outcome is unknown are looked up by key in the DB step first (`chat_turns_stored`, after
    the batch's `fence`); only those not found are stored there."""
    for turn in turns:
        if not turn.get("key"):
            turn["key"] = chat_turn_key()
    results: list[int | Exception | None] = [None] * len(turns)
    unsure: list[int] = []
    fence = None
    if pg_async_available():
        fence = chat_turn_fence()
        continuing = [i for i, turn in enumerate(turns) if turn.get("conversation_id") is not None]
        opening = [i for i, turn in enumerate(turns) if turn.get("conversation_id") is None and turn["session_id"]]
        statements = [
            (part, write([turns[i] for i in part], fence))
            for part, write in ((continuing, _continuing_insert), (opening, _sessions_open_async))
            if part
        ]
        written = await _outcomes([statement for _, statement in statements])
        for (part, _), outcome in zip(statements, written, strict=True):
            if isinstance(outcome, DatabaseError):
                if not isinstance(outcome, _STATEMENT_ERRORS):
                    unsure += part
                logger.info(
                    "chat turns: a statement on the loop failed; the DB step stores its turns", exc_info=outcome
                )
            elif isinstance(outcome, BaseException):  # PoolTimeout, cancelled: its part wrote nothing
                if not isinstance(outcome, Exception):
                    raise outcome
                for i in part:
                    results[i] = outcome
            else:
                for i, conversation_id in zip(part, outcome, strict=True):
                    results[i] = conversation_id
    rest = [i for i, result in enumerate(results) if result is None]
    if rest:
        position = {i: n for n, i in enumerate(rest)}
        stepped = await db_step(_turns_record, [turns[i] for i in rest], [position[i] for i in unsure], fence)
        for i, result in zip(rest, stepped, strict=True):
            results[i] = result
    return results  # type: ignore[return-value]


async def _outcomes(statements: list[Coroutine[Any, Any, list[int | None]]]) -> list[Any]:
    """`asyncio.gather(*statements, return_exceptions=True)`, with one statement (the usual batch: continuing
    sessions only) awaited right here: gather's task and callbacks put two more loop turns between the reply and
    the waiting turns (issue 11 bench)."""
    if len(statements) != 1:
        return await asyncio.gather(*statements, return_exceptions=True)
    try:
        return [await statements[0]]
    except Exception as exc:  # noqa: BLE001 - as gather's return_exceptions
        return [exc]


async def _continuing_insert(turns: list[dict[str, Any]], fence: int) -> list[int | None]:
    """The continuing turns' messages in one INSERT on the loop: each turn's conversation id."""
    if turns:
        await pg_async_execute(*chat_turns_insert_statement(turns, fence=fence))
    return [turn["conversation_id"] for turn in turns]


async def _sessions_open_async(turns: list[dict[str, Any]], fence: int) -> list[int | None]:
    """New sessions' first turns in one statement on the loop: each turn's conversation id when the statement
    opened its session (and stored the turn), else None (left to the DB step). Remembers what it opened."""
    if not turns:
        return []
    opened = {
        (widget_id, session_id): pk
        for widget_id, session_id, pk in await pg_async(*chat_sessions_open_statement(turns, fence=fence))
    }
    for (widget_id, session_id), conversation_id in opened.items():
        chat_cache.remember_conversation(widget_id, session_id, conversation_id)
    return [opened.get((turn["widget"].pk, turn["session_id"])) for turn in turns]


class _GroupCommit:
    """Group commit of the answered turns of one event loop (issue 11 bench: a DB step per turn was a
    fifth of the chat's CPU — a pooled checkout with its health check, a transaction, a thread hop).

    A turn waits for its own commit, so nothing is answered before it is stored (the guarantee of a
    DB step per turn); what changes is that the turns which finished while one batch was being written
    go together in the next one: ONE DB step and one multi-row INSERT (`chat_turns_record`, which keeps
    every turn whole and gives each its own result). One batch at a time per loop, so under light load a
    batch is one turn (no added wait) and under heavy load batches grow with it. A visitor who leaves
    while waiting does not take the turn back: it is stored, as when its own DB step was under way."""

    MAX_BATCH = 500

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._pending: list[tuple[dict[str, Any], asyncio.Future[int]]] = []
        self._writing: asyncio.Task[None] | None = None

    def add(self, turn: dict[str, Any]) -> asyncio.Future[int]:
        future: asyncio.Future[int] = self._loop.create_future()
        self._pending.append((turn, future))
        if self._writing is None:
            self._write()
        return future

    def _write(self) -> None:
        batch, self._pending = self._pending[: self.MAX_BATCH], self._pending[self.MAX_BATCH :]
        self._writing = self._loop.create_task(self._commit(batch))

    async def _commit(self, batch: list[tuple[dict[str, Any], asyncio.Future[int]]]) -> None:
        """Write the batch and hand each turn its result from this task, as `_PeekBatch` does (one loop turn
        after the statements answer, not four)."""
        results: list[Any] = [None] * len(batch)  # None: the waiter is cancelled (the loop is closing)
        try:
            results = await _batch_record([turn for turn, _ in batch])
        except Exception as error:  # noqa: BLE001 - each turn's waiter gets it
            results = [error] * len(batch)
        finally:
            self._writing = None
            for (_turn, future), result in zip(batch, results, strict=True):
                if future.done():  # a waiter that was cancelled (the turn is stored all the same)
                    continue
                if result is None:
                    future.cancel()
                elif isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)
            if self._pending:
                self._write()


_group_commits: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _GroupCommit] = weakref.WeakKeyDictionary()


async def turn_commit(**turn: Any) -> int:
    """Store an answered turn (`chat_turn_record`'s arguments) with the other turns finishing now, and
    return its conversation's id once it is committed. Raises what refused it (DatabaseError, PoolTimeout)."""
    loop = asyncio.get_running_loop()
    group = _group_commits.get(loop)
    if group is None:
        group = _group_commits[loop] = _GroupCommit(loop)
    conversation_id = await group.add(turn)
    if turn.get("conversation_id") is None:  # a session's first turn here: opened (or, rarely, joined) one
        chat_cache.quota_opened(turn["widget"].license_id)
    return conversation_id


def turn_fields(widget: Widget, chat: ChatRequest) -> dict[str, Any]:
    return {
        "widget": widget,
        "session_id": chat.session_id,
        "visitor_id": chat.visitor_id,
        "user_text": chat.chat_input,
        "page_url": chat.page_url,
        "identity": chat.identity,
    }


def visitor_page_url(metadata: dict[str, Any]) -> str:
    """The visitor's page (the widget sends `metadata.page`), kept for the inbox: an http(s) URL or ""."""
    page = metadata.get("page")
    if isinstance(page, str) and page.startswith(("https://", "http://")) and len(page) <= 500:
        return page
    return ""
