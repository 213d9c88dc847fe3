"""The ChatKit server's loop path (chatkit.views._prepare_async, issue 8 bench): an embedded page's new thread
whose license and widget are cached is checked, rate limited (redis.asyncio) and opened with its monthly count
in ONE PostgreSQL statement on the event loop (chatkit.services.chatkit_thread_open_async), with no DB-step
thread. It writes what the step path writes, keeps the cap exact under concurrency, and hands everything
unusual (no month row, the cap, a stale cache, other request types) to the step path, which decides refusals
on the database's current rows."""

from __future__ import annotations

import asyncio

import pytest
from django.conf import settings as django_settings
from django.db import connection

from chatkit.tests.conftest import ChatKitVisitor, thread_id_of

pytestmark = [
    pytest.mark.django_db(transaction=True),  # the loop's own connections see only what is committed
    pytest.mark.skipif(
        connection.vendor != "postgresql" or not django_settings.REDIS_URL,
        reason="the loop path runs on PostgreSQL with Redis (CI runs it)",
    ),
]


@pytest.fixture
def loop_path(monkeypatch):
    """Serve with the loop path on (production: psycopg's pool on a server loop), closing each test loop's
    pool after its call; counts the requests the step path (`_prepare` in a DB step) served."""
    import chatkit.views as views
    from widgets.aio import pg_async_close

    served = {"step": 0}
    step = views._prepare

    def counted_step(*args, **kwargs):
        served["step"] += 1
        return step(*args, **kwargs)

    import chatkit.threads as threads

    monkeypatch.setattr(views, "pg_async_available", lambda: True)
    monkeypatch.setattr(threads, "pg_async_available", lambda: True)  # the store's item writes too
    monkeypatch.setattr(views, "_prepare", counted_step)
    acall = ChatKitVisitor.acall

    async def acall_closing(self, body, **headers):
        try:
            return await acall(self, body, **headers)
        finally:
            await pg_async_close()

    monkeypatch.setattr(ChatKitVisitor, "acall", acall_closing)
    return served


def _row(obj, *skip: str) -> dict:
    return {f.attname: getattr(obj, f.attname) for f in obj._meta.concrete_fields if f.attname not in skip}


def test_a_new_thread_is_opened_on_the_loop_with_the_rows_the_step_writes(loop_path, visitor, chatkit_widget):
    from chatkit.models import ChatKitThread
    from licenses.models import LicenseUsage
    from widgets.models import Message

    first, first_events = visitor.send("hello")  # resolves and caches the license and widget
    assert first.status_code == 200 and loop_path["step"] == 1
    second, second_events = visitor.send("hello again")
    assert second.status_code == 200 and loop_path["step"] == 1  # the loop path served it
    assert second_events[0]["type"] == "thread.created"
    assert any(e["type"] == "thread.item.done" and e["item"]["type"] == "assistant_message" for e in second_events)

    by_step = ChatKitThread.objects.get(thread_id=thread_id_of(first_events))
    by_loop = ChatKitThread.objects.get(thread_id=thread_id_of(second_events))
    varying = ("seq", "id", "thread_id", "conversation_id", "session_id", "created_at", "updated_at", "started_at")
    assert _row(by_loop, *varying, "data") == _row(by_step, *varying, "data")
    assert _row(by_loop.conversation, *varying) == _row(by_step.conversation, *varying)
    assert by_loop.data["id"] == by_loop.thread_id == by_loop.conversation.session_id
    assert {k: v for k, v in by_loop.data.items() if k not in ("id", "created_at")} == {
        k: v for k, v in by_step.data.items() if k not in ("id", "created_at")
    }
    items = {t: sorted(r.items.values_list("item_type", flat=True)) for t, r in (("step", by_step), ("loop", by_loop))}
    assert items["loop"] == items["step"] and "assistant_message" in items["loop"]
    assert LicenseUsage.objects.get(license=chatkit_widget.license).chatkit_sessions == 2
    assert list(
        Message.objects.filter(conversation=by_loop.conversation).order_by("id").values_list("role", flat=True)
    ) == ["user", "assistant"]


def test_at_the_cap_the_step_refuses_and_nothing_is_written(loop_path, visitor, chatkit_widget):
    from chatkit.models import ChatKitThread
    from licenses.models import License, LicenseUsage
    from widgets.models import Conversation

    visitor.send("first")
    License.objects.filter(pk=chatkit_widget.license.pk).update(limits={"monthly_conversations": 1})

    response, (error,) = visitor.send("second")
    assert response.status_code == 429 and error["error"]["code"] == "quota_exceeded"
    assert loop_path["step"] == 2  # the loop counted nothing and handed it over
    assert ChatKitThread.objects.count() == 1 and Conversation.objects.count() == 1
    assert LicenseUsage.objects.get(license=chatkit_widget.license).chatkit_sessions == 1


def test_a_rate_limited_new_thread_is_refused_on_the_loop(loop_path, visitor, settings, frozen_minute):
    from chatkit.models import ChatKitThread

    settings.CHATKIT_VISITOR_RATE_PER_MINUTE = 2
    assert visitor.send("one")[0].status_code == 200
    assert visitor.send("two")[0].status_code == 200

    response, (error,) = visitor.send("three")
    assert response.status_code == 429 and error["error"]["code"] == "rate_limited"
    assert int(response["Retry-After"]) >= 1 and loop_path["step"] == 1
    assert ChatKitThread.objects.count() == 2


