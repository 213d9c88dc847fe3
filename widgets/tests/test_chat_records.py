"""What the chat keeps: one conversation per session under concurrency (11.8), failed turns (10.5),
and what a visitor gets when the database cannot keep a turn or cannot be reached (11.9)."""

from __future__ import annotations

import json
import threading

import httpx
import pytest
from django.conf import settings as django_settings
from django.db import OperationalError, connection, connections
from django.test import Client

from licenses.models import LicenseUsage
from widgets.models import Conversation, Message
from widgets.services.turns import chat_turn_record
from widgets.tests.conftest import ORIGIN, publish
from widgets.tests.prod_server import ProdServer, database_url, prod_env

SESSIONS = 20
PER_SESSION = 3


@pytest.mark.django_db(transaction=True)
def test_concurrent_first_messages_of_a_session_open_one_conversation_and_count_once(n8n_widget):
    if connection.vendor == "sqlite":
        pytest.skip("SQLite serialises writers with a file lock; this runs on PostgreSQL in CI")
    widget = n8n_widget
    errors: list[BaseException] = []
    barrier = threading.Barrier(SESSIONS * PER_SESSION)

    def first_message(session: str, n: int) -> None:
        try:
            barrier.wait()
            chat_turn_record(widget=widget, session_id=session, visitor_id="v", user_text=f"hi {n}", reply_text="hello")
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [
        threading.Thread(target=first_message, args=(f"race-{s}", n))
        for s in range(SESSIONS)
        for n in range(PER_SESSION)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert Conversation.objects.filter(widget=widget).count() == SESSIONS
    assert LicenseUsage.objects.get(license=widget.license).conversations == SESSIONS
    for conversation in Conversation.objects.all():
        assert conversation.messages.count() == 2 * PER_SESSION


def stream_lines(response) -> list[dict]:
    return [json.loads(line) for line in b"".join(response.streaming_content).splitlines()]


@pytest.mark.django_db
def test_a_streamed_reply_that_cannot_be_stored_ends_with_an_error_line(
    client, n8n_widget, fake_n8n, owner, monkeypatch
):
    publish(n8n_widget, owner, config={"connection": {"n8n": {"streaming": True}}})
    fake_n8n.reply(stream=[{"type": "item", "content": "All "}, {"type": "item", "content": "yours"}, {"type": "end"}])

    def database_gone(**kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr("widgets.chat.chat_turn_record", database_gone)
    response = client.post(
        f"/api/widget/{n8n_widget.license.key}/chat",
        data=json.dumps({"action": "sendMessage", "sessionId": "s-lost", "chatInput": "hi"}),
        content_type="application/json",
        HTTP_ORIGIN=ORIGIN,
    )
    lines = stream_lines(response)
    assert lines[:2] == [{"type": "item", "content": "All "}, {"type": "item", "content": "yours"}]
    assert lines[-1]["type"] == "error" and lines[-1]["code"] == "not_stored"
    assert "again" in lines[-1]["message"]


@pytest.mark.django_db
def test_a_failed_streamed_turn_is_recorded_with_its_latency(client, n8n_widget, fake_n8n, owner):
    publish(n8n_widget, owner, config={"connection": {"n8n": {"streaming": True}}})
    fake_n8n.reply(json={"message": "Workflow could not be started"}, status=500)
    response = client.post(
        f"/api/widget/{n8n_widget.license.key}/chat",
        data=json.dumps({"action": "sendMessage", "sessionId": "s-500", "chatInput": "anyone there?"}),
        content_type="application/json",
        HTTP_ORIGIN=ORIGIN,
    )
    assert response.status_code == 502
    [message] = Message.objects.all()
    assert (message.role, message.text, message.failure_kind, message.upstream_status) == (
        "user",
        "anyone there?",
        "upstream_error",
        500,
    )
    assert message.latency_ms is not None
    n8n_widget.refresh_from_db()
    assert n8n_widget.chat_failures == 1


@pytest.mark.django_db
def test_answered_turns_keep_their_latency_and_no_failure(client, n8n_widget, fake_n8n):
    client.post(
        f"/api/widget/{n8n_widget.license.key}/chat",
        data=json.dumps({"action": "sendMessage", "sessionId": "s-ok", "chatInput": "hi"}),
        content_type="application/json",
        HTTP_ORIGIN=ORIGIN,
    )
    user, assistant = Message.objects.all()
    assert user.failure_kind == "" and assistant.latency_ms is not None
    n8n_widget.refresh_from_db()
    assert n8n_widget.chat_failures == 0


@pytest.mark.django_db
@pytest.mark.parametrize("path,method", [("chat", "post"), ("config", "get"), ("leads", "post")])
@pytest.mark.parametrize("error", ["operational", "pool_timeout"])
def test_a_database_outage_answers_json_503_with_retry_after(n8n_widget, monkeypatch, path, method, error):
    from psycopg_pool import PoolTimeout

    exc = OperationalError("connection refused") if error == "operational" else PoolTimeout("couldn't get a connection")

    def unavailable(**kwargs):
        raise exc

    monkeypatch.setattr("widgets.public.license_get_public", unavailable)
    client = Client(raise_request_exception=False)
    url = f"/api/widget/{n8n_widget.license.key}/{path}"
    if method == "post":
        response = client.post(
            url,
            data=json.dumps({"sessionId": "s", "chatInput": "hi"}),
            content_type="application/json",
            HTTP_ORIGIN=ORIGIN,
        )
    else:
        response = client.get(url, HTTP_ORIGIN=ORIGIN)
    assert response.status_code == 503
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == "service_unavailable"
    assert int(response["Retry-After"]) > 0


@pytest.fixture
def prod_server(transactional_db, tmp_path):
    if connection.vendor != "postgresql":
        pytest.skip("terminating backends needs PostgreSQL; runs in CI")
    env = prod_env(
        database_url=database_url(connection.settings_dict),
        secret_key=django_settings.SECRET_KEY,
        encryption_keys=django_settings.FIELD_ENCRYPTION_KEYS,
        DB_POOL="1",
        DB_POOL_MIN_SIZE="2",
        DB_POOL_MAX_SIZE="4",
    )
    server = ProdServer(env=env, log_path=str(tmp_path / "server.log")).start()
    yield server
    server.stop()


def test_connections_postgres_dropped_are_replaced_not_handed_out(prod_server, n8n_widget, fake_n8n):
    """Issue 11.9: after PostgreSQL terminates every backend of the server, the next requests get fresh
    connections from the pool (health-checked), not a 500 from a dead one."""
    key = n8n_widget.license.key
    with httpx.Client(base_url=prod_server.url, timeout=10, headers={"Origin": ORIGIN}) as http:
        for _ in range(4):
            assert http.get(f"/api/widget/{key}/config").status_code == 200
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            assert cursor.fetchone()[0] >= 1
        statuses = [http.get(f"/api/widget/{key}/config").status_code for _ in range(8)]
        chat = http.post(
            f"/api/widget/{key}/chat", json={"action": "sendMessage", "sessionId": "after-kill", "chatInput": "hi"}
        )
    assert statuses == [200] * 8
    assert chat.status_code == 200, chat.text
