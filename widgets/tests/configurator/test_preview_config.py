"""POST /app/widgets/<id>/preview-config/: the server's public projection of an UNSAVED draft, which the
configurator hands to the preview frame (issue 12.4: no config projection copied into JavaScript)."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from widgets.config_schema import config_normalize, config_public
from widgets.services.widgets import widget_update

pytestmark = pytest.mark.django_db


def url(widget):
    return reverse("app-widget-preview-config", kwargs={"public_id": widget.public_id})


def post(client, user, widget, body, **extra):
    if user is not None:
        client.force_login(user)
    return client.post(url(widget), data=json.dumps(body), content_type="application/json", **extra)


DRAFT = {
    "appearance": {"n8n": {"title": "Unsaved title", "primary_color": "#0f766e"}},
    "behaviour": {"locale": "de", "greeting": "Hallo"},
    "voice": {"enabled": True},
}


@pytest.mark.parametrize("persona", ["owner", "member", "viewer"])
def test_any_member_gets_the_public_projection_of_the_draft(client, widget_a, persona, request):
    response = post(client, request.getfixturevalue(persona), widget_a, {"config": DRAFT})
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    expected = config_public(config_normalize(DRAFT, base=widget_a.config))
    assert response.json() == {"config": expected}
    assert expected["appearance"]["title"] == "Unsaved title" and expected["strings"]["send"] != "Send"  # German
    widget_a.refresh_from_db()
    assert widget_a.config["appearance"]["n8n"]["title"] != "Unsaved title"  # nothing saved


def test_the_projection_carries_no_secret_and_no_connection_detail(client, owner, widget_a):
    widget_update(
        widget=widget_a,
        membership=owner.memberships.get(),
        config={"connection": {"n8n": {"webhook_url": "https://n8n.example/webhook/abc/chat"}}},
        secrets={"n8n_basic_auth_user": "bob", "n8n_basic_auth_password": "hunter2-secret"},
    )
    response = post(client, owner, widget_a, {"config": {"connection": {"n8n": {"streaming": True}}}})
    assert response.status_code == 200
    body = response.content.decode()
    assert response.json()["config"]["connection"]["streaming"] is True
    for hidden in ("hunter2-secret", "n8n.example", "webhook", "instructions", "bob"):
        assert hidden not in body


def test_an_invalid_draft_is_400_with_the_field(client, owner, widget_a):
    response = post(client, owner, widget_a, {"config": {"appearance": {"n8n": {"primary_color": "teal"}}}})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_config" and "config.appearance.n8n.primary_color" in error["fields"]


@pytest.mark.parametrize("body", [{}, {"config": "x"}, {"config": [1]}])
def test_the_draft_must_be_an_object(client, owner, widget_a, body):
    response = post(client, owner, widget_a, body)
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_config"


def test_outsider_gets_404_and_signed_out_goes_to_login(client, outsider, widget_a):
    assert post(client, outsider, widget_a, {"config": DRAFT}).status_code == 404
    client.logout()
    response = post(client, None, widget_a, {"config": DRAFT})
    assert response.status_code == 302 and "/app/login/" in response["Location"]


def test_only_post(client, owner, widget_a):
    client.force_login(owner)
    assert client.get(url(widget_a)).status_code == 405


def test_csrf_is_required(owner, widget_a):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    response = post(client, owner, widget_a, {"config": DRAFT})
    assert response.status_code == 403
