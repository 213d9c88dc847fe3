"""The public chat's short route under ASGI (config/chat_route.py) answers exactly what Django's full
stack answers — status, every header, body — for answers, refusals and errors, and hands anything
unusual to the full stack untouched. A visitor who leaves cancels the turn as Django's handler does."""

from __future__ import annotations

import asyncio
import json

import pytest
from asgiref.sync import async_to_sync
from asgiref.testing import ApplicationCommunicator
from django.db import connection
from django.test.utils import CaptureQueriesContext

from config.chat_route import ChatRoute
from conftest import asgi_exchange, counting_stack, full_and_short, http_scope
from widgets import aio
from widgets import chat as chat_module
from widgets.models import Message
from widgets.tests.conftest import ORIGIN, n8n_config, publish
from widgets.views import embed

pytestmark = pytest.mark.django_db(transaction=True)


Counting = counting_stack()


def chat_body(session: str, text: str = "Hi") -> bytes:
    return json.dumps({"action": "sendMessage", "sessionId": session, "chatInput": text}).encode()


def url(widget) -> str:
    return f"/api/widget/{widget.license.key}/chat?widget={widget.public_id}"


JSON = {"Content-Type": "application/json", "Origin": ORIGIN, "X-Switchboard-Visitor": "v-1"}


def test_answer_is_the_full_stacks_header_by_header(n8n_widget, fake_n8n):
    full, short, through_full = full_and_short(path=url(n8n_widget), body=chat_body("s-1"), headers=JSON)
    assert full[0] == 200 and json.loads(full[2])["output"] == "Hello from n8n"
    assert short == full
    assert through_full == 0  # the short route served it
    assert ("access-control-allow-origin", ORIGIN) in short[1] and ("x-frame-options", "DENY") in short[1]
    assert Message.objects.filter(conversation__session_id="s-1").count() == 4  # both turns stored


def test_streamed_answer_is_the_full_stacks(owner, widget_a, fake_n8n):
    widget = publish(widget_a, owner, config=n8n_config(fake_n8n.webhook, streaming=True))
    fake_n8n.default = {"stream": [{"type": "begin"}, {"type": "item", "content": "Hel"}, {"type": "end"}]}
    full, short, through_full = full_and_short(path=url(widget), body=chat_body("s-2"), headers=JSON)
    assert full[0] == 200 and full[2].splitlines()[-1] == b'{"type":"end","output":"Hel","ui":[]}'
    assert (short, through_full) == (full, 0)


