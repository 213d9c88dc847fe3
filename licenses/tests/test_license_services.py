import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from licenses.api import ApiError
from licenses.models import License, LicenseUsage
from licenses.selectors import license_get_public
from licenses.services import (
    agency_create,
    license_create,
    license_extend,
    license_reactivate,
    license_rotate_key,
    license_suspend,
    license_update,
    membership_remove,
    membership_set,
    usage_increment,
)
from licenses.tests.factories import AgencyFactory, LicenseFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_license_create_normalizes_domains_and_fills_limits():
    agency = AgencyFactory()
    license = license_create(
        agency=agency,
        client_name=" Shop ",
        allowed_domains=["HTTPS://Shop.Example.com/", "shop.example.com"],
        limits={"max_widgets": 2},
    )
    assert license.key.startswith("lic_") and len(license.key) == 28
    assert license.client_name == "Shop"
    assert license.allowed_domains == ["shop.example.com"]
    assert license.max_widgets == 2 and license.monthly_conversations == 1000


def test_license_create_rejects_bad_input_and_saves_nothing():
    agency = AgencyFactory()
    with pytest.raises(ApiError) as exc:
        license_create(agency=agency, client_name="X", allowed_domains=["ok.com", "not a host"])
    assert "allowed_domains[1]" in exc.value.fields
    with pytest.raises(ApiError) as exc:
        license_create(agency=agency, client_name="X", limits={"max_widgets": -1, "bogus": 1})
    assert set(exc.value.fields) == {"limits.max_widgets", "limits.bogus"}
    assert not License.objects.exists()


def test_keys_are_unguessable_and_unique():
    keys = {LicenseFactory().key for _ in range(20)}
    assert len(keys) == 20


def test_rotate_key_old_key_stops_working_at_once():
    license = LicenseFactory()
    old = license.key
    license_rotate_key(license=license)
    assert license_get_public(key=old) is None
    assert license_get_public(key=license.key).pk == license.pk


def test_suspend_reactivate_and_history():
    license = LicenseFactory()
    license_suspend(license=license)
    assert License.objects.get(pk=license.pk).status == "suspended"
    license_reactivate(license=license)
    assert License.objects.get(pk=license.pk).status == "active"
    assert [h.status for h in license.history.all()][:3] == ["active", "suspended", "active"]


def test_extend_counts_from_later_of_now_and_expiry():
    license = LicenseFactory(expires_at=timezone.now() + timedelta(days=10))
    before = license.expires_at
    license_extend(license=license)
    assert license.expires_at == before + timedelta(days=365)
    expired = LicenseFactory(expires_at=timezone.now() - timedelta(days=100))
    license_extend(license=expired)
    assert expired.expires_at > timezone.now() + timedelta(days=364)


def test_license_update_merges_limits():
    license = LicenseFactory(limits={"max_widgets": 3})
    license_update(license=license, limits={"monthly_voice_minutes": 10})
    assert license.max_widgets == 3 and license.monthly_voice_minutes == 10


def test_agency_create_duplicate_slug_is_a_clear_error():
    agency_create(name="Acme")
    with pytest.raises(ApiError) as exc:
        agency_create(name="ACME")
    assert exc.value.code == "duplicate_slug"


def test_last_owner_cannot_leave():
    user = UserFactory()
    agency = agency_create(name="Solo", owner=user)
    membership = user.memberships.get()
    with pytest.raises(ApiError) as exc:
        membership_remove(membership=membership)
    assert exc.value.code == "last_owner"
    with pytest.raises(ApiError):
        membership_set(agency=agency, user=user, role="viewer")
    other = UserFactory()
    membership_set(agency=agency, user=other, role="owner")
    membership_set(agency=agency, user=user, role="viewer")


def test_usage_increment_creates_month_row_and_adds():
    license = LicenseFactory()
    usage_increment(license=license, conversations=1)
    usage_increment(license=license, conversations=2, voice_seconds=30.5)
    row = LicenseUsage.objects.get(license=license)
    assert row.conversations == 3 and row.voice_seconds == 30.5


@pytest.mark.django_db(transaction=True)
def test_usage_increment_is_exact_under_concurrency():
    if connection.vendor == "sqlite":
        pytest.skip("SQLite serialises writers; the race this guards against needs PostgreSQL (CI runs it).")
    license = LicenseFactory()
    threads, per_thread = 8, 25

    def work():
        try:
            for _ in range(per_thread):
                usage_increment(license=license.pk, conversations=1)
        finally:
            connection.close()

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert LicenseUsage.objects.get(license=license).conversations == threads * per_thread
