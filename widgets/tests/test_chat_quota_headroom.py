"""A new chat session's first turn skips the monthly-allowance read while the allowance is far from spent
(widgets.chat._ChatCache.quota_ample), on the server loop with PostgreSQL: the conversation is still opened and
counted once by its turn's statement, a session another process opened is joined (not duplicated, not counted),
and near the allowance every new session reads the database, so the 429 `quota_exceeded` comes at the cap."""

from __future__ import annotations

import json
from datetime import date

import pytest
from django.db import connection

from config.chat_route import ChatRoute
from conftest import asgi_exchange, counting_stack
from licenses.models import License, LicenseUsage
from licenses.services import license_cache_bump
from widgets import chat as chat_module
from widgets.aio import pg_async_close
from widgets.models import Conversation, Message
from widgets.tests.conftest import ORIGIN

pytestmark = pytest.mark.django_db(transaction=True)

JSON = {"Content-Type": "application/json", "Origin": ORIGIN, "X-Switchboard-Visitor": "v-1"}


@pytest.fixture
def chat(n8n_widget, fake_n8n, redis_limiter, monkeypatch, frozen_minute):
    """send(session, text) -> (status, body) through the short route on the loop's own PostgreSQL connections;
    `.reads` lists the sessions whose first turn read the allowance (the session check)."""
    if connection.vendor != "postgresql":
        pytest.skip("the loop's connections are PostgreSQL's (CI runs it)")
    monkeypatch.setattr(chat_module, "pg_async_available", lambda: True)
    reads: list[str] = []
    real = chat_module.chat_session_lookup_async

    async def counted(**kwargs):
        reads.append(kwargs["session_id"])
        return await real(**kwargs)

    monkeypatch.setattr(chat_module, "chat_session_lookup_async", counted)
    route = ChatRoute(counting_stack()())

    async def app(scope, receive, send):  # the loop's pool closes with each test loop
        try:
            await route(scope, receive, send)
        finally:
            await pg_async_close()

    def send(session: str, text: str = "Hi") -> tuple[int, dict]:
        body = json.dumps({"action": "sendMessage", "sessionId": session, "chatInput": text}).encode()
        path = f"/api/widget/{n8n_widget.license.key}/chat?widget={n8n_widget.public_id}"
        status, _, answer = asgi_exchange(app, path=path, body=body, headers=JSON)
        return status, json.loads(answer)

    send.reads = reads
    assert send("s-warm")[0] == 200  # resolves and caches the license and widget (in a DB step)
    return send


def _cap(widget, cap: int) -> None:
    license = widget.license
    License.objects.filter(pk=license.pk).update(limits={**license.limits, "monthly_conversations": cap})
    license_cache_bump(key=license.key)


def _used(widget) -> int:
    return LicenseUsage.objects.get(license=widget.license).conversations


def test_far_from_the_allowance_new_sessions_read_it_once(chat, n8n_widget):
    for session in ("s-1", "s-2", "s-3", "s-4"):
        status, body = chat(session)
        assert status == 200 and body["output"] == "Hello from n8n"
    assert chat.reads == ["s-1"]  # the first new session on the loop read it; the next three did not
    for session in ("s-1", "s-2", "s-3", "s-4"):
        conversation = Conversation.objects.get(widget=n8n_widget, session_id=session)
        assert list(conversation.messages.values_list("role", flat=True)) == ["user", "assistant"]
    assert _used(n8n_widget) == 5  # s-warm and the four: each counted once
    read = chat_module.chat_cache.quota[n8n_widget.license.pk]
    assert (read.used, read.opened) == (1, 4)  # s-1's read saw s-warm; the four opened since are counted here


def test_an_old_read_is_not_trusted(chat, n8n_widget, settings):
    assert chat("s-1")[0] == 200
    chat_module.chat_cache.quota[n8n_widget.license.pk].at -= settings.WIDGET_CHAT_QUOTA_READ_SECONDS + 0.01
    assert chat("s-2")[0] == 200
    assert chat("s-3")[0] == 200
    assert chat.reads == ["s-1", "s-2"]  # s-2 read again (its read was too old); s-3 trusted s-2's


def test_last_months_read_is_not_trusted(chat, n8n_widget):
    assert chat("s-1")[0] == 200
    chat_module.chat_cache.quota[n8n_widget.license.pk].month = date(2001, 1, 1)
    assert chat("s-2")[0] == 200
    assert chat.reads == ["s-1", "s-2"]


def test_near_the_allowance_every_new_session_reads_it_and_the_cap_holds(chat, n8n_widget, settings):
    settings.WIDGET_CHAT_QUOTA_HEADROOM = 3
    _cap(n8n_widget, 10)  # s-warm used 1; the headroom is max(3, 10 // 10) = 3
    assert chat("s-bump")[0] == 200  # the bumped cache reads the license again (in a DB step)
    sessions = [f"s-{i}" for i in range(1, 10)]
    answers = [chat(session) for session in sessions]
    assert [status for status, _ in answers] == [200] * 8 + [429]
    assert answers[-1][1]["error"]["code"] == "quota_exceeded"
    # s-1 read 2 used (s-warm, s-bump); s-2..s-5 trusted it with 7, 6, 5, 4 left (more than 3); from s-6 on
    # (3 left) every new session read the allowance again.
    assert chat.reads == ["s-1", "s-6", "s-7", "s-8", "s-9"]
    assert _used(n8n_widget) == 10  # exactly the allowance
    assert not Conversation.objects.filter(widget=n8n_widget, session_id="s-9").exists()


def test_a_session_another_process_opened_is_joined_not_opened_again(chat, n8n_widget):
    assert chat("s-1")[0] == 200  # the read that makes the next sessions skip it
    other = Conversation.objects.create(widget=n8n_widget, channel="chat", session_id="s-other", visitor_id="v-1")
    Message.objects.create(conversation=other, role="user", text="asked elsewhere")
    used = _used(n8n_widget)
    status, body = chat("s-other", "and here")
    assert status == 200 and body["output"] == "Hello from n8n"
    assert chat.reads == ["s-1"]  # no read: the turn's statement found the session open
    assert Conversation.objects.filter(widget=n8n_widget, session_id="s-other").count() == 1
    assert list(other.messages.order_by("id").values_list("text", flat=True)) == [
        "asked elsewhere",
        "and here",
        "Hello from n8n",
    ]
    assert _used(n8n_widget) == used  # joined, not counted
    assert chat("s-other", "again")[0] == 200  # remembered now
    assert other.messages.count() == 5
