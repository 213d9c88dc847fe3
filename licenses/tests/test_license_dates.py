"""Issue 9 finding 6: license dates are bounded on input and the status computation is total.

Before: staff PATCH `expires_at: 9999-12-31` + `grace_days` answered 500 but saved, and afterwards the
license's detail, the staff list, the public config and the loader all answered 500 (OverflowError in
expires_at + timedelta(grace_days))."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from licenses.models import License
from licenses.selectors import license_serving_until, license_status_reason

ORIGIN = "https://shop.example.com"  # allowed by the license factory

pytestmark = pytest.mark.django_db

FAR = "9999-12-31T23:59:59Z"


def _snapshot(license):
    license.refresh_from_db()
    return license.expires_at, license.grace_days, license.starts_at


@pytest.mark.parametrize(
    "body,field",
    [
        ({"expires_at": FAR, "grace_days": 30}, "expires_at"),
        ({"expires_at": "1900-01-01T00:00:00Z"}, "expires_at"),
        ({"starts_at": "0001-01-01T00:00:00Z"}, "starts_at"),
        ({"starts_at": "2030-01-01T00:00:00Z", "expires_at": "2029-01-01T00:00:00Z"}, "expires_at"),
        ({"grace_days": 366}, "grace_days"),
        ({"grace_days": 10**30}, None),  # beyond a 64-bit integer: the JSON parser refuses it
    ],
)
def test_out_of_range_dates_are_400_and_nothing_is_saved(api, staff, license_a, body, field):
    before = _snapshot(license_a)
    response = api(staff).patch(f"/api/v1/licenses/{license_a.key}/", body, format="json")
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    if field:
        assert field in error["fields"]
    assert _snapshot(license_a) == before


def test_in_range_dates_save(api, staff, license_a):
    response = api(staff).patch(
        f"/api/v1/licenses/{license_a.key}/", {"expires_at": "2099-12-31T00:00:00Z", "grace_days": 365}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["serving"] == "ok"


def test_create_refuses_far_dates(api, staff, agency_a):
    response = api(staff).post(
        "/api/v1/licenses/", {"agency": agency_a.slug, "client_name": "Far", "expires_at": FAR}, format="json"
    )
    assert response.status_code == 400 and "expires_at" in response.json()["error"]["fields"]
    assert not License.objects.filter(client_name="Far").exists()


@pytest.fixture
def legacy_far_license(license_a, widget_a):
    """A row saved before dates were bounded: every reader must still answer."""
    License.objects.filter(pk=license_a.pk).update(
        expires_at=datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC), grace_days=30
    )
    license_a.refresh_from_db()
    return license_a


def test_status_computation_is_total(legacy_far_license):
    assert license_serving_until(legacy_far_license).year == 9999
    assert license_status_reason(license=legacy_far_license) == "ok"


def test_every_reader_answers_for_a_stored_far_date(client, api, member, staff, legacy_far_license):
    key = legacy_far_license.key
    assert api(member).get(f"/api/v1/licenses/{key}/").json()["serving"] == "ok"
    assert api(staff).get("/api/v1/licenses/").status_code == 200
    assert client.get(f"/api/widget/{key}/config", HTTP_ORIGIN=ORIGIN).status_code == 200
    assert client.get(f"/api/widget/{key}/chat-widget.js").status_code == 200
    client.force_login(staff)
    assert client.get("/admin/licenses/license/").status_code == 200
    assert client.get(f"/admin/licenses/license/{legacy_far_license.pk}/change/").status_code == 200


def test_extend_stops_at_the_bound(api, staff, license_a):
    License.objects.filter(pk=license_a.pk).update(expires_at=datetime(2099, 6, 1, tzinfo=UTC))
    response = api(staff).post(f"/api/v1/licenses/{license_a.key}/extend/")
    assert response.status_code == 400 and "expires_at" in response.json()["error"]["fields"]
    license_a.refresh_from_db()
    assert license_a.expires_at == datetime(2099, 6, 1, tzinfo=UTC)


def test_admin_form_refuses_far_dates(client, staff, license_a):
    client.force_login(staff)
    page = client.get(f"/admin/licenses/license/{license_a.pk}/change/")
    assert page.status_code == 200
    form = page.context["adminform"].form
    data = {name: form[name].value() if form[name].value() is not None else "" for name in form.fields}
    data.update({"expires_at_0": "9999-12-31", "expires_at_1": "23:59:59", "grace_days": "30"})
    for name in ("starts_at", "expires_at"):
        data.pop(name, None)
    data.setdefault("starts_at_0", "")
    data.setdefault("starts_at_1", "")
    for prefix in ("usage", "licenseusage_set"):
        data.update({f"{prefix}-TOTAL_FORMS": "0", f"{prefix}-INITIAL_FORMS": "0"})
    response = client.post(f"/admin/licenses/license/{license_a.pk}/change/", data)
    assert response.status_code == 200  # the form again, with the error
    assert "expires_at" in response.context["adminform"].form.errors
    license_a.refresh_from_db()
    assert license_a.expires_at is None or license_a.expires_at.year < 2100