def test_a_streamed_answer_ends_in_its_last_lines_write(owner, widget_a, fake_n8n):
    """The short route sends a streamed reply straight from its relay: one body message per upstream read,
    and the final lines (`end`) carry `more_body: False` — no extra empty message (one write less per turn)."""
    widget = publish(widget_a, owner, config=n8n_config(fake_n8n.webhook, streaming=True))
    fake_n8n.default = {"stream": [{"type": "begin"}, {"type": "item", "content": "Hel"}, {"type": "end"}]}
    body, path = chat_body("s-msgs"), url(widget)
    headers = [(b"host", b"testserver"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in JSON.items()]

    async def run() -> list[dict]:
        communicator = ApplicationCommunicator(ChatRoute(Counting()), http_scope("POST", path, headers))
        await communicator.send_input({"type": "http.request", "body": body, "more_body": False})
        messages = [await communicator.receive_output(10)]
        while messages[-1]["type"] != "http.response.body" or messages[-1].get("more_body"):
            messages.append(await communicator.receive_output(10))
        await communicator.wait(5)
        return messages

    messages = async_to_sync(run)()
    start, *bodies = messages
    assert start["status"] == 200 and (b"Content-Type", b"application/x-ndjson") in start["headers"]
    assert all(m["body"] for m in bodies)  # no empty closing message
    assert bodies[-1]["more_body"] is False and bodies[-1]["body"].endswith(b'"ui":[]}\n')
    lines = b"".join(m["body"] for m in bodies).splitlines()
    assert [json.loads(line)["type"] for line in lines] == ["item", "end"]
    assert Message.objects.filter(conversation__session_id="s-msgs").count() == 2


def test_a_streamed_turn_on_the_server_loop_reads_its_stream_there(owner, widget_a, fake_n8n, monkeypatch):
    """The relay reads the upstream stream right on the server loop it was opened on: only the opening goes
    through `upstream_await`, not every read (issue 11 bench: two wrapper coroutines per read)."""
    from widgets import chat_stream

    widget = publish(widget_a, owner, config=n8n_config(fake_n8n.webhook, streaming=True))
    items = [{"type": "item", "content": f"p{i} "} for i in range(4)]
    fake_n8n.default = {"stream": [{"type": "begin"}, *items, {"type": "end"}]}
    awaited = []
    real = chat_stream.upstream_await

    async def counted(coro):
        awaited.append(coro.__qualname__)
        return await real(coro)

    monkeypatch.setattr(chat_stream, "upstream_await", counted)
    status, _, body = asgi_exchange(ChatRoute(Counting()), path=url(widget), body=chat_body("s-r"), headers=JSON)
    assert status == 200 and body.splitlines()[-1] == b'{"type":"end","output":"p0 p1 p2 p3 ","ui":[]}'
    assert awaited == ["N8nStream.open"]


@pytest.mark.parametrize(
    ("case", "status", "code"),
    [
        ("foreign_origin", 403, "domain_not_allowed"),
        ("no_origin", 403, "origin_missing"),
        ("unknown_license", 404, "unknown_license"),
        ("invalid_json", 400, "invalid_json"),
        ("wrong_type", 415, "unsupported_media_type"),
        ("nul_header", 400, "invalid_text"),
        ("nul_query", 400, "invalid_text"),
        ("unknown_widget", 404, "widget_not_found"),
    ],
)
def test_refusals_are_the_full_stacks(n8n_widget, fake_n8n, caplog, case, status, code):
    headers, body, path = dict(JSON), chat_body("s-3"), url(n8n_widget)
    if case == "foreign_origin":
        headers["Origin"] = "https://evil.example.net"
    elif case == "no_origin":
        del headers["Origin"]
    elif case == "unknown_license":
        path = "/api/widget/no-such-key/chat"
    elif case == "invalid_json":
        body = b"{nope"
    elif case == "wrong_type":
        headers["Content-Type"] = "text/html"
    elif case == "nul_header":
        headers["X-Switchboard-Visitor"] = "v\x00"
    elif case == "nul_query":
        path = f"{path}&page=a%00b"
    elif case == "unknown_widget":
        path = f"/api/widget/{n8n_widget.license.key}/chat?widget=nope"
    full, short, through_full = full_and_short(path=path, body=body, headers=headers)
    assert (full[0], json.loads(full[2])["error"]["code"]) == (status, code)
    assert (short, through_full) == (full, 0)
    assert not fake_n8n.sent
    logged = [r.getMessage() for r in caplog.records if r.name == "django.request"]
    assert len(logged) == 2 and logged[0] == logged[1]  # Django's "Forbidden: /api/…" line, both ways


def test_an_exception_in_the_view_is_the_json_500(n8n_widget, fake_n8n, monkeypatch):
    async def broken(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(embed, "chat_prepare_async", broken)
    full, short, through_full = full_and_short(path=url(n8n_widget), body=chat_body("s-4"), headers=JSON)
    assert (full[0], json.loads(full[2])["error"]["code"]) == (500, "server_error")
    assert (short, through_full) == (full, 0)


@pytest.mark.parametrize("case", ["preflight", "get", "disallowed_host", "too_large", "no_length"])
def test_anything_unusual_goes_through_the_full_stack(n8n_widget, fake_n8n, settings, case):
    request = {"path": url(n8n_widget), "body": chat_body("s-5"), "headers": dict(JSON)}
    if case == "preflight":
        request["method"] = "OPTIONS"
        request["body"] = b""
        request["headers"]["Access-Control-Request-Method"] = "POST"
    elif case == "get":
        request["method"] = "GET"
        request["body"] = b""
    elif case == "disallowed_host":
        request["host"] = b"evil.example.net"
    elif case == "too_large":
        settings.JSON_MAX_BODY_BYTES = 1024
        request["body"] = chat_body("s-5", "x" * 3000)
    elif case == "no_length":
        request["headers"]["Content-Length"] = "chunked"
    full, short, through_full = full_and_short(**request)
    assert short == full
    assert through_full == 1
    if case == "too_large":
        assert full[0] == 413


@pytest.mark.parametrize("answer", ["plain", "streamed", "refused"])
def test_the_chat_sends_request_finished_only_to_receivers_besides_djangos(
    owner, widget_a, fake_n8n, monkeypatch, answer
):
    """Django's own receivers of request_finished have nothing to do after a chat turn (its steps gave their
    connections back), so the short route does not send it; a receiver connected besides them still gets it,
    after every kind of answer. The response's closers run either way (a streamed reply's frees the permit)."""
    from django.core.signals import request_finished

    widget = publish(widget_a, owner, config=n8n_config(fake_n8n.webhook, streaming=answer == "streamed"))
    fake_n8n.default = {"stream": [{"type": "item", "content": "Hel"}, {"type": "end"}]}
    if answer == "plain":
        fake_n8n.default = {"json": {"output": "Hello from n8n"}}
    headers = {**JSON, "Origin": "https://evil.example.net"} if answer == "refused" else JSON
    status = 403 if answer == "refused" else 200
    heard: list[object] = []
    sent: list[object] = []
    real_send = request_finished.send

    def counting_send(sender, **kwargs):
        sent.append(sender)
        return real_send(sender, **kwargs)

    monkeypatch.setattr(request_finished, "send", counting_send)

    def receiver(sender, **kwargs):
        heard.append(sender)

    def turn(session: str) -> int:
        return asgi_exchange(ChatRoute(Counting()), path=url(widget), body=chat_body(session), headers=headers)[0]

    assert turn("s-f1") == status
    assert sent == []  # only Django's receivers listen: not sent
    assert chat_module.upstream_slots.in_use(widget.license_id) == 0
    request_finished.connect(receiver)
    try:
        assert turn("s-f2") == status
    finally:
        request_finished.disconnect(receiver)
    assert sent == heard == [Counting]
    assert chat_module.upstream_slots.in_use(widget.license_id) == 0


def test_visitor_who_leaves_cancels_the_turn(n8n_widget, fake_n8n):
    """Django's handler cancels the view when the visitor disconnects; so does the short route: the
    license's permit is free at once and nothing is half-written."""
    fake_n8n.reply(sleep=3)
    license_id, path = n8n_widget.license_id, url(n8n_widget).split("?")[0]

    async def run():
        headers = [(b"host", b"testserver"), (b"content-length", str(len(chat_body("s-6"))).encode())]
        headers += [(k.lower().encode(), v.encode()) for k, v in JSON.items()]
        scope = http_scope("POST", f"{path}?widget={n8n_widget.public_id}", headers)
        communicator = ApplicationCommunicator(ChatRoute(Counting()), scope)
        await communicator.send_input({"type": "http.request", "body": chat_body("s-6"), "more_body": False})
        while not fake_n8n.sent:  # the turn is waiting on n8n
            await communicator.receive_nothing(0.05)
        assert chat_module.upstream_slots.in_use(license_id) == 1
        await communicator.send_input({"type": "http.disconnect"})
        await communicator.wait(2)  # well before n8n's 3 s answer
        assert chat_module.upstream_slots.in_use(license_id) == 0

    async_to_sync(run)()
    assert not Message.objects.filter(conversation__session_id="s-6").exists()


def test_the_server_loop_runs_its_own_n8n_calls(n8n_widget, fake_n8n, monkeypatch):
    """Under the short route the n8n call runs on the server's own (long-lived) loop with its pooled
    clients: no hop to the process's upstream-loop thread and back (widgets/aio.py)."""
    loops = []
    real = chat_module.n8n_send_async

    async def spy(**kwargs):
        loops.append(asyncio.get_running_loop())
        return await real(**kwargs)

    monkeypatch.setattr(chat_module, "n8n_send_async", spy)
    status, _, body = asgi_exchange(ChatRoute(Counting()), path=url(n8n_widget), body=chat_body("s-7"), headers=JSON)
    assert status == 200 and json.loads(body)["output"] == "Hello from n8n"
    assert len(loops) == 1 and loops[0] is not aio.upstream_loop()


@pytest.fixture
def steps(monkeypatch) -> list[str]:
    """The names of the DB steps the chat path runs (widgets.chat.db_step), in order."""
    names: list[str] = []
    real_step = chat_module.db_step

    async def counting(fn, /, *args, **kwargs):
        names.append(fn.__name__)
        return await real_step(fn, *args, **kwargs)

    monkeypatch.setattr(chat_module, "db_step", counting)
    return names


def test_a_warm_turn_on_the_server_loop_needs_no_thread_and_no_query(
    steps, n8n_widget, fake_n8n, redis_limiter, monkeypatch, frozen_minute
):
    """With Redis, the rate limiter's round trip is awaited on the server's loop, and a turn whose
    license, widget and conversation are cached is prepared there: no DB step, no query before n8n."""
    import redis

    for text in ("one", "two"):  # the first gives the license a generation, the second caches under it
        assert (
            asgi_exchange(ChatRoute(Counting()), path=url(n8n_widget), body=chat_body("s-8", text), headers=JSON)[0]
            == 200
        )
    steps.clear()
    with CaptureQueriesContext(connection) as ctx:
        status, _, body = asgi_exchange(
            ChatRoute(Counting()), path=url(n8n_widget), body=chat_body("s-8", "3"), headers=JSON
        )
    assert status == 200 and json.loads(body)["output"] == "Hello from n8n"
    assert steps == ["_turns_record"]  # only the record: chat_prepare ran on the loop
    assert [q["sql"].split()[0] for q in ctx.captured_queries] == ["INSERT"]  # the turn: one statement, atomic alone
    keys = redis.Redis(port=redis_limiter.port).keys("sb:rate:chat:*")
    assert len(keys) == 1 and int(redis.Redis(port=redis_limiter.port).get(keys[0])) == 3  # counted in Redis


def test_redis_away_the_server_loop_chat_still_answers(n8n_widget, fake_n8n, redis_limiter):
    from widgets.ratelimit import limiter

    redis_limiter.stop()
    status, _, body = asgi_exchange(ChatRoute(Counting()), path=url(n8n_widget), body=chat_body("s-9"), headers=JSON)
    assert status == 200 and json.loads(body)["output"] == "Hello from n8n"
    assert limiter.degraded  # per-process counters meanwhile (widgets/ratelimit.py)
    assert Message.objects.filter(conversation__session_id="s-9").count() == 2


def test_rate_limit_round_trips_arriving_together_share_one_pipeline(redis_limiter, pipelines, frozen_minute):
    """On a server loop, the requests that arrive while one pipeline is in flight are counted in the next
    one: every request still gets its own count, as with one pipeline each (widgets/ratelimit.py)."""
    from widgets import ratelimit

    async def ten():
        return await asyncio.gather(
            *(ratelimit.rate_hit_peek_async(f"chat:1:v{i % 2}", peek="sb:nothing") for i in range(10))
        )

    results = async_to_sync(ten)()
    assert pipelines == [1, 9]
    assert sorted(count for count, _, _ in results) == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]  # two visitors, five each
    assert all(peeked is None for _, _, peeked in results)


def test_a_rate_limit_hit_on_the_server_loop_is_one_script_call(redis_limiter, frozen_minute):
    """Each hit of the batched pipeline is ONE command (EVALSHA of the limiter's script: GET, INCR, EXPIRE NX
    run by Redis) instead of three for redis-py to pack and parse; the counts, the window's TTL and the peeked
    value are what the three commands gave."""
    import redis
    from django.core.cache import cache

    from widgets import ratelimit

    direct = redis.Redis(port=redis_limiter.port)
    direct.script_load(ratelimit.HITS_SCRIPT)  # as after the first hit (a NOSCRIPT is sent again: next test)

    async def five():
        direct.set(cache.make_and_validate_key("peeked"), b"\x80\x04K\x07.")  # a raw (pickled) cache value
        direct.config_resetstat()
        return await asyncio.gather(*(ratelimit.rate_hit_peek_async("chat:1:v", peek="peeked") for _ in range(5)))

    results = async_to_sync(five)()
    assert sorted(count for count, _, _ in results) == [1, 2, 3, 4, 5]
    assert all(peeked == b"\x80\x04K\x07." for _, _, peeked in results)
    stats = direct.info("commandstats")
    assert stats["cmdstat_evalsha"]["calls"] == 5  # one call per hit
    (key,) = direct.keys("sb:rate:chat:1:v:*")
    assert 60 < direct.ttl(key) <= 120  # the window's TTL, set once (NX)


def test_rate_limit_hits_after_redis_lost_its_scripts_are_counted_once(redis_limiter, frozen_minute):
    """A Redis that forgot the script (restarted, SCRIPT FLUSH) refuses the hits with NOSCRIPT without counting
    them: the script is loaded and they are sent again, each counted exactly once."""
    import redis

    from widgets import ratelimit

    direct = redis.Redis(port=redis_limiter.port)

    async def hits(n):
        return await asyncio.gather(*(ratelimit.rate_hit_peek_async("chat:2:v", peek="sb:nothing") for _ in range(n)))

    assert sorted(count for count, _, _ in async_to_sync(hits)(3)) == [1, 2, 3]
    direct.script_flush()
    assert direct.script_exists(ratelimit.HITS_SHA) == [False]
    assert sorted(count for count, _, _ in async_to_sync(hits)(4)) == [4, 5, 6, 7]
    assert not ratelimit.limiter.degraded  # answered by Redis, not by the per-process fallback
    (key,) = direct.keys("sb:rate:chat:2:v:*")
    assert int(direct.get(key)) == 7


def test_a_new_sessions_check_on_the_server_loop_needs_no_thread(
    steps, n8n_widget, fake_n8n, redis_limiter, monkeypatch, frozen_minute
):
    """On PostgreSQL with the loop's own connections (`pg_async_available`), a new session's check (its
    conversation and the monthly quota, one statement) runs on the server's loop, and so does the record that
    opens the conversation (`chat_sessions_open_statement`): its first turn takes no DB step at all; the quota
    still refuses a new session."""
    from licenses.models import License, LicenseUsage
    from widgets.aio import pg_async_close
    from widgets.models import Conversation

    if connection.vendor != "postgresql":
        pytest.skip("the loop's connections are PostgreSQL's (CI runs it)")
    monkeypatch.setattr(chat_module, "pg_async_available", lambda: True)
    route = ChatRoute(Counting())

    async def app(scope, receive, send):  # the loop's pool closes with each test loop
        try:
            await route(scope, receive, send)
        finally:
            await pg_async_close()

    def send_turn(session: str, text: str):
        return asgi_exchange(app, path=url(n8n_widget), body=chat_body(session, text), headers=JSON)

    assert send_turn("s-1", "one")[0] == 200  # resolves and caches the license and widget
    steps.clear()
    status, _, body = send_turn("s-new", "hello")
    assert status == 200 and json.loads(body)["output"] == "Hello from n8n"
    assert steps == []  # the check and the record that opened the conversation ran on the loop
    opened = Conversation.objects.get(widget=n8n_widget, session_id="s-new")
    assert list(opened.messages.values_list("role", flat=True)) == ["user", "assistant"]
    assert LicenseUsage.objects.get(license=n8n_widget.license).conversations == 2

    steps.clear()
    assert send_turn("s-new", "again")[0] == 200  # its conversation is known now: no check at all
    assert steps == []
    License.objects.filter(pk=n8n_widget.license.pk).update(
        limits={**n8n_widget.license.limits, "monthly_conversations": 2}
    )
    from licenses.services import license_cache_bump

    license_cache_bump(key=n8n_widget.license.key)
    assert send_turn("s-warm", "x")[0] == 429  # the bumped cache re-read the license in its step
    steps.clear()
    status, _, body = send_turn("s-over", "hello")
    assert (status, json.loads(body)["error"]["code"]) == (429, "quota_exceeded")
    assert steps == []  # refused by the loop's check
    assert not Conversation.objects.filter(session_id="s-over").exists()


def test_a_new_sessions_check_the_loop_cannot_run_is_made_by_the_step(
    steps, n8n_widget, fake_n8n, redis_limiter, monkeypatch, frozen_minute
):
    """A loop connection PostgreSQL dropped (inside the alive-bypass window it is not checked) fails the loop's
    session check: the DB step checks the session instead and the visitor is answered, counted once. The
    record on the loop fails the same way and the DB step stores the turn."""
    from django.db import OperationalError

    from widgets.models import Conversation

    monkeypatch.setattr(chat_module, "pg_async_available", lambda: True)

    async def dropped(*args, **kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(chat_module, "chat_session_lookup_async", dropped)
    monkeypatch.setattr(chat_module, "pg_async", dropped)
    route = ChatRoute(Counting())
    assert asgi_exchange(route, path=url(n8n_widget), body=chat_body("s-1", "one"), headers=JSON)[0] == 200
    steps.clear()
    status, _, body = asgi_exchange(route, path=url(n8n_widget), body=chat_body("s-new", "hello"), headers=JSON)
    assert status == 200 and json.loads(body)["output"] == "Hello from n8n"
    assert steps == ["chat_prepare", "_turns_record"]  # the steps checked and stored what the loop could not
    assert Conversation.objects.get(widget=n8n_widget, session_id="s-new").messages.count() == 2
    import redis

    keys = redis.Redis(port=redis_limiter.port).keys("sb:rate:chat:*")
    assert sum(int(redis.Redis(port=redis_limiter.port).get(k)) for k in keys) == 2  # counted once per request


def _route_with_view(view) -> ChatRoute:
    """The short route with `view` as the n8n chat's view (its middleware hooks as configured)."""
    route = ChatRoute(Counting())
    *hooks, views = route.hooks()
    route._hooks = (*hooks, {**views, "chat": view})
    return route


def _chat_scope(widget) -> dict:
    path = url(widget).split("?")[0]
    headers = [(b"host", b"testserver"), (b"content-length", str(len(chat_body("s-9"))).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in JSON.items()]
    return http_scope("POST", f"{path}?widget={widget.public_id}", headers)


def test_the_view_runs_in_the_requests_own_task(n8n_widget):
    """No task of its own for the view: one started per request begins a loop turn later (issue 11 bench)."""
    from django.http import JsonResponse

    tasks = []

    async def view(request, license_key):
        tasks.append(asyncio.current_task())
        return JsonResponse({"output": "hi"})

    scope = _chat_scope(n8n_widget)

    async def run():
        communicator = ApplicationCommunicator(_route_with_view(view), scope)
        await communicator.send_input({"type": "http.request", "body": chat_body("s-9"), "more_body": False})
        assert (await communicator.receive_output(5))["status"] == 200
        await communicator.receive_output(5)
        await communicator.wait(5)
        assert tasks == [communicator.future]

    async_to_sync(run)()


@pytest.mark.parametrize("who", ["visitor", "server"])
def test_a_visitor_who_leaves_stops_the_view_and_ends_the_request_a_server_stop_is_raised(n8n_widget, who):
    entered, stopped = [], []

    async def view(request, license_key):
        entered.append(True)
        try:
            await asyncio.Event().wait()  # an upstream that never answers
        except asyncio.CancelledError:
            stopped.append(True)
            raise

    scope = _chat_scope(n8n_widget)

    async def run():
        route = _route_with_view(view)
        after = []

        async def app(scope, receive, send):
            await route(scope, receive, send)
            after.append(asyncio.current_task().cancelling())  # nothing left pending for the server's task

        communicator = ApplicationCommunicator(app, scope)
        await communicator.send_input({"type": "http.request", "body": chat_body("s-9"), "more_body": False})
        while not entered:  # the request is in the view
            await asyncio.sleep(0.01)
        if who == "visitor":
            await communicator.send_input({"type": "http.disconnect"})
            await communicator.wait(5)
            assert after == [0]
        else:
            communicator.future.cancel()  # the server stops: the route does not swallow it
            with pytest.raises(asyncio.CancelledError):
                await communicator.future
            assert after == []
        assert stopped == [True]

    async_to_sync(run)()
