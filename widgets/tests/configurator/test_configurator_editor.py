"""Server tests of the configurator's actions: knowledge, products + CSV, versions, rollback, embed,
share links, preview frame/chat, test connection, and the API the editor saves through."""

from __future__ import annotations

import html
import json
import re
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone

from licenses.hosts import custom_domain_set_status
from licenses.models import CustomDomain, License
from widgets.config_diff import config_diff
from widgets.loader import API_STUB
from widgets.models import KnowledgeEntry, PreviewLink, Product, Widget
from widgets.services.preview_links import preview_link_token
from widgets.services.widgets import widget_publish, widget_update
from widgets.tests.factories import KnowledgeEntryFactory, ProductFactory, WidgetFactory

pytestmark = pytest.mark.django_db


def url(name, widget, **kwargs):
    return reverse(name, kwargs={"public_id": widget.public_id, **kwargs})


def login(client, user):
    client.force_login(user)
    return client


# --- configurator page ------------------------------------------------------------------------------


def test_configurator_renders_controls_from_schema(client, member, widget_a):
    body = login(client, member).get(url("app-widget", widget_a)).content.decode()
    for path in (
        "connection.n8n.webhook_url",
        "appearance.n8n.primary_color",
        "appearance.chatkit.accent_level",
        "behaviour.starter_prompts",
        "voice.turn_detection.silence_duration_ms",
        "tools.enabled.log_lead",
        "connection.chatkit.model",
        "voice.model",
    ):
        assert f'data-path="{path}"' in body
    assert 'id="save-btn"' in body and 'id="publish-btn"' not in body  # editor: save, not publish
    assert "disabled" not in body.split('data-path="appearance.n8n.title"')[1][:80]


def test_configurator_is_read_only_for_viewer(client, viewer, widget_a):
    body = login(client, viewer).get(url("app-widget", widget_a)).content.decode()
    assert 'id="save-btn"' not in body and 'id="publish-btn"' not in body
    assert "disabled" in body.split('data-path="appearance.n8n.title"')[1][:80]
    assert "Read-only" in body


def test_configurator_shows_secret_hint_never_the_secret(client, owner, widget_a):
    widget_update(widget=widget_a, membership=owner.memberships.get(), secrets={"openai_api_key": "sk-test-SECRETabcd"})
    body = login(client, owner).get(url("app-widget", widget_a)).content.decode()
    assert "ends …abcd" in body and "SECRET" not in body


def test_chatkit_hosted_mode_is_labelled_retired(client, owner, license_a):
    widget = WidgetFactory(license=license_a, provider="chatkit")
    body = login(client, owner).get(url("app-widget", widget)).content.decode()
    assert "Hosted workflow (retired by OpenAI)" in body and "2026-11-30" in body


# --- saving through the API (what the editor's JS calls) ------------------------------------------------


def test_bad_colour_is_a_field_error_and_nothing_saved(api, member, widget_a):
    before = dict(widget_a.config)
    response = api(member).patch(
        f"/api/v1/widgets/{widget_a.public_id}/",
        {"config": {"appearance": {"n8n": {"primary_color": "blue"}}}, "revision": widget_a.revision},
        format="json",
    )
    assert response.status_code == 400
    assert "config.appearance.n8n.primary_color" in response.json()["error"]["fields"]
    widget_a.refresh_from_db()
    assert widget_a.config == before


@pytest.mark.parametrize(
    "patch,path",
    [
        ({"appearance": {"chatkit": {"accent_level": 7}}}, "config.appearance.chatkit.accent_level"),
        ({"connection": {"n8n": {"webhook_url": "ftp://x"}}}, "config.connection.n8n.webhook_url"),
        ({"voice": {"turn_detection": {"threshold": 2}}}, "config.voice.turn_detection.threshold"),
    ],
)
def test_out_of_range_and_bad_url_are_field_errors(api, member, widget_a, patch, path):
    response = api(member).patch(f"/api/v1/widgets/{widget_a.public_id}/", {"config": patch}, format="json")
    assert response.status_code == 400 and path in response.json()["error"]["fields"]


