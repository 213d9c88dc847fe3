from datetime import timedelta

import pytest
from django.utils import timezone

from licenses.models import License
from licenses.services import usage_increment
from licenses.tests.factories import LicenseFactory

pytestmark = pytest.mark.django_db


def test_agency_user_cannot_enter_admin(client, owner):
    client.force_login(owner)
    response = client.get("/admin/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_anonymous_is_sent_to_login(client):
    assert client.get("/admin/licenses/license/").status_code == 302


def test_staff_sees_license_list_with_widgets_and_usage(client, staff, widget_a):
    license = widget_a.license
    usage_increment(license=license, conversations=3, voice_seconds=120)
    client.force_login(staff)
    response = client.get("/admin/licenses/license/")
    html = response.content.decode()
    assert response.status_code == 200
    assert license.key in html and "Client A" in html
    assert "3 / 1000" in html and "2.0 / 300" in html


def test_filters_and_search(client, staff, agency_a):
    soon = LicenseFactory(agency=agency_a, client_name="Soon Co", expires_at=timezone.now() + timedelta(days=10))
    LicenseFactory(agency=agency_a, client_name="Later Co", expires_at=timezone.now() + timedelta(days=90))
    client.force_login(staff)
    html = client.get("/admin/licenses/license/?expiring=30d").content.decode()
    assert "Soon Co" in html and "Later Co" not in html
    html = client.get(f"/admin/licenses/license/?q={soon.key}").content.decode()
    assert "Soon Co" in html and "Later Co" not in html
    assert client.get("/admin/licenses/license/?status__exact=suspended").status_code == 200


@pytest.mark.parametrize("action,check", [
    ("suspend", lambda lic, old: lic.status == "suspended"),
    ("extend_one_year", lambda lic, old: lic.expires_at > timezone.now() + timedelta(days=364)),
    ("rotate_key", lambda lic, old: lic.key != old.key),
])
def test_admin_actions(client, staff, license_a, action, check):
    client.force_login(staff)
    response = client.post("/admin/licenses/license/", {"action": action, "_selected_action": [license_a.pk]})
    assert response.status_code == 302
    assert check(License.objects.get(pk=license_a.pk), license_a)


def test_reactivate_action(client, staff, license_a):
    license_a.status = "suspended"
    license_a.save()
    client.force_login(staff)
    client.post("/admin/licenses/license/", {"action": "reactivate", "_selected_action": [license_a.pk]})
    assert License.objects.get(pk=license_a.pk).status == "active"


def test_history_is_visible(client, staff, license_a):
    client.force_login(staff)
    client.post("/admin/licenses/license/", {"action": "suspend", "_selected_action": [license_a.pk]})
    response = client.get(f"/admin/licenses/license/{license_a.pk}/history/")
    assert response.status_code == 200
    assert "suspended" in response.content.decode()


def test_change_page_and_widget_admin_render(client, staff, widget_a):
    client.force_login(staff)
    assert client.get(f"/admin/licenses/license/{widget_a.license.pk}/change/").status_code == 200
    assert client.get(f"/admin/licenses/agency/{widget_a.license.agency.pk}/change/").status_code == 200
    html = client.get("/admin/widgets/widget/").content.decode()
    assert widget_a.public_id in html and "v1" in html
    assert client.get(f"/admin/widgets/widget/{widget_a.pk}/change/").status_code == 200
