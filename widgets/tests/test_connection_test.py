"""Test connection tells the truth: a real sendMessage, reported as a visitor would experience it."""

from __future__ import annotations

import pytest

from licenses.models import LicenseUsage, Membership
from licenses.tests.factories import MembershipFactory, UserFactory
from widgets.connection_test import TEST_MESSAGE
from widgets.models import Conversation, Message
from widgets.services.widgets import widget_update

pytestmark = pytest.mark.django_db


@pytest.fixture
def tester(client, owner, widget_a, fake_n8n):
    """tester(**n8n settings, body extras) -> the JSON answer of Test connection for the form's values."""
    client.force_login(owner)

    def run(secrets: dict | None = None, message: str | None = None, **n8n):
        body: dict = {"config": {"connection": {"n8n": {"webhook_url": fake_n8n.webhook, **n8n}}}}
        if secrets:
            body["secrets"] = secrets
        if message is not None:
            body["message"] = message
        response = client.post(
            f"/app/widgets/{widget_a.public_id}/test-connection/", body, content_type="application/json"
        )
        assert response.status_code == 200, response.content
        return response.json()

    return run


def test_sends_a_real_message_in_a_test_session_and_records_nothing(tester, fake_n8n):
    fake_n8n.reply(
        json={
            "output": "Hi! We are open until 6pm.",
            "ui": [{"type": "ui.product_cards", "products": [{"id": "1", "title": "A"}, {"id": "2", "title": "B"}]}],
        }
    )
    data = tester()
    assert data["ok"] is True and data["code"] == "ok"
    assert data["reply"] == "Hi! We are open until 6pm."
    assert data["message"].startswith("Connected. The workflow answered in ")
    assert "with 2 product cards: “Hi! We are open until 6pm.”" in data["message"]
    assert isinstance(data["latency_ms"], int)
    (sent,) = fake_n8n.requests
    assert sent.body["action"] == "sendMessage" and sent.body["chatInput"] == TEST_MESSAGE
    assert sent.body["sessionId"].startswith("switchboard-connection-test-")
    assert sent.body["metadata"] == {"source": "switchboard-connection-test", "test": True}
    assert not Conversation.objects.exists() and not Message.objects.exists()
    assert not LicenseUsage.objects.exists()


def test_sends_the_message_the_user_typed(tester, fake_n8n):
    tester(message="  Do you sell phones?  ")
    assert fake_n8n.sent[0]["chatInput"] == "Do you sell phones?"


def test_a_workflow_that_fails_every_message_is_not_connected(tester, fake_n8n):
    """n8n answers loadPreviousSession without running the workflow: only a sendMessage shows this."""
    fake_n8n.reply(json={"message": "Error in workflow"}, status=500)
    data = tester()
    assert data["ok"] is False and data["code"] == "upstream_error"
    assert data["message"] == (
        "The workflow failed with a server error (500), so visitors would get an error "
        "instead of an answer. n8n said: “Error in workflow”."
    )


def test_a_workflow_slower_than_visitors_wait_is_a_timeout(tester, fake_n8n, settings):
    settings.N8N_TOTAL_TIMEOUT = 0.5
    fake_n8n.reply(sleep=2)
    data = tester()
    assert data["code"] == "timeout"
    assert data["message"] == (
        "The workflow did not answer within 0.5 seconds, so visitors would see a timeout message instead of an answer."
    )


def test_a_slow_but_working_workflow_is_connected_with_a_warning(tester, fake_n8n, monkeypatch):
    from widgets import connection_test

    monkeypatch.setattr(connection_test, "SLOW_SECONDS", 0.2)
    fake_n8n.reply(stream=[{"output": "Finally."}], delay=0.3)
    data = tester()
    assert data["ok"] and data["reply"] == "Finally." and "That is slow: visitors wait" in data["message"]


@pytest.mark.parametrize("status", [401, 403])
def test_bad_or_missing_credentials(tester, fake_n8n, status):
    fake_n8n.reply(json={"message": "Authorization data is wrong!"}, status=status)
    data = tester()
    assert data["code"] == "unauthorised" and "asks for a username and password" in data["message"]
    fake_n8n.reply(json={"message": "Authorization data is wrong!"}, status=status)
    data = tester(basic_auth=True, secrets={"n8n_basic_auth_user": "u", "n8n_basic_auth_password": "pw-SECRET"})
    assert data["code"] == "unauthorised" and "refused the username and password" in data["message"]
    assert fake_n8n.requests[-1].headers["authorization"].startswith("Basic ")
    assert "pw-SECRET" not in str(data)


