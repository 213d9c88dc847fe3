"""Public JSON endpoints: config, leads, the Origin matrix of every endpoint, and no secret in any answer."""

from __future__ import annotations

import json

import pytest

from licenses.services import license_suspend
from widgets.models import Conversation, Lead
from widgets.tests.conftest import N8N_PASSWORD, N8N_USER, OPENAI_KEY, ORIGIN, publish
from widgets.tests.factories import WidgetFactory

pytestmark = pytest.mark.django_db

LEAD = {
    "source": "trade_in_form",
    "name": "Ada",
    "email": "ada@example.com",
    "phone": "+1 555 0100",
    "interest": "Pixel 7",
    "data": {"device": "Pixel 7", "condition": "Good"},
}


def call(client, method, path, origin=ORIGIN, body=None):
    headers = {} if origin is None else {"HTTP_ORIGIN": origin}
    if method == "GET":
        return client.get(path, **headers)
    if method == "OPTIONS":
        return client.options(path, HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST", **headers)
    return client.post(path, data=json.dumps(body or {}), content_type="application/json", **headers)


def endpoints(key: str) -> list[tuple[str, str, dict | None, int]]:
    """Each public endpoint with a valid body and the status it answers an allowed origin."""
    return [
        ("GET", f"/api/widget/{key}/config", None, 200),
        ("POST", f"/api/widget/{key}/chat", {"action": "sendMessage", "sessionId": "s-1", "chatInput": "Hello"}, 200),
        ("POST", f"/api/widget/{key}/leads", LEAD, 201),
    ]


def test_config_is_the_published_public_config(client, n8n_widget):
    response = client.get(f"/api/widget/{n8n_widget.license.key}/config", HTTP_ORIGIN=ORIGIN)
    assert response.status_code == 200
    data = response.json()
    assert data["widget"] == n8n_widget.public_id
    assert data["type"] == "n8n"
    assert data["version"] == n8n_widget.published_version.number
    assert data["config"]["appearance"]["title"] == "Acme Phones"
    assert set(data["config"]["connection"]) == {"provider", "streaming", "chatkit_mode"}
    assert response["Access-Control-Allow-Origin"] == ORIGIN
    assert response["Vary"] == "Origin"


def test_config_widget_param_of_another_license_is_404(client, n8n_widget, widget_b):
    response = client.get(
        f"/api/widget/{widget_b.license.key}/config?widget={n8n_widget.public_id}", HTTP_ORIGIN=ORIGIN
    )
    assert response.status_code == 404
    assert n8n_widget.public_id not in response.content.decode()


ORIGIN_CASES = [
    ("https://shop.example.com", True, None),
    ("https://a.example.org", True, None),  # *.example.org
    ("https://deep.a.example.org", True, None),
    ("http://localhost:3000", True, None),
    ("https://example.org", False, "domain_not_allowed"),  # the apex is not covered by *.example.org
    ("https://evil.test", False, "domain_not_allowed"),
    ("https://shop.example.com.evil.test", False, "domain_not_allowed"),
    (None, False, "origin_missing"),
    ("null", False, "origin_missing"),
]


@pytest.mark.parametrize("origin,allowed,reason", ORIGIN_CASES)
def test_origin_matrix_of_every_public_endpoint(client, n8n_widget, fake_n8n, origin, allowed, reason):
    for method, path, body, ok_status in endpoints(n8n_widget.license.key):
        response = call(client, method, path, origin=origin, body=body)
        if allowed:
            assert response.status_code == ok_status, (path, response.content)
            assert response["Access-Control-Allow-Origin"] == origin
        else:
            assert response.status_code == 403, (path, origin)
            assert response.json()["error"]["code"] == reason
            assert set(response.json()) == {"error"}  # the refused page may read why, and nothing else
            if origin in (None, "null"):
                assert "Access-Control-Allow-Origin" not in response
            else:
                assert response["Access-Control-Allow-Origin"] == origin
    if not allowed:
        assert fake_n8n.requests == []
        assert Conversation.objects.count() == 0
        assert Lead.objects.count() == 0


@pytest.mark.parametrize("origin,allowed", [("https://a.example.org", True), ("https://evil.test", False)])
def test_preflight_only_for_allowed_origins(client, n8n_widget, origin, allowed):
    for method, path, _, _ in endpoints(n8n_widget.license.key):
        response = call(client, "OPTIONS", path, origin=origin)
        assert response.status_code == 204
        assert ("Access-Control-Allow-Origin" in response) is allowed
        if allowed:
            assert "X-Switchboard-Visitor" in response["Access-Control-Allow-Headers"]
            assert method in response["Access-Control-Allow-Methods"]


def test_unknown_key_and_suspended_license_on_every_endpoint(client, n8n_widget):
    for method, path, body, _ in endpoints("lic_nope"):
        response = call(client, method, path, body=body)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "unknown_license"
    license_suspend(license=n8n_widget.license)
    for method, path, body, _ in endpoints(n8n_widget.license.key):
        response = call(client, method, path, body=body)
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "suspended"


def test_no_secret_in_any_public_response(client, n8n_widget, fake_n8n, owner, license_a):
    chatkit = publish(
        WidgetFactory(license=license_a, provider="chatkit"), owner, secrets={"openai_api_key": OPENAI_KEY}
    )
    fake_n8n.reply(json={"error": f"failed calling {fake_n8n.webhook}"}, status=500)
    key = license_a.key
    responses = [
        client.get(f"/api/widget/{key}/chat-widget.js"),
        client.get(f"/api/widget/{key}/chat-widget.js?widget={chatkit.public_id}"),
        client.get(f"/api/widget/{key}/config", HTTP_ORIGIN=ORIGIN),
        client.get(f"/api/widget/{key}/config?widget={chatkit.public_id}", HTTP_ORIGIN=ORIGIN),
        client.get(f"/api/widget/{key}/config", HTTP_ORIGIN="https://evil.test"),
    ]
    for method, path, body, _ in endpoints(key):
        responses.append(call(client, method, path, body=body))
    responses.append(
        call(client, "POST", f"/api/widget/{key}/chat", body={"action": "loadPreviousSession", "sessionId": "s"})
    )
    assert [r.status_code for r in responses[:5]] == [200, 200, 200, 200, 403]
    assert n8n_widget.public_id in responses[2].content.decode()  # real answers, not empty ones
    for response in responses:
        content = response.content.decode()
        for secret in (N8N_PASSWORD, N8N_USER, OPENAI_KEY, fake_n8n.webhook, fake_n8n.url, "secret-hook"):
            assert secret not in content, (secret, content[:200])


def test_lead_is_stored_with_source_and_fields(client, n8n_widget, fake_n8n):
    # A conversation first, so the lead links to it.
    call(
        client,
        "POST",
        f"/api/widget/{n8n_widget.license.key}/chat",
        body={"action": "sendMessage", "sessionId": "sess-lead", "chatInput": "Trade in?"},
    )
    response = call(
        client, "POST", f"/api/widget/{n8n_widget.license.key}/leads", body={**LEAD, "sessionId": "sess-lead"}
    )
    assert response.status_code == 201
    lead = Lead.objects.get()
    assert response.json() == {"id": lead.pk, "status": "received"}
    assert lead.widget == n8n_widget
    assert lead.source == "trade_in_form"
    assert (lead.name, lead.email, lead.phone, lead.interest) == ("Ada", "ada@example.com", "+1 555 0100", "Pixel 7")
    assert lead.data == {"device": "Pixel 7", "condition": "Good"}
    assert lead.delivery_status == "pending"
    assert lead.conversation == Conversation.objects.get(session_id="sess-lead")


@pytest.mark.parametrize(
    "body,field",
    [
        ({**LEAD, "email": "not-an-email"}, "email"),
        ({**LEAD, "email": "", "phone": ""}, "email"),
        ({**LEAD, "source": "spam"}, "source"),
        ({**LEAD, "name": "x" * 201}, "name"),
        ({**LEAD, "data": ["nope"]}, "data"),
    ],
)
def test_invalid_lead_is_400_naming_the_field(client, n8n_widget, body, field):
    response = call(client, "POST", f"/api/widget/{n8n_widget.license.key}/leads", body=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert field in error["fields"]
    assert Lead.objects.count() == 0


def test_lead_bad_json_is_400(client, n8n_widget):
    response = client.post(
        f"/api/widget/{n8n_widget.license.key}/leads", data="{", content_type="application/json", HTTP_ORIGIN=ORIGIN
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"


def test_config_in_another_locale_for_set_locale(client, n8n_widget, owner):
    publish(n8n_widget, owner, config={"behaviour": {"strings": {"send": "Go"}}})
    path = f"/api/widget/{n8n_widget.license.key}/config?widget={n8n_widget.public_id}"
    english = client.get(path, HTTP_ORIGIN=ORIGIN).json()["config"]
    german = client.get(path + "&locale=de-AT", HTTP_ORIGIN=ORIGIN).json()["config"]
    assert english["strings"]["placeholder"] == "Type your message…"
    assert german["strings"]["placeholder"] == "Nachricht eingeben…"
    assert german["behaviour"]["locale"] == "de-AT"
    assert german["strings"]["send"] == english["strings"]["send"] == "Go"  # the agency's override stays
    assert {k: v for k, v in german.items() if k not in ("strings", "behaviour")} == {
        k: v for k, v in english.items() if k not in ("strings", "behaviour")
    }
    for bad in ("german", "DE", "de_AT", "x" * 20):
        response = client.get(path + f"&locale={bad}", HTTP_ORIGIN=ORIGIN)
        assert response.status_code == 400
        assert response.json() == {
            "error": {"code": "invalid_locale", "message": 'locale must look like "de" or "fr-CA".'}
        }
        assert response["Access-Control-Allow-Origin"] == ORIGIN
    # A refused origin learns nothing, whatever the locale.
    response = client.get(path + "&locale=de", HTTP_ORIGIN="https://evil.example.net")
    assert response.status_code == 403 and "strings" not in response.content.decode()
