"""Issue 11.4 / 11.10 / 11.9: Redis and PostgreSQL faults on the public chat and lead paths."""

from __future__ import annotations

import json
import logging

import httpx
import pytest
from django.conf import settings as django_settings
from django.db import connection

from widgets.models import Lead, Message
from widgets.tests.conftest import ORIGIN
from widgets.tests.prod_server import ProdServer, database_url, prod_env


def send(client, widget, session="sess-1", visitor="v-1", text="Hi"):
    return client.post(
        f"/api/widget/{widget.license.key}/chat",
        data=json.dumps({"action": "sendMessage", "sessionId": session, "chatInput": text}),
        content_type="application/json",
        HTTP_ORIGIN=ORIGIN,
        HTTP_X_SWITCHBOARD_VISITOR=visitor,
    )


@pytest.mark.django_db
def test_chat_rate_limit_is_shared_in_redis(client, n8n_widget, fake_n8n, redis_limiter, settings, frozen_minute):
    import redis

    settings.WIDGET_CHAT_RATE_PER_MINUTE = 2
    assert [send(client, n8n_widget).status_code for _ in range(3)] == [200, 200, 429]
    keys = redis.Redis(port=redis_limiter.port).keys("sb:rate:chat:*")
    assert len(keys) == 1 and int(redis.Redis(port=redis_limiter.port).get(keys[0])) == 3


@pytest.mark.django_db
def test_redis_down_chat_still_answers_within_a_per_process_limit(
    client, n8n_widget, fake_n8n, redis_limiter, settings, caplog, frozen_minute
):
    settings.WIDGET_CHAT_RATE_PER_MINUTE = 3
    redis_limiter.stop()
    with caplog.at_level(logging.WARNING, logger="widgets.ratelimit"):
        answers = [send(client, n8n_widget) for _ in range(4)]
    assert [r.status_code for r in answers] == [200, 200, 200, 429]
    assert answers[-1].json()["error"]["code"] == "rate_limited" and int(answers[-1]["Retry-After"]) >= 1
    assert Message.objects.filter(role="assistant").count() == 3
    outage_lines = [r for r in caplog.records if "Redis unreachable" in r.getMessage()]
    assert len(outage_lines) == 1  # logged once per outage, not per request
    # Another visitor has a budget of their own meanwhile.
    assert send(client, n8n_widget, session="s2", visitor="v-2").status_code == 200


@pytest.mark.django_db
def test_redis_back_rate_limits_are_shared_again(client, n8n_widget, fake_n8n, redis_limiter, settings, frozen_minute):
    from widgets.ratelimit import limiter

    redis_limiter.stop()
    assert send(client, n8n_widget).status_code == 200
    assert limiter.degraded
    redis_limiter.start()
    limiter._down_until = 0.0  # the retry pause is over
    assert send(client, n8n_widget).status_code == 200
    assert not limiter.degraded


@pytest.mark.django_db(transaction=True)
def test_a_lead_posted_while_the_broker_is_down_is_stored_and_delivered_when_it_is_back(
    client, n8n_widget, redis_limiter, settings, agency_a, fake_http
):
    """The form post answers 201 (not an HTML 500), the lead waits `pending` in PostgreSQL, and the
    beat task delivers it once the broker is back."""
    from config.celery import app
    from widgets.tasks import leads_reap

    crm = fake_http([(200, {"ok": True})])
    agency_a.crm_webhook_url = crm.url + "/hooks/leads"
    agency_a.secrets = {"crm_webhook_secret": "whsec-test"}
    agency_a.save()
    redis_limiter.stop()  # the broker and the limiter's Redis are down
    eager, broker = app.conf.task_always_eager, app.conf.broker_url
    app.conf.task_always_eager = False
    app.conf.broker_url = redis_limiter.url
    reset_producers(app)
    try:
        response = client.post(
            f"/api/widget/{n8n_widget.license.key}/leads",
            data=json.dumps({"name": "Ann", "email": "ann@example.com", "source": "contact_form"}),
            content_type="application/json",
            HTTP_ORIGIN=ORIGIN,
        )
    finally:
        app.conf.task_always_eager, app.conf.broker_url = eager, broker
        reset_producers(app)
    try:
        assert response.status_code == 201, response.content
        lead = Lead.objects.get()
        assert lead.delivery_status == Lead.Delivery.PENDING and crm.requests == []
        # Redis is back (the broker runs tasks eagerly here); the beat task finds the lead and delivers it.
        redis_limiter.start()
        settings.LEAD_PENDING_STALE_SECONDS = 0
        assert leads_reap()["enqueued"] == 1
        lead.refresh_from_db()
        assert lead.delivery_status == Lead.Delivery.DELIVERED
        assert len(crm.requests) == 1
    finally:
        crm.stop()


