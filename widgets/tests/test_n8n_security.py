"""n8n credentials stay with the webhook they were saved for; the server never calls private networks
in production (N8N_ALLOW_PRIVATE_NETWORKS off)."""

import base64

import pytest

from widgets.tests.conftest import N8N_PASSWORD, N8N_USER, ORIGIN, n8n_config, publish

pytestmark = pytest.mark.django_db


def chat(client, widget, text="hi"):
    return client.post(
        f"/api/widget/{widget.license.key}/chat",
        {"action": "sendMessage", "sessionId": "s_sec", "chatInput": text},
        content_type="application/json",
        HTTP_ORIGIN=ORIGIN,
    )


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


def test_an_editor_cannot_send_the_stored_credentials_to_another_host(client, n8n_widget, member, fake_n8n, second_n8n):
    client.force_login(member)  # an editor: may test connections, never sees secrets
    response = client.post(
        f"/app/widgets/{n8n_widget.public_id}/test-connection/",
        {"config": {"connection": {"n8n": {"webhook_url": second_n8n, "basic_auth": True}}}},
        content_type="application/json",
    )
    assert response.status_code == 200
    # The stored credentials belong to the other host: the test asks for them instead of calling without.
    assert response.json()["code"] == "not_configured"
    assert auth_headers(fake_n8n) == []


def test_moving_the_webhook_to_another_host_drops_the_credentials_until_entered_again(
    client, n8n_widget, owner, fake_n8n, second_n8n
):
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
    result = client.post(
        f"/app/widgets/{n8n_widget.public_id}/test-connection/", {}, content_type="application/json"
    ).json()
    assert result["code"] == "not_allowed" and not result["ok"]
    assert fake_n8n.requests == []


@pytest.mark.parametrize("streaming", [False, True])
def test_a_webhook_name_resolving_to_a_private_address_is_refused_where_it_connects(
    client, settings, n8n_widget, owner, fake_n8n, second_n8n, streaming
):
    """A host name (here `localhost`) is checked on the addresses the pool connects to, not by a lookup of
    its own before the call, so a DNS answer cannot change between the check and the connection."""
    widget = publish(n8n_widget, owner, config=n8n_config(second_n8n, streaming=streaming))
    assert chat(client, widget).status_code == 200  # allowed while private networks are
    settings.N8N_ALLOW_PRIVATE_NETWORKS = False
    calls = len(fake_n8n.requests)
    response = chat(client, widget, "again")
    assert response.status_code == 502 and response.json()["error"]["code"] == "target_not_allowed"
    assert len(fake_n8n.requests) == calls  # not even a kept-alive connection of the allowed time is reused
    settings.N8N_ALLOW_PRIVATE_NETWORKS = True
    assert chat(client, widget, "back").status_code == 200


# --- issue 9 finding 1: a stored secret is only ever sent to the destination it was saved with ----

ATTACK_USER = {"n8n_basic_auth_user": "x"}


def _leaked(fake) -> list[str]:
    """Authorization headers that carry the stored password."""
    return [h for h in auth_headers(fake) if h and N8N_PASSWORD in base64.b64decode(h.split()[1]).decode()]


@pytest.fixture
def auth_widget(n8n_widget, owner, fake_n8n):
    """Basic auth on, credentials saved for fake_n8n.webhook, published."""
    return publish(n8n_widget, owner, config=n8n_config(fake_n8n.webhook, basic_auth=True))


@pytest.fixture(params=["other-host", "same-host-other-path"])
def attacker_url(request, fake_n8n, second_n8n):
    return second_n8n if request.param == "other-host" else fake_n8n.url + "/webhook/attacker-echo"


def _secret_status(api, user, widget) -> dict:
    return api(user).get(f"/api/v1/widgets/{widget.public_id}/").json()["secrets"]


def test_test_connection_to_an_attacker_url_with_a_new_user_never_sends_the_stored_password(
    client, auth_widget, member, fake_n8n, attacker_url
):
    client.force_login(member)
    response = client.post(
        f"/app/widgets/{auth_widget.public_id}/test-connection/",
        {
            "config": {"connection": {"n8n": {"webhook_url": attacker_url, "basic_auth": True}}},
            "secrets": ATTACK_USER,
        },
        content_type="application/json",
    )
    assert response.status_code == 200
    assert _leaked(fake_n8n) == [] and not any(auth_headers(fake_n8n))
    assert response.json()["code"] == "not_configured"  # basic auth on, no credentials for this address
    assert N8N_PASSWORD not in response.content.decode()


def test_draft_patch_then_preview_chat_never_sends_the_stored_password(
    client, api, auth_widget, member, fake_n8n, attacker_url
):
    response = api(member).patch(
        f"/api/v1/widgets/{auth_widget.public_id}/",
        {
            "config": {"connection": {"n8n": {"webhook_url": attacker_url, "basic_auth": True}}},
            "secrets": ATTACK_USER,
        },
        format="json",
    )
    assert response.status_code == 200
    assert response.json()["secrets"]["n8n_basic_auth_password"]["set"] is False  # cleared, not re-bound
    client.force_login(member)
    response = client.post(
        f"/app/widgets/{auth_widget.public_id}/preview-chat/",
        {"action": "sendMessage", "sessionId": "s_prev", "chatInput": "hi"},
        content_type="application/json",
    )
    assert response.status_code == 200
    assert fake_n8n.requests and _leaked(fake_n8n) == []


