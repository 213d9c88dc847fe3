"""/app/licenses/<key>/domains/: agency admins and owners manage their licenses' allowed domains."""

from __future__ import annotations

import pytest

from licenses.api import ApiError
from licenses.models import License, Membership
from licenses.services import license_domains_set
from licenses.tests.factories import MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db

NEW = "https://staging.client-a.example"


def url(license: License) -> str:
    return f"/app/licenses/{license.key}/domains/"


@pytest.fixture
def admin(agency_a):
    user = UserFactory(username="admin-a")
    MembershipFactory(user=user, agency=agency_a, role=Membership.Role.ADMIN)
    return user


def public_status(client, license: License, origin: str) -> int:
    return client.get(f"/api/widget/{license.key}/config", HTTP_ORIGIN=origin).status_code


def domains(license: License) -> list[str]:
    return License.objects.get(pk=license.pk).allowed_domains


def test_admin_adds_domains_and_the_public_api_serves_them_at_once(client, admin, widget_a):
    license = widget_a.license
    before = domains(license)
    assert public_status(client, license, NEW) == 403
    client.force_login(admin)
    response = client.post(url(license), {"action": "add", "domains": f"{NEW}/shop\n*.cdn.client-a.example"})
    assert response.status_code == 302
    assert domains(license) == [*before, "staging.client-a.example", "*.cdn.client-a.example"]
    client.logout()
    assert public_status(client, license, NEW) == 200
    assert public_status(client, license, "https://img.cdn.client-a.example") == 200
    history = License.history.filter(id=license.pk).order_by("-history_date").first()
    assert history.history_user == admin and history.allowed_domains == domains(license)


def test_owner_removes_a_domain_and_it_is_refused_at_once(client, owner, widget_a):
    license = widget_a.license
    assert public_status(client, license, "https://shop.example.com") == 200
    client.force_login(owner)
    page = client.get(url(license)).content.decode()
    assert 'data-domain="shop.example.com"' in page and "Remove shop.example.com" in page
    response = client.post(url(license), {"action": "remove", "domain": "shop.example.com"})
    assert response.status_code == 302
    assert "shop.example.com" not in domains(license)
    client.logout()
    assert public_status(client, license, "https://shop.example.com") == 403


def test_the_loader_resolution_is_not_served_stale_after_a_change(client, owner, widget_a):
    """The service bumps the license's cache generation, so nothing cached under the old one is read."""
    from licenses.selectors import license_cache_generation

    license = widget_a.license
    assert client.get(f"/api/widget/{license.key}/chat-widget.js").status_code == 200
    generation = license_cache_generation(key=license.key)
    license_domains_set(actor=owner.memberships.get(), license=license, domains=["only.example.com"])
    assert license_cache_generation(key=license.key) != generation


def test_invalid_domains_get_the_api_messages_and_change_nothing(client, admin, license_a):
    before = domains(license_a)
    client.force_login(admin)
    response = client.post(url(license_a), {"action": "add", "domains": "good.example.com\nnot a host!\n*.com"})
    assert response.status_code == 400
    html = response.content.decode()
    assert "is too broad; a wildcard needs a registrable domain" in html
    assert "is not a host name" in html
    assert domains(license_a) == before
    assert client.post(url(license_a), {"action": "add", "domains": "  "}).status_code == 400


def test_staff_cap_limits_growth_but_not_cleanup(client, admin, license_a):
    license_a.allowed_domains = ["a.example.com", "b.example.com", "c.example.com"]
    license_a.limits = {**license_a.limits, "max_allowed_domains": 2}
    license_a.save()
    client.force_login(admin)
    response = client.post(url(license_a), {"action": "add", "domains": "d.example.com"})
    assert response.status_code == 400
    assert (
        "This license allows 2 domains; remove one first or ask staff to raise the limit." in response.content.decode()
    )
    assert client.post(url(license_a), {"action": "remove", "domain": "c.example.com"}).status_code == 302
    assert domains(license_a) == ["a.example.com", "b.example.com"]
    assert client.post(url(license_a), {"action": "add", "domains": "d.example.com"}).status_code == 400


@pytest.mark.parametrize("who", ["viewer", "member"])
def test_viewers_and_editors_see_the_domains_but_cannot_change_them(client, request, who, license_a):
    before = domains(license_a)
    client.force_login(request.getfixturevalue(who))
    page = client.get(url(license_a))
    assert page.status_code == 200
    html = page.content.decode()
    assert "shop.example.com" in html and 'name="domains"' not in html and "Remove shop" not in html
    assert "Read-only" in html
    response = client.post(url(license_a), {"action": "add", "domains": "evil.example.net"})
    assert response.status_code == 403
    response = client.post(url(license_a), {"action": "remove", "domain": "shop.example.com"})
    assert response.status_code == 403
    assert domains(license_a) == before