def reset_producers(app) -> None:
    """Make Celery pick its producer pool for the (changed) broker_url on the next publish (kombu keeps
    one per broker URL, so the usual one is found again afterwards)."""
    app._pool = None
    app.amqp._producer_pool = None


# --- against the production server (PostgreSQL) ------------------------------------------------


@pytest.fixture
def prod_with_redis(transactional_db, redis_server, tmp_path):
    if connection.vendor != "postgresql":
        pytest.skip("the production server runs on PostgreSQL; runs in CI")
    env = prod_env(
        database_url=database_url(connection.settings_dict),
        secret_key=django_settings.SECRET_KEY,
        encryption_keys=django_settings.FIELD_ENCRYPTION_KEYS,
        redis_url=redis_server.url,
        DB_POOL="1",
        DB_POOL_MAX_SIZE="5",
    )
    server = ProdServer(env=env, log_path=str(tmp_path / "server.log")).start()
    yield server
    server.stop()


def test_requests_share_a_few_redis_connections(prod_with_redis, redis_server, n8n_widget, fake_n8n):
    """Issue 11.10: 100 chats and 20 health checks open a handful of Redis connections, not one each."""
    key = n8n_widget.license.key
    before = redis_server.connections_received()
    with httpx.Client(base_url=prod_with_redis.url, timeout=10) as http:
        for i in range(100):
            response = http.post(
                f"/api/widget/{key}/chat",
                json={"action": "sendMessage", "sessionId": f"s{i}", "chatInput": "hi"},
                headers={"Origin": ORIGIN, "X-Switchboard-Visitor": f"v{i}"},
            )
            assert response.status_code == 200, response.text
        for _ in range(20):
            assert http.get("/healthz").json()["checks"]["redis"] == "ok"
    opened = redis_server.connections_received() - before - 1  # our own INFO connection
    assert opened <= 5, opened


def test_redis_down_chat_and_leads_answer_and_health_says_why(prod_with_redis, redis_server, n8n_widget, fake_n8n):
    """Issue 11.4 on the production server: no HTML 500 anywhere while Redis is away."""
    key = n8n_widget.license.key
    redis_server.stop()
    with httpx.Client(base_url=prod_with_redis.url, timeout=15, headers={"Origin": ORIGIN}) as http:
        chat = http.post(
            f"/api/widget/{key}/chat", json={"action": "sendMessage", "sessionId": "s-down", "chatInput": "hi"}
        )
        assert chat.status_code == 200, chat.text
        assert chat.json()["output"] == "Hello from n8n"
        lead = http.post(
            f"/api/widget/{key}/leads", json={"name": "Ann", "email": "ann@example.com", "source": "contact_form"}
        )
        assert lead.status_code == 201, lead.text
        health = http.get("/healthz")
        assert health.status_code == 503 and health.json()["checks"]["redis"].startswith("error")
    assert Message.objects.filter(conversation__session_id="s-down").count() == 2
    assert Lead.objects.get().delivery_status == Lead.Delivery.PENDING