def test_a_changed_license_goes_to_the_step_path_at_once(loop_path, visitor, chatkit_widget):
    from licenses.services import license_update

    visitor.send("first")
    license_update(license=chatkit_widget.license, allowed_domains=["other.example.com"])

    response, (error,) = visitor.send("second")
    assert response.status_code == 403 and error["error"]["code"] == "domain_not_allowed"
    assert loop_path["step"] == 2


def test_a_next_message_is_checked_on_the_loop_and_answered_in_its_thread(loop_path, visitor, chatkit_widget):
    from chatkit.models import ChatKitItem, ChatKitThread
    from widgets.models import Message

    visitor.send("first")  # the step path; caches
    _, events = visitor.send("second")  # the loop path opens it
    thread_id = thread_id_of(events)
    steps = loop_path["step"]

    response, events = visitor.send("third", thread_id=thread_id)
    assert response.status_code == 200 and loop_path["step"] == steps  # checked on the loop
    assert [e["item"]["type"] for e in events if e["type"] == "thread.item.done"][:2] == [
        "user_message",
        "assistant_message",
    ]
    thread = ChatKitThread.objects.get(thread_id=thread_id)
    assert ChatKitItem.objects.filter(thread=thread, item_type="user_message").count() == 2
    assert Message.objects.filter(conversation=thread.conversation, role="user").count() == 2


def test_another_visitors_thread_is_refused_by_the_step_path(loop_path, visitor, chatkit_widget):
    from chatkit.models import ChatKitItem

    visitor.send("first")
    _, events = visitor.send("mine")
    thread_id = thread_id_of(events)
    items = ChatKitItem.objects.count()
    other = ChatKitVisitor(chatkit_widget)
    other.send("warm")  # this visitor's own first call
    steps = loop_path["step"]

    response, (error,) = other.send("let me in", thread_id=thread_id)
    assert response.status_code == 404 and error["error"]["code"] == "not_found"
    assert loop_path["step"] == steps + 1  # not found on the loop: the step decided
    assert ChatKitItem.objects.count() == items + 2  # only the warm-up's two items


def test_when_redis_goes_away_new_threads_are_still_served(loop_path, visitor, redis_limiter):
    """No readable cache generation: the loop cannot prove its cache current, so the step path serves (uncached,
    rate limited per process)."""
    visitor.send("first")  # gives the license a cache generation on this new Redis
    visitor.send("second")  # caches under it
    steps = loop_path["step"]
    assert visitor.send("third")[0].status_code == 200 and loop_path["step"] == steps  # the loop path
    redis_limiter.stop()

    response, events = visitor.send("fourth")
    assert response.status_code == 200 and events[0]["type"] == "thread.created"
    assert loop_path["step"] == steps + 1


def _open_many(license, widget, n: int) -> list[bool]:
    from asgiref.sync import async_to_sync

    from chatkit.threads import DjangoStore, RequestContext
    from widgets.aio import pg_async_close

    async def run() -> list[bool]:
        contexts = [
            RequestContext(license=license, widget=widget, config={}, owner=f"sb_{i}", api_key="k", model="gpt-5-mini")
            for i in range(n)
        ]
        try:
            return list(await asyncio.gather(*(DjangoStore().thread_open_counted(c) for c in contexts)))
        finally:
            await pg_async_close()

    return async_to_sync(run)()


def test_concurrent_new_threads_never_pass_the_cap(chatkit_widget):
    from chatkit.models import ChatKitThread
    from licenses.models import License, LicenseUsage, month_start
    from widgets.models import Conversation

    license = chatkit_widget.license
    License.objects.filter(pk=license.pk).update(limits={**license.limits, "monthly_conversations": 5})
    from django.utils import timezone

    LicenseUsage.objects.create(license=license, month=month_start(timezone.now().date()), conversations=1)

    opened = _open_many(license, chatkit_widget, 12)

    assert opened.count(True) == 4  # 1 chat conversation + 4 threads = the cap of 5
    assert LicenseUsage.objects.get(license=license).chatkit_sessions == 4
    assert ChatKitThread.objects.count() == Conversation.objects.filter(channel="chatkit").count() == 4


def test_without_a_month_row_nothing_is_counted_or_written(chatkit_widget):
    from chatkit.models import ChatKitThread
    from licenses.models import LicenseUsage
    from widgets.models import Conversation

    assert _open_many(chatkit_widget.license, chatkit_widget, 1) == [False]
    assert not LicenseUsage.objects.exists() and not ChatKitThread.objects.exists()
    assert not Conversation.objects.exists()


def test_a_lost_database_is_the_error_the_orm_raises():
    import psycopg
    from django.db import OperationalError

    from widgets.aio import _django_errors

    with pytest.raises(OperationalError) as raised, _django_errors():
        raise psycopg.OperationalError("server closed the connection unexpectedly")
    error = raised.value
    assert isinstance(error, OperationalError) and "closed" in str(error)
