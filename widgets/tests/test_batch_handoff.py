"""How a waiting request gets its result from the loop's shared batches (issue 11 bench): the rate limiter's Redis
pipeline (`widgets.ratelimit._PeekBatch`) and the chat's group commit (`widgets.chat._GroupCommit`).

Under 200 visitors every turn of the event loop is about a millisecond of other requests' work, so each hop between
the batch's answer and the waiting request was a millisecond of its latency, twice per chat turn. The batch's own
task now hands each waiter its result (no done-callback, no `shield`), and a batch of one statement awaits it
without `gather`. A waiter that is cancelled (the visitor left) still cancels nothing but its own wait."""

from __future__ import annotations

import asyncio

import pytest
import redis
from asgiref.sync import async_to_sync

from widgets import chat as chat_module
from widgets import ratelimit
from widgets.models import Channel, Conversation, Message
from widgets.tests.conftest import chat_turn


async def _loop_turns_until_done(task: asyncio.Task, limit: int = 20) -> int:
    """How many loop turns (`sleep(0)`) the task needs to finish from now."""
    for turns in range(limit):
        if task.done():
            return turns
        await asyncio.sleep(0)
    raise AssertionError(f"not done after {limit} loop turns")


def test_a_rate_limit_hit_resumes_one_loop_turn_after_its_pipeline_answers(redis_limiter, monkeypatch):
    answer = None

    async def pipeline(hits):
        await answer.wait()
        return [([1], b"generation") for _ in hits]

    monkeypatch.setattr(ratelimit, "_pipeline", pipeline)

    async def run() -> int:
        nonlocal answer
        answer = asyncio.Event()
        hit = asyncio.ensure_future(ratelimit.limiter.hit_peek_async("chat:1:v", 120, "sb:gen"))
        while not any(batch._sending for batch in ratelimit._peek_batches.values()):
            await asyncio.sleep(0)
        answer.set()  # the replies are parsed: the pipeline's task resumes on the next turn
        turns = await _loop_turns_until_done(hit)
        assert hit.result() == (1, b"generation")
        return turns

    # The pipeline's task resumes and hands the hit its result; the hit's task resumes on the next turn and is done.
    # Before: the task's done-callback, then shield's inner and outer callbacks, were three more.
    assert async_to_sync(run)() <= 2


def test_a_cancelled_rate_limit_hit_leaves_the_others_in_its_pipeline_counted(redis_limiter, pipelines):
    async def run():
        first = asyncio.ensure_future(ratelimit.limiter.hit_peek_async("chat:1:a", 120, "sb:gen"))
        await asyncio.sleep(0)  # the first pipeline is under way; the next two wait for it together
        leaving = asyncio.ensure_future(ratelimit.limiter.hit_peek_async("chat:1:b", 120, "sb:gen"))
        staying = asyncio.ensure_future(ratelimit.limiter.hit_peek_async("chat:1:c", 120, "sb:gen"))
        await asyncio.sleep(0)
        leaving.cancel()  # the visitor left
        results = await asyncio.gather(first, staying)
        with pytest.raises(asyncio.CancelledError):
            await leaving
        return results

    assert async_to_sync(run)() == [(1, None), (1, None)]
    assert pipelines == [1, 2]  # the cancelled hit was still sent (and counted) with the other one
    assert int(redis.Redis(port=redis_limiter.port).get("chat:1:b")) == 1


@pytest.mark.django_db
def test_a_turn_resumes_one_loop_turn_after_its_batch_is_written(n8n_widget, monkeypatch):
    written = None

    async def batch_record(turns):
        await written.wait()
        return [7 for _ in turns]

    monkeypatch.setattr(chat_module, "_batch_record", batch_record)

    async def run() -> int:
        nonlocal written
        written = asyncio.Event()
        turn = asyncio.ensure_future(chat_module.turn_commit(**chat_turn(n8n_widget, "s", "hi", 7)))
        while not any(group._writing for group in chat_module._group_commits.values()):
            await asyncio.sleep(0)
        written.set()
        turns = await _loop_turns_until_done(turn)
        assert turn.result() == 7
        return turns

    assert async_to_sync(run)() <= 2


@pytest.mark.django_db
def test_a_batch_of_continuing_turns_writes_its_one_statement_without_gather(n8n_widget, monkeypatch):
    """The usual batch (continuing sessions only) on a server loop: its INSERT is awaited by the batch itself."""
    conv = Conversation.objects.create(widget=n8n_widget, channel=Channel.CHAT, session_id="s")
    gathered = []
    real_gather = asyncio.gather

    def gather(*aws, **kwargs):
        gathered.append(len(aws))
        return real_gather(*aws, **kwargs)

    async def inserted(turns, fence):
        return [turn["conversation_id"] for turn in turns]

    monkeypatch.setattr(chat_module.asyncio, "gather", gather)
    monkeypatch.setattr(chat_module, "pg_async_available", lambda: True)
    monkeypatch.setattr(chat_module, "chat_turn_fence", lambda: 1)
    monkeypatch.setattr(chat_module, "_continuing_insert", inserted)
    turns = [chat_turn(n8n_widget, "s", "one", conv.pk), chat_turn(n8n_widget, "s", "two", conv.pk)]
    assert async_to_sync(chat_module._batch_record)(turns) == [conv.pk, conv.pk]
    assert gathered == []


@pytest.mark.django_db(transaction=True)
def test_a_turn_whose_visitor_left_is_stored_with_its_batch(n8n_widget):
    conv = Conversation.objects.create(widget=n8n_widget, channel=Channel.CHAT, session_id="s")

    async def run():
        first = asyncio.ensure_future(chat_module.turn_commit(**chat_turn(n8n_widget, "s", "one", conv.pk)))
        await asyncio.sleep(0)  # its batch is under way; the next two wait for it together
        leaving = asyncio.ensure_future(chat_module.turn_commit(**chat_turn(n8n_widget, "s", "two", conv.pk)))
        staying = asyncio.ensure_future(chat_module.turn_commit(**chat_turn(n8n_widget, "s", "three", conv.pk)))
        await asyncio.sleep(0)
        leaving.cancel()
        results = await asyncio.gather(first, staying)
        with pytest.raises(asyncio.CancelledError):
            await leaving
        while any(group._writing for group in chat_module._group_commits.values()):
            await asyncio.sleep(0.01)
        return results

    assert async_to_sync(run)() == [conv.pk, conv.pk]
    assert sorted(Message.objects.filter(conversation=conv, role="user").values_list("text", flat=True)) == [
        "one",
        "three",
        "two",
    ]
