"""Staff map agencies' own domains and set a license's white-label flag in the admin (issue 15.5)."""

from __future__ import annotations

import pytest

from licenses import hosts
from licenses.models import CustomDomain

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/licenses/customdomain/"


@pytest.fixture(autouse=True)
def _fresh_host_map():
    hosts.host_map_invalidate()
    yield
    hosts.host_map_invalidate()


def test_agency_owner_cannot_reach_the_domains_admin(client, owner):
    client.force_login(owner)
    response = client.get(CHANGELIST)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_staff_add_a_domain_pending_then_mark_it_verified(client, staff, agency_a):
    client.force_login(staff)
    response = client.post(f"{CHANGELIST}add/", {"agency": agency_a.pk, "host": "Chat.Agency-A.example"})
    assert response.status_code == 302
    domain = CustomDomain.objects.get()
    assert (domain.host, domain.status, domain.agency_id) == ("chat.agency-a.example", "pending", agency_a.pk)
    assert hosts.host_map_refresh() == {}
    client.post(CHANGELIST, {"action": "mark_verified", "_selected_action": [domain.pk]})
    domain.refresh_from_db()
    assert domain.status == "verified" and domain.check_message == "Marked verified by staff."
    assert hosts.host_map_refresh() == {"chat.agency-a.example": agency_a.pk}
    client.post(CHANGELIST, {"action": "mark_pending", "_selected_action": [domain.pk]})
    assert hosts.host_map_refresh() == {}


def test_staff_cannot_add_a_bad_or_platform_host(client, staff, agency_a):
    client.force_login(staff)
    for host in ("https://chat.agency-a.example", "*.agency-a.example", "testserver"):
        response = client.post(f"{CHANGELIST}add/", {"agency": agency_a.pk, "host": host})
        assert response.status_code == 200 and b"errorlist" in response.content
    assert not CustomDomain.objects.exists()


def test_check_dns_action_verifies_against_the_target(client, staff, agency_a, settings):
    settings.CUSTOM_DOMAIN_TARGET = "127.0.0.1"
    domain = CustomDomain.objects.create(agency=agency_a, host="localhost")
    client.force_login(staff)
    response = client.post(CHANGELIST, {"action": "check_dns", "_selected_action": [domain.pk]}, follow=True)
    assert "Localhost: localhost points to 127.0.0.1." in response.content.decode()
    domain.refresh_from_db()
    assert domain.status == "verified"


def test_staff_set_white_label_on_a_license(client, staff, license_a):
    client.force_login(staff)
    page = client.get(f"/admin/licenses/license/{license_a.pk}/change/")
    assert b'name="white_label"' in page.content
