"""Issue 11.1: one slow webhook must not take the site down. Run against the production setup (Uvicorn,
DEBUG off, a psycopg pool far smaller than the number of waiting chats) on PostgreSQL."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from django.conf import settings
from django.db import connection

from widgets.models import Message
from widgets.tests.conftest import ORIGIN, n8n_config, publish
from widgets.tests.prod_server import ProdServer, database_url, prod_env

POOL = 3
SLOW = 8  # concurrent chats on license A: more than the pool holds
CAP = 5  # license A's concurrent upstream calls


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def prod_server(transactional_db, tmp_path):
    if connection.vendor != "postgresql":
        pytest.skip("the pool exhaustion happens on PostgreSQL (psycopg pool); runs in CI")
    env = prod_env(
        database_url=database_url(connection.settings_dict),
        secret_key=settings.SECRET_KEY,
        encryption_keys=settings.FIELD_ENCRYPTION_KEYS,
        DB_POOL="1",
        DB_POOL_MIN_SIZE="0",
        DB_POOL_MAX_SIZE=str(POOL),
        DB_POOL_TIMEOUT="1",
        N8N_TOTAL_TIMEOUT="30",
    )
    server = ProdServer(env=env, log_path=str(tmp_path / "server.log")).start()
    yield server
    server.stop()
    wait_for(lambda: other_sessions() == 0, 10, "the server's database sessions to end")


def other_sessions() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0]


def post_chat(base: str, key: str, session: str, text: str = "hi", timeout: float = 20) -> httpx.Response:
    return httpx.post(
        f"{base}/api/widget/{key}/chat",
        json={"action": "sendMessage", "sessionId": session, "chatInput": text},
        headers={"Origin": ORIGIN},
        timeout=timeout,
    )


def test_a_slow_webhook_starves_neither_other_licenses_nor_the_health_check(
    prod_server, widget_a, widget_b, owner, outsider, fake_n8n
):
    license_a = widget_a.license
    license_a.limits = {**license_a.limits, "max_concurrent_chats": CAP}
    license_a.save()
    slow = publish(widget_a, owner, config=n8n_config(fake_n8n.webhook))
    other = publish(widget_b, outsider, config=n8n_config(fake_n8n.webhook))
    fake_n8n.replies.extend({"sleep": 4} for _ in range(CAP))  # A's calls hang 4 s; later ones answer at once

    slow_key, other_key = slow.license.key, other.license.key  # read here: the threads touch no ORM
    results: dict[int, httpx.Response | BaseException] = {}

    def visitor(i: int) -> None:
        try:
            results[i] = post_chat(prod_server.url, slow_key, f"slow-{i}")
        except BaseException as exc:  # reported below
            results[i] = exc

    threads = [threading.Thread(target=visitor, args=(i,)) for i in range(SLOW)]
    for thread in threads:
        thread.start()
    # Every permitted call of A is now waiting on n8n; the rest were refused at once.
    wait_for(lambda: len(fake_n8n.sent) == CAP and len(results) == SLOW - CAP, 15, "A's calls upstream")
    refused = list(results.values())
    assert all(isinstance(r, httpx.Response) for r in refused), refused
    for response in refused:
        assert response.status_code == 429, response.text
        assert response.json()["error"]["code"] == "license_busy"
        assert int(response.headers["Retry-After"]) > 0

    # License B chats normally, and the health check is green, while A's calls still wait.
    started = time.monotonic()
    response = post_chat(prod_server.url, other_key, "fast-b", "quick question", timeout=10)
    assert response.status_code == 200, response.text
    assert response.json()["output"] == "Hello from n8n"
    health = httpx.get(prod_server.url + "/healthz", timeout=10)
    assert health.status_code == 200, health.text
    assert time.monotonic() - started < 2.5
    assert len(results) == SLOW - CAP  # A's slow calls were still in flight meanwhile

    for thread in threads:
        thread.join(timeout=30)
    answered = [r for r in results.values() if isinstance(r, httpx.Response) and r.status_code == 200]
    assert len(answered) == CAP, [getattr(r, "status_code", r) for r in results.values()]
    # Every answered turn was stored: CAP slow ones and B's.
    assert Message.objects.filter(role="user").count() == CAP + 1


def test_every_middleware_runs_async_so_the_chat_view_holds_no_thread():
    """A sync-only middleware makes Django run the request in a thread for its whole life (the async
    view inside it via async_to_sync): that thread would be held across the upstream wait."""
    from django.utils.module_loading import import_string

    sync_only = [path for path in settings.MIDDLEWARE if not getattr(import_string(path), "async_capable", False)]
    assert sync_only == []


def test_one_pooled_upstream_client_serves_every_message(client, n8n_widget, fake_n8n, owner, monkeypatch):
    """Issue 11.2: no client per message: the process's pooled session is made once, on one SSL
    context (the CA bundle loaded once), and every later message reuses it."""
    import json

    import aiohttp

    from widgets import n8n

    created, contexts = [], []
    for cls in (httpx.Client, httpx.AsyncClient, aiohttp.ClientSession):
        original = cls.__init__

        def counting(self, *args, _original=original, **kwargs):
            created.append(type(self).__name__)
            _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "__init__", counting)
    real_context = httpx.create_ssl_context

    def counting_context(*args, **kwargs):
        contexts.append(1)
        return real_context(*args, **kwargs)

    monkeypatch.setattr(httpx, "create_ssl_context", counting_context)
    monkeypatch.setattr(n8n, "_sessions", type(n8n._sessions)())
    n8n._ssl_context.cache_clear()

    def send(text):
        return client.post(
            f"/api/widget/{n8n_widget.license.key}/chat",
            data=json.dumps({"action": "sendMessage", "sessionId": "pool-1", "chatInput": text}),
            content_type="application/json",
            HTTP_ORIGIN=ORIGIN,
        )

    for i in range(5):
        assert send(f"plain {i}").status_code == 200
    publish(n8n_widget, owner, config={"connection": {"n8n": {"streaming": True}}})
    for i in range(5):
        fake_n8n.reply(stream=[{"type": "item", "content": f"s{i}"}, {"type": "end"}])
        assert b"".join(send(f"stream {i}").streaming_content).endswith(b'"ui":[]}\n')
    assert created == ["ClientSession"]  # once
    assert len(contexts) == 1  # one SSL context for all of them
    n8n._ssl_context.cache_clear()
