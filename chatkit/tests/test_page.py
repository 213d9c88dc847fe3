"""GET /widget/chatkit/<license_key>: headers, the embedded options JSON, the page token, problems."""

from __future__ import annotations

import json
import re

import pytest
from django.test import Client

from chatkit.options import chatkit_options
from chatkit.tests.conftest import ALLOWED, PLATFORM_KEY, TENANT_KEY, WORKFLOW_ID, make_chatkit_widget
from chatkit.tokens import page_token_read
from licenses.models import License

pytestmark = pytest.mark.django_db


def get_page(widget, origin=ALLOWED, visitor=None, vt=None, **headers):
    params = {"widget": widget.public_id}
    if visitor:
        params["visitor"] = visitor
    if vt:
        params["vt"] = vt
    if origin is not None:
        params["origin"] = origin
        # What a browser sends for the loader's iframe (referrerpolicy="origin").
        headers.setdefault("HTTP_REFERER", origin + "/")
    return Client().get(f"/widget/chatkit/{widget.license.key}", params, **headers)


def embedded(response, element_id: str) -> dict:
    match = re.search(
        rf'<script id="{element_id}" type="application/json">(.*?)</script>', response.content.decode(), re.S
    )
    assert match, f"no #{element_id} in the page"
    return json.loads(match.group(1))


def test_page_embeds_options_from_the_one_mapping_function(fake_openai, chatkit_widget):
    response = get_page(chatkit_widget)

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    options = embedded(response, "sb-chatkit-options")
    assert options == chatkit_options(chatkit_widget.published_version.config)
    assert options["theme"] == {
        "colorScheme": "dark",
        "color": {"grayscale": {"hue": 210, "tint": 4, "shade": 2}, "accent": {"primary": "#0f766e", "level": 2}},
        "radius": "soft",
        "density": "compact",
        "typography": {"baseSize": 15},
    }
    assert options["startScreen"] == {
        "greeting": "Welcome to the shop!",
        "prompts": [
            {"label": "Phones under $500?", "prompt": "Phones under $500?"},
            {"label": "Trade-ins?", "prompt": "Trade-ins?"},
        ],
    }
    assert options["composer"] == {"placeholder": "Ask the shop…", "attachments": {"enabled": False}}
    assert options["history"] == {"enabled": True}
    assert options["locale"] == "de-DE"
    content = response.content.decode()
    assert embedded(response, "sb-chatkit-page")["scriptUrl"] == (
        "https://cdn.platform.openai.com/deployments/chatkit/chatkit.js"
    )
    assert 'customElements.whenDefined("openai-chatkit")' in content
    assert 'data-testid="loading"' in content
    assert 'lang="de-DE"' in content


def test_page_serves_the_published_config_not_the_draft(fake_openai, chatkit_widget, owner):
    from widgets.services.widgets import widget_update

    widget_update(
        widget=chatkit_widget, membership=owner.memberships.get(), config={"behaviour": {"greeting": "DRAFT GREETING"}}
    )
    options = embedded(get_page(chatkit_widget), "sb-chatkit-options")
    assert options["startScreen"]["greeting"] == "Welcome to the shop!"


def test_page_headers_csp_frame_ancestors_and_no_deny(fake_openai, chatkit_widget):
    response = get_page(chatkit_widget)

    csp = response["Content-Security-Policy"]
    assert csp.startswith("frame-ancestors ")
    for source in (
        "https://shop.example.com:*",
        "http://shop.example.com:*",
        "https://*.example.org:*",
        "http://localhost:*",
        "http://127.0.0.1:*",
    ):
        assert source in csp
    assert "X-Frame-Options" not in response
    assert response["Cache-Control"] == "no-store"


def test_page_token_is_bound_to_license_widget_and_origin(fake_openai, chatkit_widget):
    page = embedded(get_page(chatkit_widget), "sb-chatkit-page")

    assert page["apiUrl"] == f"/api/chatkit/{chatkit_widget.license.key}/"
    assert "sessionUrl" not in page
    # Live draft options and the CSRF token are for the signed-in preview only.
    assert "optionsUrl" not in page and "csrfToken" not in page
    assert page["license"] == chatkit_widget.license.key
    assert page["widget"] == chatkit_widget.public_id
    token = page_token_read(page["token"])
    assert token is not None
    assert (token.license_key, token.widget_id, token.origin) == (
        chatkit_widget.license.key,
        chatkit_widget.public_id,
        ALLOWED,
    )


def test_page_never_contains_keys_or_workflow_id(fake_openai, chatkit_widget):
    response = get_page(chatkit_widget)
    content = response.content.decode()
    assert response.status_code == 200 and 'id="sb-chatkit-options"' in content  # the real page, with its options
    assert TENANT_KEY not in content
    assert PLATFORM_KEY not in content
    assert WORKFLOW_ID not in content


