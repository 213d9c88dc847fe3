"""n8n credentials stay with the webhook they were saved for; the server never calls private networks
in production (N8N_ALLOW_PRIVATE_NETWORKS off)."""

import base64

import pytest

from widgets.tests.conftest import N8N_PASSWORD, N8N_USER, ORIGIN, n8n_config, publish

pytestmark = pytest.mark.django_db


def chat(client, widget, text="hi"):
    return client.post(f"/api/widget/{widget.license.key}/chat", {"action": "sendMessage", "sessionId": "s_sec",
                       "chatInput": text}, content_type="application/json", HTTP_ORIGIN=ORIGIN)


def auth_headers(fake):
    return [r.headers.get("authorization") for r in fake.requests]


def basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def second_n8n(fake_n8n):
    """A second webhook host: same fake server reached as `localhost` (another origin than 127.0.0.1)."""
    return fake_n8n.webhook.replace("127.0.0.1", "localhost")


def test_credentials_go_to_the_webhook_they_were_saved_for(client, n8n_widget, owner, fake_n8n):
    n8n_widget = publish(n8n_widget, owner, config=n8n_config(fake_n8n.webhook, basic_auth=True))
    assert chat(client, n8n_widget).status_code == 200
    assert auth_headers(fake_n8n) == [basic(N8N_USER, N8N_PASSWORD)]
    assert "n8n_basic_auth_origin" not in str(client.get(f"/api/v1/widgets/{n8n_widget.public_id}/").content)


def test_an_editor_cannot_send_the_stored_credentials_to_another_host(client, n8n_widget, member, fake_n8n,
                                                                      second_n8n):
    client.force_login(member)  # an editor: may test connections, never sees secrets
    response = client.post(f"/app/widgets/{n8n_widget.public_id}/test-connection/",
                           {"config": {"connection": {"n8n": {"webhook_url": second_n8n, "basic_auth": True}}}},
                           content_type="application/json")
    assert response.status_code == 200
    # The stored credentials belong to the other host: the test asks for them instead of calling without.
    assert response.json()["code"] == "not_configured"
    assert auth_headers(fake_n8n) == []


def test_moving_the_webhook_to_another_host_drops_the_credentials_until_entered_again(
        client, n8n_widget, owner, fake_n8n, second_n8n):
    widget = publish(n8n_widget, owner, config=n8n_config(second_n8n, basic_auth=True))
    chat(client, widget)
    assert auth_headers(fake_n8n) == [None]
    widget = publish(widget, owner, secrets={"n8n_basic_auth_user": N8N_USER, "n8n_basic_auth_password": "new-pass"})
    chat(client, widget, "again")
    assert auth_headers(fake_n8n)[-1] == basic(N8N_USER, "new-pass")


def test_private_webhook_addresses_are_refused_in_production(client, settings, n8n_widget, member, fake_n8n):
    settings.N8N_ALLOW_PRIVATE_NETWORKS = False
    response = chat(client, n8n_widget)
    assert response.status_code == 502 and response.json()["error"]["code"] == "target_not_allowed"
    assert fake_n8n.webhook not in response.content.decode()
    client.force_login(member)
    result = client.post(f"/app/widgets/{n8n_widget.public_id}/test-connection/", {},
                         content_type="application/json").json()
    assert result["code"] == "not_allowed" and not result["ok"]
    assert fake_n8n.requests == []