def test_stale_draft_gets_409(api, owner, member, widget_a):
    stale = widget_a.revision
    widget_update(widget=widget_a, membership=owner.memberships.get(), config={"behaviour": {"greeting": "Hey"}})
    response = api(member).patch(
        f"/api/v1/widgets/{widget_a.public_id}/",
        {"config": {"behaviour": {"greeting": "Mine"}}, "revision": stale},
        format="json",
    )
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "stale_draft"
    widget_a.refresh_from_db()
    assert widget_a.config["behaviour"]["greeting"] == "Hey"


def test_switching_provider_keeps_other_settings_and_changes_type(api, member, widget_a):
    client = api(member)
    client.patch(
        f"/api/v1/widgets/{widget_a.public_id}/",
        {"config": {"appearance": {"n8n": {"title": "Keep me"}}}},
        format="json",
    )
    response = client.patch(
        f"/api/v1/widgets/{widget_a.public_id}/", {"config": {"connection": {"provider": "chatkit"}}}, format="json"
    )
    assert response.status_code == 200
    widget_a.refresh_from_db()
    assert widget_a.widget_type == "chatkit" and widget_a.config["appearance"]["n8n"]["title"] == "Keep me"


def test_viewer_cannot_save_or_publish(api, viewer, widget_a):
    client = api(viewer)
    assert client.patch(f"/api/v1/widgets/{widget_a.public_id}/", {"config": {}}, format="json").status_code == 403
    assert client.post(f"/api/v1/widgets/{widget_a.public_id}/publish/", {}, format="json").status_code == 403


# --- versions + rollback ----------------------------------------------------------------------------


def test_versions_page_shows_who_when_and_diff(client, owner, widget_a):
    m = owner.memberships.get()
    widget_update(widget=widget_a, membership=m, config={"appearance": {"n8n": {"primary_color": "#0f766e"}}})
    widget_publish(widget=widget_a, user=owner, membership=m)
    response = login(client, owner).get(url("app-widget-versions", widget_a))
    body = response.content.decode()
    assert "v2" in body and owner.username in body
    assert "appearance.n8n.primary_color" in body and "#4f46e5" in body and "#0f766e" in body


def test_rollback_publishes_old_snapshot(client, owner, widget_a):
    m = owner.memberships.get()
    widget_update(widget=widget_a, membership=m, config={"behaviour": {"greeting": "New"}})
    widget_publish(widget=widget_a, user=owner, membership=m)
    response = login(client, owner).post(url("app-widget-rollback", widget_a), {"version": 1})
    assert response.status_code == 302
    widget_a.refresh_from_db()
    assert widget_a.published_version.number == 3
    assert widget_a.published_version.config["behaviour"]["greeting"] == "Hi! How can I help you today?"


def test_editor_cannot_rollback(client, member, widget_a):
    response = login(client, member).post(url("app-widget-rollback", widget_a), {"version": 1})
    assert response.status_code == 403
    widget_a.refresh_from_db()
    assert widget_a.published_version.number == 1


def test_rollback_unknown_version(client, owner, widget_a):
    response = login(client, owner).post(url("app-widget-rollback", widget_a), {"version": 99}, follow=True)
    assert b"does not exist" in response.content


def test_config_diff_is_readable():
    assert config_diff({"a": {"b": "#4f46e5", "c": True}}, {"a": {"b": "#0f766e", "c": True}}) == [
        {"path": "a.b", "old": "#4f46e5", "new": "#0f766e"}
    ]


# --- embed code ------------------------------------------------------------------------------------


def test_embed_code_snippet(client, viewer, widget_a):
    body = login(client, viewer).get(url("app-widget-embed", widget_a)).content.decode()
    assert f"http://testserver/api/widget/{widget_a.license.key}/chat-widget.js" in body
    assert "data-mode=&quot;popup&quot;" in body and "data-position" in body
    for platform in ("WordPress", "Shopify", "Webflow", "Plain HTML"):
        assert platform in body
    assert "no allowed domains" not in body