def test_referer_origin_is_used_when_no_origin_param(fake_openai, chatkit_widget):
    response = get_page(chatkit_widget, origin=None, HTTP_REFERER="https://shop.example.com/products/1")
    assert response.status_code == 200
    assert page_token_read(embedded(response, "sb-chatkit-page")["token"]).origin == "https://shop.example.com"


def test_referer_contradicting_the_origin_param_is_refused(fake_openai, chatkit_widget):
    response = get_page(chatkit_widget, HTTP_REFERER="https://evil.example.net/")
    assert response.status_code == 403
    assert "sb-chatkit-page" not in response.content.decode()


@pytest.mark.parametrize(
    ("origin", "text"),
    [
        (None, "Open this chat from the website"),
        ("null", "Open this chat from the website"),
        ("https://evil.example.net", "not on the license"),
    ],
)
def test_page_refuses_missing_or_foreign_embedding_origin(fake_openai, chatkit_widget, origin, text):
    response = get_page(chatkit_widget, origin=origin)
    assert response.status_code == 403
    content = response.content.decode()
    assert text in content
    assert "sb-chatkit-page" not in content


def test_unknown_license_is_a_tiny_404_page(fake_openai, db):
    response = Client().get("/widget/chatkit/lic_doesnotexist")
    assert response.status_code == 404
    assert "This license key does not exist." in response.content.decode()
    assert len(response.content) < 2000


def test_suspended_license_is_a_403_page_with_the_reason(fake_openai, chatkit_widget):
    License.objects.filter(pk=chatkit_widget.license.pk).update(status=License.Status.SUSPENDED)
    response = get_page(chatkit_widget)
    assert response.status_code == 403
    assert "suspended" in response.content.decode()


def test_n8n_widget_has_no_chatkit_page(fake_openai, widget_a):
    response = get_page(widget_a)
    assert response.status_code == 409
    assert "not a ChatKit widget" in response.content.decode()


def test_missing_key_shows_a_clear_message(fake_openai, license_a, owner, settings):
    from chatkit.tests.conftest import SERVER_CONFIG

    settings.OPENAI_API_KEY = ""
    widget = make_chatkit_widget(license=license_a, user=owner, secrets={}, config=SERVER_CONFIG)
    response = get_page(widget)
    content = response.content.decode()
    assert response.status_code == 200  # a visitor's page view, not a server fault: no error log per view
    assert "isn&#x27;t set up for this site yet" in content or "isn't set up for this site yet" in content
    assert "OpenAI" not in content.split("<body", 1)[1]  # the visitor is not told about the site's setup
    assert "chatkit.js" not in content
    assert "sb-chatkit-options" not in content


def test_page_hands_out_a_signed_visitor_not_the_loaders_visitor_param(fake_openai, chatkit_widget):
    from chatkit.tokens import visitor_token_read

    page = embedded(get_page(chatkit_widget, visitor="user-42"), "sb-chatkit-page")
    assert visitor_token_read(license=chatkit_widget.license, token=page["visitorToken"])
    assert "user-42" not in str(page)


def test_a_kept_visitor_token_counts_only_when_the_page_is_framed(fake_openai, chatkit_widget):
    """`?vt=` is honoured for the widget's iframe only: a page opened top-level with someone else's visitor
    token (visitor fixation) gets a fresh visitor, so the token's holder cannot read the chat."""
    from chatkit.tokens import visitor_token_issue

    kept = visitor_token_issue(license=chatkit_widget.license)

    def visitor(**headers):
        return embedded(get_page(chatkit_widget, vt=kept, **headers), "sb-chatkit-page")["visitorToken"]

    assert visitor(HTTP_SEC_FETCH_DEST="iframe") == kept
    for headers in ({"HTTP_SEC_FETCH_DEST": "document"}, {}):
        assert visitor(**headers) != kept, headers


def test_domain_key_and_load_timeout_come_from_settings(fake_openai, chatkit_widget, settings):
    settings.CHATKIT_DOMAIN_KEY = "domain_pk_test"
    page = embedded(get_page(chatkit_widget), "sb-chatkit-page")
    assert page["domainKey"] == "domain_pk_test"
    assert page["loadTimeoutMs"] == 8000


def test_page_without_a_referer_is_refused_even_with_an_allowed_origin_param(chatkit_widget):
    """?origin= alone is a claim anyone can make (a top-level tab opened with noreferrer): refused."""
    response = get_page(chatkit_widget, HTTP_REFERER="")
    assert response.status_code == 403
    assert b"page-token" not in response.content and b"pageToken" not in response.content
