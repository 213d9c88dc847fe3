import pytest
from django.core.management import CommandError, call_command

from licenses.models import License
from widgets.models import Widget

pytestmark = pytest.mark.django_db


def test_seed_demo_is_idempotent(settings, capsys):
    settings.DEBUG = True
    call_command("seed_demo")
    call_command("seed_demo")
    out = capsys.readouterr().out
    assert "owner / demo-owner-pass" in out and "staff / demo-staff-pass" in out
    license = License.objects.get(client_name="Demo Store")
    assert license.allowed_domains == ["localhost", "127.0.0.1"]
    widgets = Widget.objects.filter(license=license).order_by("id")
    assert [w.widget_type for w in widgets] == ["n8n", "chatkit"]
    assert all(w.published_version_id for w in widgets)
    assert License.objects.count() == 1


def test_seed_demo_refuses_default_passwords_with_debug_off(settings):
    settings.DEBUG = False
    with pytest.raises(CommandError, match="--force"):
        call_command("seed_demo")
    call_command("seed_demo", "--force")
    assert Widget.objects.count() == 2


def test_healthz_reports_database(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["checks"]["database"] == "ok"


def test_openapi_schema_and_docs(client):
    schema = client.get("/api/schema/")
    assert schema.status_code == 200 and b"/api/v1/widgets/" in schema.content
    docs = client.get("/api/docs/")
    assert docs.status_code == 200 and b"swagger" in docs.content.lower()
