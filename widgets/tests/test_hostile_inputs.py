"""Hostile bodies against every JSON endpoint that the OpenAPI fuzzer does not reach (issue 9).

Public endpoints (chat, leads, ChatKit sessions, realtime client-secret, tools), the share-link and
preview chats and test-connection, and the GET endpoints' query strings. Each hostile input answers
an exact 4xx in the error shape, and writes no row anywhere. They run on PostgreSQL in CI, where a
NUL byte reaching a query would be a 500 (SQLite stores it).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from django.apps import apps
from django.test import Client

from widgets.services import preview_links
from widgets.tests.conftest import ORIGIN, n8n_config, publish

pytestmark = pytest.mark.django_db

MB = 1024 * 1024


@dataclass(frozen=True)
class Endpoint:
    name: str
    path: Callable[..., str]
    body: dict  # a valid body; `field` is the text the hostile values go into
    field: str
    auth: str = ""  # "" public (with an allowed Origin) | "member" signed-in editor
    # Extra headers for the request, from (widgets, owner); the ChatKit server needs its page token.
    headers: Callable[..., dict[str, str]] | None = None
    limit: str = "JSON_MAX_BODY_BYTES"  # the setting with this endpoint's body limit (a larger body is 413)


def _share_path(widget, owner) -> str:
    link = preview_links.preview_link_create(
        widget=widget, user=owner, membership=owner.memberships.get(), days=1, label="review"
    )
    return f"/app/p/{preview_links.preview_link_token(link)}/chat/"


ENDPOINTS = [
    Endpoint(
        "chat",
        lambda w, o: f"/api/widget/{w.license.key}/chat",
        {"action": "sendMessage", "sessionId": "s-1", "chatInput": "Hello"},
        "chatInput",
    ),
    Endpoint(
        "chat-session-id",
        lambda w, o: f"/api/widget/{w.license.key}/chat",
        {"action": "sendMessage", "sessionId": "s-1", "chatInput": "Hello"},
        "sessionId",
    ),
    Endpoint(
        "leads",
        lambda w, o: f"/api/widget/{w.license.key}/leads",
        {"source": "contact_form", "name": "Ada", "email": "ada@example.com"},
        "name",
    ),
    Endpoint(
        "chatkit-sessions",
        lambda w, o: "/api/chatkit/sessions",
        {"license": "placeholder", "visitor_id": "v-1"},
        "visitor_id",
    ),
    Endpoint(
        "realtime-client-secret",
        lambda w, o: f"/api/realtime/client-secret?license={w.license.key}",
        {"license": "placeholder", "visitor_id": "v-1"},
        "visitor_id",
    ),
    Endpoint(
        "tools",
        lambda w, o: f"/api/widget/{w.license.key}/tools/search_knowledge",
        {"token": "t", "arguments": {"query": "phones"}},
        "token",
    ),
    Endpoint(
        "chatkit-server",
        lambda w, o: f"/api/chatkit/{w.license.key}/",
        {
            "type": "threads.create",
            "params": {
                "input": {"content": [{"type": "input_text", "text": "Hi"}], "attachments": [], "inference_options": {}}
            },
        },
        "type",
        headers=lambda w, o: _chatkit_headers(w),
        limit="CHATKIT_MAX_BODY_BYTES",
    ),
    Endpoint(
        "chatkit-server-preview",
        lambda w, o: f"/api/chatkit/{w.license.key}/?preview={w.chatkit.public_id}",
        {"type": "threads.list", "params": {}},
        "type",
        auth="member",
        headers=lambda w, o: {"Origin": "http://testserver"},
        limit="CHATKIT_MAX_BODY_BYTES",
    ),
    Endpoint("share-chat", _share_path, {"action": "sendMessage", "sessionId": "s-1", "chatInput": "Hi"}, "chatInput"),
    Endpoint(
        "preview-chat",
        lambda w, o: f"/app/widgets/{w.public_id}/preview-chat/",
        {"action": "sendMessage", "sessionId": "s-1", "chatInput": "Hi"},
        "chatInput",
        auth="member",
    ),
    Endpoint(
        "voice-preview",
        lambda w, o: f"/app/widgets/{w.public_id}/voice-preview/",
        {"config": {"voice": {"enabled": True, "instructions": "Hi"}}},
        "config",
        auth="member",
    ),
    Endpoint(
        "test-connection",
        lambda w, o: f"/app/widgets/{w.public_id}/test-connection/",
        {"config": {"connection": {"n8n": {"webhook_url": "https://n8n.example.com/webhook/x"}}}},
        "config",
        auth="member",
    ),
]


def _chatkit_headers(widget) -> dict[str, str]:
    """As templates/chatkit/page.html sends them: our own Origin, the page token and the visitor token."""
    from chatkit.tokens import page_token_issue, visitor_token_issue

    return {
        "Origin": "http://testserver",
        "X-Switchboard-Page-Token": page_token_issue(license=widget.license, widget=widget.chatkit, origin=ORIGIN),
        "X-Switchboard-Visitor": visitor_token_issue(license=widget.license),
    }


def _with(body: dict, field: str, value) -> dict:
    return {**body, field: value}


def _dumps(value) -> bytes:
    return json.dumps(value).encode()  # ensure_ascii: "\u0000" and "\ud800" travel as JSON escapes


# (case, body bytes or a builder of them, content type, status, code)
HOSTILE: list[tuple[str, Callable[[Endpoint], bytes], str, int, str]] = [
    ("deep-nesting-200kb", lambda e: b"[" * 100_000 + b"]" * 100_000, "application/json", 400, "invalid_json"),
    (
        "deep-object-in-field",
        lambda e: _dumps(_with(e.body, e.field, json.loads('{"a":' * 60 + "1" + "}" * 60))),
        "application/json",
        400,
        "invalid_json",
    ),
    (
        "lone-surrogate",
        lambda e: _dumps(_with(e.body, e.field, "hi \ud800 there")),
        "application/json",
        400,
        "invalid_text",
    ),
    ("lone-surrogate-key", lambda e: _dumps({**e.body, "\udfff": 1}), "application/json", 400, "invalid_text"),
    ("nul-byte", lambda e: _dumps(_with(e.body, e.field, "a\u0000b")), "application/json", 400, "invalid_text"),
    ("huge-float", lambda e: _dumps(e.body)[:-1] + b', "n": 1e999}', "application/json", 400, "invalid_json"),
    (
        "huge-int",
        lambda e: _dumps(e.body)[:-1] + b', "n": ' + b"9" * 5000 + b"}",
        "application/json",
        400,
        "invalid_json",
    ),
    ("nan", lambda e: _dumps(e.body)[:-1] + b', "n": NaN}', "application/json", 400, "invalid_json"),
    ("not-utf8", lambda e: b'{"x": "\xff\xfe"}', "application/json", 400, "invalid_json"),
    ("not-json", lambda e: b"{'single': quotes}", "application/json", 400, "invalid_json"),
    ("not-an-object", lambda e: b"[1, 2, 3]", "application/json", 400, "invalid_json"),
    ("one-mb", lambda e: _dumps(_with(e.body, e.field, "x" * MB)), "application/json", 413, "payload_too_large"),
    ("ten-mb", lambda e: _dumps(_with(e.body, e.field, "x" * (10 * MB))), "application/json", 413, "payload_too_large"),
    (
        "form-encoded",
        lambda e: b"action=sendMessage&sessionId=s&chatInput=hi",
        "application/x-www-form-urlencoded",
        415,
        "unsupported_media_type",
    ),
    (
        "multipart",
        lambda e: b'--b\r\nContent-Disposition: form-data; name="a"\r\n\r\nx\r\n--b--\r\n',
        "multipart/form-data; boundary=b",
        415,
        "unsupported_media_type",
    ),
    ("xml", lambda e: b"<chat>hi</chat>", "application/xml", 415, "unsupported_media_type"),
]

MODELS = [
    m for app in ("licenses", "widgets", "chatkit", "realtime", "axes") for m in apps.get_app_config(app).get_models()
]


def row_counts() -> dict[str, int]:
    return {m._meta.label: m._default_manager.count() for m in MODELS}


@pytest.fixture
def n8n_widget(widget_a, owner):
    """Published, wired to a webhook nobody listens on: no hostile request may get that far."""
    return publish(
        widget_a,
        owner,
        config=n8n_config("http://127.0.0.1:9/webhook/never-called"),
        secrets={"n8n_basic_auth_user": "u", "n8n_basic_auth_password": "p"},
    )


@pytest.fixture
def target(n8n_widget, owner, member, license_a):
    from chatkit.tests.factories import SERVER_CONFIG, make_chatkit_widget

    # A published server-mode ChatKit widget on the same license, for the ChatKit server endpoint.
    n8n_widget.chatkit = make_chatkit_widget(license=license_a, user=owner, config=SERVER_CONFIG)

    def make(endpoint: Endpoint) -> tuple[Client, str, dict[str, str]]:
        client = Client()
        if endpoint.auth == "member":
            client.force_login(member)
        headers = {"Origin": ORIGIN}
        if endpoint.headers is not None:
            headers.update(endpoint.headers(n8n_widget, owner))
        return client, endpoint.path(n8n_widget, owner), {k: v for k, v in headers.items() if v}

    return make


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.name)
@pytest.mark.parametrize("case,build,content_type,status,code", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_body_is_an_exact_4xx_and_writes_nothing(
    target, endpoint, case, build, content_type, status, code, settings
):
    client, path, headers = target(endpoint)
    body = build(endpoint)
    if len(body) > getattr(settings, endpoint.limit):  # the size rule comes first
        status, code = 413, "payload_too_large"
    before = row_counts()
    response = client.post(path, data=body, content_type=content_type, headers=headers)
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    assert row_counts() == before


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.name)
def test_valid_body_as_text_plain_still_parses(target, endpoint):
    """text/plain is accepted (a page may send it to skip the CORS preflight): the hostile rules above
    are about the body, not a way to refuse that."""
    client, path, headers = target(endpoint)
    response = client.post(
        path,
        data=_dumps(_with(endpoint.body, endpoint.field, "a\u0000")),
        content_type="text/plain;charset=UTF-8",
        headers=headers,
    )
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_text"


GETS = [
    ("loader", lambda w: f"/api/widget/{w.license.key}/chat-widget.js?widget=%00", "application/javascript"),
    ("loader-key", lambda w: "/api/widget/ab%00cd/chat-widget.js", "application/javascript"),
    ("config-widget", lambda w: f"/api/widget/{w.license.key}/config?widget=wgt_%00", "application/json"),
    ("config-key", lambda w: "/api/widget/ab%00cd/config", "application/json"),
    ("realtime-config", lambda w: f"/api/realtime/config?license={w.license.key}%00", "application/json"),
    (
        "realtime-config-widget",
        lambda w: f"/api/realtime/config?license={w.license.key}&widget=%00",
        "application/json",
    ),
    ("chatkit-page", lambda w: f"/widget/chatkit/{w.license.key}?widget=%00", "text/plain"),
    ("rest-api-path", lambda w: "/api/v1/widgets/wgt_%00/", "application/json"),
    ("share-page", lambda w: "/app/p/ab%00cd/", "text/plain"),
]


@pytest.mark.parametrize("name,path,content_type", GETS, ids=[g[0] for g in GETS])
def test_nul_in_the_address_is_400(client, n8n_widget, name, path, content_type):
    before = row_counts()
    response = client.get(path(n8n_widget), HTTP_ORIGIN=ORIGIN)
    assert response.status_code == 400
    assert response["Content-Type"].startswith(content_type)
    if content_type == "application/json":
        assert response.json()["error"]["code"] == "invalid_text"
    assert row_counts() == before


def test_nul_in_a_header_is_400(client, n8n_widget):
    response = client.post(
        f"/api/widget/{n8n_widget.license.key}/chat",
        data=_dumps(ENDPOINTS[0].body),
        content_type="application/json",
        HTTP_ORIGIN=ORIGIN,
        HTTP_X_SWITCHBOARD_VISITOR="v\x00",
    )
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_text"


def test_nul_in_an_html_form_is_400(client, member, n8n_widget):
    client.force_login(member)
    before = row_counts()
    response = client.post(
        f"/app/widgets/{n8n_widget.public_id}/knowledge/",
        {"question": "Opening hours?\x00", "answer": "9 to 5", "tags": ""},
    )
    assert response.status_code == 400
    assert row_counts() == before


def test_knowledge_service_names_the_field_with_a_nul(member, n8n_widget):
    from licenses.api import ApiError
    from widgets.services.catalog import knowledge_create, product_save

    with pytest.raises(ApiError) as exc:
        knowledge_create(widget=n8n_widget, membership=member.memberships.get(), question="Q", answer="A\x00")
    assert "answer" in exc.value.fields
    with pytest.raises(ApiError) as exc:
        product_save(widget=n8n_widget, membership=member.memberships.get(), data={"title": "Phone\x00"})
    assert "title" in exc.value.fields
