"""The ChatKit server's fast path (bench/chatkit_server.py): the license and widget come from the process's
cache while the license's cache generation says they are current; a new thread's rows are written before
streaming; the rate limits take one round trip. Every change an agency makes still counts at once."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from chatkit.tests.conftest import ChatKitVisitor, thread_id_of

LIST = {"type": "threads.list", "params": {}}


def _tables_read(queries) -> str:
    return " ".join(q["sql"] for q in queries if q["sql"].lstrip().upper().startswith("SELECT"))


def test_a_warm_request_reads_neither_license_nor_widget(fake_openai, visitor):
    assert visitor.call(LIST)[0].status_code == 200  # resolves and caches
    with CaptureQueriesContext(connection) as queries:
        response, _ = visitor.call(LIST)
    assert response.status_code == 200
    read = _tables_read(queries.captured_queries)
    assert '"licenses_license"' not in read and '"widgets_widget"' not in read


def test_a_removed_domain_is_refused_on_the_next_request(fake_openai, visitor, chatkit_widget):
    from licenses.services import license_update

    assert visitor.call(LIST)[0].status_code == 200
    license_update(license=chatkit_widget.license, allowed_domains=["other.example.com"])

    response, (error,) = visitor.call(LIST)
    assert response.status_code == 403 and error["error"]["code"] == "domain_not_allowed"


def test_a_suspended_license_is_refused_on_the_next_request(fake_openai, visitor, chatkit_widget):
    from licenses.services import license_suspend

    assert visitor.call(LIST)[0].status_code == 200
    license_suspend(license=chatkit_widget.license)

    response, (error,) = visitor.call(LIST)
    assert response.status_code == 403 and error["error"]["code"] == "suspended"


def test_a_deleted_widget_is_gone_on_the_next_request(fake_openai, visitor, chatkit_widget, owner):
    from licenses.models import Membership
    from widgets.services.widgets import widget_delete

    assert visitor.call(LIST)[0].status_code == 200
    widget_delete(widget=chatkit_widget, membership=Membership.objects.get(user=owner))

    response, (error,) = visitor.call(LIST)
    assert response.status_code == 404 and error["error"]["code"] == "widget_not_found"


def test_a_refusal_is_decided_on_current_rows_not_on_the_cache(fake_openai, visitor, chatkit_widget):
    """A cached license that would refuse (a domain since added back without a new generation, as a
    restored backup would) is read again before the visitor is turned away."""
    from chatkit.selectors import chatkit_server_cache

    assert visitor.call(LIST)[0].status_code == 200
    entry = chatkit_server_cache.get(chatkit_widget.license.key)
    assert entry is not None
    entry.license.allowed_domains = ["other.example.com"]  # the cached copy is wrong; the row is not

    assert visitor.call(LIST)[0].status_code == 200


def test_the_created_thread_is_stored_as_the_stream_announced_it(fake_openai, visitor):
    from chatkit.models import ChatKitThread

    _, events = visitor.send("hello")
    created = next(e["thread"] for e in events if e["type"] == "thread.created")
    row = ChatKitThread.objects.get(thread_id=created["id"])
    assert row.data["created_at"][:23] == created["created_at"][:23]
    _, (thread,) = visitor.call({"type": "threads.get_by_id", "params": {"thread_id": created["id"]}})
    assert thread["created_at"] == created["created_at"]
    assert [i["type"] for i in thread["items"]["data"]][:2] == ["user_message", "assistant_message"]


def test_a_new_thread_over_the_cap_writes_nothing(fake_openai, visitor, chatkit_widget):
    from chatkit.models import ChatKitThread
    from licenses.services import license_update
    from widgets.models import Conversation

    visitor.send("first")
    license_update(license=chatkit_widget.license, limits={"monthly_conversations": 1})

    response, (error,) = visitor.send("second")
    assert response.status_code == 429 and error["error"]["code"] == "quota_exceeded"
    assert ChatKitThread.objects.count() == 1 and Conversation.objects.count() == 1


def test_the_cap_is_read_from_the_license_row_itself(fake_openai, visitor, chatkit_widget):
    """The count is checked against the stored cap even when the license came from the cache."""
    from licenses.models import License

    visitor.send("first")
    License.objects.filter(pk=chatkit_widget.license.pk).update(limits={"monthly_conversations": 1})

    response, (error,) = visitor.send("second")
    assert response.status_code == 429 and error["error"]["code"] == "quota_exceeded"


def test_a_visitor_over_its_own_limit_does_not_use_up_its_licenses(fake_openai, visitor, settings, frozen_minute):
    settings.CHATKIT_VISITOR_RATE_PER_MINUTE = 1
    settings.CHATKIT_LICENSE_RATE_PER_MINUTE = 2
    assert visitor.send("one")[0].status_code == 200
    for _ in range(3):
        assert visitor.send("again")[0].status_code == 429

    assert ChatKitVisitor(visitor.widget).send("hello")[0].status_code == 200
    assert ChatKitVisitor(visitor.widget).send("hello")[0].status_code == 429  # the license's second was used


@pytest.mark.parametrize("turns", [1, 2])
def test_history_of_a_thread_opened_in_the_request_is_what_it_holds(fake_openai, visitor, turns):
    """The first turn's history comes from the request's own items; the next turn's from the database:
    the model gets the same input shape either way."""
    _, events = visitor.send("first question")
    thread_id = thread_id_of(events)
    if turns == 2:
        visitor.send("second question", thread_id)
    bodies = [r.body for r in fake_openai.requests if r.path == "/v1/responses"]
    texts = [[part["text"] for m in b["input"] if m.get("role") == "user" for part in m["content"]] for b in bodies]
    assert texts[0] == ["first question"]
    if turns == 2:
        assert texts[1][0] == "first question" and texts[1][-1] == "second question"
