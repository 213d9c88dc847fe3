"""Async plumbing of the public chat path: short database steps and the process's upstream loop.

Two rules (DESIGN rule 7: no request holds a scarce resource across an upstream wait):

- `db_step(fn, ...)` runs a short piece of ORM code in a thread (the process's `DB_STEP_THREADS`
  threads with psycopg's pool; else Django's thread-sensitive one, as in tests) and hands the thread's database
  connection back before returning, so a request that then waits 60 s on n8n holds no pooled
  connection (and no thread) meanwhile.
- Every upstream HTTP call runs on a long-lived event loop with the process's pooled clients
  (widgets/n8n.py): the ASGI server's own loop once the chat route made it a home (`upstream_home`,
  config/chat_route.py), else ONE upstream loop per process (`upstream_loop()`) in its own thread.
  Async callers await it (`upstream_await`), sync callers block on the upstream loop (`upstream_run`).
  A throwaway loop (Django's for an async view under WSGI) only waits for the result, so the client
  and its connections never depend on a loop that dies with the request.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Coroutine, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.signals import setting_changed
from django.db import DEFAULT_DB_ALIAS, connections
from django.dispatch import receiver

logger = logging.getLogger(__name__)

T = TypeVar("T")


def db_release() -> None:
    """Give this thread's database connections back (to the pool, or closed), unless a transaction
    is open (a test's wrapping transaction, or a caller's atomic block)."""
    for conn in connections.all(initialized_only=True):
        if conn.in_atomic_block or conn.connection is None:
            continue
        if conn.settings_dict.get("OPTIONS", {}).get("pool"):
            conn.close()  # back to the pool at once
        else:
            conn.close_if_unusable_or_obsolete()


def _released(fn: Callable[..., T]) -> Callable[..., T]:
    def run(*args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        finally:
            db_release()

    return run


def _pooled() -> bool:
    # From the settings, not `connections["default"]`: that is an asgiref Local lookup on every call,
    # which py-spy found among the chat's hottest lines on the event loop (issue 11 bench).
    return bool(settings.DATABASES["default"].get("OPTIONS", {}).get("pool"))


class _StepThreads:
    """The process's threads for DB steps (`DB_STEP_THREADS`, recreated after fork): a fixed set,
    instead of the loop's small default executor or Django's thread-sensitive executor, which
    starts (and joins) a new thread for every request under ASGI (~1 ms CPU per request)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._pid = 0

    def get(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None or self._pid != os.getpid():
                self._pool = ThreadPoolExecutor(max_workers=settings.DB_STEP_THREADS, thread_name_prefix="db-step")
                self._pid = os.getpid()
            return self._pool


_step_threads = _StepThreads()


async def db_step(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Run `fn(*args, **kwargs)` (sync ORM code) off the event loop; its connection is released after.

    With psycopg's pool (production), steps of different requests run in parallel on the process's
    step threads, each on a connection checked out for the step: a step is a few round trips, and
    Django's one thread-sensitive thread would queue every request's round trips behind each other
    (measured: the chat proxy's throughput ceiling, bench/chat_proxy.py). Without a pool a thread
    would open a new connection per step, so those steps stay on Django's one thread (and tests see
    their own transaction)."""
    if not _pooled():
        return await sync_to_async(_released(fn))(*args, **kwargs)
    return await sync_to_async(_released(fn), thread_sensitive=False, executor=_step_threads.get())(*args, **kwargs)


class _UpstreamLoop:
    """A daemon thread running one event loop for the process's upstream calls (recreated after fork)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid = 0

    def get(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._pid != os.getpid() or self._loop.is_closed():
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                threading.Thread(target=run, name="upstream-loop", daemon=True).start()
                ready.wait()
                self._loop, self._pid = loop, os.getpid()
            return self._loop


_upstream = _UpstreamLoop()

# Long-lived server loops that run their own upstream calls (`upstream_home`): an ASGI server's loop
# lives as long as the process, so its pooled clients (widgets/n8n.py keeps them per loop) stay warm,
# and a call awaited there crosses no thread (issue 11 bench: the hop to the upstream loop and back,
# and the GIL traded between the two loops' threads, were a sixth of the chat's CPU per turn).
_homes: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()


def upstream_home() -> None:
    """Let the running loop (an ASGI server's: config/chat_route.py) run the upstream calls awaited on
    it. Never for a throwaway loop (Django's for an async view under WSGI): those use the upstream loop."""
    loop = asyncio.get_running_loop()
    if loop not in _homes:
        _homes.add(loop)


def upstream_is_home() -> bool:
    """Whether the running loop is a server loop (`upstream_home`): long-lived, so per-loop clients
    (n8n, the rate limiter's Redis) stay warm on it."""
    return asyncio.get_running_loop() in _homes


def upstream_loop() -> asyncio.AbstractEventLoop:
    return _upstream.get()


def upstream_loop_here() -> asyncio.AbstractEventLoop:
    """The loop that runs upstream calls made from the running loop: itself when it is a home, else the
    process's upstream loop."""
    running = asyncio.get_running_loop()
    return running if running in _homes else upstream_loop()


def upstream_submit(
    coro: Coroutine[Any, Any, T], loop: asyncio.AbstractEventLoop | None = None
) -> concurrent.futures.Future[T]:
    """Schedule `coro` on `loop` (default: the upstream loop) from any thread."""
    return asyncio.run_coroutine_threadsafe(coro, loop or upstream_loop())


async def upstream_await(coro: Coroutine[Any, Any, T]) -> T:
    """Await `coro` on the loop for upstream calls (`upstream_loop_here`); cancelling the caller cancels it
    there too."""
    running = asyncio.get_running_loop()
    if running in _homes:
        return await coro
    loop = upstream_loop()
    if running is loop:
        return await coro
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))


def upstream_run(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on the upstream loop from sync code and wait for its result."""
    loop = upstream_loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        coro.close()
        raise RuntimeError("upstream_run() called from the upstream loop itself; await the coroutine instead")
    return asyncio.run_coroutine_threadsafe(coro, loop).result()


# --- PostgreSQL on the event loop ------------------------------------------------------------------------


class _LoopPools:
    """One psycopg `AsyncConnectionPool` per server loop (connections belong to the loop that opened them), for
    the few hot statements that run on the loop itself (`pg_async`): no DB-step thread, so no hand-off to a
    thread and back and no GIL traded with the loop's own work (issue 8 bench: under 50 conversations at once a
    ChatKit request's pre-stream step waited more for its thread and the GIL than it worked)."""

    def __init__(self) -> None:
        self._pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()

    async def get(self) -> Any:
        loop = asyncio.get_running_loop()
        pool = self._pools.get(loop)
        if pool is None:
            from psycopg_pool import AsyncConnectionPool

            db = settings.DATABASES["default"]
            options = {
                k: v
                for k, v in db.get("OPTIONS", {}).items()
                if k not in ("pool", "server_side_binding", "isolation_level", "assume_role")
            }
            kwargs = {
                "dbname": db["NAME"],
                "user": db.get("USER") or None,
                "password": db.get("PASSWORD") or None,
                "host": db.get("HOST") or None,
                "port": db.get("PORT") or None,
                **options,
                "autocommit": True,  # one statement, one implicit transaction
                "application_name": "switchboard-loop",  # pg_stat_activity: the loop's connections
            }
            pool = AsyncConnectionPool(
                kwargs={k: v for k, v in kwargs.items() if v is not None},
                min_size=1,
                max_size=settings.DB_LOOP_POOL_SIZE,
                timeout=db.get("OPTIONS", {}).get("pool", {}).get("timeout", 10),
                open=False,
                name="loop",
                check=_check_connection,
            )
            self._pools[loop] = pool
            await pool.open(wait=False)
        return pool

    async def close(self) -> None:
        pool = self._pools.pop(asyncio.get_running_loop(), None)
        if pool is not None:
            await pool.close()


_loop_pools = _LoopPools()

# A connection that answered a statement this recently is taken without a health check (HikariCP's
# aliveBypassWindowMs, 500 ms): under load every checkout would otherwise add a round trip to the statement's.
ALIVE_BYPASS_SECONDS = 0.5
_answered: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()


async def _check_connection(conn: Any) -> None:
    """As Django's pool (settings, issue 11.9): a connection PostgreSQL dropped is found out at checkout, unless
    it answered within ALIVE_BYPASS_SECONDS."""
    if time.monotonic() - _answered.get(conn, float("-inf")) > ALIVE_BYPASS_SECONDS:
        from psycopg_pool import AsyncConnectionPool

        await AsyncConnectionPool.check_connection(conn)


async def pg_async_close() -> None:
    """Close the running loop's `pg_async` pool (tests; a server's loop keeps its pool for its life)."""
    await _loop_pools.close()


def pg_async_available() -> bool:
    """Whether `pg_async` may run here: PostgreSQL with psycopg's pool (production; tests run in a transaction
    that another connection could not see) on a server loop (`upstream_home`)."""
    return (
        _pooled() and settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and upstream_is_home()
    )


async def pg_async(sql: str, params: Mapping[str, Any] | Sequence[Any]) -> list[tuple[Any, ...]]:
    """Run ONE statement (autocommit: atomic on its own) on the running loop's pool and return its rows.
    Raises Django's database errors (as the ORM would) and psycopg_pool's PoolTimeout."""
    return await _statement(sql, params, rows=True)


async def pg_async_execute(sql: str, params: Mapping[str, Any] | Sequence[Any]) -> int:
    """`pg_async` for a statement that returns no rows (an INSERT): how many rows it wrote."""
    return await _statement(sql, params, rows=False)


async def _statement(sql: str, params: Mapping[str, Any] | Sequence[Any], *, rows: bool) -> Any:
    pool = await _loop_pools.get()
    with _django_errors():
        # getconn/putconn rather than `pool.connection()`, whose `async with conn` commits or rolls back on the
        # way out under the connection's lock: nothing to do in autocommit (a connection left in a transaction
        # is rolled back by the pool's putconn all the same), and a fifth of the checkout's CPU.
        conn = await pool.getconn()
        try:
            cursor = await conn.execute(sql, params)
            result = await cursor.fetchall() if rows else cursor.rowcount
            _answered[conn] = time.monotonic()
            return result
        finally:
            await pool.putconn(conn)


def _django_errors() -> Any:
    """psycopg's errors raised as Django's classes of the same name, by Django's own DatabaseErrorWrapper (what
    the ORM raises), so the same handlers answer them (config/errors.py: an outage is a JSON 503)."""
    return loop_db().wrap_database_errors


_loop_db: list[Any] = []  # [the DatabaseWrapper of `loop_db`] once built


def loop_db() -> Any:
    """A `DatabaseWrapper` of the "default" database for code on the event loop, built once per process and never
    connected: its `ops` and the fields' `get_db_prep_save` adapt `pg_async`'s parameters with it, and it wraps
    psycopg's errors as Django's. Not `connections["default"]`: that is an asgiref Local, and on a server loop every
    request is a task with a context of its own, so each request built (and connected nothing with) a new
    DatabaseWrapper there (py-spy, bench/chatkit_server.py: a tenth of a new ChatKit thread's CPU before its
    first byte)."""
    if not _loop_db:
        _loop_db.append(connections.create_connection(DEFAULT_DB_ALIAS))
    return _loop_db[0]


def pg_array(values: Sequence[str | int | None]) -> str:
    """A list of str / int / None as a PostgreSQL array literal ('{"a","b \\"c\\"",NULL,7}'), for a `pg_async`
    statement's `%(name)s::<type>[]` parameter: psycopg's Python list dumper was a large part of the chat's one INSERT
    per batch (issue 11 bench, py-spy of bench/chat_cpu.py; PostgresQuery.convert of a one-turn batch's parameters
    59 -> 17 us), where a str goes through its C dumper as an unknown-typed literal that the cast parses. Every
    string is double-quoted with backslash and double quote escaped by a backslash (so commas, braces, spaces and
    the word NULL are kept as they are); None is NULL. Anything else is refused, as is a NUL (PostgreSQL stores
    none; the chat refuses them before this)."""
    parts = []
    for value in values:
        if value is None:
            parts.append("NULL")
        elif isinstance(value, str):
            if "\x00" in value:
                raise ValueError("a NUL byte in a PostgreSQL array value")
            parts.append('"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"')
        elif isinstance(value, int) and not isinstance(value, bool):
            parts.append(str(value))
        else:
            raise TypeError(f"pg_array takes str, int or None, not {type(value).__name__}")
    return "{" + ",".join(parts) + "}"


def pg_json_param(field: Any, value: Any) -> Any:
    """A JSONField's parameter for a `pg_async` statement: what `field.get_db_prep_save(value, loop_db())` gives on
    PostgreSQL (a psycopg `Jsonb`), with its JSON written by orjson (`licenses.api.json_compact`, which hands what
    orjson refuses to the standard library) instead of `json.dumps`: PostgreSQL parses jsonb, so the text's spacing
    never reaches a row (py-spy, bench/chatkit_server.py: json.dumps was ~7% of a new ChatKit thread's CPU before
    its first byte). Anything but a plain dict or list, a field with an encoder, or another database: the ORM's
    own adaptation."""
    db = loop_db()
    if field.encoder is None and type(value) in (dict, list) and db.vendor == "postgresql":
        from psycopg.types.json import Jsonb

        from licenses.api import json_compact

        return Jsonb(value, dumps=json_compact)
    return field.get_db_prep_save(value, db)


@receiver(setting_changed)
def _loop_db_reset(*, setting: str, **kwargs: Any) -> None:
    if setting == "DATABASES":
        _loop_db.clear()
