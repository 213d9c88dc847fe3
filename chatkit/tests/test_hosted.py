"""Hosted mode (Agent Builder workflows) is retired: OpenAI shut Agent Builder down on 2026-11-30.

Hosted widgets answer 410 `hosted_retired` locally, without calling OpenAI, everywhere a visitor or
the configurator could reach them; the configurator offers "Migrate to server mode" instead."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from chatkit.tests.conftest import ALLOWED, WORKFLOW_ID, ChatKitVisitor
from licenses.models import LicenseUsage
from widgets.models import Conversation

pytestmark = pytest.mark.django_db


def test_public_session_endpoint_is_410_without_calling_openai(fake_openai, hosted_widget):
    response = Client().post(
        "/api/chatkit/sessions",
        data=json.dumps({"license": hosted_widget.license.key, "widget": hosted_widget.public_id, "visitor_id": "v1"}),
        content_type="application/json",
        HTTP_ORIGIN=ALLOWED,
    )

    assert response.status_code == 410
    assert response.json()["error"]["code"] == "hosted_retired"
    assert "2026-11-30" in response.json()["error"]["message"]
    assert fake_openai.requests == []
    assert not Conversation.objects.exists() and not LicenseUsage.objects.exists()
    assert WORKFLOW_ID not in response.content.decode()


def test_preview_session_endpoint_is_410_too(fake_openai, hosted_widget, owner, api):
    response = api(owner).post("/api/chatkit/preview-sessions", {"widget": hosted_widget.public_id}, format="json")
    assert response.status_code == 410 and response.json()["error"]["code"] == "hosted_retired"
    assert fake_openai.requests == []


def test_server_endpoint_answers_410_for_a_hosted_widget(fake_openai, hosted_widget):
    response, (error,) = ChatKitVisitor(hosted_widget).send("hello")
    assert response.status_code == 410 and error["error"]["code"] == "hosted_retired"
    assert fake_openai.requests == []


def test_hosted_page_says_why_in_words(fake_openai, hosted_widget):
    response = Client().get(
        f"/widget/chatkit/{hosted_widget.license.key}",
        {"widget": hosted_widget.public_id, "origin": ALLOWED},
        HTTP_REFERER=ALLOWED + "/",
    )
    text = response.content.decode()
    assert response.status_code == 200
    assert 'data-testid="problem"' in text and "shut down on 2026-11-30" in text
    assert "openai-chatkit" not in text.split("</style>")[1]  # nothing to mount
    assert WORKFLOW_ID not in text


def test_test_connection_for_a_hosted_draft_says_it_is_retired_without_calling_openai(
    fake_openai, hosted_widget, owner
):
    client = Client()
    client.force_login(owner)
    response = client.post(
        f"/app/widgets/{hosted_widget.public_id}/test-connection/", data="{}", content_type="application/json"
    )
    assert response.json()["ok"] is False and response.json()["code"] == "hosted_retired"
    assert "Migrate to server mode" in response.json()["message"]
    assert fake_openai.requests == []
