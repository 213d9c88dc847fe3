"""Reads for licenses: the one access function per object, the license check, usage."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.cache import cache
from django.db.models import QuerySet
from django.http import Http404
from django.utils import timezone

from licenses.domains import origin_allowed, origin_host_port
from licenses.hosts import host_serves_agency
from licenses.installs import install_seen
from licenses.models import Agency, InstallOrigin, License, LicenseUsage, Membership, month_start

REASON_MESSAGES = {
    "ok": "The license may serve.",
    "unknown_license": "This license key does not exist.",
    "suspended": "This license is suspended. Contact your agency.",
    "revoked": "This license has been revoked.",
    "expired": "This license has expired.",
    "not_started": "This license is not active yet.",
    "domain_not_allowed": "This site is not on the license's allowed domains.",
    "origin_missing": "The request has no usable Origin; the widget only runs on allowed sites.",
    "quota_exceeded": "This license has used its monthly allowance.",
}


@dataclass(frozen=True)
class LicenseCheck:
    reason: str
    license: License | None = None

    @property
    def ok(self) -> bool:
        return self.reason == "ok"

    @property
    def message(self) -> str:
        return REASON_MESSAGES[self.reason]

    @property
    def http_status(self) -> int:
        if self.reason == "unknown_license":
            return 404
        if self.reason == "quota_exceeded":
            return 429
        return 403


def license_cache_key(key: str) -> str:
    return "sb:license:gen:" + hashlib.sha256(key.encode()).hexdigest()[:24]


def license_cache_generation(*, key: str) -> str:
    """A token that changes whenever what a license key serves changes (licenses.services bumps it).

    Public readers (the loader) cache under it, so they need no database read on a warm path."""
    generation_key = license_cache_key(key)
    generation = cache.get(generation_key)
    if generation is None:
        generation = uuid.uuid4().hex
        if not cache.add(generation_key, generation, 86400):
            generation = cache.get(generation_key) or generation
    return generation


def license_get_public(*, key: str) -> License | None:
    """The license a public request names, or None. Public callers learn only the check result."""
    if not key or len(key) > 64:
        return None
    return License.objects.select_related("agency").filter(key=key).first()


def license_serving_until(license: License) -> datetime | None:
    """When the license stops serving: expiry plus grace days (None: no expiry). Total: a date past
    what datetime holds (stored before dates were bounded) means "never" instead of OverflowError."""
    if not license.expires_at:
        return None
    try:
        return license.expires_at + timedelta(days=max(0, license.grace_days or 0))
    except OverflowError:
        return datetime.max.replace(tzinfo=UTC)


def license_status_reason(*, license: License | None, now: datetime | None = None, any_host: bool = False) -> str:
    """Whether the license may serve at all, ignoring the Origin: a reason code. On an agency's own
    domain another agency's license is unknown (licenses.hosts.host_serves_agency), unless `any_host`
    (the loader's cached resolution, shared by every host: its view applies the host rule itself)."""
    if license is None or not (any_host or host_serves_agency(license.agency_id)):
        return "unknown_license"
    now = now or timezone.now()
    if license.status == License.Status.REVOKED:
        return "revoked"
    if license.status == License.Status.SUSPENDED:
        return "suspended"
    if license.starts_at and now < license.starts_at:
        return "not_started"
    until = license_serving_until(license)
    if until is not None and now >= until:
        return "expired"
    return "ok"


def license_quota_left(*, license: License, kind: str, now: datetime | None = None) -> float:
    """What is left this month of `conversations` (count) or `voice_minutes` (minutes)."""
    usage = usage_for_month(license=license, now=now)
    if kind == "conversations":
        return license_conversations_left(
            license=license,
            conversations=usage.conversations if usage else 0,
            chatkit_sessions=usage.chatkit_sessions if usage else 0,
        )
    if kind == "voice_minutes":
        return license.monthly_voice_minutes - (usage.voice_seconds / 60.0 if usage else 0.0)
    raise ValueError(f"unknown quota kind {kind!r}")


def license_conversations_left(*, license: License, conversations: int, chatkit_sessions: int) -> int:
    """The monthly conversations quota left, given this month's usage counts (chat conversations and
    ChatKit sessions share it)."""
    return license.monthly_conversations - (conversations + chatkit_sessions)


def license_check(
    *,
    license: License | None,
    origin: str | None,
    quota: str | None = None,
    now: datetime | None = None,
) -> LicenseCheck:
    """May this license serve now, for this Origin (and with quota left)? Fails closed. Every outcome of
    a known license is counted for its installation health (licenses/installs.py, memory only)."""
    check = _license_check(license=license, origin=origin, quota=quota, now=now)
    if license is not None:
        install_seen(license_id=license.pk, origin=origin, outcome=check.reason)
    return check


def _license_check(
    *, license: License | None, origin: str | None, quota: str | None, now: datetime | None
) -> LicenseCheck:
    reason = license_status_reason(license=license, now=now)
    if reason != "ok":
        return LicenseCheck(reason, license)
    assert license is not None
    if origin_host_port(origin) is None:
        return LicenseCheck("origin_missing", license)
    if not origin_allowed(license.allowed_domains, origin):
        return LicenseCheck("domain_not_allowed", license)
    if quota and license_quota_left(license=license, kind=quota, now=now) <= 0:
        return LicenseCheck("quota_exceeded", license)
    return LicenseCheck("ok", license)


def install_origins(*, license: License, limit: int = 50) -> list[InstallOrigin]:
    """Where the license was used, most recent first (the domains page's Installations card)."""
    return list(InstallOrigin.objects.filter(license=license).order_by("-last_seen", "origin")[:limit])


def usage_for_month(*, license: License, now: datetime | None = None) -> LicenseUsage | None:
    month = month_start((now or timezone.now()).date())
    return LicenseUsage.objects.filter(license=license, month=month).first()


# --- tenancy -----------------------------------------------------------------------------


def agency_alert_emails(*, agency: Agency | int) -> list[str]:
    """Who hears of an agency's alerts (a bot down, a custom domain failing DNS): its owners' and admins' e-mails."""
    agency_id = agency.pk if isinstance(agency, Agency) else agency
    return list(
        Membership.objects.filter(agency_id=agency_id, role__in=[Membership.Role.OWNER, Membership.Role.ADMIN])
        .exclude(user__email="")
        .values_list("user__email", flat=True)
    )


def membership_list_for_user(*, user: AbstractBaseUser | AnonymousUser) -> QuerySet[Membership]:
    if not user.is_authenticated:
        return Membership.objects.none()
    # The agency's brand rides along (every /app/ page shows it), without the logo's bytes.
    return (
        Membership.objects.select_related("agency", "agency__brand")
        .defer("agency__brand__logo")
        .filter(user=user)
        .order_by("agency__name")
    )


def membership_get(*, user: AbstractBaseUser | AnonymousUser, agency: Agency | int) -> Membership | None:
    if not user.is_authenticated:
        return None
    agency_id = agency.pk if isinstance(agency, Agency) else agency
    return Membership.objects.select_related("agency").filter(user=user, agency_id=agency_id).first()


def license_list_for_user(*, user: AbstractBaseUser | AnonymousUser, agency: Agency | None) -> QuerySet[License]:
    """Licenses of the user's current agency (staff see every license)."""
    if not user.is_authenticated:
        return License.objects.none()
    qs = License.objects.select_related("agency")
    if agency is None:
        return qs.all() if user.is_staff else qs.none()
    if not user.is_staff and not Membership.objects.filter(user=user, agency=agency).exists():
        return qs.none()
    return qs.filter(agency=agency)


def license_get_for_user(*, user: AbstractBaseUser | AnonymousUser, key: str) -> License:
    """The one access check for a license: a member of its agency (or staff), else 404."""
    if not user.is_authenticated:
        raise Http404("License not found.")
    qs = License.objects.select_related("agency").filter(key=key)
    if not user.is_staff:
        qs = qs.filter(agency__memberships__user=user)
    license = qs.first()
    if license is None:
        raise Http404("License not found.")
    return license
