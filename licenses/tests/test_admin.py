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


@pytest.mark.parametrize(
    "action,check",
    [
        ("suspend", lambda lic, old: lic.status == "suspended"),
        ("extend_one_year", lambda lic, old: lic.expires_at > timezone.now() + timedelta(days=364)),
        ("rotate_key", lambda lic, old: lic.key != old.key),
    ],
)
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


# --- the license form: domains one per line, limits as named numbers, the key after saving ----------


def _form(agency, **extra):
    data = {
        "agency": agency.pk,
        "client_name": "Acme",
        "status": "active",
        "grace_days": 0,
        "notes": "",
        "domains": "",
        "limit_max_widgets": 3,
        "limit_monthly_conversations": 500,
        "limit_monthly_voice_minutes": 60,
        "limit_max_concurrent_voice_sessions": 2,
        "limit_max_allowed_domains": 10,
        "limit_chatkit_session_seconds": "",
        "limit_chatkit_max_requests_per_minute": "",
        "usage-TOTAL_FORMS": 0,
        "usage-INITIAL_FORMS": 0,
    }
    data.update(extra)
    return data


def test_add_form_shows_no_key_and_the_change_form_shows_the_saved_one(client, staff, agency_a):
    client.force_login(staff)
    html = client.get("/admin/licenses/license/add/").content.decode()
    assert "lic_" not in html
    assert 'name="domains"' in html and 'name="limit_monthly_conversations"' in html and 'name="limits"' not in html
    response = client.post("/admin/licenses/license/add/", _form(agency_a, domains="shop.example.com"))
    assert response.status_code == 302, response.content.decode()[:2000]
    license = License.objects.get(client_name="Acme")
    assert license.key in client.get(f"/admin/licenses/license/{license.pk}/change/").content.decode()


def test_plain_domains_one_per_line_are_normalised_like_the_api(client, staff, agency_a):
    client.force_login(staff)
    text = "Shop.Example.com\nhttps://www.shop.example.com/checkout\n\n*.example.org, localhost:3000\nshop.example.com"
    response = client.post("/admin/licenses/license/add/", _form(agency_a, domains=text))
    assert response.status_code == 302
    license = License.objects.get(client_name="Acme")
    assert license.allowed_domains == ["shop.example.com", "www.shop.example.com", "*.example.org", "localhost:3000"]
    assert license.limits == {
        "max_widgets": 3,
        "monthly_conversations": 500,
        "monthly_voice_minutes": 60,
        "max_concurrent_voice_sessions": 2,
        "max_allowed_domains": 10,
    }
    html = client.get(f"/admin/licenses/license/{license.pk}/change/").content.decode()
    assert "shop.example.com\nwww.shop.example.com\n*.example.org\nlocalhost:3000</textarea>" in html


def test_bad_domains_and_limits_get_the_api_errors_and_save_nothing(client, staff, agency_a):
    from licenses.api import ApiError
    from licenses.services import domains_normalize

    with pytest.raises(ApiError) as api:
        domains_normalize(domains=["ok.example.com", "bad host!", "*.com"])
    client.force_login(staff)
    response = client.post(
        "/admin/licenses/license/add/",
        _form(agency_a, domains="ok.example.com\nbad_host!\n*.com", limit_max_widgets=-1),
    )
    assert response.status_code == 200
    html = response.content.decode()
    errors = response.context["adminform"].form.errors
    assert errors["domains"] == [
        api.value.fields["allowed_domains[1]"][0].replace("bad host!", "bad_host!"),
        api.value.fields["allowed_domains[2]"][0],
    ]
    assert "is too broad" in html and "limit_max_widgets" in errors
    assert not License.objects.filter(client_name="Acme").exists()


def test_saving_in_the_admin_reaches_the_public_api_at_once(client, staff, widget_a):
    license = widget_a.license
    origin = "https://new-client.example.net"
    assert client.get(f"/api/widget/{license.key}/config", HTTP_ORIGIN=origin).status_code == 403
    client.force_login(staff)
    data = _form(license.agency, client_name=license.client_name, domains="new-client.example.net")
    response = client.post(f"/admin/licenses/license/{license.pk}/change/", data)
    assert response.status_code == 302
    client.logout()
    assert client.get(f"/api/widget/{license.key}/config", HTTP_ORIGIN=origin).status_code == 200


def test_search_finds_a_license_by_domain(client, staff, agency_a):
    shop = LicenseFactory(agency=agency_a, client_name="Shop Co", allowed_domains=["shop.example.com"])
    wild = LicenseFactory(agency=agency_a, client_name="Wild Co", allowed_domains=["*.example.org"])
    LicenseFactory(agency=agency_a, client_name="Other Co", allowed_domains=["other.test"])
    client.force_login(staff)

    def found(term: str) -> set[str]:
        response = client.get("/admin/licenses/license/", {"q": term})
        return {lic.client_name for lic in response.context["cl"].result_list}

    assert found("shop.example.com") == {"Shop Co"}
    assert found("https://Shop.Example.com/cart") == {"Shop Co"}
    assert found("www.example.org") == {"Wild Co"}  # a subdomain finds the wildcard that allows it
    assert found("example.org") == {"Wild Co"}  # text search on the pattern itself
    assert found("nowhere.test") == set()
    assert shop.pk and wild.pk