def test_embed_code_prints_the_api_stub_and_documents_the_api(client, viewer, widget_a):
    body = html.unescape(login(client, viewer).get(url("app-widget-embed", widget_a)).content.decode())
    snippet = re.search(r'<pre id="snippet-script">(.*?)</pre>', body, re.S).group(1)
    assert snippet.startswith(f"<script>{API_STUB}</script>\n<script src=")
    examples = re.search(r'<pre id="snippet-api">(.*?)</pre>', body, re.S).group(1)
    assert f'Switchboard.widget("{widget_a.public_id}")' in examples
    for name in ("open()", "send(text)", "reset()", "setLocale(code)", "on(event, fn)", "voice:start", "lead"):
        assert name in body
    # Every method window.Switchboard takes (widget.js API_METHODS) has its row in the table.
    source = (Path(__file__).resolve().parents[3] / "static" / "widget" / "widget.js").read_text()
    methods = json.loads(re.search(r"const API_METHODS = (\[.*?\]);", source).group(1))
    table = re.search(r"<tbody>(.*?)</tbody>", body[body.index('id="js-api"') :], re.S).group(1)
    assert {m for m in methods if f"<code>{m}(" not in table} == set()
    assert f"/app/licenses/{widget_a.license.key}/identity/" in table


def test_embed_code_warns_without_domains_and_has_iframe_for_chatkit(client, owner, license_a):
    license_a.allowed_domains = []
    license_a.save()
    widget = WidgetFactory(license=license_a, provider="chatkit")
    body = login(client, owner).get(url("app-widget-embed", widget)).content.decode()
    assert "no allowed domains" in body and "/widget/chatkit/" in body


# --- knowledge -------------------------------------------------------------------------------------


def test_knowledge_crud(client, member, widget_a):
    login(client, member)
    client.post(url("app-widget-knowledge", widget_a), {"question": "Hours?", "answer": "9-5", "tags": "hours"})
    entry = KnowledgeEntry.objects.get(widget=widget_a)
    client.post(url("app-widget-knowledge", widget_a), {"id": entry.pk, "question": "Hours?", "answer": "9-6"})
    entry.refresh_from_db()
    assert entry.answer == "9-6"
    client.post(url("app-widget-knowledge-delete", widget_a, pk=entry.pk))
    assert not KnowledgeEntry.objects.filter(pk=entry.pk).exists()


def test_knowledge_invalid_input(client, member, widget_a):
    response = login(client, member).post(url("app-widget-knowledge", widget_a), {"question": "", "answer": ""})
    assert response.status_code == 400 and set(response.context["errors"]) == {"question", "answer"}
    assert not KnowledgeEntry.objects.exists()


def test_viewer_cannot_change_knowledge(client, viewer, widget_a):
    entry = KnowledgeEntryFactory(widget=widget_a)
    login(client, viewer)
    assert client.post(url("app-widget-knowledge", widget_a), {"question": "Q", "answer": "A"}).status_code == 403
    assert client.post(url("app-widget-knowledge-delete", widget_a, pk=entry.pk)).status_code == 403
    assert KnowledgeEntry.objects.count() == 1


def test_outsider_cannot_touch_knowledge(client, outsider, widget_a):
    entry = KnowledgeEntryFactory(widget=widget_a)
    assert login(client, outsider).post(url("app-widget-knowledge-delete", widget_a, pk=entry.pk)).status_code == 404
    assert KnowledgeEntry.objects.filter(pk=entry.pk).exists()


def test_entry_of_another_widget_is_404(client, owner, widget_a, license_a):
    other = WidgetFactory(license=license_a)
    entry = KnowledgeEntryFactory(widget=other)
    assert login(client, owner).post(url("app-widget-knowledge-delete", widget_a, pk=entry.pk)).status_code == 404


# --- products + CSV ----------------------------------------------------------------------------------


