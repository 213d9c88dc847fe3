import pytest
from django.db import connection

from widgets.models import Widget, WidgetVersion

pytestmark = pytest.mark.django_db


def url(widget=None, action=""):
    if widget is None:
        return "/api/v1/widgets/"
    pid = widget if isinstance(widget, str) else widget.public_id
    return f"/api/v1/widgets/{pid}/" + (f"{action}/" if action else "")


# --- create ---------------------------------------------------------------------------------------


def test_owner_creates_chatkit_widget_and_type_is_derived(api, owner, license_a):
    response = api(owner).post(
        url(),
        {"license": license_a.key, "name": "Support", "config": {"connection": {"provider": "chatkit"}}},
        format="json",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["widget_type"] == "chatkit" and body["public_id"].startswith("wgt_")
    widget = Widget.objects.get(public_id=body["public_id"])
    assert widget.widget_type == "chatkit" and widget.created_by == owner
    assert widget.published_version is None


def test_widget_type_follows_provider_on_every_update(api, owner, license_a):
    client = api(owner)
    pid = client.post(url(), {"license": license_a.key, "name": "W"}, format="json").json()["public_id"]
    assert Widget.objects.get(public_id=pid).widget_type == "n8n"
    client.patch(url(pid), {"config": {"connection": {"provider": "chatkit"}}}, format="json")
    assert Widget.objects.get(public_id=pid).widget_type == "chatkit"
    client.put(url(pid), {"config": {}}, format="json")  # replace: back to defaults (n8n)
    assert Widget.objects.get(public_id=pid).widget_type == "n8n"


def test_widget_type_in_the_body_is_ignored(api, owner, license_a):
    body = {"license": license_a.key, "name": "W", "widget_type": "chatkit"}
    assert api(owner).post(url(), body, format="json").json()["widget_type"] == "n8n"


def test_invalid_config_is_400_with_field_paths_and_nothing_saved(api, owner, license_a):
    response = api(owner).post(
        url(),
        {
            "license": license_a.key,
            "name": "W",
            "config": {"appearance": {"chatkit": {"accent_level": 7, "accent_color": "blue"}}},
        },
        format="json",
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_config"
    assert set(error["fields"]) == {"config.appearance.chatkit.accent_level", "config.appearance.chatkit.accent_color"}
    assert not Widget.objects.exists()


def test_missing_name_is_400(api, owner, license_a):
    response = api(owner).post(url(), {"license": license_a.key}, format="json")
    assert response.status_code == 400 and "name" in response.json()["error"]["fields"]


def test_widget_limit_reached(api, owner, license_a):
    license_a.limits = {**license_a.limits, "max_widgets": 1}
    license_a.save()
    client = api(owner)
    assert client.post(url(), {"license": license_a.key, "name": "One"}, format="json").status_code == 201
    response = client.post(url(), {"license": license_a.key, "name": "Two"}, format="json")
    assert response.status_code == 400 and response.json()["error"]["code"] == "widget_limit_reached"
    assert Widget.objects.count() == 1


def test_outsider_cannot_create_on_another_agencys_license(api, outsider, license_a):
    response = api(outsider).post(url(), {"license": license_a.key, "name": "X"}, format="json")
    assert response.status_code == 404
    assert not Widget.objects.exists()


def test_viewer_cannot_create(api, viewer, license_a):
    response = api(viewer).post(url(), {"license": license_a.key, "name": "X"}, format="json")
    assert response.status_code == 403 and response.json()["error"]["code"] == "permission_denied"


def test_anonymous_gets_401_everywhere(api, widget_a):
    client = api()
    assert client.get(url()).status_code == 401
    assert client.get(url(widget_a)).status_code == 401
    assert client.patch(url(widget_a), {"name": "x"}, format="json").status_code == 401
    assert client.post(url(widget_a, "publish")).status_code == 401
    assert client.get(url(widget_a, "versions")).status_code == 401
    assert client.post(url(widget_a, "rollback"), {"version": 1}, format="json").status_code == 401
    assert client.delete(url(widget_a)).status_code == 401
    body = client.get(url()).json()
    assert body["error"]["code"] == "not_authenticated"


# --- read -----------------------------------------------------------------------------------------


def test_member_lists_only_own_agency_widgets(api, member, widget_a, widget_b):
    ids = [w["public_id"] for w in api(member).get(url()).json()]
    assert ids == [widget_a.public_id]


def test_outsider_gets_404_on_every_widget_endpoint(api, outsider, widget_a):
    client = api(outsider)
    assert client.get(url(widget_a)).status_code == 404
    assert client.patch(url(widget_a), {"name": "x"}, format="json").status_code == 404
    assert client.put(url(widget_a), {"name": "x"}, format="json").status_code == 404
    assert client.post(url(widget_a, "publish")).status_code == 404
    assert client.get(url(widget_a, "versions")).status_code == 404
    assert client.post(url(widget_a, "rollback"), {"version": 1}, format="json").status_code == 404
    assert client.post(url(widget_a, "duplicate")).status_code == 404
    assert client.delete(url(widget_a)).status_code == 404
    assert client.get(url() + f"?license={widget_a.license.key}").status_code == 404
    widget_a.refresh_from_db()
    assert widget_a.name == "Widget A"


def test_user_in_two_agencies_switches(api, owner, outsider, agency_b, widget_a, widget_b):
    from licenses.models import Membership

    Membership.objects.create(user=owner, agency=agency_b, role="viewer")
    client = api(owner)
    first = {w["public_id"] for w in client.get(url()).json()}
    client.post("/api/v1/me/agency/", {"agency": "agency-b"}, format="json")
    second = {w["public_id"] for w in client.get(url(), HTTP_X_SWITCHBOARD_AGENCY="agency-b").json()}
    assert first == {widget_a.public_id} and second == {widget_b.public_id}
    me = client.get("/api/v1/me/").json()
    assert {m["agency"]["slug"] for m in me["memberships"]} == {"agency-a", "agency-b"}


# --- update ---------------------------------------------------------------------------------------


def test_member_edits_draft_without_touching_published(api, member, widget_a):
    published = widget_a.published_version.config
    response = api(member).patch(url(widget_a), {"config": {"behaviour": {"greeting": "Yo"}}}, format="json")
    assert response.status_code == 200
    widget_a.refresh_from_db()
    assert widget_a.config["behaviour"]["greeting"] == "Yo"
    assert widget_a.published_version.config == published
    assert response.json()["has_unpublished_changes"] is True


def test_invalid_update_is_400_and_draft_unchanged(api, member, widget_a):
    before = widget_a.config
    response = api(member).patch(url(widget_a), {"config": {"embed": {"height": 5000}}}, format="json")
    assert response.status_code == 400
    assert "config.embed.height" in response.json()["error"]["fields"]
    widget_a.refresh_from_db()
    assert widget_a.config == before


def test_stale_revision_is_409_and_nothing_saved(api, owner, member, widget_a):
    revision = api(member).get(url(widget_a)).json()["revision"]
    api(owner).patch(url(widget_a), {"name": "Renamed", "revision": revision}, format="json")
    response = api(member).patch(url(widget_a), {"name": "Mine", "revision": revision}, format="json")
    assert response.status_code == 409 and response.json()["error"]["code"] == "stale_draft"
    widget_a.refresh_from_db()
    assert widget_a.name == "Renamed"


def test_viewer_cannot_edit(api, viewer, widget_a):
    response = api(viewer).patch(url(widget_a), {"name": "x"}, format="json")
    assert response.status_code == 403


def test_secrets_are_write_only(api, owner, widget_a):
    client = api(owner)
    response = client.patch(url(widget_a), {"secrets": {"openai_api_key": "sk-proj-abcdef123456WXYZ"}}, format="json")
    assert response.status_code == 200
    assert response.json()["secrets"]["openai_api_key"] == {"set": True, "last4": "WXYZ"}
    assert "sk-proj" not in response.content.decode()
    assert "sk-proj" not in client.get(url(widget_a)).content.decode()
    with connection.cursor() as cursor:
        cursor.execute("SELECT secrets FROM widgets_widget WHERE id = %s", [widget_a.pk])
        assert "sk-proj" not in cursor.fetchone()[0]
    # an empty string clears it; omitting keeps it
    client.patch(url(widget_a), {"name": "N"}, format="json")
    widget_a.refresh_from_db()
    assert widget_a.secrets["openai_api_key"] == "sk-proj-abcdef123456WXYZ"
    client.patch(url(widget_a), {"secrets": {"openai_api_key": ""}}, format="json")
    widget_a.refresh_from_db()
    assert "openai_api_key" not in widget_a.secrets


def test_unknown_secret_is_rejected(api, owner, widget_a):
    response = api(owner).patch(url(widget_a), {"secrets": {"aws_key": "x"}}, format="json")
    assert response.status_code == 400 and "secrets.aws_key" in response.json()["error"]["fields"]


# --- publish / versions / rollback ----------------------------------------------------------------


def test_owner_publishes_a_snapshot(api, owner, widget_a):
    client = api(owner)
    client.patch(url(widget_a), {"config": {"behaviour": {"greeting": "v2 hello"}}}, format="json")
    response = client.post(url(widget_a, "publish"), {"note": "new greeting"}, format="json")
    assert response.status_code == 201 and response.json()["number"] == 2
    widget_a.refresh_from_db()
    assert widget_a.published_version.number == 2
    assert widget_a.published_version.config["behaviour"]["greeting"] == "v2 hello"
    assert widget_a.published_version.published_by == owner
    versions = client.get(url(widget_a, "versions")).json()
    assert [v["number"] for v in versions] == [2, 1]


def test_editor_and_viewer_cannot_publish(api, member, viewer, widget_a):
    for user in (member, viewer):
        response = api(user).post(url(widget_a, "publish"))
        assert response.status_code == 403
    assert WidgetVersion.objects.filter(widget=widget_a).count() == 1


def test_publish_after_provider_switch_stores_the_version_type(api, owner, widget_a):
    client = api(owner)
    client.patch(url(widget_a), {"config": {"connection": {"provider": "chatkit"}}}, format="json")
    client.post(url(widget_a, "publish"))
    widget_a.refresh_from_db()
    assert widget_a.published_version.widget_type == "chatkit"


def test_rollback_publishes_old_snapshot_as_new_version(api, owner, widget_a):
    client = api(owner)
    original = widget_a.published_version.config["behaviour"]["greeting"]
    client.patch(url(widget_a), {"config": {"behaviour": {"greeting": "changed"}}}, format="json")
    client.post(url(widget_a, "publish"))
    response = client.post(url(widget_a, "rollback"), {"version": 1}, format="json")
    assert response.status_code == 201 and response.json()["number"] == 3
    widget_a.refresh_from_db()
    assert widget_a.published_version.config["behaviour"]["greeting"] == original
    assert widget_a.config["behaviour"]["greeting"] == original  # the draft follows
    assert widget_a.published_version.note == "Rollback to v1"


def test_rollback_to_unknown_version_is_404(api, owner, widget_a):
    response = api(owner).post(url(widget_a, "rollback"), {"version": 99}, format="json")
    assert response.status_code == 404 and response.json()["error"]["code"] == "version_not_found"


def test_rollback_bad_input_is_400(api, owner, widget_a):
    assert api(owner).post(url(widget_a, "rollback"), {"version": "x"}, format="json").status_code == 400


# --- duplicate / delete ---------------------------------------------------------------------------


def test_duplicate_copies_config_and_catalog(api, owner, widget_a):
    from widgets.tests.factories import KnowledgeEntryFactory, ProductFactory

    KnowledgeEntryFactory(widget=widget_a)
    ProductFactory(widget=widget_a)
    response = api(owner).post(url(widget_a, "duplicate"))
    assert response.status_code == 201
    copy = Widget.objects.get(public_id=response.json()["public_id"])
    assert copy.config == widget_a.config and copy.published_version is None
    assert copy.knowledge.count() == 1 and copy.products.count() == 1


def test_delete_needs_admin(api, owner, member, widget_a):
    assert api(member).delete(url(widget_a)).status_code == 403
    assert api(owner).delete(url(widget_a)).status_code == 204
    assert not Widget.objects.filter(pk=widget_a.pk).exists()


def test_config_schema_endpoint(api, member):
    body = api(member).get("/api/v1/widgets/config-schema/").json()
    assert body["schema"]["type"] == "object" and "connection" in body["defaults"]
