"""Installation health (issue 13.5): where a license is used and who is refused, counted in memory on the
hot path and written by the flush; shown on the license's domains page with "Allow this site"."""

from __future__ import annotations

import pytest
from django.urls import reverse

from licenses import installs
from licenses.models import InstallOrigin

pytestmark = pytest.mark.django_db

SHOP = "https://shop.example.com"
STAGING = "https://staging.example.net:8443"


@pytest.fixture(autouse=True)
def _fresh_counts():
    installs._pending.clear()
    yield
    installs._pending.clear()


def rows(license):
    return {(r.origin, r.outcome): r.count for r in InstallOrigin.objects.filter(license=license)}


def test_every_public_surface_is_counted_without_a_database_write(client, widget_a, license_a):
    loader = f"/api/widget/{license_a.key}/chat-widget.js"
    config = f"/api/widget/{license_a.key}/config"
    for _ in range(3):
        assert client.get(config, HTTP_ORIGIN=SHOP).status_code == 200
    # A script tag sends no Origin: the loader names the page by its Referer.
    assert client.get(loader, HTTP_REFERER=SHOP + "/phones?utm=x").status_code == 200
    assert client.get("/api/widget/lic_nope/chat-widget.js", HTTP_REFERER=SHOP).status_code == 404
    assert client.get(config, HTTP_ORIGIN=STAGING).status_code == 403
    assert client.get(config, HTTP_ORIGIN=STAGING.upper()).status_code == 403  # the same site
    assert client.get(config).status_code == 403
    assert not InstallOrigin.objects.exists()  # nothing written on the requests' path

    assert installs.install_flush() == 4
    assert rows(license_a) == {
        (SHOP, "ok"): 3,
        (SHOP, "loader"): 1,
        (STAGING, "domain_not_allowed"): 2,
        ("(none)", "origin_missing"): 1,
    }
    client.get(config, HTTP_ORIGIN=SHOP)
    installs.install_flush()
    assert rows(license_a)[(SHOP, "ok")] == 4  # added to, never replaced
    first = InstallOrigin.objects.get(license=license_a, origin=SHOP, outcome="ok")
    assert first.first_seen <= first.last_seen


def test_a_suspended_license_is_counted_with_its_reason(client, widget_a, license_a):
    license_a.status = license_a.Status.SUSPENDED
    license_a.save()
    assert client.get(f"/api/widget/{license_a.key}/config", HTTP_ORIGIN=SHOP).status_code == 403
    installs.install_flush()
    assert rows(license_a) == {(SHOP, "suspended"): 1}


def test_origins_per_license_are_bounded(license_a, settings):
    settings.INSTALL_MAX_ORIGINS = 2
    for i in range(5):
        installs.install_seen(license_id=license_a.pk, origin=f"https://site{i}.example", outcome="domain_not_allowed")
        installs.install_flush()
    assert rows(license_a) == {
        ("https://site0.example", "domain_not_allowed"): 1,
        ("https://site1.example", "domain_not_allowed"): 1,
        ("(other)", "domain_not_allowed"): 3,
    }


def test_origin_label():
    assert installs.origin_label("HTTPS://Shop.Example.com") == "https://shop.example.com"
    assert installs.origin_label("http://localhost:3000") == "http://localhost:3000"
    for bad in (None, "", "null", "file://x", "javascript:alert(1)", "https://[bad"):
        assert installs.origin_label(bad) == "(none)"


def test_domains_page_lists_them_and_admins_allow_a_refused_site(client, owner, viewer, outsider, license_a):
    installs.install_seen(license_key=license_a.key, origin=SHOP, outcome="loader")
    installs.install_seen(license_id=license_a.pk, origin=STAGING, outcome="domain_not_allowed")
    installs.install_flush()
    url = reverse("app-license-domains", args=[license_a.key])
    client.force_login(viewer)
    page = client.get(url).content.decode()
    assert f'data-origin="{STAGING}" data-outcome="domain_not_allowed"' in page
    assert "Allow this site" not in page  # viewers read
    client.force_login(outsider)
    assert client.get(url).status_code == 404
    client.force_login(owner)
    assert client.get(url).content.decode().count("Allow this site") == 1
    assert client.post(url, {"action": "add", "domains": STAGING}).status_code == 302
    license_a.refresh_from_db()
    assert "staging.example.net:8443" in license_a.allowed_domains