def test_product_create_and_invalid(client, member, widget_a):
    login(client, member)
    response = client.post(
        url("app-widget-products", widget_a),
        {
            "title": "Phone",
            "sku": "P1",
            "price": "399",
            "currency": "usd",
            "url": "https://shop.example.com/p1",
            "in_stock": "on",
        },
    )
    assert response.status_code == 302
    product = Product.objects.get(widget=widget_a)
    assert str(product.price) == "399.00" and product.currency == "USD" and product.in_stock
    response = client.post(
        url("app-widget-products", widget_a),
        {"title": "", "price": "cheap", "image_url": "not a url", "currency": "dollars"},
    )
    assert response.status_code == 400
    assert {"title", "price", "image_url", "currency"} <= set(response.context["errors"])
    response = client.post(url("app-widget-products", widget_a), {"title": "Dup", "sku": "P1"})
    assert response.status_code == 400 and "sku" in response.context["errors"]
    assert Product.objects.count() == 1


def test_product_edit_prefills_and_updates(client, member, widget_a):
    product = ProductFactory(widget=widget_a, sku="E1", title="Before")
    login(client, member)
    page = client.get(url("app-widget-products", widget_a) + f"?edit={product.pk}")
    assert page.context["edit_id"] == product.pk and page.context["values"]["title"] == "Before"
    client.post(url("app-widget-products", widget_a), {"id": product.pk, "title": "After", "sku": "E1"})
    product.refresh_from_db()
    assert product.title == "After" and Product.objects.count() == 1


def test_csv_import_good_rows_and_reports_bad_rows(client, member, widget_a):
    ProductFactory(widget=widget_a, sku="A1", title="Old title")
    csv_text = (
        "sku,title,description,price,currency,image_url,url,in_stock\n"
        "A1,Phone A,Updated,499.00,USD,https://shop.example.com/a.png,https://shop.example.com/a,yes\n"
        "B2,Phone B,,299,EUR,,,no\n"
        "C3,,No title,100,USD,,,yes\n"
        "D4,Phone D,,abc,USD,,,yes\n"
        "E5,Phone E,,10,USD,notaurl,,yes\n"
        "B2,Phone B again,,1,USD,,,yes\n"
    )
    upload = SimpleUploadedFile("p.csv", csv_text.encode(), content_type="text/csv")
    response = login(client, member).post(url("app-widget-products-import", widget_a), {"file": upload})
    assert response.status_code == 200
    report = response.context["report"]
    assert (report.created, report.updated) == (1, 1)
    lines = [line for line, _ in report.errors]
    assert lines == [4, 5, 6, 7]
    reasons = dict(report.errors)
    assert "title" in reasons[4] and "price" in reasons[5] and "image_url" in reasons[6] and "line 3" in reasons[7]
    assert Product.objects.get(widget=widget_a, sku="A1").title == "Phone A"
    assert not Product.objects.get(widget=widget_a, sku="B2").in_stock
    assert b"Line 5:" in response.content


def test_csv_without_header_is_refused(client, member, widget_a):
    upload = SimpleUploadedFile("p.csv", b"foo,bar\n1,2\n", content_type="text/csv")
    response = login(client, member).post(url("app-widget-products-import", widget_a), {"file": upload})
    assert response.status_code == 400 and b"first line must name the columns" in response.content
    assert not Product.objects.exists()


def test_viewer_cannot_import_or_delete_products(client, viewer, widget_a):
    product = ProductFactory(widget=widget_a)
    login(client, viewer)
    upload = SimpleUploadedFile("p.csv", b"title\nX\n", content_type="text/csv")
    assert client.post(url("app-widget-products-import", widget_a), {"file": upload}).status_code == 403
    assert client.post(url("app-widget-product-delete", widget_a, pk=product.pk)).status_code == 403
    assert client.post(url("app-widget-products", widget_a), {"title": "Y"}).status_code == 403
    assert Product.objects.count() == 1


# --- share preview links -----------------------------------------------------------------------------


def test_share_link_shows_draft_signed_out(client, member, widget_a):
    widget_update(
        widget=widget_a, membership=member.memberships.get(), config={"appearance": {"n8n": {"title": "Draft title"}}}
    )
    login(client, member).post(url("app-widget-share", widget_a), {"days": 7, "label": "Client"})
    link = PreviewLink.objects.get(widget=widget_a)
    token = preview_link_token(link)
    client.logout()
    page = client.get(reverse("app-share", kwargs={"token": token}))
    assert page.status_code == 200
    frame = client.get(reverse("app-share-frame", kwargs={"token": token}))
    assert frame.status_code == 200 and frame["X-Frame-Options"] == "SAMEORIGIN"
    assert b"Draft title" in frame.content
    assert b"webhook_url" not in frame.content  # only the public config reaches the frame


