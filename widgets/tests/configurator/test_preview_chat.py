"""Issue 10.6: the preview chats with the editor's unsaved draft (as Test connection tests it), with the
public chat's rules, and streams like the live widget; nothing is recorded or counted."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from licenses.models import LicenseUsage
from widgets.models import Conversation, Message, PreviewLink
from widgets.services.preview_links import preview_link_token

pytestmark = pytest.mark.django_db


def preview_url(widget):
    return reverse("app-widget-preview-chat", kwargs={"public_id": widget.public_id})


def post(client, user, widget, body):
    client.force_login(user)
    return client.post(preview_url(widget), data=json.dumps(body), content_type="application/json")


def unsaved(webhook, **n8n):
    return {"connection": {"provider": "n8n", "n8n": {"webhook_url": webhook, **n8n}}}


def test_preview_chats_with_the_unsaved_webhook(client, owner, widget_a, fake_n8n):
    assert widget_a.config["connection"]["n8n"]["webhook_url"] == ""  # nothing saved
    response = post(
        client,
        owner,
        widget_a,
        {"action": "sendMessage", "sessionId": "p1", "chatInput": "hi", "config": unsaved(fake_n8n.webhook)},
    )
    assert response.status_code == 200, response.content
    assert response.json() == {"output": "Hello from n8n", "ui": []}
    [sent] = fake_n8n.sent
    assert sent["chatInput"] == "hi" and sent["metadata"]["preview"] is True
    assert not Conversation.objects.exists() and not LicenseUsage.objects.exists()


def test_preview_streams_like_the_live_widget(client, owner, widget_a, fake_n8n):
    fake_n8n.reply(
        stream=[
            {"type": "begin"},
            {"type": "item", "content": "Draft "},
            {"type": "item", "content": "answer"},
            {"type": "end"},
        ]
    )
    response = post(
        client,
        owner,
        widget_a,
        {
            "action": "sendMessage",
            "sessionId": "p2",
            "chatInput": "hi",
            "config": unsaved(fake_n8n.webhook, streaming=True),
        },
    )
    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-ndjson" and response.streaming
    lines = [json.loads(line) for line in b"".join(response.streaming_content).splitlines()]
    assert lines == [
        {"type": "item", "content": "Draft "},
        {"type": "item", "content": "answer"},
        {"type": "end", "output": "Draft answer", "ui": []},
    ]
    assert not Message.objects.exists()


def test_preview_uses_unsaved_credentials_only_for_their_webhook(client, owner, widget_a, fake_n8n):
    body = {
        "action": "sendMessage",
        "sessionId": "p3",
        "chatInput": "hi",
        "config": unsaved(fake_n8n.webhook, basic_auth=True),
        "secrets": {"n8n_basic_auth_user": "u", "n8n_basic_auth_password": "typed-not-saved"},
    }
    assert post(client, owner, widget_a, body).status_code == 200
    assert fake_n8n.requests[0].headers["authorization"].startswith("Basic ")
    widget_a.refresh_from_db()
    assert "n8n_basic_auth_password" not in (widget_a.secrets or {})  # the preview saves nothing


@pytest.mark.parametrize(
    "body,code",
    [
        ({"action": "sendMessage", "sessionId": "s", "chatInput": "  "}, "empty_message"),
        ({"action": "sendMessage", "sessionId": "s", "chatInput": "x" * 4001}, "message_too_long"),
        ({"action": "sendMessage", "chatInput": "hi"}, "invalid_session_id"),
        ({"action": "dropTables", "sessionId": "s"}, "invalid_action"),
        ({"action": "sendMessage", "sessionId": "s", "chatInput": "hi", "metadata": [1]}, "invalid_metadata"),
    ],
)
def test_preview_applies_the_public_chat_rules(client, owner, widget_a, fake_n8n, body, code):
    response = post(client, owner, widget_a, {**body, "config": unsaved(fake_n8n.webhook)})
    assert response.status_code == 400 and response.json()["error"]["code"] == code
    assert fake_n8n.requests == []


def test_an_invalid_unsaved_config_is_named_like_test_connection(client, owner, widget_a, fake_n8n):
    response = post(
        client,
        owner,
        widget_a,
        {"action": "sendMessage", "sessionId": "s", "chatInput": "hi", "config": unsaved("not a url")},
    )
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_config"
    assert fake_n8n.requests == []


def test_a_viewer_chats_with_the_saved_draft_only(client, viewer, widget_a, fake_n8n):
    response = post(
        client,
        viewer,
        widget_a,
        {"action": "sendMessage", "sessionId": "s", "chatInput": "hi", "config": unsaved(fake_n8n.webhook)},
    )
    assert response.status_code == 503 and response.json()["error"]["code"] == "not_configured"
    assert fake_n8n.requests == []


def test_an_outsider_cannot_preview_chat_even_with_a_config(client, outsider, widget_a, fake_n8n):
    response = post(
        client,
        outsider,
        widget_a,
        {"action": "sendMessage", "sessionId": "s", "chatInput": "hi", "config": unsaved(fake_n8n.webhook)},
    )
    assert response.status_code == 404
    assert fake_n8n.requests == []


def test_a_share_link_cannot_change_the_config(client, owner, widget_a, fake_n8n):
    link = PreviewLink.objects.create(widget=widget_a, expires_at=timezone.now() + timedelta(days=1))
    response = client.post(
        reverse("app-share-chat", kwargs={"token": preview_link_token(link)}),
        data=json.dumps(
            {"action": "sendMessage", "sessionId": "s", "chatInput": "hi", "config": unsaved(fake_n8n.webhook)}
        ),
        content_type="application/json",
    )
    assert response.status_code == 503 and response.json()["error"]["code"] == "not_configured"
    assert fake_n8n.requests == []
