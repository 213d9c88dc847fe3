"""The configurator's "Test connection" for a ChatKit widget in server mode: the OpenAI SDK retrieves the
widget's model with the tenant's key against the fake OpenAI; every failure in plain words, no key shown."""

from __future__ import annotations

import pytest

from chatkit.tests.conftest import TENANT_KEY
from widgets.connection_test import PROVIDER_TESTS

pytestmark = pytest.mark.django_db


def run(client, owner, widget):
    client.force_login(owner)
    response = client.post(
        f"/app/widgets/{widget.public_id}/test-connection/", data="{}", content_type="application/json"
    )
    assert response.status_code == 200
    return response.json()


def test_the_chatkit_app_registers_its_test():
    assert PROVIDER_TESTS["chatkit"].__module__ == "chatkit.connection_test"


def test_server_mode_checks_the_model_with_the_tenant_key(client, owner, chatkit_widget, fake_openai, settings):
    result = run(client, owner, chatkit_widget)
    assert result["ok"] is True and result["code"] == "ok"
    request = [r for r in fake_openai.requests if r.method == "GET"][-1]
    model = chatkit_widget.config["connection"]["chatkit"].get("model") or settings.CHATKIT_DEFAULT_MODEL
    assert request.path == f"/v1/models/{model}"
    assert request.headers["authorization"] == f"Bearer {TENANT_KEY}"


@pytest.mark.parametrize(
    "mode, code, words",
    [
        ("401", "unauthorised", "refused the API key (401)"),
        ("404", "not_found", "does not know that model"),
        ("500", "upstream_error", "answered with an error (500)"),
    ],
)
def test_failures_in_plain_words(client, owner, chatkit_widget, fake_openai, mode, code, words):
    fake_openai.reset(mode=mode)
    result = run(client, owner, chatkit_widget)
    assert (result["ok"], result["code"]) == (False, code)
    assert words in result["message"]
    assert TENANT_KEY not in str(result) and "sk-tena" not in str(result)


def test_unreachable_and_no_key(client, owner, chatkit_widget, settings):
    settings.OPENAI_BASE_URL = "http://127.0.0.1:9/v1"  # nothing listens on the discard port
    assert run(client, owner, chatkit_widget)["code"] == "unreachable"
    chatkit_widget.secrets = {}
    chatkit_widget.save()
    settings.OPENAI_API_KEY = ""
    assert run(client, owner, chatkit_widget)["code"] == "not_configured"
