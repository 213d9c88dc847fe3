"""The configurator preview: a real conversation on our ChatKit server against the draft, the preview page
/widget/chatkit/preview/<public_id>, and POST /api/chatkit/preview-options."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from chatkit.tests.conftest import OWN_ORIGIN, TENANT_KEY, WORKFLOW_ID, make_chatkit_widget
from licenses.models import License, LicenseUsage
from widgets.models import Conversation
from widgets.services.widgets import widget_update

pytestmark = pytest.mark.django_db


def preview_visitor(widget, user, *, csrf=True):
    """The configurator's preview frame: a signed-in member's session, the CSRF token, the draft."""
    from asgiref.sync import async_to_sync
    from django.middleware.csrf import _get_new_csrf_string, _mask_cipher_secret
    from django.test import AsyncClient

    secret = _get_new_csrf_string()
    client = AsyncClient(enforce_csrf_checks=True)
    async_to_sync(client.aforce_login)(user)
    client.cookies["csrftoken"] = secret
    headers = {"Origin": OWN_ORIGIN}
    if csrf:
        headers["X-CSRFToken"] = _mask_cipher_secret(secret)

    def send(text: str):
        url = f"/api/chatkit/{widget.license.key}/?preview={widget.public_id}"
        body = {
            "type": "threads.create",
            "params": {
                "input": {"content": [{"type": "input_text", "text": text}], "attachments": [], "inference_options": {}}
            },
        }

        async def go():
            response = await client.post(url, data=json.dumps(body), content_type="application/json", headers=headers)
            if response.streaming:
                raw = b"".join([c async for c in response.streaming_content])
                return response, [json.loads(x[6:]) for x in raw.split(b"\n\n") if x.startswith(b"data: ")]
            return response, [response.json()]

        return async_to_sync(go)()

    return send


def test_member_holds_a_real_conversation_against_the_draft_not_counted(fake_openai, chatkit_widget, member):
    widget_update(
        widget=chatkit_widget,
        membership=member.memberships.get(),
        config={"connection": {"chatkit": {"model": "gpt-6-luna", "instructions": "DRAFT RULES"}}},
    )

    response, events = preview_visitor(chatkit_widget, member)("Hello from the configurator")

    assert response.status_code == 200
    assert any(e["type"] == "thread.item.done" and e["item"]["type"] == "assistant_message" for e in events)
    upstream = fake_openai.responses()[0]
    assert upstream.body["model"] == "gpt-6-luna" and "DRAFT RULES" in upstream.body["instructions"]
    assert upstream.headers["authorization"] == f"Bearer {TENANT_KEY}"
    conversation = Conversation.objects.get()
    assert conversation.is_preview is True and conversation.messages.count() == 2
    usage = LicenseUsage.objects.filter(license=chatkit_widget.license).first()
    assert usage is None or (usage.chatkit_sessions == 0 and usage.cost_usd == 0)


def test_viewer_may_preview_an_unpublished_draft(fake_openai, license_a, owner, viewer):
    from chatkit.tests.conftest import SERVER_CONFIG

    widget = make_chatkit_widget(license=license_a, user=owner, config=SERVER_CONFIG, publish=False)
    response, _ = preview_visitor(widget, viewer)("hi")
    assert response.status_code == 200


def test_preview_outsider_404_anonymous_403_and_csrf_required(fake_openai, chatkit_widget, outsider, owner):
    from django.test import Client

    outsider_response, (error,) = preview_visitor(chatkit_widget, outsider)("hi")
    assert outsider_response.status_code == 404 and error["error"]["code"] == "widget_not_found"
    anonymous = Client().post(
        f"/api/chatkit/{chatkit_widget.license.key}/?preview={chatkit_widget.public_id}",
        data="{}",
        content_type="application/json",
        HTTP_ORIGIN=OWN_ORIGIN,
    )
    assert anonymous.status_code == 403 and anonymous.json()["error"]["code"] == "not_authenticated"
    no_csrf, (error,) = preview_visitor(chatkit_widget, owner, csrf=False)("hi")
    assert no_csrf.status_code == 403 and error["error"]["code"] == "csrf_failed"
    assert fake_openai.requests == []


def test_preview_of_another_licenses_path_is_404(fake_openai, chatkit_widget, owner, license_b):
    send = preview_visitor(chatkit_widget, owner)
    chatkit_widget.license = license_b  # the URL names license B, the widget is A's
    response, (error,) = send("hi")
    assert response.status_code == 404 and error["error"]["code"] == "widget_not_found"


def test_suspended_license_cannot_preview(fake_openai, chatkit_widget, owner):
    License.objects.filter(pk=chatkit_widget.license.pk).update(status=License.Status.SUSPENDED)
    response, (error,) = preview_visitor(chatkit_widget, owner)("hi")
    assert response.status_code == 403 and error["error"]["code"] == "suspended"


# --- the preview page ------------------------------------------------------------------------------


def test_preview_page_uses_draft_and_self_framing(fake_openai, chatkit_widget, owner):
    widget_update(
        widget=chatkit_widget, membership=owner.memberships.get(), config={"behaviour": {"greeting": "Draft hello"}}
    )
    client = Client()
    client.force_login(owner)

    response = client.get(f"/widget/chatkit/preview/{chatkit_widget.public_id}")

    assert response.status_code == 200
    assert response["Content-Security-Policy"] == "frame-ancestors 'self'"
    assert "X-Frame-Options" not in response
    content = response.content.decode()
    assert "Draft hello" in content
    assert f'"apiUrl": "/api/chatkit/{chatkit_widget.license.key}/?preview={chatkit_widget.public_id}"' in content
    page = json.loads(content.split('id="sb-chatkit-page" type="application/json">')[1].split("</script>")[0])
    assert "visitorToken" not in page and "token" not in page
    assert TENANT_KEY not in content and WORKFLOW_ID not in content


def test_preview_page_tells_the_member_what_is_missing(fake_openai, license_a, owner, settings):
    """The agency sees why its chat cannot answer (the visitor's page only says it is not set up)."""
    from chatkit.tests.conftest import SERVER_CONFIG, make_chatkit_widget

    settings.OPENAI_API_KEY = ""
    widget = make_chatkit_widget(license=license_a, user=owner, secrets={}, config=SERVER_CONFIG)
    client = Client()
    client.force_login(owner)
    content = client.get(f"/widget/chatkit/preview/{widget.public_id}").content.decode()
    assert "needs an OpenAI API key" in content and "chatkit.js" not in content


def test_preview_page_outsider_404_anonymous_403(fake_openai, chatkit_widget, outsider):
    anonymous = Client().get(f"/widget/chatkit/preview/{chatkit_widget.public_id}")
    client = Client()
    client.force_login(outsider)
    foreign = client.get(f"/widget/chatkit/preview/{chatkit_widget.public_id}")

    assert anonymous.status_code == 403
    assert foreign.status_code == 404


# --- POST /api/chatkit/preview-options: the preview page follows unsaved edits ----------------------

OPTIONS_URL = "/api/chatkit/preview-options"
DRAFT = {
    "appearance": {"chatkit": {"accent_color": "#be123c", "color_scheme": "light"}},
    "behaviour": {"greeting": "Unsaved hello"},
}


@pytest.mark.parametrize("persona", ["owner", "member", "viewer"])
def test_any_member_gets_the_mapped_options_of_an_unsaved_draft(fake_openai, chatkit_widget, persona, request, api):
    before = chatkit_widget.config
    revision = chatkit_widget.revision

    response = api(request.getfixturevalue(persona)).post(
        OPTIONS_URL, {"widget": chatkit_widget.public_id, "config": DRAFT}, format="json"
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["autoColorScheme"] is False
    options = body["options"]
    assert options["theme"]["color"]["accent"] == {"primary": "#be123c", "level": 2}
    assert options["theme"]["colorScheme"] == "light"
    assert options["startScreen"]["greeting"] == "Unsaved hello"
    # The rest comes from the saved draft (merged, not replaced).
    assert options["composer"]["placeholder"] == "Ask the shop…"
    assert options["theme"]["radius"] == "soft"
    assert "api" not in options
    content = response.content.decode()
    assert TENANT_KEY not in content and WORKFLOW_ID not in content
    assert response["Cache-Control"] == "no-store"
    chatkit_widget.refresh_from_db()
    assert chatkit_widget.config == before and chatkit_widget.revision == revision  # nothing saved
    assert fake_openai.requests == []


def test_preview_options_equal_the_page_mapping_for_the_saved_draft(chatkit_widget, owner, api):
    from chatkit.options import chatkit_options

    response = api(owner).post(OPTIONS_URL, {"widget": chatkit_widget.public_id}, format="json")

    assert response.status_code == 200
    assert response.json()["options"] == chatkit_options(chatkit_widget.config)


def test_preview_options_outsider_gets_404(chatkit_widget, outsider, api):
    response = api(outsider).post(OPTIONS_URL, {"widget": chatkit_widget.public_id, "config": DRAFT}, format="json")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_preview_options_anonymous_is_refused(chatkit_widget, api):
    response = api().post(OPTIONS_URL, {"widget": chatkit_widget.public_id, "config": DRAFT}, format="json")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_preview_options_invalid_config_is_400_with_field_paths(chatkit_widget, owner, api):
    before = chatkit_widget.config
    draft = {"appearance": {"chatkit": {"accent_level": 9}}}

    response = api(owner).post(OPTIONS_URL, {"widget": chatkit_widget.public_id, "config": draft}, format="json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_config"
    assert list(error["fields"]) == ["config.appearance.chatkit.accent_level"]
    chatkit_widget.refresh_from_db()
    assert chatkit_widget.config == before


def test_preview_options_config_must_be_an_object(chatkit_widget, owner, api):
    response = api(owner).post(OPTIONS_URL, {"widget": chatkit_widget.public_id, "config": ["x"]}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"config": ["Must be an object."]}


def test_preview_options_for_an_n8n_widget_is_409(widget_a, owner, api):
    response = api(owner).post(OPTIONS_URL, {"widget": widget_a.public_id, "config": DRAFT}, format="json")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "wrong_widget_type"


def test_preview_options_session_login_needs_csrf(chatkit_widget, owner):
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    body = json.dumps({"widget": chatkit_widget.public_id, "config": DRAFT})

    refused = client.post(OPTIONS_URL, data=body, content_type="application/json")
    page = client.get(f"/widget/chatkit/preview/{chatkit_widget.public_id}")
    token = client.cookies["csrftoken"].value
    accepted = client.post(OPTIONS_URL, data=body, content_type="application/json", HTTP_X_CSRFTOKEN=token)

    assert refused.status_code == 403
    # The preview page exposes the endpoint (and its CSRF token) to its script.
    assert '"optionsUrl": "/api/chatkit/preview-options"' in page.content.decode()
    assert accepted.status_code == 200, accepted.content