def test_rest_api_moving_the_webhook_without_re_entering_clears_both_credentials(
    api, auth_widget, member, fake_n8n, attacker_url, client
):
    response = api(member).patch(
        f"/api/v1/widgets/{auth_widget.public_id}/",
        {"config": {"connection": {"n8n": {"webhook_url": attacker_url}}}},
        format="json",
    )
    assert response.status_code == 200
    status = response.json()["secrets"]
    assert status["n8n_basic_auth_user"]["set"] is False and status["n8n_basic_auth_password"]["set"] is False
    # Moving back does not bring them back: they were cleared, not hidden.
    response = api(member).patch(
        f"/api/v1/widgets/{auth_widget.public_id}/",
        {"config": {"connection": {"n8n": {"webhook_url": fake_n8n.webhook}}}},
        format="json",
    )
    assert response.json()["secrets"]["n8n_basic_auth_password"]["set"] is False


def test_re_entering_both_credentials_with_the_new_url_binds_them_there(
    client, auth_widget, owner, fake_n8n, second_n8n
):
    widget = publish(
        auth_widget,
        owner,
        config=n8n_config(second_n8n, basic_auth=True),
        secrets={"n8n_basic_auth_user": "u2", "n8n_basic_auth_password": "p2"},
    )
    chat(client, widget)
    assert auth_headers(fake_n8n) == [basic("u2", "p2")]
    assert _leaked(fake_n8n) == []


def test_other_config_changes_keep_the_credentials(api, client, auth_widget, owner, member, fake_n8n):
    response = api(member).patch(
        f"/api/v1/widgets/{auth_widget.public_id}/",
        {"config": {"appearance": {"n8n": {"title": "New title"}}}},
        format="json",
    )
    assert response.json()["secrets"]["n8n_basic_auth_password"]["set"] is True
    widget = publish(auth_widget, owner)
    chat(client, widget)
    assert auth_headers(fake_n8n) == [basic(N8N_USER, N8N_PASSWORD)]


def test_only_the_user_re_entered_with_a_new_url_sends_no_credentials(client, auth_widget, owner, fake_n8n, second_n8n):
    widget = publish(auth_widget, owner, config=n8n_config(second_n8n, basic_auth=True), secrets=ATTACK_USER)
    chat(client, widget)
    assert auth_headers(fake_n8n) == [None]


def test_migration_moves_origin_bindings_to_the_live_webhook_url(n8n_widget, owner, fake_n8n):
    import importlib

    from django.apps import apps

    from widgets.models import Widget

    migration = importlib.import_module("widgets.migrations.0003_n8n_auth_bound_to_url")
    legacy = {"n8n_basic_auth_user": N8N_USER, "n8n_basic_auth_password": N8N_PASSWORD, "n8n_basic_auth_origin": ""}
    from licenses.domains import origin_normalize

    legacy["n8n_basic_auth_origin"] = origin_normalize(fake_n8n.url)
    Widget.objects.filter(pk=n8n_widget.pk).update(secrets=legacy)
    migration.forwards(apps, None)
    n8n_widget.refresh_from_db()
    assert n8n_widget.secrets == {
        "n8n_basic_auth_user": N8N_USER,
        "n8n_basic_auth_password": N8N_PASSWORD,
        "n8n_basic_auth_url": fake_n8n.webhook,
    }
    Widget.objects.filter(pk=n8n_widget.pk).update(secrets={**legacy, "n8n_basic_auth_origin": "https://x.test:443"})
    migration.forwards(apps, None)
    n8n_widget.refresh_from_db()
    assert n8n_widget.secrets == {}


# --- the pooled n8n client keeps no state between visitors or tenants -------------------------------


@pytest.mark.parametrize("streaming", [False, True])
def test_a_cookie_a_webhook_sets_is_never_sent_with_anyone_elses_message(
    client, n8n_widget, owner, widget_b, outsider, fake_n8n, second_n8n, streaming
):
    """Every visitor's message to every tenant's webhook goes through one pooled session per process; a
    cookie jar on it would keep what one visitor's answer set (n8n's Respond to Webhook node sets any header)
    and send it with every later message to that host — another visitor's, another agency's. The webhook is
    reached by a host name (`localhost`): a cookie jar keeps no cookie of an IP address."""
    ours = publish(n8n_widget, owner, config=n8n_config(second_n8n, streaming=streaming))
    theirs = publish(widget_b, outsider, config=n8n_config(second_n8n, streaming=streaming))
    answer = {"stream": [{"type": "item", "content": "hi"}]} if streaming else {"json": {"output": "hi"}}
    fake_n8n.reply(**answer, headers=[("Set-Cookie", "n8n_visitor=alice-private; Path=/")])
    for widget, session, visitor in ((ours, "s_alice", "alice"), (ours, "s_bob", "bob"), (theirs, "s_carol", "carol")):
        response = client.post(
            f"/api/widget/{widget.license.key}/chat?widget={widget.public_id}",
            {"action": "sendMessage", "sessionId": session, "chatInput": "hello"},
            content_type="application/json",
            HTTP_ORIGIN=ORIGIN,
            HTTP_X_SWITCHBOARD_VISITOR=visitor,
        )
        assert response.status_code == 200
        if streaming:
            b"".join(response.streaming_content)
    assert len(fake_n8n.sent) == 3
    assert [r.headers.get("cookie") for r in fake_n8n.requests] == [None, None, None]
