"""GET /api/realtime/config, POST /api/realtime/client-secret, POST /api/widget/<key>/tools/<name>."""

from __future__ import annotations

import json

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.test import Client

from realtime.tests.conftest import communicator, receive_until, wait_for
from realtime.views import tools_token_make
from widgets.models import Conversation
from widgets.tests.factories import ProductFactory

ORIGIN = "https://shop.example.com"


def get_config(client, widget, **headers):
    return client.get("/api/realtime/config", {"license": widget.license.key, "widget": widget.public_id}, **headers)


def post_secret(client, widget, *, origin=ORIGIN, **extra):
    body = {"license": widget.license.key, "widget": widget.public_id, "visitor_id": "visitor-1", **extra}
    headers = {"HTTP_ORIGIN": origin} if origin else {}
    return client.post("/api/realtime/client-secret", json.dumps(body), content_type="application/json", **headers)


@pytest.mark.django_db
class TestConfigEndpoint:
    def test_allowed_origin_gets_only_what_a_browser_needs(self, voice_widget):
        voice_widget.secrets = {"openai_api_key": "sk-tenant-secret-1234"}
        voice_widget.save()
        response = get_config(Client(), voice_widget, HTTP_ORIGIN=ORIGIN)
        assert response.status_code == 200
        assert response["Access-Control-Allow-Origin"] == ORIGIN
        session = response.json()
        assert session == {
            "type": "realtime",
            "model": settings.REALTIME_DEFAULT_MODEL,
            "output_modalities": ["audio"],
            "audio": {
                "input": {"format": {"type": "audio/pcm", "rate": 24000}},
                "output": {"format": {"type": "audio/pcm", "rate": 24000}},
            },
        }
        text = response.content.decode()
        assert "Open 9-5" not in text and "search_products" not in text and "instructions" not in text
        assert "sk-" not in text

    def test_member_gets_the_whole_session(self, voice_widget, member):
        client = Client()
        client.force_login(member)
        session = get_config(client, voice_widget, HTTP_ORIGIN=ORIGIN).json()
        assert "Open 9-5 Monday to Friday." in session["instructions"]
        assert {t["name"] for t in session["tools"]} >= {"search_products"}
        assert "turn_detection" in session["audio"]["input"]

    def test_anonymous_without_origin_is_refused(self, voice_widget):
        response = get_config(Client(), voice_widget)
        assert response.status_code == 403 and response.json()["error"]["code"] == "origin_missing"

    def test_foreign_origin_is_refused(self, voice_widget):
        response = get_config(Client(), voice_widget, HTTP_ORIGIN="https://evil.example.net")
        assert response.status_code == 403 and response.json()["error"]["code"] == "domain_not_allowed"
        assert "Access-Control-Allow-Origin" not in response

    def test_member_sees_it_without_origin(self, voice_widget, member):
        client = Client()
        client.force_login(member)
        assert get_config(client, voice_widget).json()["type"] == "realtime"

    def test_outsider_without_origin_is_refused(self, voice_widget, outsider):
        client = Client()
        client.force_login(outsider)
        response = get_config(client, voice_widget)
        assert response.status_code == 403 and "instructions" not in response.content.decode()

    def test_unknown_license_and_widget(self, voice_widget, widget_b):
        client = Client()
        response = client.get("/api/realtime/config", {"license": "lic_nope"}, HTTP_ORIGIN=ORIGIN)
        assert response.status_code == 404
        response = client.get(
            "/api/realtime/config",
            {"license": voice_widget.license.key, "widget": widget_b.public_id},
            HTTP_ORIGIN=ORIGIN,
        )
        assert response.status_code == 404 and response.json()["error"]["code"] == "widget_not_found"


@pytest.mark.django_db
class TestClientSecret:
    def test_mints_a_key_with_the_one_session(self, voice_widget, fake_openai_http, member):
        voice_widget.secrets = {"openai_api_key": "sk-tenant-secret-1234"}
        voice_widget.save()
        response = post_secret(Client(), voice_widget)
        assert response.status_code == 200, response.content
        body = response.json()
        assert body["value"] == "ek_test_123" and body["expires_at"] == 1893456000
        assert set(body) == {
            "value",
            "expires_at",
            "model",
            "calls_url",
            "tools_token",
            "tools_url",
            "record_url",
            "max_session_seconds",
        }
        assert body["calls_url"] == fake_openai_http.url + "/v1/realtime/calls"
        assert "sk-" not in response.content.decode()
        request = fake_openai_http.requests[0]
        assert request["path"] == "/v1/realtime/client_secrets"
        assert request["headers"]["authorization"] == "Bearer sk-tenant-secret-1234"
        sent = json.loads(request["body"])
        assert sent["expires_after"]["anchor"] == "created_at"
        member_client = Client()
        member_client.force_login(member)
        assert sent["session"] == get_config(member_client, voice_widget).json()
        assert Conversation.objects.get().channel == "voice"

    def test_refused_like_the_relay(self, voice_widget, widget_a, fake_openai_http):
        assert post_secret(Client(), voice_widget, origin=None).status_code == 403
        assert post_secret(Client(), voice_widget, origin="https://evil.example.net").status_code == 403
        response = post_secret(Client(), widget_a)
        assert response.status_code == 403 and response.json()["error"]["code"] == "voice_disabled"
        assert not fake_openai_http.requests

    def test_upstream_401_is_a_plain_error(self, voice_widget, fake_openai_http):
        fake_openai_http.responses = [(401, {"error": {"message": "Incorrect API key provided: sk-plat***"}})]
        response = post_secret(Client(), voice_widget)
        assert response.status_code == 502 and response.json()["error"]["code"] == "upstream_auth_failed"
        assert "sk-" not in response.content.decode()

    def test_one_http_client_serves_every_client_secret(self, voice_widget, fake_openai_http, monkeypatch):
        """Building an httpx.Client (its TLS context) cost more CPU than the rest of the request."""
        import httpx

        from realtime import client

        built = []
        real = httpx.Client

        def counting(*args, **kwargs):
            built.append(1)
            return real(*args, **kwargs)

        monkeypatch.setattr(client, "_client", None)
        monkeypatch.setattr(client.httpx, "Client", counting)
        fake_openai_http.responses = [(200, {"value": f"ek_{i}", "expires_at": 1893456000}) for i in range(3)]
        assert [post_secret(Client(), voice_widget).json()["value"] for _ in range(3)] == ["ek_0", "ek_1", "ek_2"]
        assert len(built) == 1 and len(fake_openai_http.requests) == 3


