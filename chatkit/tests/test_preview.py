"""The configurator preview: POST /api/chatkit/preview-sessions and /widget/chatkit/preview/<public_id>."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from chatkit.tests.conftest import TENANT_KEY, WORKFLOW_ID, make_chatkit_widget
from licenses.models import License, LicenseUsage
from widgets.models import Conversation
from widgets.services import widget_update

pytestmark = pytest.mark.django_db

URL = "/api/chatkit/preview-sessions"


def test_member_gets_a_preview_session_from_the_draft_not_counted(fake_openai, chatkit_widget, member, api):
    widget_update(widget=chatkit_widget, membership=member.memberships.get(),
                  config={"behaviour": {"file_uploads": False, "history": True}})

    response = api(member).post(URL, {"widget": chatkit_widget.public_id}, format="json")

    assert response.status_code == 200, response.content
    assert set(response.json()) == {"client_secret", "expires_at"}
    [request] = fake_openai.requests
    assert request.headers["authorization"] == f"Bearer {TENANT_KEY}"
    # The draft's settings, not the published ones.
    assert request.body["chatkit_configuration"] == {"file_upload": {"enabled": False}, "history": {"enabled": True}}
    assert not LicenseUsage.objects.filter(chatkit_sessions__gt=0).exists()
    conversation = Conversation.objects.get()
    assert conversation.is_preview is True


def test_viewer_may_preview(fake_openai, chatkit_widget, viewer, api):
    assert api(viewer).post(URL, {"widget": chatkit_widget.public_id}, format="json").status_code == 200


def test_unpublished_draft_can_be_previewed(fake_openai, license_a, owner, api):
    widget = make_chatkit_widget(license=license_a, user=owner, publish=False)
    assert api(owner).post(URL, {"widget": widget.public_id}, format="json").status_code == 200


def test_outsider_gets_404(fake_openai, chatkit_widget, outsider, api):
    response = api(outsider).post(URL, {"widget": chatkit_widget.public_id}, format="json")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert fake_openai.requests == []


def test_anonymous_gets_403_json(fake_openai, chatkit_widget, api):
    response = api().post(URL, {"widget": chatkit_widget.public_id}, format="json")
    assert response.status_code in (401, 403)
    assert response.json()["error"]["code"] == "not_authenticated"
    assert fake_openai.requests == []


def test_session_login_needs_csrf(fake_openai, chatkit_widget, owner):
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    body = json.dumps({"widget": chatkit_widget.public_id})

    refused = client.post(URL, data=body, content_type="application/json")
    page = client.get(f"/widget/chatkit/preview/{chatkit_widget.public_id}")
    token = client.cookies["csrftoken"].value
    accepted = client.post(URL, data=body, content_type="application/json", HTTP_X_CSRFTOKEN=token)

    assert refused.status_code == 403
    assert page.status_code == 200
    assert accepted.status_code == 200, accepted.content


def test_missing_widget_is_400(fake_openai, owner, api):
    response = api(owner).post(URL, {}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"


def test_upstream_errors_keep_their_codes(fake_openai, chatkit_widget, owner, api):
    fake_openai.reset("401")
    response = api(owner).post(URL, {"widget": chatkit_widget.public_id}, format="json")
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert TENANT_KEY not in response.content.decode()
    assert WORKFLOW_ID not in response.content.decode()


def test_suspended_license_cannot_preview(fake_openai, chatkit_widget, owner, api):
    License.objects.filter(pk=chatkit_widget.license.pk).update(status=License.Status.SUSPENDED)
    response = api(owner).post(URL, {"widget": chatkit_widget.public_id}, format="json")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "suspended"


def test_n8n_widget_cannot_be_previewed_as_chatkit(fake_openai, widget_a, owner, api):
    response = api(owner).post(URL, {"widget": widget_a.public_id}, format="json")
    assert response.status_code == 409


# --- the preview page ------------------------------------------------------------------------------


def test_preview_page_uses_draft_self_framing_and_shows_the_legacy_note(fake_openai, chatkit_widget, owner):
    widget_update(widget=chatkit_widget, membership=owner.memberships.get(),
                  config={"behaviour": {"greeting": "Draft hello"}})
    client = Client()
    client.force_login(owner)

    response = client.get(f"/widget/chatkit/preview/{chatkit_widget.public_id}")

    assert response.status_code == 200
    assert response["Content-Security-Policy"] == "frame-ancestors 'self'"
    assert "X-Frame-Options" not in response
    content = response.content.decode()
    assert "Draft hello" in content
    assert "2026-11-30" in content
    assert '"sessionUrl": "/api/chatkit/preview-sessions"' in content
    assert TENANT_KEY not in content and WORKFLOW_ID not in content


def test_preview_page_outsider_404_anonymous_403(fake_openai, chatkit_widget, outsider):
    anonymous = Client().get(f"/widget/chatkit/preview/{chatkit_widget.public_id}")
    client = Client()
    client.force_login(outsider)
    foreign = client.get(f"/widget/chatkit/preview/{chatkit_widget.public_id}")

    assert anonymous.status_code == 403
    assert foreign.status_code == 404


# --- POST /api/chatkit/preview-options: the preview page follows unsaved edits ----------------------

OPTIONS_URL = "/api/chatkit/preview-options"
DRAFT = {"appearance": {"chatkit": {"accent_color": "#be123c", "color_scheme": "light"}},
         "behaviour": {"greeting": "Unsaved hello"}}


@pytest.mark.parametrize("persona", ["owner", "member", "viewer"])
def test_any_member_gets_the_mapped_options_of_an_unsaved_draft(fake_openai, chatkit_widget, persona, request, api):
    before = chatkit_widget.config
    revision = chatkit_widget.revision

    response = api(request.getfixturevalue(persona)).post(
        OPTIONS_URL, {"widget": chatkit_widget.public_id, "config": DRAFT}, format="json")

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
    from chatkit.services import chatkit_options

    response = api(owner).post(OPTIONS_URL, {"widget": chatkit_widget.public_id}, format="json")

    assert response.status_code == 200
    assert response.json()["options"] == chatkit_options(chatkit_widget.config)


def test_preview_options_outsider_gets_404(chatkit_widget, outsider, api):
    response = api(outsider).post(OPTIONS_URL, {"widget": chatkit_widget.public_id, "config": DRAFT}, format="json")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_preview_options_anonymous_is_refused(chatkit_widget, api):
    response = api().post(OPTIONS_URL, {"widget": chatkit_widget.public_id, "config": DRAFT}, format="json")
    assert response.status_code in (401, 403)
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
