"""chatkit.admission: while a new request of the loop is before its first byte, running answers wait at their
pause points; a request never waits for itself; a wait is bounded; with no new request nothing waits."""

from __future__ import annotations

import asyncio

from asgiref.sync import async_to_sync

from chatkit import admission as mod
from chatkit.admission import admitting, yield_to_admissions


async def _turns(n: int = 20) -> None:
    """Let the loop run other tasks for a while (no clock involved)."""
    for _ in range(n):
        await asyncio.sleep(0)


def test_a_running_answer_waits_for_a_new_request_until_its_first_byte(monkeypatch):
    monkeypatch.setattr(mod, "MAX_WAIT", 600)  # the bound must not end the wait on a slow machine

    async def run() -> None:
        ready, release = asyncio.Event(), asyncio.Event()
        went_on: list[bool] = []

        async def running_answer() -> None:  # started before the request: not part of its admission
            ready.set()
            await release.wait()
            await yield_to_admissions()
            went_on.append(True)

        answer = asyncio.create_task(running_answer())
        await ready.wait()
        with admitting() as new_request:
            release.set()
            await _turns()
            assert went_on == []  # still waiting for the new request's first byte
            new_request.done()
            await asyncio.wait_for(answer, 5)
        assert went_on == [True]

    async_to_sync(run)()


def test_a_request_never_waits_for_itself():
    async def run() -> None:
        with admitting():
            await asyncio.wait_for(yield_to_admissions(), 5)  # its own store steps before its first byte
            task = asyncio.create_task(yield_to_admissions())  # a task it starts, same admission
            await asyncio.wait_for(task, 5)

    async_to_sync(run)()


def test_a_wait_is_bounded(monkeypatch):
    monkeypatch.setattr(mod, "MAX_WAIT", 0.01)

    async def run() -> None:
        done = asyncio.Event()

        async def running_answer() -> None:
            await yield_to_admissions()
            done.set()

        ready = asyncio.Event()

        async def answer_task() -> None:
            await ready.wait()
            await running_answer()

        answer = asyncio.create_task(answer_task())
        with admitting():  # never done within the block: a flood of new requests
            ready.set()
            await asyncio.wait_for(done.wait(), 5)
        await answer

    async_to_sync(run)()


def test_nothing_waits_without_new_requests():
    async def run() -> None:
        await asyncio.wait_for(yield_to_admissions(), 5)
        with admitting() as request:
            request.done()
            request.done()  # idempotent
        await asyncio.wait_for(yield_to_admissions(), 5)

    async_to_sync(run)()
