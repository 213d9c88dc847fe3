"""New ChatKit requests before running answers: the priority that keeps a burst's first bytes fast.

Every new request of the embedded page has a short pre-stream part (checks, the rate limit, the monthly count,
its thread's rows: `chatkit.views._prepare_async`) and then a long one (the Agents SDK run, its upstream stream,
its DB steps). One process's event loop runs both, first come first served, so under 50 conversations at once
a new request's few milliseconds of checks queued behind the running answers' work (bench/chatkit_server.py:
the answers' SSE parsing, event relays and DB steps). Here the running answers yield: while any request of this
loop is still before its first byte (`admitting`), they wait (`yield_to_admissions`) before starting a run,
before each chunk read from OpenAI, before each event relayed and before each DB step, so the loop's time goes
to the requests the visitors are still waiting on. A wait lasts at most `MAX_WAIT` seconds, so a sustained
flood of new requests slows the running answers but never stops them.

New requests also take turns among themselves: at most `TURNS` of a loop are in their pre-stream part at once,
the others wait in arrival order (`Admission.turn`). Each request's pre-stream part is a few short CPU slices
with a Redis and a PostgreSQL round trip between them; when all of a burst's requests ran together, the loop
interleaved their slices, so each finished only once all of them had got that far. With a few at a time the
round trips still overlap the other requests' CPU, and the first requests are done before the last ones start
(bench/chatkit_server.py, 50 new conversations at the same instant, the code before turns served in the same
run with `--baseline-tree`: first byte p50 42-47 ms vs 60-72 ms before; bench/README-chatkit.md). A turn is
awaited for at most `MAX_WAIT`, so requests stuck in a slow database step delay the others by no more than that.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import weakref
from collections.abc import Iterator

MAX_WAIT = 0.1  # seconds a running answer yields at most, per wait; a new request waits for its turn at most
TURNS = 4  # new requests of one loop in their pre-stream part at once


class _Admissions:
    """The requests of one event loop still before their first byte."""

    __slots__ = ("clear", "pending", "turns")

    def __init__(self) -> None:
        self.pending = 0
        self.clear = asyncio.Event()
        self.clear.set()
        self.turns = asyncio.Semaphore(TURNS)  # FIFO: waiters are woken in the order they came

    def enter(self) -> None:
        self.pending += 1
        self.clear.clear()

    def leave(self) -> None:
        self.pending -= 1
        if self.pending <= 0:
            self.pending = 0
            self.clear.set()


_loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Admissions] = weakref.WeakKeyDictionary()


def _admissions() -> _Admissions:
    loop = asyncio.get_running_loop()
    admissions = _loops.get(loop)
    if admissions is None:
        admissions = _loops[loop] = _Admissions()
    return admissions


class Admission:
    """One request before its first byte; `done()` (idempotent) when it sent it or ended."""

    __slots__ = ("_admissions", "_turn")

    def __init__(self) -> None:
        self._admissions: _Admissions | None = _admissions()
        self._admissions.enter()
        self._turn = False

    async def turn(self) -> None:
        """Wait (at most MAX_WAIT) until fewer than TURNS requests of this loop are in their pre-stream part;
        the turn is given back by `done()`. After MAX_WAIT the request goes on without one."""
        admissions = self._admissions
        if admissions is None or self._turn:
            return
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for runs the acquire in a task of its own and resumes
        # through its done-callback, 3 loop turns even for a free turn (~1 ms each under 50 conversations)
        try:
            async with asyncio.timeout(MAX_WAIT):
                await admissions.turns.acquire()
        except TimeoutError:
            return
        if self._admissions is None:  # done() while it waited (the request ended)
            admissions.turns.release()
            return
        self._turn = True

    def done(self) -> None:
        if self._admissions is not None:
            if self._turn:
                self._admissions.turns.release()
                self._turn = False
            self._admissions.leave()
            self._admissions = None

    @property
    def open(self) -> bool:
        return self._admissions is not None


_current: contextvars.ContextVar[Admission | None] = contextvars.ContextVar("chatkit_admission", default=None)


@contextlib.contextmanager
def admitting() -> Iterator[Admission]:
    """A new request of the running loop, until `done()` or the block ends. The request's own work (and the
    tasks it starts) never waits for itself or for later requests while it is before its first byte."""
    admission = Admission()
    token = _current.set(admission)
    try:
        yield admission
    finally:
        admission.done()
        _current.reset(token)


async def yield_to_admissions() -> None:
    """A running answer's pause point: wait (at most MAX_WAIT) while requests of this loop are before their
    first byte. Free when there are none, and for a request that is itself before its first byte."""
    admissions = _loops.get(asyncio.get_running_loop())
    if admissions is None or not admissions.pending:
        return
    own = _current.get()
    if own is not None and own.open:
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(MAX_WAIT):  # no task of its own (see Admission.turn)
            await admissions.clear.wait()
