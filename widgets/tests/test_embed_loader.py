"""The loader script: status codes, JS error bodies, caching headers, ETag/304, widget selection."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from django.utils import timezone

from licenses.services import license_revoke, license_rotate_key, license_suspend
from widgets.tests.conftest import OPENAI_KEY, publish
from widgets.tests.factories import WidgetFactory

pytestmark = pytest.mark.django_db


def loader_url(key: str, widget: str = "") -> str:
    return f"/api/widget/{key}/chat-widget.js" + (f"?widget={widget}" if widget else "")


def payload(body: bytes) -> dict:
    match = re.search(rb"var P=(\{.*?\}),s=document", body)
    assert match, body[:300]
    return json.loads(match.group(1).replace(b"<\\/", b"</"))


def test_loader_serves_published_n8n_widget(client, widget_a, license_a):
    response = client.get(loader_url(license_a.key))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/javascript; charset=utf-8"
    assert response["Cache-Control"] == "public, max-age=60, stale-while-revalidate=300"
    assert response["ETag"].startswith('"sb-')
    data = payload(response.content)
    assert data["key"] == license_a.key
    assert data["widget"] == widget_a.public_id
    assert data["type"] == "n8n"
    assert data["bundle"].startswith("/static/widget/widget.js?v=")
    assert data["voice"] == "/static/widget/voice.js?v=" + data["bundle"].split("?v=")[1]
    assert data["frame"] == f"/widget/chatkit/{license_a.key}"  # the bundle adds ?widget=<the one it mounts>
    assert data["config"]["appearance"]["title"] == "Chat with us"
    assert "connection" in data["config"] and "n8n" not in data["config"]["connection"]


def test_loader_is_the_same_for_every_origin(client, widget_a, license_a):
    a = client.get(loader_url(license_a.key), HTTP_ORIGIN="https://evil.test")
    b = client.get(loader_url(license_a.key))
    assert a.status_code == b.status_code == 200
    assert a.content == b.content
    assert a["ETag"] == b["ETag"]


def test_loader_serves_the_published_version_not_the_draft(client, widget_a, license_a, owner):
    from widgets.services.widgets import widget_update

    widget_update(
        widget=widget_a, membership=owner.memberships.get(), config={"appearance": {"n8n": {"title": "Draft title"}}}
    )
    body = client.get(loader_url(license_a.key)).content
    assert b"Draft title" not in body
    assert payload(body)["config"]["appearance"]["title"] == "Chat with us"


def test_unknown_key_is_404_javascript_with_one_console_error(client, db):
    response = client.get(loader_url("lic_doesnotexist"))
    assert response.status_code == 404
    assert response["Content-Type"].startswith("application/javascript")
    body = response.content.decode()
    assert body.count("console.error(") == 1
    assert body.startswith('console.error("Switchboard: ')
    assert "unknown_license" in body
    assert "ETag" not in response


@pytest.mark.parametrize("action,reason", [(license_suspend, "suspended"), (license_revoke, "revoked")])
def test_inactive_license_is_403_javascript(client, widget_a, license_a, action, reason):
    action(license=license_a)
    response = client.get(loader_url(license_a.key))
    assert response.status_code == 403
    assert response["Content-Type"].startswith("application/javascript")
    body = response.content.decode()
    assert body.count("console.error(") == 1 and reason in body
    assert "document" not in body


def test_expired_license_is_403(client, widget_a, license_a):
    license_a.expires_at = timezone.now() - timedelta(days=2)
    license_a.save()
    response = client.get(loader_url(license_a.key))
    assert response.status_code == 403
    assert b"expired" in response.content


def test_license_without_published_widget_is_404(client, license_a):
    WidgetFactory(license=license_a)  # a draft only
    response = client.get(loader_url(license_a.key))
    assert response.status_code == 404
    assert b"no_published_widget" in response.content


def test_if_none_match_gives_304(client, widget_a, license_a):
    etag = client.get(loader_url(license_a.key))["ETag"]
    response = client.get(loader_url(license_a.key), HTTP_IF_NONE_MATCH=etag)
    assert response.status_code == 304
    assert response.content == b""
    assert response["ETag"] == etag
    assert response["Cache-Control"].startswith("public")
    assert client.get(loader_url(license_a.key), HTTP_IF_NONE_MATCH='"other"').status_code == 200
    assert client.get(loader_url(license_a.key), HTTP_IF_NONE_MATCH=f"W/{etag}").status_code == 304


def test_etag_and_body_change_after_publish(client, widget_a, license_a, owner):
    first = client.get(loader_url(license_a.key))
    publish(widget_a, owner, config={"appearance": {"n8n": {"title": "New title"}}})
    second = client.get(loader_url(license_a.key), HTTP_IF_NONE_MATCH=first["ETag"])
    assert second.status_code == 200
    assert second["ETag"] != first["ETag"]
    assert payload(second.content)["config"]["appearance"]["title"] == "New title"


def test_key_rotation_stops_the_old_key(client, widget_a, license_a):
    old_key = license_a.key
    assert client.get(loader_url(old_key)).status_code == 200
    license_rotate_key(license=license_a)
    assert client.get(loader_url(old_key)).status_code == 404
    response = client.get(loader_url(license_a.key))
    assert response.status_code == 200
    assert payload(response.content)["key"] == license_a.key


def test_widget_param_selects_one_of_several(client, widget_a, license_a, owner):
    second = publish(
        WidgetFactory(license=license_a, name="Second"), owner, config={"appearance": {"n8n": {"title": "Second one"}}}
    )
    default = payload(client.get(loader_url(license_a.key)).content)
    chosen = client.get(loader_url(license_a.key, second.public_id))
    assert default["widget"] == widget_a.public_id
    assert payload(chosen.content)["widget"] == second.public_id
    assert payload(chosen.content)["config"]["appearance"]["title"] == "Second one"


def test_key_of_another_license_never_serves_its_widget(client, widget_a, widget_b, license_a, license_b):
    response = client.get(loader_url(license_b.key, widget_a.public_id))
    assert response.status_code == 404
    assert widget_a.public_id.encode() not in response.content
    assert b"widget_not_found" in response.content


def test_chatkit_widget_gets_the_iframe_branch(client, license_a, owner):
    widget = publish(
        WidgetFactory(license=license_a, provider="chatkit"), owner, secrets={"openai_api_key": OPENAI_KEY}
    )
    response = client.get(loader_url(license_a.key))
    data = payload(response.content)
    assert data["type"] == "chatkit" and data["widget"] == widget.public_id
    assert data["frame"] == f"/widget/chatkit/{license_a.key}"
    assert OPENAI_KEY.encode() not in response.content


def test_type_follows_the_published_version_not_the_draft(client, widget_a, license_a, owner):
    from widgets.services.widgets import widget_update

    widget_update(widget=widget_a, membership=owner.memberships.get(), config={"connection": {"provider": "chatkit"}})
    assert payload(client.get(loader_url(license_a.key)).content)["type"] == "n8n"


def test_loader_hot_path_does_not_touch_the_database(client, widget_a, license_a, django_assert_num_queries):
    client.get(loader_url(license_a.key))
    client.get(loader_url("lic_unknown"))
    with django_assert_num_queries(0):
        assert client.get(loader_url(license_a.key)).status_code == 200
        assert client.get(loader_url("lic_unknown")).status_code == 404


def test_cached_loader_follows_suspension_and_reactivation_at_once(client, widget_a, license_a):
    from licenses.services import license_reactivate

    assert client.get(loader_url(license_a.key)).status_code == 200
    license_suspend(license=license_a)
    assert client.get(loader_url(license_a.key)).status_code == 403
    license_reactivate(license=license_a)
    assert client.get(loader_url(license_a.key)).status_code == 200


def test_cached_loader_follows_a_widget_publish_of_another_widget(client, widget_a, license_a, owner):
    assert payload(client.get(loader_url(license_a.key)).content)["widget"] == widget_a.public_id
    other = WidgetFactory(license=license_a)
    assert client.get(loader_url(license_a.key, other.public_id)).status_code == 404
    publish(other, owner)
    assert client.get(loader_url(license_a.key, other.public_id)).status_code == 200


def test_loader_rejects_post(client, widget_a, license_a):
    assert client.post(loader_url(license_a.key)).status_code == 405


def test_cached_loader_follows_a_staff_edit_in_the_admin_at_once(client, rf, staff, widget_a, license_a):
    from django.contrib.admin.sites import site

    assert client.get(loader_url(license_a.key)).status_code == 200
    request = rf.post("/admin/licenses/license/")
    request.user = staff
    license_a.status = "suspended"
    site._registry[type(license_a)].save_model(request, license_a, form=None, change=True)
    assert client.get(loader_url(license_a.key)).status_code == 403


def test_bundle_and_voice_are_served_under_hashed_names_in_production(settings, tmp_path):
    """With the production storage (collectstatic's manifest), both scripts get content-hashed names,
    and the version stamp covers voice.js too, so a voice.js deploy changes every loader's ETag."""
    from django.core.management import call_command

    from widgets import loader

    settings.STATIC_ROOT = tmp_path
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.ManifestStaticFilesStorage"},
    }
    call_command("collectstatic", "--noinput", verbosity=0)
    loader.bundle_path.cache_clear()
    loader.voice_path.cache_clear()
    try:
        assert re.fullmatch(r"/static/widget/widget\.[0-9a-f]{12}\.js", loader.bundle_path())
        assert re.fullmatch(r"/static/widget/voice\.[0-9a-f]{12}\.js", loader.voice_path())
        assert "voice.js" in loader.BUNDLE_FILES
    finally:
        loader.bundle_path.cache_clear()
        loader.voice_path.cache_clear()
