"""POST /api/chatkit/sessions against the fake OpenAI server: the request upstream, errors, origins, usage."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from chatkit.services import chatkit_user_id, page_token_issue
from chatkit.tests.conftest import ALLOWED, HOSTED_CONFIG, PLATFORM_KEY, TENANT_KEY, WORKFLOW_ID, make_chatkit_widget
from licenses.models import License, LicenseUsage
from licenses.services import usage_increment
from licenses.tests.factories import LicenseFactory
from widgets.models import Channel, Conversation

pytestmark = pytest.mark.django_db


def body_for(widget, visitor="visitor-123", **extra):
    return {"license": widget.license.key, "widget": widget.public_id, "visitor_id": visitor, **extra}


def sessions_counted(license) -> int:
    usage = LicenseUsage.objects.filter(license=license).first()
    return usage.chatkit_sessions if usage else 0


def assert_no_secrets(response):
    text = response.content.decode()
    assert TENANT_KEY not in text
    assert PLATFORM_KEY not in text
    assert WORKFLOW_ID not in text


# --- happy path and the upstream request ----------------------------------------------------------


def test_session_returns_client_secret_and_expiry_only(fake_openai, chatkit_widget, post_session):
    response = post_session(body_for(chatkit_widget))

    assert response.status_code == 200, response.content
    data = response.json()
    assert set(data) == {"client_secret", "expires_at"}
    assert data["client_secret"].startswith("ek_fake_")
    assert isinstance(data["expires_at"], int)
    assert response["Access-Control-Allow-Origin"] == ALLOWED
    assert response["Cache-Control"] == "no-store"
    assert_no_secrets(response)


def test_upstream_request_has_real_path_headers_and_body(fake_openai, chatkit_widget, post_session):
    post_session(body_for(chatkit_widget))

    [request] = fake_openai.requests
    assert request.method == "POST"
    assert request.path == "/v1/chatkit/sessions"
    assert request.headers["openai-beta"] == "chatkit_beta=v1"
    assert request.headers["authorization"] == f"Bearer {TENANT_KEY}"
    assert request.headers["content-type"] == "application/json"
    body = request.body
    assert body["workflow"] == {"id": WORKFLOW_ID}  # no version unless configured
    assert isinstance(body["user"], str)
    assert body["user"].startswith("sb_")
    assert "visitor-123" not in body["user"]
    assert body["chatkit_configuration"] == {"file_upload": {"enabled": True}, "history": {"enabled": False}}
    assert body["expires_after"] == {"anchor": "created_at", "seconds": 600}
    assert body["rate_limits"] == {"max_requests_per_1_minute": 30}


def test_workflow_version_is_sent_only_when_configured(fake_openai, license_a, owner, post_session):
    config = json.loads(json.dumps(HOSTED_CONFIG))
    config["connection"]["chatkit"]["workflow_version"] = "3"
    widget = make_chatkit_widget(license=license_a, user=owner, config=config)

    assert post_session(body_for(widget)).status_code == 200
    assert fake_openai.requests[0].body["workflow"] == {"id": WORKFLOW_ID, "version": "3"}


def test_user_is_stable_per_visitor_and_differs_across_licenses(
    fake_openai, chatkit_widget, agency_a, owner, post_session
):
    other_license = LicenseFactory(agency=agency_a, client_name="Other")
    other = make_chatkit_widget(license=other_license, user=owner)

    post_session(body_for(chatkit_widget, "same-visitor"))
    post_session(body_for(chatkit_widget, "same-visitor"))
    post_session(body_for(other, "same-visitor"))
    post_session(body_for(chatkit_widget, "another-visitor"))

    users = [r.body["user"] for r in fake_openai.requests]
    assert users[0] == users[1]
    assert users[2] != users[0]
    assert users[3] != users[0]
    assert users[0] == chatkit_user_id(license=chatkit_widget.license, visitor_id="same-visitor")


def test_session_limits_come_from_settings_and_license(fake_openai, chatkit_widget, post_session, settings):
    settings.CHATKIT_SESSION_SECONDS = 900
    settings.CHATKIT_MAX_REQUESTS_PER_MINUTE = 12
    post_session(body_for(chatkit_widget))
    License.objects.filter(pk=chatkit_widget.license.pk).update(
        limits={**chatkit_widget.license.limits, "chatkit_session_seconds": 300,
                "chatkit_max_requests_per_minute": 5}
    )
    post_session(body_for(chatkit_widget))

    first, second = (r.body for r in fake_openai.requests)
    assert first["expires_after"]["seconds"] == 900 and first["rate_limits"]["max_requests_per_1_minute"] == 12
    assert second["expires_after"]["seconds"] == 300 and second["rate_limits"]["max_requests_per_1_minute"] == 5


def test_platform_key_is_used_when_the_widget_has_none(fake_openai, license_a, owner, post_session):
    widget = make_chatkit_widget(license=license_a, user=owner, secrets={})

    assert post_session(body_for(widget)).status_code == 200
    assert fake_openai.requests[0].headers["authorization"] == f"Bearer {PLATFORM_KEY}"


def test_widget_may_be_omitted(fake_openai, chatkit_widget, post_session):
    body = body_for(chatkit_widget)
    del body["widget"]
    assert post_session(body).status_code == 200


def test_session_records_conversation_and_counts_usage(fake_openai, chatkit_widget, post_session):
    post_session(body_for(chatkit_widget))

    conversation = Conversation.objects.get()
    assert conversation.widget == chatkit_widget
    assert conversation.channel == Channel.CHATKIT
    assert conversation.visitor_id == fake_openai.requests[0].body["user"]
    assert conversation.session_id.startswith("cksess_")
    assert conversation.is_preview is False
    assert sessions_counted(chatkit_widget.license) == 1


# --- configuration and upstream errors -----------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "status", "code"),
    [
        ("401", 502, "invalid_api_key"),
        ("404", 502, "workflow_not_found"),
        ("429", 429, "upstream_rate_limited"),
        ("500", 502, "upstream_error"),
    ],
)
def test_upstream_errors_map_to_clear_codes(fake_openai, chatkit_widget, post_session, mode, status, code):
    fake_openai.reset(mode)

    response = post_session(body_for(chatkit_widget))

    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert_no_secrets(response)
    assert sessions_counted(chatkit_widget.license) == 0
    assert not Conversation.objects.exists()


def test_workflow_not_found_explains_the_project_mismatch(fake_openai, chatkit_widget, post_session):
    fake_openai.reset("404")
    message = post_session(body_for(chatkit_widget)).json()["error"]["message"]
    assert "another OpenAI project" in message


def test_upstream_timeout_is_504(fake_openai, chatkit_widget, post_session, settings):
    settings.CHATKIT_TIMEOUT = 0.3
    fake_openai.reset("slow", delay=1.5)

    response = post_session(body_for(chatkit_widget))

    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"
    assert sessions_counted(chatkit_widget.license) == 0


def test_unreachable_upstream_is_502(fake_openai, chatkit_widget, post_session, settings):
    settings.OPENAI_BASE_URL = "http://127.0.0.1:9/v1"  # discard port: connection refused
    response = post_session(body_for(chatkit_widget))
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_error"


def test_no_key_anywhere_is_not_configured(fake_openai, license_a, owner, post_session, settings):
    settings.OPENAI_API_KEY = ""
    widget = make_chatkit_widget(license=license_a, user=owner, secrets={})

    response = post_session(body_for(widget))

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "not_configured"
    assert fake_openai.requests == []


def test_no_workflow_id_is_not_configured(fake_openai, license_a, owner, post_session):
    widget = make_chatkit_widget(
        license=license_a, user=owner, config={"connection": {"provider": "chatkit", "chatkit": {"mode": "hosted"}}}
    )
    response = post_session(body_for(widget))
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "not_configured"


def test_server_mode_widget_is_wrong_mode(fake_openai, license_a, owner, post_session):
    widget = make_chatkit_widget(
        license=license_a, user=owner, config={"connection": {"provider": "chatkit", "chatkit": {"mode": "server"}}}
    )
    response = post_session(body_for(widget))
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "wrong_mode"
    assert "/api/chatkit/<license_key>/" in error["message"]
    assert fake_openai.requests == []


def test_n8n_widget_is_refused(fake_openai, widget_a, post_session):
    response = post_session(body_for(widget_a))
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "wrong_widget_type"


def test_unpublished_widget_is_not_found(fake_openai, license_a, owner, post_session):
    widget = make_chatkit_widget(license=license_a, user=owner, publish=False)
    response = post_session(body_for(widget))
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "widget_not_found"


def test_widget_of_another_license_is_not_found(fake_openai, chatkit_widget, license_b, post_session):
    body = body_for(chatkit_widget)
    body["license"] = license_b.key
    License.objects.filter(pk=license_b.pk).update(allowed_domains=["shop.example.com"])
    response = post_session(body)
    assert response.status_code == 404
    assert fake_openai.requests == []


# --- input ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("visitor", [None, "", "   ", 42, "x" * 129])
def test_visitor_id_is_required_and_bounded(fake_openai, chatkit_widget, post_session, visitor):
    body = body_for(chatkit_widget)
    if visitor is None:
        del body["visitor_id"]
    else:
        body["visitor_id"] = visitor
    response = post_session(body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"
    assert fake_openai.requests == []


def test_invalid_json_is_400(fake_openai, chatkit_widget):
    response = Client().post("/api/chatkit/sessions", data="{nope", content_type="application/json",
                             HTTP_ORIGIN=ALLOWED)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"


def test_get_is_405(fake_openai, chatkit_widget):
    response = Client().get("/api/chatkit/sessions", HTTP_ORIGIN=ALLOWED)
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_unknown_license_is_404(fake_openai, post_session):
    response = post_session({"license": "lic_nope", "visitor_id": "v"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_license"


@pytest.mark.parametrize("status", [License.Status.SUSPENDED, License.Status.REVOKED])
def test_inactive_license_is_403(fake_openai, chatkit_widget, post_session, status):
    License.objects.filter(pk=chatkit_widget.license.pk).update(status=status)
    response = post_session(body_for(chatkit_widget))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == status
    assert fake_openai.requests == []


# --- Origin matrix (customer origins calling directly) ------------------------------------------


@pytest.mark.parametrize(
    ("origin", "status", "code"),
    [
        ("https://shop.example.com", 200, None),
        ("https://blog.example.org", 200, None),  # *.example.org
        ("https://example.org", 403, "domain_not_allowed"),  # wildcard excludes the apex
        ("https://evil.example.net", 403, "domain_not_allowed"),
        ("https://shop.example.com.evil.net", 403, "domain_not_allowed"),
        (None, 403, "origin_missing"),
        ("null", 403, "origin_missing"),
    ],
)
def test_origin_matrix(fake_openai, chatkit_widget, post_session, origin, status, code):
    response = post_session(body_for(chatkit_widget), origin=origin)

    assert response.status_code == status, response.content
    if code:
        assert response.json()["error"]["code"] == code
        assert "Access-Control-Allow-Origin" not in response
        assert fake_openai.requests == []
        assert sessions_counted(chatkit_widget.license) == 0
    else:
        assert response["Access-Control-Allow-Origin"] == origin


def test_preflight_answers_any_origin_but_the_post_decides(fake_openai, chatkit_widget):
    response = Client().options("/api/chatkit/sessions", HTTP_ORIGIN="https://evil.example.net",
                                HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST")
    assert response.status_code == 204
    assert "POST" in response["Access-Control-Allow-Methods"]
    assert fake_openai.requests == []


# --- our own origin (the ChatKit iframe page) must carry the page token -----------------------------

OWN = "http://testserver"


def test_own_origin_without_page_token_is_refused(fake_openai, chatkit_widget, post_session):
    response = post_session(body_for(chatkit_widget), origin=OWN)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "page_token_missing"
    assert fake_openai.requests == []


def test_own_origin_with_page_token_for_allowed_origin_works(fake_openai, chatkit_widget, post_session):
    token = page_token_issue(license=chatkit_widget.license, widget=chatkit_widget, origin=ALLOWED)

    response = post_session(body_for(chatkit_widget, page_token=token), origin=OWN)

    assert response.status_code == 200, response.content
    assert "Access-Control-Allow-Origin" not in response  # same origin: no CORS needed
    assert sessions_counted(chatkit_widget.license) == 1


def test_page_token_origin_is_rechecked(fake_openai, chatkit_widget, post_session):
    token = page_token_issue(license=chatkit_widget.license, widget=chatkit_widget, origin=ALLOWED)
    License.objects.filter(pk=chatkit_widget.license.pk).update(allowed_domains=["other.example.com"])

    response = post_session(body_for(chatkit_widget, page_token=token), origin=OWN)

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "domain_not_allowed"


def test_forged_or_foreign_page_token_is_refused(fake_openai, chatkit_widget, license_a, owner, post_session):
    other = make_chatkit_widget(license=license_a, user=owner)
    token = page_token_issue(license=chatkit_widget.license, widget=chatkit_widget, origin=ALLOWED)

    forged = post_session(body_for(chatkit_widget, page_token=token[:-2] + "xx"), origin=OWN)
    other_widget = post_session(body_for(other, page_token=token), origin=OWN)

    assert forged.status_code == 403 and forged.json()["error"]["code"] == "page_token_invalid"
    assert other_widget.status_code == 403 and other_widget.json()["error"]["code"] == "page_token_invalid"
    assert fake_openai.requests == []


def test_expired_page_token_is_refused(fake_openai, chatkit_widget, post_session, settings):
    from django.core import signing

    from chatkit.services import PAGE_TOKEN_SALT

    old = signing.dumps({"l": chatkit_widget.license.key, "w": chatkit_widget.public_id, "o": ALLOWED},
                        salt=PAGE_TOKEN_SALT)
    settings.CHATKIT_PAGE_TOKEN_SECONDS = -1
    response = post_session(body_for(chatkit_widget, page_token=old), origin=OWN)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "page_token_invalid"


def test_page_token_does_not_help_a_foreign_origin(fake_openai, chatkit_widget, post_session):
    token = page_token_issue(license=chatkit_widget.license, widget=chatkit_widget, origin=ALLOWED)
    response = post_session(body_for(chatkit_widget, page_token=token), origin="https://evil.example.net")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "domain_not_allowed"


# --- quota ---------------------------------------------------------------------------------------


def test_monthly_cap_gives_quota_exceeded(fake_openai, chatkit_widget, post_session):
    License.objects.filter(pk=chatkit_widget.license.pk).update(
        limits={**chatkit_widget.license.limits, "monthly_conversations": 2}
    )
    usage_increment(license=chatkit_widget.license, conversations=1)

    first = post_session(body_for(chatkit_widget))
    second = post_session(body_for(chatkit_widget))

    assert first.status_code == 200
    assert second.status_code == 429
    assert second.json()["error"]["code"] == "quota_exceeded"
    assert len(fake_openai.requests) == 1
    assert sessions_counted(chatkit_widget.license) == 1
    assert Conversation.objects.count() == 1


def test_counting_refuses_over_the_cap_even_when_the_precheck_passed(fake_openai, chatkit_widget):
    """Two sessions racing past the read-only precheck: the second is refused when it is counted."""
    from chatkit.client import ChatKitError, ChatKitSession
    from chatkit.services import chatkit_session_record

    License.objects.filter(pk=chatkit_widget.license.pk).update(
        limits={**chatkit_widget.license.limits, "monthly_conversations": 1}
    )
    chatkit_widget.license.refresh_from_db()
    session = ChatKitSession(client_secret="ek_x", expires_at=0, session_id="cksess_x")
    chatkit_session_record(license=chatkit_widget.license, widget=chatkit_widget, user="sb_a", session=session,
                           preview=False)
    with pytest.raises(ChatKitError) as refused:
        chatkit_session_record(license=chatkit_widget.license, widget=chatkit_widget, user="sb_b",
                               session=session, preview=False)

    assert refused.value.code == "quota_exceeded"
    assert sessions_counted(chatkit_widget.license) == 1
    assert Conversation.objects.count() == 1


def test_preview_sessions_are_recorded_but_not_counted(fake_openai, chatkit_widget):
    from chatkit.client import ChatKitSession
    from chatkit.services import chatkit_session_record

    session = ChatKitSession(client_secret="ek_x", expires_at=0, session_id="cksess_x")
    chatkit_session_record(license=chatkit_widget.license, widget=chatkit_widget, user="sb_a", session=session,
                           preview=True)
    assert sessions_counted(chatkit_widget.license) == 0
    assert Conversation.objects.get().is_preview is True


@pytest.mark.django_db(transaction=True)
def test_monthly_cap_is_exact_under_concurrency(fake_openai, license_a, owner):
    import threading

    from django.db import connection

    from chatkit.client import ChatKitError, ChatKitSession
    from chatkit.services import chatkit_session_record

    if connection.vendor == "sqlite":
        pytest.skip("SQLite serialises writers; the race this guards against needs PostgreSQL (CI runs it).")
    widget = make_chatkit_widget(license=license_a, user=owner)
    License.objects.filter(pk=license_a.pk).update(limits={**license_a.limits, "monthly_conversations": 10})
    license_a.refresh_from_db()
    session = ChatKitSession(client_secret="ek_x", expires_at=0, session_id="cksess_x")
    refused: list[int] = []

    def work(i: int) -> None:
        try:
            chatkit_session_record(license=license_a, widget=widget, user=f"sb_{i}", session=session, preview=False)
        except ChatKitError:
            refused.append(i)
        finally:
            connection.close()

    pool = [threading.Thread(target=work, args=(i,)) for i in range(30)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()

    assert sessions_counted(license_a) == 10
    assert Conversation.objects.filter(widget=widget).count() == 10
    assert len(refused) == 20