def test_revoked_and_expired_links_show_friendly_page(client, owner, widget_a):
    login(client, owner).post(url("app-widget-share", widget_a), {"days": 1})
    link = PreviewLink.objects.get()
    client.post(url("app-widget-share-revoke", widget_a, pk=link.pk))
    client.logout()
    response = client.get(reverse("app-share", kwargs={"token": preview_link_token(link)}))
    assert response.status_code == 410 and b"turned off" in response.content
    expired = PreviewLink.objects.create(widget=widget_a, expires_at=timezone.now() - timedelta(minutes=1))
    response = client.get(reverse("app-share", kwargs={"token": preview_link_token(expired)}))
    assert response.status_code == 410 and b"expired" in response.content
    response = client.get(reverse("app-share-frame", kwargs={"token": preview_link_token(expired)}))
    assert response.status_code == 410


def test_a_share_link_of_a_license_that_may_not_serve_shows_nothing_and_cannot_chat(
    client, owner, widget_a, fake_upstream
):
    """A suspended (or revoked, expired) license stops its share links as it stops its widgets: the page,
    its frame and its chat answer 403 with the license's reason; reactivated, the link works again."""
    _set_webhook(widget_a, owner, fake_upstream.url + "/webhook/draft")
    link = PreviewLink.objects.create(widget=widget_a, expires_at=timezone.now() + timedelta(days=1))
    token = preview_link_token(link)
    chat_url = reverse("app-share-chat", kwargs={"token": token})
    body = {"action": "sendMessage", "sessionId": "s", "chatInput": "hi"}
    License.objects.filter(pk=widget_a.license_id).update(status=License.Status.SUSPENDED)
    page = client.get(reverse("app-share", kwargs={"token": token}))
    assert page.status_code == 403 and b"not available" in page.content and b"Widget A" not in page.content
    assert client.get(reverse("app-share-frame", kwargs={"token": token})).status_code == 403
    response = client.post(chat_url, body, content_type="application/json")
    assert response.status_code == 403 and response.json()["error"]["code"] == "suspended"
    assert fake_upstream.requests == []
    License.objects.filter(pk=widget_a.license_id).update(status=License.Status.ACTIVE)
    assert client.post(chat_url, body, content_type="application/json").json()["output"] == "pong"


def test_forged_share_token_is_404(client, db):
    response = client.get(reverse("app-share", kwargs={"token": "abc:def"}))
    assert response.status_code == 404 and b"find this preview" in response.content


def test_viewer_cannot_create_or_revoke_links(client, viewer, owner, widget_a):
    login(client, viewer)
    assert client.post(url("app-widget-share", widget_a), {"days": 7}).status_code == 403
    link = PreviewLink.objects.create(widget=widget_a, expires_at=timezone.now() + timedelta(days=1))
    assert client.post(url("app-widget-share-revoke", widget_a, pk=link.pk)).status_code == 403
    link.refresh_from_db()
    assert link.revoked_at is None


def test_share_link_days_out_of_range(client, member, widget_a):
    response = login(client, member).post(url("app-widget-share", widget_a), {"days": 90})
    assert response.status_code == 400 and not PreviewLink.objects.exists()


# --- preview frame, preview chat, test connection ---------------------------------------------------------


def test_preview_frame_is_framable_same_origin_only_and_public_config(client, owner, widget_a):
    widget_update(
        widget=widget_a,
        membership=owner.memberships.get(),
        config={"connection": {"n8n": {"webhook_url": "https://n8n.example.com/secret-hook"}}},
    )
    response = login(client, owner).get(url("app-widget-preview-frame", widget_a))
    assert response["X-Frame-Options"] == "SAMEORIGIN"
    assert b"secret-hook" not in response.content
    # Tenant-authored text renders here on our origin: no inline script or handler may ever run.
    # (blob: only for voice.js's AudioWorklet, which only a script of ours can create.)
    assert response["Content-Security-Policy"] == "script-src 'self' blob:; object-src 'none'; base-uri 'none'"