def test_outsider_gets_404_and_changes_nothing(client, outsider, license_a):
    before = domains(license_a)
    client.force_login(outsider)
    assert client.get(url(license_a)).status_code == 404
    assert client.post(url(license_a), {"action": "add", "domains": "evil.example.net"}).status_code == 404
    assert client.post(url(license_a), {"action": "remove", "domain": "shop.example.com"}).status_code == 404
    assert domains(license_a) == before


def test_anonymous_is_sent_to_login(client, license_a):
    response = client.post(url(license_a), {"action": "add", "domains": "evil.example.net"})
    assert response.status_code == 302 and "/app/login/" in response["Location"]


def test_staff_without_membership_uses_the_admin(client, staff, owner, license_a):
    from licenses.tests.factories import AgencyFactory

    MembershipFactory(user=staff, agency=AgencyFactory(), role=Membership.Role.OWNER)
    client.force_login(staff)
    assert client.get(url(license_a)).status_code == 404


def test_service_checks_the_actor(license_a, outsider, viewer, owner):
    with pytest.raises(ApiError) as info:
        license_domains_set(actor=outsider.memberships.get(), license=license_a, domains=["x.example.com"])
    assert info.value.status_code == 404
    with pytest.raises(ApiError) as info:
        license_domains_set(actor=viewer.memberships.get(), license=license_a, domains=["x.example.com"])
    assert info.value.status_code == 403
    with pytest.raises(ApiError) as info:
        license_domains_set(actor=None, license=license_a, domains=["x.example.com"])
    assert info.value.status_code == 404
    updated = license_domains_set(
        actor=owner.memberships.get(), license=license_a, domains=["X.Example.com", "x.example.com"]
    )
    assert updated.allowed_domains == ["x.example.com"]


def test_licenses_page_links_to_the_domains_page(client, owner, viewer, license_a):
    client.force_login(owner)
    assert "Manage domains" in client.get("/app/licenses/").content.decode()
    client.force_login(viewer)
    assert "View domains" in client.get("/app/licenses/").content.decode()


# --- the same rule over the REST API (PATCH /api/v1/licenses/<key>/ with allowed_domains alone) ----------


def test_api_admin_changes_domains_alone(api, admin, license_a):
    response = api(admin).patch(
        f"/api/v1/licenses/{license_a.key}/", {"allowed_domains": ["https://Staging.Client-A.example/x"]}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["allowed_domains"] == ["staging.client-a.example"] == domains(license_a)


def test_api_agency_may_not_change_anything_else(api, admin, license_a):
    before = License.objects.get(pk=license_a.pk)
    response = api(admin).patch(
        f"/api/v1/licenses/{license_a.key}/",
        {"allowed_domains": ["x.example.com"], "limits": {"max_widgets": 99}},
        format="json",
    )
    assert response.status_code == 403
    after = License.objects.get(pk=license_a.pk)
    assert (after.allowed_domains, after.limits) == (before.allowed_domains, before.limits)


@pytest.mark.parametrize("who,status", [("viewer", 403), ("member", 403), ("outsider", 404)])
def test_api_others_cannot_change_domains(api, request, who, status, license_a):
    before = domains(license_a)
    response = api(request.getfixturevalue(who)).patch(
        f"/api/v1/licenses/{license_a.key}/", {"allowed_domains": ["evil.example.net"]}, format="json"
    )
    assert response.status_code == status
    assert domains(license_a) == before


def test_api_bad_domain_and_cap_errors(api, admin, license_a):
    response = api(admin).patch(f"/api/v1/licenses/{license_a.key}/", {"allowed_domains": ["*.com"]}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {
        "allowed_domains[0]": ["'*.com' is too broad; a wildcard needs a registrable domain (*.example.com)."]
    }
    license_a.limits = {**license_a.limits, "max_allowed_domains": 1}
    license_a.save()
    response = api(admin).patch(
        f"/api/v1/licenses/{license_a.key}/",
        {"allowed_domains": [*domains(license_a), "more.example.com"]},
        format="json",
    )
    assert response.status_code == 400 and response.json()["error"]["code"] == "domain_limit"
