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


def test_new_requests_take_turns_in_arrival_order(monkeypatch):
    monkeypatch.setattr(mod, "TURNS", 2)
    monkeypatch.setattr(mod, "MAX_WAIT", 600)  # the bound must not end a wait on a slow machine

    async def run() -> None:
        order: list[int] = []
        finish = {i: asyncio.Event() for i in range(5)}

        async def request(i: int) -> None:
            with admitting() as admission:
                await admission.turn()
                order.append(i)
                await finish[i].wait()  # its pre-stream part, until its first byte

        tasks = []
        for i in range(5):
            tasks.append(asyncio.create_task(request(i)))
            await _turns(3)  # they arrive in this order
        await _turns()
        assert order == [0, 1]  # two turns: the others wait
        finish[1].set()
        await _turns()
        assert order == [0, 1, 2]  # the first to arrive goes next
        finish[0].set()
        await _turns()
        assert order == [0, 1, 2, 3]
        for event in finish.values():
            event.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 5)
        assert order == [0, 1, 2, 3, 4]

    async_to_sync(run)()


def test_a_turn_is_given_back_at_the_first_byte_and_waited_for_at_most_max_wait(monkeypatch):
    monkeypatch.setattr(mod, "TURNS", 1)
    monkeypatch.setattr(mod, "MAX_WAIT", 600)

    async def run() -> None:
        with admitting() as first:
            await first.turn()
            waiting = asyncio.create_task(_second())
            await _turns()
            assert not waiting.done()  # the only turn is taken
            first.done()  # its first byte: the turn is given back
            assert await asyncio.wait_for(waiting, 5) == "went on"

    async def _second() -> str:
        with admitting() as second:
            await second.turn()
            return "went on"

    async_to_sync(run)()
    monkeypatch.setattr(mod, "MAX_WAIT", 0.01)

    async def stuck() -> None:  # a request stuck before its first byte (a slow database step) holds its turn
        with admitting() as holder:
            await holder.turn()
            await asyncio.wait_for(_second(), 5)  # the next one goes on after MAX_WAIT, without a turn

    async_to_sync(stuck)()


async def _turns_to_finish(task: asyncio.Task) -> int:
    """How many loop turns (`sleep(0)`) the task needs to finish from now."""
    turns = 0
    while not task.done():
        await asyncio.sleep(0)
        turns += 1
    return turns


def test_a_free_turn_is_taken_without_a_loop_turn():
    """Under 50 conversations each loop turn is other requests' work; a free turn costs none (wait_for: 3)."""

    async def run() -> None:
        with admitting() as new_request:
            task = asyncio.create_task(new_request.turn())
            await asyncio.sleep(0)  # the task's first step
            assert await _turns_to_finish(task) == 0

    async_to_sync(run)()


def test_a_waiting_request_resumes_one_loop_turn_after_a_turn_is_given_back(monkeypatch):
    monkeypatch.setattr(mod, "TURNS", 1)
    monkeypatch.setattr(mod, "MAX_WAIT", 600)  # the bound must not end the wait on a slow machine

    async def run() -> None:
        first = mod.Admission()
        await first.turn()
        second = mod.Admission()
        task = asyncio.create_task(second.turn())
        await _turns()
        assert not task.done()
        first.done()
        assert await _turns_to_finish(task) == 1  # the semaphore's wake-up only (wait_for: 3)
        assert second._turn
        second.done()

    async_to_sync(run)()