def _set_webhook(widget, owner, webhook, **n8n):
    widget_update(
        widget=widget,
        membership=owner.memberships.get(),
        config={"connection": {"n8n": {"webhook_url": webhook, **n8n}}},
        secrets={"n8n_basic_auth_user": "u", "n8n_basic_auth_password": "p-secret"},
    )


def test_preview_chat_uses_draft_webhook_and_is_not_usage(client, owner, widget_a, fake_upstream):
    _set_webhook(widget_a, owner, fake_upstream.url + "/webhook/draft", basic_auth=True)
    fake_upstream.body = {"output": "Hello from n8n"}
    response = login(client, owner).post(
        url("app-widget-preview-chat", widget_a),
        {"sessionId": "s1", "chatInput": "hi"},
        content_type="application/json",
    )
    assert response.status_code == 200 and response.json()["output"] == "Hello from n8n"
    sent = fake_upstream.requests[0]
    assert sent["path"] == "/webhook/draft" and sent["body"]["chatInput"] == "hi"
    assert sent["body"]["action"] == "sendMessage" and sent["headers"]["Authorization"].startswith("Basic ")
    from licenses.models import LicenseUsage

    assert not LicenseUsage.objects.exists()


def test_outsider_cannot_use_preview_chat(client, outsider, widget_a):
    response = login(client, outsider).post(
        url("app-widget-preview-chat", widget_a), {}, content_type="application/json"
    )
    assert response.status_code == 404


@pytest.mark.parametrize(
    "status,code", [(200, "ok"), (401, "unauthorised"), (404, "not_found"), (500, "upstream_error")]
)
def test_test_connection_n8n(client, owner, widget_a, fake_upstream, status, code):
    _set_webhook(widget_a, owner, fake_upstream.url + "/webhook/x")
    fake_upstream.status = status
    response = login(client, owner).post(
        url("app-widget-test-connection", widget_a), {}, content_type="application/json"
    )
    data = response.json()
    assert data["code"] == code and data["ok"] == (code == "ok")
    assert fake_upstream.requests[0]["body"]["action"] == "sendMessage"  # the workflow really runs
    assert "p-secret" not in response.content.decode()


def test_test_connection_uses_unsaved_form_values(client, owner, widget_a, fake_upstream):
    response = login(client, owner).post(
        url("app-widget-test-connection", widget_a),
        {"config": {"connection": {"n8n": {"webhook_url": fake_upstream.url + "/typed"}}}},
        content_type="application/json",
    )
    assert response.json()["ok"] and fake_upstream.requests[0]["path"] == "/typed"
    widget_a.refresh_from_db()
    assert widget_a.config["connection"]["n8n"]["webhook_url"] == ""  # testing never saves


def test_test_connection_timeout_and_unreachable(client, owner, widget_a, fake_upstream, settings):
    settings.N8N_TOTAL_TIMEOUT = 0.3  # the test waits exactly as long as a visitor would
    fake_upstream.delay = 1.0
    _set_webhook(widget_a, owner, fake_upstream.url + "/slow")
    login(client, owner)
    assert (
        client.post(url("app-widget-test-connection", widget_a), {}, content_type="application/json").json()["code"]
        == "timeout"
    )
    _set_webhook(widget_a, owner, "http://127.0.0.1:9/none")
    assert (
        client.post(url("app-widget-test-connection", widget_a), {}, content_type="application/json").json()["code"]
        == "unreachable"
    )


def test_test_connection_not_configured_and_bad_value(client, owner, widget_a):
    login(client, owner)
    response = client.post(url("app-widget-test-connection", widget_a), {}, content_type="application/json")
    assert response.json()["code"] == "not_configured"
    response = client.post(
        url("app-widget-test-connection", widget_a),
        {"config": {"connection": {"n8n": {"webhook_url": "nope"}}}},
        content_type="application/json",
    )
    assert response.status_code == 400
    assert "config.connection.n8n.webhook_url" in response.json()["error"]["fields"]


