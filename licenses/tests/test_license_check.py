from datetime import timedelta

import pytest
from django.utils import timezone

from licenses.domains import DomainError, domain_normalize, origin_allowed
from licenses.models import License
from licenses.selectors import license_check
from licenses.services import usage_increment
from licenses.tests.factories import LicenseFactory

ALLOWED = ["shop.example.com", "*.example.org", "localhost", "127.0.0.1", "staging.example.net:8443"]


@pytest.mark.parametrize(
    "origin,ok",
    [
        ("https://shop.example.com", True),
        ("https://SHOP.Example.COM", True),  # hosts compare case-insensitively
        ("http://shop.example.com:8080", True),  # no port in the pattern: any port
        ("https://evil-shop.example.com", False),
        ("https://shop.example.com.evil.io", False),
        ("https://a.example.org", True),  # wildcard: any subdomain
        ("https://deep.a.example.org", True),
        ("https://example.org", False),  # ...but not the apex
        ("https://notexample.org", False),
        ("http://localhost:3000", True),
        ("http://127.0.0.1:8000", True),
        ("https://staging.example.net:8443", True),  # port pattern: that port only
        ("https://staging.example.net", False),
        ("ftp://shop.example.com", False),
        ("null", False),
        ("", False),
        (None, False),
    ],
)
def test_origin_matching(origin, ok):
    assert origin_allowed(ALLOWED, origin) is ok


@pytest.mark.parametrize(
    "raw,normalized",
    [
        ("Shop.Example.com", "shop.example.com"),
        ("https://shop.example.com/path", "shop.example.com"),
        ("*.Example.org", "*.example.org"),
        ("localhost:3000", "localhost:3000"),
        ("127.0.0.1", "127.0.0.1"),
    ],
)
def test_domain_normalize(raw, normalized):
    assert domain_normalize(raw) == normalized


@pytest.mark.parametrize("raw", ["", "not a host", "*.com", "shop.example.com:99999", "300.1.1.1", "-bad-.com"])
def test_domain_normalize_refuses_bad_hosts(raw):
    with pytest.raises(DomainError):
        domain_normalize(raw)


@pytest.fixture
def license(db):
    return LicenseFactory(allowed_domains=ALLOWED, limits={"monthly_conversations": 2, "monthly_voice_minutes": 1})


def test_ok(license):
    check = license_check(license=license, origin="https://shop.example.com")
    assert check.ok and check.reason == "ok"


def test_unknown_license():
    check = license_check(license=None, origin="https://shop.example.com")
    assert check.reason == "unknown_license" and check.http_status == 404


@pytest.mark.parametrize(
    "status,reason", [(License.Status.SUSPENDED, "suspended"), (License.Status.REVOKED, "revoked")]
)
def test_status_reasons(license, status, reason):
    license.status = status
    license.save()
    check = license_check(license=license, origin="https://shop.example.com")
    assert check.reason == reason and check.http_status == 403


def test_expired_and_grace_days(license):
    license.expires_at = timezone.now() - timedelta(days=2)
    license.save()
    assert license_check(license=license, origin="https://shop.example.com").reason == "expired"
    license.grace_days = 3
    license.save()
    assert license_check(license=license, origin="https://shop.example.com").reason == "ok"


def test_not_started(license):
    license.starts_at = timezone.now() + timedelta(days=1)
    license.save()
    assert license_check(license=license, origin="https://shop.example.com").reason == "not_started"


@pytest.mark.parametrize("origin", [None, "", "null", "garbage"])
def test_origin_missing(license, origin):
    assert license_check(license=license, origin=origin).reason == "origin_missing"


def test_domain_not_allowed(license):
    assert license_check(license=license, origin="https://evil.io").reason == "domain_not_allowed"


def test_status_is_checked_before_origin(license):
    license.status = License.Status.SUSPENDED
    license.save()
    assert license_check(license=license, origin="https://evil.io").reason == "suspended"


def test_quota_exceeded(license):
    assert license_check(license=license, origin="http://localhost", quota="conversations").ok
    usage_increment(license=license, conversations=2)
    check = license_check(license=license, origin="http://localhost", quota="conversations")
    assert check.reason == "quota_exceeded" and check.http_status == 429
    # voice minutes are a separate allowance
    assert license_check(license=license, origin="http://localhost", quota="voice_minutes").ok
    usage_increment(license=license, voice_seconds=60)
    assert license_check(license=license, origin="http://localhost", quota="voice_minutes").reason == "quota_exceeded"
