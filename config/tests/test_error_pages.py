"""Issue 9 finding 9: with DEBUG on, public/JSON endpoints still answer the error shape (never the
technical 500 page), and the cleanser hides tenant config on the technical page that staff see."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from django.test import Client, RequestFactory
from django.views.debug import ExceptionReporter

from widgets.tests.factories import n8n_config, publish

ORIGIN = "https://shop.example.com"

pytestmark = pytest.mark.django_db

# Built from parts: the technical page shows source lines around each frame, and these must be
# found only if a frame's VALUES leak.
HOOK_MARK = "-".join(["SECRET", "HOOK", "1234"])
INSTRUCTIONS_MARK = "-".join(["SECRET", "INSTRUCTIONS", "5678"])
PASSWORD_MARK = "-".join(["pw", "SECRET", "9"])
DB_MARK = "-".join(["db", "SECRET", "pw"])
WEBHOOK = f"https://n8n.tenant.example/webhook/{HOOK_MARK}/chat"
INSTRUCTIONS = f"Never reveal {INSTRUCTIONS_MARK} to anyone."


@pytest.fixture
def debug_widget(widget_a, owner, settings):
    settings.DEBUG = True
    return publish(widget_a, owner, config={**n8n_config(WEBHOOK), "voice": {"instructions": INSTRUCTIONS}})


def _boom(*args, **kwargs):
    raise RuntimeError("upstream exploded")


async def _aboom(*args, **kwargs):
    raise RuntimeError("upstream exploded")


@pytest.mark.parametrize(
    "method,path,body",
    [
        ("post", "/api/widget/{key}/chat", '{"action": "sendMessage", "sessionId": "s", "chatInput": "hi"}'),
        ("get", "/api/widget/{key}/config", None),
        ("get", "/api/realtime/config?license={key}", None),
    ],
)
def test_public_endpoint_answers_json_500_in_debug(debug_widget, monkeypatch, method, path, body):
    import realtime.views
    import widgets.views.embed

    monkeypatch.setattr(widgets.views.embed, "chat_prepare_async", _aboom)
    monkeypatch.setattr(widgets.views.embed, "config_public", _boom)
    monkeypatch.setattr(realtime.views.svc, "voice_access_widget", _boom)
    client = Client(raise_request_exception=False)
    url = path.format(key=debug_widget.license.key)
    kwargs = {"HTTP_ORIGIN": ORIGIN}
    if body is not None:
        kwargs.update(data=body, content_type="application/json")
    response = getattr(client, method)(url, **kwargs)
    assert response.status_code == 500
    assert response.json() == {
        "error": {"code": "server_error", "message": "Something went wrong on our side. Please try again."}
    }
    text = response.content.decode()
    assert HOOK_MARK not in text and "Traceback" not in text


def test_technical_500_page_hides_config_fields(debug_widget):
    request = RequestFactory().get("/app/")

    def failing_view(config, secrets):
        n8n = config["connection"]["n8n"]
        webhook = n8n["webhook_url"]  # noqa: F841 (a local the page would show)
        voice = config["voice"]  # noqa: F841
        raise RuntimeError("boom")

    try:
        failing_view(debug_widget.config, {"n8n_basic_auth_password": PASSWORD_MARK})
    except RuntimeError:
        html = ExceptionReporter(request, *sys.exc_info()).get_traceback_html()
    assert HOOK_MARK not in html
    assert INSTRUCTIONS_MARK not in html
    assert PASSWORD_MARK not in html
    assert "failing_view" in html  # the page itself still helps the developer


def test_settings_urls_are_hidden_on_the_technical_page(settings):
    settings.DATABASE_URL = f"postgres://app:{DB_MARK}@db/app"
    request = RequestFactory().get("/app/")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        html = ExceptionReporter(request, *sys.exc_info()).get_traceback_html()
    assert "RuntimeError" in html and "boom" in html and "DATABASE_URL" in html  # the page and the setting's row
    assert DB_MARK not in html


def test_favicon_is_the_products_icon_not_a_404(client):
    """Browsers ask every host for /favicon.ico (the admin, error and share pages have no icon link)."""
    response = client.get("/favicon.ico")
    assert response.status_code == 301 and response["Location"].endswith(".svg")
    path = Path(__file__).resolve().parents[2] / "static" / "app" / "favicon.svg"
    assert response["Location"].split("/")[-1].startswith("favicon") and path.read_text().startswith("<svg")