def test_test_connection_chatkit_hosted(client, owner, license_a, fake_upstream, settings):
    """Agent Builder is shut down: a hosted draft is told so, and nothing calls OpenAI."""
    settings.OPENAI_BASE_URL = fake_upstream.url + "/v1"
    widget = WidgetFactory(license=license_a, provider="chatkit")
    widget_update(
        widget=widget,
        membership=owner.memberships.get(),
        config={"connection": {"chatkit": {"mode": "hosted", "workflow_id": "wf_abc"}}},
        secrets={"openai_api_key": "sk-live-key-1234"},
    )
    response = login(client, owner).post(url("app-widget-test-connection", widget), {}, content_type="application/json")
    assert response.json()["code"] == "hosted_retired" and response.json()["ok"] is False
    assert fake_upstream.requests == []
    assert b"sk-live" not in response.content


def test_viewer_cannot_test_connection(client, viewer, widget_a):
    response = login(client, viewer).post(
        url("app-widget-test-connection", widget_a), {}, content_type="application/json"
    )
    assert response.status_code == 403


def test_widget_list_still_works_with_many_widgets(client, owner, license_a):
    for _ in range(3):
        WidgetFactory(license=license_a)
    assert login(client, owner).get("/app/").status_code == 200
    assert Widget.objects.count() == 3


def test_share_chat_uses_draft_webhook_and_is_rate_limited(client, owner, widget_a, fake_upstream, settings):
    settings.WIDGET_CHAT_RATE_PER_MINUTE = 2
    _set_webhook(widget_a, owner, fake_upstream.url + "/webhook/draft")
    link = PreviewLink.objects.create(widget=widget_a, expires_at=timezone.now() + timedelta(days=1))
    chat_url = reverse("app-share-chat", kwargs={"token": preview_link_token(link)})
    body = {"action": "sendMessage", "sessionId": "s", "chatInput": "hi"}
    assert client.post(chat_url, body, content_type="application/json").json()["output"] == "pong"
    client.post(chat_url, body, content_type="application/json")
    assert client.post(chat_url, body, content_type="application/json").status_code == 429
    link.revoked_at = timezone.now()
    link.save()
    assert client.post(chat_url, body, content_type="application/json").status_code == 410


def _share_links(page: str) -> list[tuple[str, str]]:
    """(origin, link token id) of each distinct share link a page prints. A link's token is signed anew (with the
    time) at every render, so two renders a second apart print different tokens for one link."""
    from django.core import signing

    from widgets.services.preview_links import SALT

    found = re.findall(r"(https?://[^/\"'\s<>]+)/app/p/([^/\"'\s<>]+)/", page)
    return sorted({(origin, signing.loads(html.unescape(token), salt=SALT)) for origin, token in found})


def test_share_links_are_printed_on_the_agencys_verified_domain_like_the_embed_code(client, owner, widget_a, widget_b):
    """A white-labelled agency hands its client a link on its own domain, never on the platform's host;
    a pending domain or another agency's domain changes nothing."""
    agency = widget_a.license.agency
    domain = CustomDomain.objects.create(agency=agency, host="chat.agency-a.example")
    CustomDomain.objects.create(
        agency=widget_b.license.agency, host="chat.agency-b.example", status=CustomDomain.Status.VERIFIED
    )
    login(client, owner).post(url("app-widget-share", widget_a), {"days": 7})
    link = PreviewLink.objects.get(widget=widget_a)
    page = client.get(url("app-widget-share", widget_a)).content.decode()
    assert _share_links(page) == [("http://testserver", link.token_id)] and "agency-b" not in page  # pending
    custom_domain_set_status(domain=domain, status=CustomDomain.Status.VERIFIED)
    page = client.get(url("app-widget-share", widget_a)).content.decode()
    assert _share_links(page) == [("http://chat.agency-a.example", link.token_id)]
    embed = client.get(url("app-widget-embed", widget_a)).content.decode()
    assert "http://chat.agency-a.example/api/widget/" in embed  # the same origin as the snippets
