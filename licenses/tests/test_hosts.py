"""Custom domains (licenses/hosts.py): host rules, the DNS check, and the per-process map of verified hosts."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from licenses import hosts
from licenses.models import CustomDomain


@pytest.fixture(autouse=True)
def _fresh_host_map():
    hosts.host_map_invalidate()
    yield
    hosts.host_map_invalidate()


@pytest.mark.parametrize("raw", ["chat.agency.example", "Chat.Agency.Example.", "  chat.agency.example "])
def test_a_host_name_is_normalised(raw):
    assert hosts.custom_domain_normalize(raw) == "chat.agency.example"


@pytest.mark.parametrize(
    "raw",
    [
        "https://chat.agency.example",
        "chat.agency.example:8443",
        "chat.agency.example/path",
        "*.agency.example",
        "10.0.0.1",
        "agency",
        "",
        "bad_host.example",
        "testserver",
        "localhost",
    ],
)
def test_anything_but_a_bare_foreign_host_is_refused(raw):
    with pytest.raises(hosts.CustomDomainError):
        hosts.custom_domain_normalize(raw)


@pytest.mark.django_db
def test_a_host_maps_to_one_agency_only(agency_a, agency_b):
    hosts.custom_domain_add(agency=agency_a, host="chat.agency.example")
    with pytest.raises(hosts.CustomDomainError, match="already mapped"):
        hosts.custom_domain_add(agency=agency_b, host="CHAT.agency.example")
    assert list(CustomDomain.objects.values_list("host", "agency_id", "status")) == [
        ("chat.agency.example", agency_a.pk, "pending")
    ]


@pytest.mark.django_db
def test_dns_check_verifies_a_host_that_resolves_to_the_target(settings, agency_a):
    settings.CUSTOM_DOMAIN_TARGET = "127.0.0.1"
    domain = CustomDomain.objects.create(agency=agency_a, host="localhost")  # resolves to 127.0.0.1 here
    hosts.custom_domain_check(domain=domain)
    domain.refresh_from_db()
    assert domain.status == CustomDomain.Status.VERIFIED
    assert domain.verified_at is not None and domain.check_message == "localhost points to 127.0.0.1."
    assert hosts.host_map_refresh() == {"localhost": agency_a.pk}


@pytest.mark.django_db
def test_dns_check_fails_a_host_pointing_elsewhere_and_stops_serving_it(settings, agency_a):
    settings.CUSTOM_DOMAIN_TARGET = "127.0.0.2"
    domain = CustomDomain.objects.create(
        agency=agency_a, host="localhost", status=CustomDomain.Status.VERIFIED, verified_at="2026-01-01T00:00Z"
    )
    assert hosts.host_map_refresh() == {"localhost": agency_a.pk}
    hosts.custom_domain_check(domain=domain)
    domain.refresh_from_db()
    assert domain.status == CustomDomain.Status.FAILED and domain.verified_at is None
    assert (
        domain.check_message.startswith("localhost resolves to ") and "add a CNAME to 127.0.0.2" in domain.check_message
    )
    assert hosts.host_map_stale()  # the change reloads this process's map on its next request
    assert hosts.host_map_refresh() == {}


@pytest.mark.django_db
def test_dns_check_of_a_name_that_does_not_resolve(settings, agency_a):
    settings.CUSTOM_DOMAIN_TARGET = "127.0.0.1"
    domain = CustomDomain.objects.create(agency=agency_a, host="nowhere.agency.example")

    def resolve(host, *args, **kwargs):
        if host == "127.0.0.1":
            return [(2, 1, 6, "", ("127.0.0.1", 0))]
        raise OSError("Name or service not known")

    hosts.custom_domain_check(domain=domain, resolve=resolve)
    assert (domain.status, domain.check_message) == ("failed", "nowhere.agency.example does not resolve (yet).")


@pytest.mark.django_db
def test_dns_check_without_a_target_says_so(settings, agency_a):
    settings.CUSTOM_DOMAIN_TARGET = ""
    domain = CustomDomain.objects.create(agency=agency_a, host="chat.agency.example")
    hosts.custom_domain_check(domain=domain)
    assert domain.status == "failed" and "CUSTOM_DOMAIN_TARGET is not set" in domain.check_message


@pytest.mark.django_db
def test_only_verified_hosts_are_in_the_map(agency_a, agency_b):
    CustomDomain.objects.create(agency=agency_a, host="pending.agency.example")
    verified = CustomDomain.objects.create(agency=agency_b, host="chat.other.example")
    hosts.custom_domain_set_status(domain=verified, status=CustomDomain.Status.VERIFIED)
    assert hosts.host_map_refresh() == {"chat.other.example": agency_b.pk}
    assert hosts.host_agency_id("chat.other.example:8443") == agency_b.pk
    assert hosts.host_agency_id("pending.agency.example") is None
    hosts.custom_domain_delete(domain=verified)
    assert hosts.host_map_refresh() == {}


def _dns(**answers):
    """A resolver: host -> address (None: does not resolve)."""

    def resolve(host, *args, **kwargs):
        if answers.get(host) is None:
            raise OSError("Name or service not known")
        return [(2, 1, 6, "", (answers[host], 0))]

    return resolve


@pytest.mark.django_db
def test_a_dns_verified_domain_that_stops_resolving_stays_served_through_the_grace_then_stops(settings, agency_a):
    settings.CUSTOM_DOMAIN_TARGET, settings.CUSTOM_DOMAIN_RECHECK_GRACE_HOURS = "edge.platform.example", 72
    good = _dns(**{"edge.platform.example": "203.0.113.5", "chat.agency.example": "203.0.113.5"})
    moved = _dns(**{"edge.platform.example": "203.0.113.5", "chat.agency.example": "198.51.100.9"})
    domain = hosts.custom_domain_check(
        domain=CustomDomain.objects.create(agency=agency_a, host="chat.agency.example"), resolve=good
    )
    assert domain.status == "verified" and domain.verified_by_dns
    start = timezone.now()

    assert hosts.custom_domains_recheck(resolve=moved, now=start) == {"ok": 0, "failing": 1, "stopped": 0}
    domain.refresh_from_db()
    assert domain.status == "verified" and domain.failing_since == start  # one blip takes nothing down
    assert "still served until" in domain.check_message and "198.51.100.9" in domain.check_message
    assert hosts.host_map_refresh() == {"chat.agency.example": agency_a.pk}

    assert hosts.custom_domains_recheck(resolve=good, now=start + timedelta(hours=1))["ok"] == 1
    domain.refresh_from_db()
    assert (
        domain.failing_since is None and domain.check_message == "chat.agency.example points to edge.platform.example."
    )

    hosts.custom_domains_recheck(resolve=moved, now=start + timedelta(hours=2))
    hosts.custom_domains_recheck(resolve=moved, now=start + timedelta(hours=73))
    assert hosts.custom_domains_recheck(resolve=moved, now=start + timedelta(hours=74)) == {
        "ok": 0,
        "failing": 0,
        "stopped": 1,
    }
    domain.refresh_from_db()
    assert (
        domain.status == "failed" and domain.verified_at is None and domain.check_message.startswith("Stopped serving:")
    )
    assert hosts.host_map_refresh() == {}
    assert hosts.custom_domains_recheck(resolve=moved, now=start + timedelta(hours=75)) == {
        "ok": 0,
        "failing": 0,
        "stopped": 0,
    }


@pytest.mark.django_db
def test_the_agencys_admins_hear_of_a_failing_stopped_and_recovered_domain_once_each(
    settings, agency_a, owner, member, outsider, mailoutbox, django_capture_on_commit_callbacks
):
    settings.CUSTOM_DOMAIN_TARGET, settings.CUSTOM_DOMAIN_RECHECK_GRACE_HOURS = "edge.platform.example", 72
    good = _dns(**{"edge.platform.example": "203.0.113.5", "chat.agency.example": "203.0.113.5"})
    moved = _dns(**{"edge.platform.example": "203.0.113.5", "chat.agency.example": "198.51.100.9"})
    hosts.custom_domain_check(
        domain=CustomDomain.objects.create(agency=agency_a, host="chat.agency.example"), resolve=good
    )
    start = timezone.now()

    def recheck(resolve, hours):
        with django_capture_on_commit_callbacks(execute=True):
            hosts.custom_domains_recheck(resolve=resolve, now=start + timedelta(hours=hours))

    recheck(moved, 0)
    recheck(moved, 1)  # still failing: no second mail
    recheck(good, 2)
    recheck(moved, 3)
    recheck(moved, 76)
    recheck(moved, 77)  # stopped: no longer re-checked, no mail
    assert [m.subject for m in mailoutbox] == [
        "Action needed: chat.agency.example no longer points to us",
        "chat.agency.example points to us again",
        "Action needed: chat.agency.example no longer points to us",
        "chat.agency.example is no longer served",
    ]
    assert all(m.to == [owner.email] for m in mailoutbox)  # owners and admins of this agency only
    assert "198.51.100.9" in mailoutbox[0].body and "still served until" in mailoutbox[0].body
    assert "edge.platform.example" in mailoutbox[0].body and mailoutbox[0].body.endswith("Switchboard")  # no brand


@pytest.mark.django_db
def test_the_recheck_leaves_hand_verified_domains_alone_and_ignores_a_blip_of_our_own_target(settings, agency_a):
    settings.CUSTOM_DOMAIN_TARGET = "edge.platform.example"
    by_hand = hosts.custom_domain_set_status(
        domain=CustomDomain.objects.create(agency=agency_a, host="proxied.agency.example"),
        status=CustomDomain.Status.VERIFIED,
        message="Marked verified by staff.",
    )
    good = _dns(**{"edge.platform.example": "203.0.113.5", "chat.agency.example": "203.0.113.5"})
    by_dns = hosts.custom_domain_check(
        domain=CustomDomain.objects.create(agency=agency_a, host="chat.agency.example"), resolve=good
    )
    ours_down = _dns(**{"chat.agency.example": "203.0.113.5", "proxied.agency.example": "192.0.2.1"})
    assert hosts.custom_domains_recheck(resolve=ours_down) == {"ok": 1, "failing": 0, "stopped": 0}
    by_hand.refresh_from_db()
    by_dns.refresh_from_db()
    assert by_hand.status == by_dns.status == "verified" and by_hand.failing_since is by_dns.failing_since is None
    assert by_hand.check_message == "Marked verified by staff." and not by_hand.verified_by_dns


def test_beat_schedules_the_custom_domain_recheck(settings):
    from config.celery import app

    entry = app.conf.beat_schedule["custom-domains-recheck"]
    assert entry["task"] == "licenses.tasks.custom_domains_recheck"
    assert entry["schedule"] == settings.CUSTOM_DOMAIN_RECHECK_SECONDS