def test_basic_auth_without_credentials_is_not_configured(tester, fake_n8n):
    data = tester(basic_auth=True)
    assert data["code"] == "not_configured" and fake_n8n.requests == []


def test_unknown_webhook(tester, fake_n8n):
    fake_n8n.reply(json={"code": 404, "message": 'The requested webhook "POST chat" is not registered.'}, status=404)
    data = tester()
    assert data["code"] == "not_found" and "the workflow is active" in data["message"]


@pytest.mark.parametrize(
    "reply,says",
    [
        ({"raw": "<html><body>n8n</body></html>", "content_type": "text/html"}, "web page"),
        ({"json": {"message": "Workflow was started"}}, "answers before the workflow runs"),
        ({"json": {"id": 42, "status": "done"}}, "does not look like an n8n Chat Trigger"),
        ({"raw": "", "content_type": "application/json"}, "empty or not readable"),
        ({"raw": "[" * 100_000 + "]" * 100_000, "content_type": "application/json"}, "empty or not readable"),
    ],
)
def test_not_an_n8n_chat_trigger(tester, fake_n8n, reply, says):
    fake_n8n.reply(**reply)
    data = tester()
    assert data["code"] == "not_chat_trigger" and says in data["message"]


STREAM = [
    {"type": "begin", "metadata": {}},
    {"type": "item", "content": "Hello "},
    {"type": "item", "content": "there."},
    {"type": "end", "metadata": {}},
]


def test_streaming_workflow(tester, fake_n8n):
    fake_n8n.reply(stream=STREAM)
    data = tester(streaming=True)
    assert data["ok"] and data["reply"] == "Hello there."
    fake_n8n.reply(stream=STREAM)
    data = tester(streaming=False)
    assert data["code"] == "streaming_mismatch" and "turn on stream replies" in data["message"].lower()
    fake_n8n.reply(stream=[*STREAM[:2], {"type": "error", "content": "boom"}])
    assert tester(streaming=True)["code"] == "upstream_error"


def test_unreachable_names_the_host(tester, client, owner, widget_a):
    response = client.post(
        f"/app/widgets/{widget_a.public_id}/test-connection/",
        {"config": {"connection": {"n8n": {"webhook_url": "http://127.0.0.1:9/hook"}}}},
        content_type="application/json",
    )
    assert response.json() == {
        "ok": False,
        "code": "unreachable",
        "message": "Could not connect to 127.0.0.1. Check the address and that n8n is running.",
    }


def test_private_addresses_are_refused_in_production(tester, fake_n8n, settings):
    settings.N8N_ALLOW_PRIVATE_NETWORKS = False
    data = tester()
    assert data["code"] == "not_allowed" and fake_n8n.requests == []


def test_messages_have_no_field_paths(client, owner, widget_a):
    client.force_login(owner)
    response = client.post(
        f"/app/widgets/{widget_a.public_id}/test-connection/",
        {"config": {"connection": {"n8n": {"webhook_url": "nope"}}}},
        content_type="application/json",
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["message"] == "Webhook URL: an http(s) URL, or empty."
    assert "config.connection.n8n.webhook_url" in error["fields"]  # the form still highlights the field


def test_outsider_and_viewer(client, outsider, widget_a, fake_n8n, agency_a):
    client.force_login(outsider)
    url = f"/app/widgets/{widget_a.public_id}/test-connection/"
    assert client.post(url, {}, content_type="application/json").status_code == 404
    viewer = UserFactory(username="viewer-x")
    MembershipFactory(user=viewer, agency=agency_a, role=Membership.Role.VIEWER)
    client.force_login(viewer)
    assert client.post(url, {}, content_type="application/json").status_code == 403
    assert fake_n8n.requests == []


def test_the_saved_draft_is_used_when_the_form_sends_nothing(client, owner, widget_a, fake_n8n):
    widget_update(
        widget=widget_a,
        membership=owner.memberships.get(),
        config={"connection": {"n8n": {"webhook_url": fake_n8n.webhook}}},
    )
    client.force_login(owner)
    data = client.post(
        f"/app/widgets/{widget_a.public_id}/test-connection/", {}, content_type="application/json"
    ).json()
    assert data["ok"] and data["reply"] == "Hello from n8n"
