import pytest

from licenses.models import License

pytestmark = pytest.mark.django_db


def test_member_lists_own_agency_licenses_with_usage(api, member, license_a, license_b):
    body = api(member).get("/api/v1/licenses/").json()
    assert [lic["key"] for lic in body] == [license_a.key]
    assert body[0]["serving"] == "ok"
    assert body[0]["usage"]["conversations"] == 0
    assert body[0]["limits"]["max_widgets"] == 5


def test_member_reads_license_outsider_gets_404(api, member, outsider, license_a):
    assert api(member).get(f"/api/v1/licenses/{license_a.key}/").status_code == 200
    assert api(outsider).get(f"/api/v1/licenses/{license_a.key}/").status_code == 404
    # Actions are staff-only: any non-staff caller gets the same 403 whether or not the key exists.
    refused = api(outsider).post(f"/api/v1/licenses/{license_a.key}/suspend/")
    unknown = api(outsider).post("/api/v1/licenses/lic_does_not_exist/suspend/")
    assert (refused.status_code, unknown.status_code) == (403, 403)
    assert refused.json() == unknown.json()


def test_anonymous_is_401(api, license_a):
    assert api().get("/api/v1/licenses/").status_code == 401
    assert api().get(f"/api/v1/licenses/{license_a.key}/").status_code == 401
    assert api().get("/api/v1/me/").status_code == 401


def test_only_staff_create_and_change_licenses(api, owner, staff, agency_a, license_a):
    body = {"agency": agency_a.slug, "client_name": "New Co", "allowed_domains": ["new.example.com"]}
    assert api(owner).post("/api/v1/licenses/", body, format="json").status_code == 403
    assert api(owner).patch(f"/api/v1/licenses/{license_a.key}/", {"notes": "x"}, format="json").status_code == 403
    assert api(owner).post(f"/api/v1/licenses/{license_a.key}/suspend/").status_code == 403
    response = api(staff).post("/api/v1/licenses/", body, format="json")
    assert response.status_code == 201
    assert License.objects.get(key=response.json()["key"]).allowed_domains == ["new.example.com"]


def test_staff_create_with_bad_domains_is_400_with_paths_and_saves_nothing(api, staff, agency_a):
    body = {"agency": agency_a.slug, "client_name": "Bad", "allowed_domains": ["ok.example.com", "nope nope"]}
    response = api(staff).post("/api/v1/licenses/", body, format="json")
    assert response.status_code == 400
    assert "allowed_domains[1]" in response.json()["error"]["fields"]
    assert not License.objects.filter(client_name="Bad").exists()


def test_staff_actions(api, staff, license_a):
    client = api(staff)
    old = license_a.key
    assert client.post(f"/api/v1/licenses/{old}/suspend/").json()["status"] == "suspended"
    assert client.post(f"/api/v1/licenses/{old}/reactivate/").json()["status"] == "active"
    assert client.post(f"/api/v1/licenses/{old}/extend/").json()["expires_at"]
    new = client.post(f"/api/v1/licenses/{old}/rotate-key/").json()["key"]
    assert new != old and client.get(f"/api/v1/licenses/{old}/").status_code == 404
    assert client.post(f"/api/v1/licenses/{new}/explode/").status_code == 404


def test_errors_have_the_standard_shape(api, owner):
    body = api(owner).get("/api/v1/licenses/lic_missing/").json()
    assert body == {"error": {"code": "not_found", "message": "Not found."}}


def test_text_fields_refuse_numbers_and_booleans(api, staff, member, license_a, agency_a):
    """DRF's CharField turns 42 into "42"; the schema says string, so the API answers 400 (the fuzzer's
    negative cases found it)."""
    url = f"/api/v1/licenses/{license_a.key}/"
    for body in ({"client_name": 4.004695704406059e16}, {"client_name": True}, {"notes": 7}, {"allowed_domains": [1]}):
        response = api(staff).patch(url, body, format="json")
        assert response.status_code == 400, body
        assert response.json()["error"]["code"] == "invalid"
    license_a.refresh_from_db()
    assert license_a.client_name == "Client A"
    # Switching agency takes the slug or the numeric id, as the schema now says; nothing else.
    switch = "/api/v1/me/agency/"
    assert api(member).post(switch, {"agency": agency_a.pk}, format="json").status_code == 200
    assert api(member).post(switch, {"agency": agency_a.slug}, format="json").status_code == 200
    for bad in (True, 1.5, [agency_a.pk], ""):
        assert api(member).post(switch, {"agency": bad}, format="json").status_code == 400, bad
