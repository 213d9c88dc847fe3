"""The public chat's per-process caches (issue 11 bench): a warm turn reads neither the license nor
the widget, and every change of what a license serves (suspension, domains, publish, secrets) is
seen on the very next request, also when it was made by another process."""

from __future__ import annotations

import json
import uuid

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext

from licenses.models import License
from licenses.selectors import license_cache_key
from licenses.services import license_domains_set, license_suspend
from widgets.chat import chat_cache
from widgets.models import Conversation, Message
from widgets.tests.conftest import ORIGIN, n8n_config, publish

pytestmark = pytest.mark.django_db


def send(client, widget, session="sess-1", text="Hi", origin=ORIGIN):
    return client.post(
        f"/api/widget/{widget.license.key}/chat?widget={widget.public_id}",
        data=json.dumps({"action": "sendMessage", "sessionId": session, "chatInput": text}),
        content_type="application/json",
        HTTP_ORIGIN=origin,
        HTTP_X_SWITCHBOARD_VISITOR="v-1",
    )


def warm(client, widget) -> None:
    """Two turns: the first gives the license a cache generation, the second caches under it."""
    for text in ("one", "two"):
        assert send(client, widget, text=text).status_code == 200
    assert widget.license.key in chat_cache.resolved


def tables(queries) -> str:
    return " ".join(q["sql"] for q in queries)


def test_warm_turn_reads_no_license_widget_or_conversation(client, n8n_widget, fake_n8n):
    warm(client, n8n_widget)
    with CaptureQueriesContext(connection) as ctx:
        response = send(client, n8n_widget, text="three")
    assert response.status_code == 200
    sql = tables(ctx.captured_queries)
    assert "licenses_license" not in sql and "widgets_widget" not in sql
    assert 'FROM "widgets_conversation"' not in sql
    inserts = [q["sql"] for q in ctx.captured_queries if q["sql"].startswith("INSERT")]
    assert len(inserts) == 1 and "widgets_message" in inserts[0]  # both messages, one statement
    conversation = Conversation.objects.get(widget=n8n_widget, session_id="sess-1")
    assert list(conversation.messages.values_list("role", "text")) == [
        ("user", "one"), ("assistant", fake_n8n.default["json"]["output"]),
        ("user", "two"), ("assistant", fake_n8n.default["json"]["output"]),
        ("user", "three"), ("assistant", fake_n8n.default["json"]["output"]),
    ]  # fmt: skip


def test_suspension_refuses_the_next_request(client, n8n_widget, fake_n8n):
    warm(client, n8n_widget)
    license_suspend(license=n8n_widget.license)
    response = send(client, n8n_widget)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "suspended"
    assert n8n_widget.license.key not in chat_cache.resolved


def test_change_made_by_another_process_is_seen_at_once(client, n8n_widget, fake_n8n):
    """Another process changes the row and bumps the generation; this process never ran the service."""
    warm(client, n8n_widget)
    calls = len(fake_n8n.requests)
    License.objects.filter(pk=n8n_widget.license.pk).update(status=License.Status.REVOKED)
    cache.set(license_cache_key(n8n_widget.license.key), uuid.uuid4().hex, 60)
    response = send(client, n8n_widget)
    assert (response.status_code, response.json()["error"]["code"]) == (403, "revoked")
    assert len(fake_n8n.requests) == calls  # n8n never called


def test_removed_domain_refuses_the_next_request(client, n8n_widget, fake_n8n, owner):
    warm(client, n8n_widget)
    license_domains_set(actor=owner.memberships.get(), license=n8n_widget.license, domains=["other.example.com"])
    response = send(client, n8n_widget)
    assert (response.status_code, response.json()["error"]["code"]) == (403, "domain_not_allowed")


def test_publish_of_a_new_webhook_is_used_at_once(client, n8n_widget, fake_n8n, owner):
    warm(client, n8n_widget)
    publish(n8n_widget, owner, config=n8n_config(fake_n8n.url + "/webhook/moved/chat"))
    assert send(client, n8n_widget).status_code == 200
    assert fake_n8n.requests[-1].path == "/webhook/moved/chat"


def test_without_a_readable_generation_nothing_is_served_from_the_cache(client, n8n_widget, fake_n8n, monkeypatch):
    """Redis away (the limiter peeks None, the generation cannot be read): every request reads and checks
    the license again."""
    import redis

    warm(client, n8n_widget)
    monkeypatch.setattr("widgets.chat.rate_hit_peek", lambda key, peek, window=60: (1, 60, None))

    def away(*, key):
        raise redis.ConnectionError("away")

    monkeypatch.setattr("widgets.chat.license_cache_generation", away)
    License.objects.filter(pk=n8n_widget.license.pk).update(status=License.Status.SUSPENDED)  # no bump
    response = send(client, n8n_widget)
    assert (response.status_code, response.json()["error"]["code"]) == (403, "suspended")


def test_a_license_without_a_generation_is_cached_by_its_first_request(client, n8n_widget, fake_n8n):
    """The first request of a license whose generation does not exist yet (new, or expired after a day)
    makes one and caches under it: the next request reads no license or widget (a burst of first requests
    used to read them all again, each peeking no generation)."""
    cache.delete(license_cache_key(n8n_widget.license.key))
    assert send(client, n8n_widget, text="one").status_code == 200
    assert chat_cache.resolved[n8n_widget.license.key].token is not None
    with CaptureQueriesContext(connection) as ctx:
        assert send(client, n8n_widget, text="two").status_code == 200
    sql = tables(ctx.captured_queries)
    assert "licenses_license" not in sql and "widgets_widget" not in sql


def test_a_request_that_peeked_no_generation_keeps_the_cache_current(client, n8n_widget, fake_n8n, monkeypatch):
    """A request whose peek saw no generation (it raced the request that made it) reads the generation made
    meanwhile: it neither drops the entry cached under it nor serves a license changed since (bumped)."""
    warm(client, n8n_widget)
    monkeypatch.setattr("widgets.chat.rate_hit_peek", lambda key, peek, window=60: (1, 60, None))
    with CaptureQueriesContext(connection) as ctx:
        assert send(client, n8n_widget, text="three").status_code == 200
    assert "licenses_license" not in tables(ctx.captured_queries)
    assert n8n_widget.license.key in chat_cache.resolved
    license_suspend(license=n8n_widget.license)  # bumps the generation
    response = send(client, n8n_widget)
    assert (response.status_code, response.json()["error"]["code"]) == (403, "suspended")


@pytest.mark.django_db(transaction=True)  # the foreign key is checked at COMMIT
def test_deleted_conversation_is_opened_again(client, n8n_widget, fake_n8n):
    """A cached conversation id whose row is gone: the turn opens the session's conversation anew."""
    warm(client, n8n_widget)
    Conversation.objects.filter(widget=n8n_widget).delete()
    assert send(client, n8n_widget, text="again").status_code == 200
    conversation = Conversation.objects.get(widget=n8n_widget, session_id="sess-1")
    assert list(conversation.messages.values_list("text", flat=True))[0] == "again"
    assert Message.objects.filter(conversation__widget=n8n_widget).count() == 2