@pytest.mark.django_db
class TestToolEndpoint:
    def call(self, widget, name, token, arguments, origin=ORIGIN):
        return Client().post(
            f"/api/widget/{widget.license.key}/tools/{name}",
            json.dumps({"token": token, "arguments": arguments}),
            content_type="application/json",
            HTTP_ORIGIN=origin,
        )

    def test_runs_a_tool_for_the_bound_call(self, voice_widget, fake_openai_http):
        token = post_secret(Client(), voice_widget).json()["tools_token"]
        response = self.call(voice_widget, "search_products", token, {"query": "phone", "max_price": 500})
        assert response.status_code == 200
        body = response.json()
        assert body["ui_event"]["type"] == "ui.product_cards"
        assert [p["title"] for p in body["ui_event"]["products"]] == ["Phone X"]
        assert json.loads(body["output"])["ok"] is True

    def test_bad_token_is_refused(self, voice_widget, widget_b, fake_openai_http):
        assert self.call(voice_widget, "search_products", "nope", {"query": "x"}).status_code == 403
        # A token bound to another license's call does not work here.
        conversation = Conversation.objects.create(widget=widget_b, channel="voice")
        forged = tools_token_make(license=widget_b.license, widget_id=widget_b.pk, conversation_id=conversation.pk)
        assert self.call(voice_widget, "search_products", forged, {"query": "x"}).status_code == 403

    def test_bad_arguments_get_a_polite_fallback(self, voice_widget, fake_openai_http):
        token = post_secret(Client(), voice_widget).json()["tools_token"]
        response = self.call(voice_widget, "search_products", token, {"max_price": "lots"})
        assert response.status_code == 200 and response.json()["ui_event"] is None
        assert "Sorry" in response.json()["say"]


@pytest.mark.django_db(transaction=True)
async def test_relay_config_endpoint_and_client_secret_send_the_identical_session(
    voice_widget, fake_realtime, fake_openai_http, member
):
    await sync_to_async(ProductFactory)(widget=voice_widget, title="Extra")
    comm = communicator(voice_widget)
    assert (await comm.connect())[0]
    await receive_until(comm, "session.ready")
    await wait_for(lambda: fake_realtime.of_type("session.update"))
    relay_session = fake_realtime.of_type("session.update")[0]["session"]
    member_client = Client()
    await sync_to_async(member_client.force_login)(member)  # the whole session is for members only
    config_session = (await sync_to_async(get_config)(member_client, voice_widget)).json()
    assert (await sync_to_async(post_secret)(Client(), voice_widget)).status_code == 200
    secret_session = json.loads(fake_openai_http.requests[0]["body"])["session"]
    assert relay_session == config_session == secret_session
    await comm.disconnect()


@pytest.mark.django_db
def test_client_secret_preflight_names_the_license(voice_widget):
    client = Client()
    url = f"/api/realtime/client-secret?license={voice_widget.license.key}"
    response = client.options(url, HTTP_ORIGIN=ORIGIN, HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST")
    assert response.status_code == 204 and response["Access-Control-Allow-Origin"] == ORIGIN
    response = client.options(url, HTTP_ORIGIN="https://evil.example.net")
    assert "Access-Control-Allow-Origin" not in response


@pytest.mark.django_db
def test_client_secret_accepts_text_plain(voice_widget, fake_openai_http):
    """A CORS 'simple request' (no preflight) with the JSON body sent as text/plain."""
    body = json.dumps({"license": voice_widget.license.key, "widget": voice_widget.public_id})
    response = Client().post("/api/realtime/client-secret", body, content_type="text/plain", HTTP_ORIGIN=ORIGIN)
    assert response.status_code == 200 and response["Access-Control-Allow-Origin"] == ORIGIN
