"""Writes for agencies, memberships, licenses and usage. Keyword-only, atomic."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone
from django.utils.text import slugify

from licenses.api import ApiError, email_valid
from licenses.domains import DomainError, domain_normalize
from licenses.models import (
    DEFAULT_LIMITS,
    OPTIONAL_LIMITS,
    Agency,
    AuditEvent,
    License,
    LicenseUsage,
    Membership,
    month_start,
    new_license_key,
)
from licenses.selectors import license_cache_key
from licenses.tenancy import role_require

CRM_SECRET = "crm_webhook_secret"
# The exact URL the CRM signing secret was saved with; widgets.tasks.lead_deliver signs only for it.
CRM_SECRET_BINDING = "crm_webhook_secret_url"


def agency_crm_webhook_set(*, agency: Agency, url: str, secret: str | None = None) -> Agency:
    """Set the CRM webhook URL and its signing secret (None keeps the stored one, "" clears it).

    The secret is bound to the URL it is saved with: a new URL without the secret entered again
    clears it, so a signing secret never signs for an address it was not given for."""
    url = (url or "").strip()
    with transaction.atomic():
        locked = Agency.objects.select_for_update().get(pk=agency.pk)
        secrets = dict(locked.secrets or {})
        if secret is not None:
            secret = secret.strip()
            if len(secret) > 500:
                raise ApiError(
                    "invalid", "The signing secret is at most 500 characters.", fields={CRM_SECRET: ["Too long."]}
                )
            if secret:
                secrets[CRM_SECRET] = secret
            else:
                secrets.pop(CRM_SECRET, None)
        elif secrets.get(CRM_SECRET_BINDING) != url:
            secrets.pop(CRM_SECRET, None)
        if secrets.get(CRM_SECRET):
            secrets[CRM_SECRET_BINDING] = url
        else:
            secrets.pop(CRM_SECRET_BINDING, None)
        locked.crm_webhook_url = url
        locked.secrets = secrets
        locked.save(update_fields=["crm_webhook_url", "secrets"])
    agency.crm_webhook_url, agency.secrets = locked.crm_webhook_url, locked.secrets
    return agency


def agency_create(*, name: str, slug: str | None = None, owner: AbstractBaseUser | None = None) -> Agency:
    slug = slugify(slug or name)[:80]
    if not slug:
        raise ApiError("invalid", "Give the agency a name with letters or digits.", fields={"name": ["Required."]})
    if Agency.objects.filter(slug=slug).exists():
        raise ApiError(
            "duplicate_slug",
            f"An agency with the slug '{slug}' already exists; choose another.",
            fields={"slug": ["Already taken."]},
        )
    try:
        with transaction.atomic():
            agency = Agency.objects.create(name=name.strip(), slug=slug)
            if owner is not None:
                Membership.objects.create(user=owner, agency=agency, role=Membership.Role.OWNER)
    except IntegrityError:
        raise ApiError(
            "duplicate_slug",
            f"An agency with the slug '{slug}' already exists; choose another.",
            fields={"slug": ["Already taken."]},
        )
    return agency


def membership_set(*, agency: Agency, user: AbstractBaseUser, role: str) -> Membership:
    if role not in Membership.Role.values:
        raise ApiError("invalid", f"Unknown role {role!r}.", fields={"role": [f"One of {Membership.Role.values}."]})
    with transaction.atomic():
        membership, _ = Membership.objects.select_for_update().get_or_create(
            agency=agency, user=user, defaults={"role": role}
        )
        if membership.role != role:
            _ensure_owner_left(agency=agency, leaving=membership, new_role=role)
            membership.role = role
            membership.save(update_fields=["role"])
    return membership


def membership_remove(*, membership: Membership) -> None:
    with transaction.atomic():
        _ensure_owner_left(agency=membership.agency, leaving=membership, new_role=None)
        membership.delete()


def _ensure_owner_left(*, agency: Agency, leaving: Membership, new_role: str | None) -> None:
    if leaving.role != Membership.Role.OWNER or new_role == Membership.Role.OWNER:
        return
    others = Membership.objects.filter(agency=agency, role=Membership.Role.OWNER).exclude(pk=leaving.pk)
    if not others.exists():
        raise ApiError("last_owner", "An agency needs at least one owner; make someone else owner first.")


def domains_normalize(*, domains: list[str] | Any) -> list[str]:
    if not isinstance(domains, list):
        raise ApiError(
            "invalid", "allowed_domains must be a list of hosts.", fields={"allowed_domains": ["Not a list."]}
        )
    out: list[str] = []
    errors: dict[str, list[str]] = {}
    for index, raw in enumerate(domains):
        try:
            value = domain_normalize(str(raw))
        except DomainError as exc:
            errors[f"allowed_domains[{index}]"] = [str(exc)]
            continue
        if value not in out:
            out.append(value)
    if errors:
        first = next(iter(errors.values()))[0]
        raise ApiError("invalid", first, fields=errors)
    return out


def limits_normalize(*, limits: dict[str, Any] | None) -> dict[str, int]:
    merged = dict(DEFAULT_LIMITS)
    errors: dict[str, list[str]] = {}
    for name, value in (limits or {}).items():
        if name not in DEFAULT_LIMITS and name not in OPTIONAL_LIMITS:
            errors[f"limits.{name}"] = [f"Unknown limit; use one of {sorted([*DEFAULT_LIMITS, *OPTIONAL_LIMITS])}."]
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            errors[f"limits.{name}"] = ["Must be a whole number, 0 or more."]
            continue
        merged[name] = value
    if errors:
        raise ApiError("invalid", next(iter(errors.values()))[0], fields=errors)
    return merged


def license_cache_bump(*, key: str) -> None:
    """Tell public caches keyed on this license that what it serves changed: now, and again on
    commit (a reader between the two could have cached the old state)."""

    def bump() -> None:
        cache.set(license_cache_key(key), uuid.uuid4().hex, 86400)

    bump()
    transaction.on_commit(bump)


# Dates a license may hold: wide enough for any real contract, far enough from datetime's limits
# that expiry + grace days and every "now + n days" stay computable (issue 9 finding 6).
LICENSE_DATE_MIN = datetime(2000, 1, 1, tzinfo=UTC)
LICENSE_DATE_MAX = datetime(2100, 1, 1, tzinfo=UTC)
GRACE_DAYS_MAX = 365
EXTEND_DAYS_MAX = 3650


def license_dates_clean(
    *,
    starts_at: datetime | None,
    expires_at: datetime | None,
    grace_days: int | None,
) -> None:
    """Raise ApiError (400, the field named) unless the dates are in range and in order."""
    errors: dict[str, list[str]] = {}
    for name, value in (("starts_at", starts_at), ("expires_at", expires_at)):
        if value is not None and not LICENSE_DATE_MIN <= value < LICENSE_DATE_MAX:
            errors[name] = [
                f"Choose a date from {LICENSE_DATE_MIN:%Y-%m-%d} to 2099-12-31"
                + (", or none for no expiry." if name == "expires_at" else ", or none.")
            ]
    if grace_days is not None and not 0 <= grace_days <= GRACE_DAYS_MAX:
        errors["grace_days"] = [f"Between 0 and {GRACE_DAYS_MAX} days."]
    if not errors and starts_at and expires_at and expires_at <= starts_at:
        errors["expires_at"] = ["Must be after starts_at."]
    if errors:
        name, messages = next(iter(errors.items()))
        raise ApiError("invalid", f"{name}: {messages[0]}", fields=errors)


def license_create(
    *,
    agency: Agency,
    client_name: str,
    allowed_domains: list[str] | None = None,
    limits: dict[str, Any] | None = None,
    starts_at: datetime | None = None,
    expires_at: datetime | None = None,
    grace_days: int = 0,
    notes: str = "",
) -> License:
    if not client_name or not client_name.strip():
        raise ApiError("invalid", "client_name: enter the client's name.", fields={"client_name": ["Required."]})
    license_dates_clean(starts_at=starts_at, expires_at=expires_at, grace_days=grace_days)
    return License.objects.create(
        agency=agency,
        client_name=client_name.strip(),
        allowed_domains=domains_normalize(domains=allowed_domains or []),
        limits=limits_normalize(limits=limits),
        starts_at=starts_at,
        expires_at=expires_at,
        grace_days=grace_days,
        notes=notes,
    )


def license_update(*, license: License, **changes: Any) -> License:
    allowed = {"client_name", "allowed_domains", "limits", "starts_at", "expires_at", "grace_days", "notes"}
    unknown = set(changes) - allowed
    if unknown:
        raise ApiError("invalid", f"Cannot change {sorted(unknown)} here.")
    if "allowed_domains" in changes:
        changes["allowed_domains"] = domains_normalize(domains=changes["allowed_domains"])
    if "limits" in changes:
        changes["limits"] = limits_normalize(limits={**(license.limits or {}), **(changes["limits"] or {})})
    if {"starts_at", "expires_at", "grace_days"} & set(changes):
        license_dates_clean(
            **{name: changes.get(name, getattr(license, name)) for name in ("starts_at", "expires_at", "grace_days")}
        )
    for name, value in changes.items():
        setattr(license, name, value)
    license.save()
    license_cache_bump(key=license.key)
    return license


def license_domains_set(*, actor: Membership | None, license: License, domains: list[str] | Any) -> License:
    """An agency admin or owner replaces the allowed domains of one of the agency's licenses.

    Same normalisation and errors as staff's API (domains_normalize). Staff cap the count with the
    `max_allowed_domains` limit; a list already over the cap may still shrink. Public readers see the
    change at once (cache generation bumped)."""
    if actor is None or actor.agency_id != license.agency_id:
        raise ApiError("not_found", "License not found.", status_code=404)
    role_require(actor, Membership.Role.ADMIN, "change a license's domains")
    normalized = domains_normalize(domains=domains)
    with transaction.atomic():
        current = License.objects.select_for_update().get(pk=license.pk)
        cap = current.max_allowed_domains
        if len(normalized) > cap and len(normalized) > len(current.allowed_domains or []):
            raise ApiError(
                "domain_limit",
                f"This license allows {cap} domain{'s' if cap != 1 else ''}; remove one first or "
                "ask staff to raise the limit.",
                fields={"allowed_domains": [f"At most {cap}."]},
            )
        current.allowed_domains = normalized
        current._history_user = actor.user  # simple_history: who changed it
        current.save(update_fields=["allowed_domains", "updated_at"])
        license_cache_bump(key=current.key)
    license.allowed_domains = normalized
    return current


def _set_status(license: License, status: str) -> License:
    license.status = status
    license.save(update_fields=["status", "updated_at"])
    license_cache_bump(key=license.key)
    return license


def license_suspend(*, license: License) -> License:
    return _set_status(license, License.Status.SUSPENDED)


def license_revoke(*, license: License) -> License:
    return _set_status(license, License.Status.REVOKED)


def license_reactivate(*, license: License) -> License:
    return _set_status(license, License.Status.ACTIVE)


def license_extend(*, license: License, days: int = 365) -> License:
    """Push expiry out by `days` from the later of now and the current expiry (within LICENSE_DATE_MAX)."""
    if not 1 <= days <= EXTEND_DAYS_MAX:
        raise ApiError("invalid", f"days: between 1 and {EXTEND_DAYS_MAX}.", fields={"days": ["Out of range."]})
    base = max(license.expires_at or timezone.now(), timezone.now())
    if base >= LICENSE_DATE_MAX - timedelta(days=days):
        raise ApiError(
            "invalid",
            "expires_at: the license cannot be extended past 2099-12-31.",
            fields={"expires_at": ["Too far in the future."]},
        )
    license.expires_at = base + timedelta(days=days)
    license.save(update_fields=["expires_at", "updated_at"])
    license_cache_bump(key=license.key)
    return license


def license_rotate_key(*, license: License) -> License:
    """A new key at once; the old one stops working immediately (it no longer exists)."""
    old_key = license.key
    license.key = new_license_key()
    license.save(update_fields=["key", "updated_at"])
    license_cache_bump(key=old_key)
    license_cache_bump(key=license.key)
    return license


def usage_increment(
    *,
    license: License | int,
    now: datetime | None = None,
    conversations: int = 0,
    chatkit_sessions: int = 0,
    voice_sessions: int = 0,
    voice_seconds: float = 0.0,
    cost_usd: Decimal | float = 0,
) -> None:
    """Atomic monthly counters: a conditional UPDATE, creating the month's row on first use."""
    license_id = license.pk if isinstance(license, License) else license
    month = month_start((now or timezone.now()).date())
    deltas = {
        "conversations": F("conversations") + conversations,
        "chatkit_sessions": F("chatkit_sessions") + chatkit_sessions,
        "voice_sessions": F("voice_sessions") + voice_sessions,
        "voice_seconds": F("voice_seconds") + voice_seconds,
        "cost_usd": F("cost_usd") + Decimal(str(cost_usd)),
        "updated_at": timezone.now(),
    }
    if LicenseUsage.objects.filter(license_id=license_id, month=month).update(**deltas):
        return
    try:
        with transaction.atomic():
            LicenseUsage.objects.create(license_id=license_id, month=month)
    except IntegrityError:
        pass  # another request created the row first
    LicenseUsage.objects.filter(license_id=license_id, month=month).update(**deltas)


def secrets_reencrypt() -> int:
    """Re-encrypt every stored secret with the first key of FIELD_ENCRYPTION_KEYS."""
    from django.apps import apps

    from licenses.fields import EncryptedJSONField

    count = 0
    for model in apps.get_models():
        fields = [f for f in model._meta.concrete_fields if isinstance(f, EncryptedJSONField)]
        if not fields:
            continue
        for obj in model._default_manager.all().iterator():
            # Loading decrypts with any key; saving encrypts with the first.
            model._default_manager.filter(pk=obj.pk).update(
                **{f.attname: f.get_prep_value(getattr(obj, f.attname)) for f in fields}
            )
            count += 1
    return count


# --- members (the agency UI's Members page) ------------------------------------------------------


def _members_gate(actor: Membership | None, agency: Agency) -> None:
    if actor is not None and actor.agency_id != agency.pk:
        actor = None  # a membership of another agency holds no role here
    role_require(actor, Membership.Role.ADMIN, "manage members")


def _owner_role_check(actor: Membership, role: str, target: Membership | None = None) -> None:
    # Only an owner may create owners or change an owner's role.
    touches_owner = role == Membership.Role.OWNER or (target is not None and target.role == Membership.Role.OWNER)
    if touches_owner and actor.role != Membership.Role.OWNER:
        raise ApiError("permission_denied", "Only an owner may grant or change the owner role.", status_code=403)


def member_invite(*, actor: Membership | None, agency: Agency, email: str, role: str) -> tuple[Membership, bool]:
    """Add a person by email; creates the user (unusable password) if needed. Returns (membership, new_user)."""
    from django.contrib.auth import get_user_model

    _members_gate(actor, agency)
    assert actor is not None
    email = (email or "").strip().lower()
    if not email_valid(email):
        raise ApiError("invalid", "Enter a valid email address.", fields={"email": ["Enter a valid email address."]})
    if role not in Membership.Role.values:
        raise ApiError("invalid", f"Unknown role {role!r}.", fields={"role": ["Choose a role."]})
    _owner_role_check(actor, role)
    User = get_user_model()
    with transaction.atomic():
        user = User.objects.filter(email__iexact=email).order_by("id").first()
        new_user = user is None
        if user is None:
            username = email[:150]
            if User.objects.filter(username__iexact=username).exists():
                raise ApiError("invalid", "That username is taken.", fields={"email": ["Already in use."]})
            user = User(username=username, email=email)
            user.set_unusable_password()
            user.save()
        if Membership.objects.filter(agency=agency, user=user).exists():
            raise ApiError("already_member", f"{email} is already a member.", fields={"email": ["Already a member."]})
        membership = Membership.objects.create(agency=agency, user=user, role=role)
    return membership, new_user


def member_set_role(*, actor: Membership | None, membership: Membership, role: str) -> Membership:
    _members_gate(actor, membership.agency)
    assert actor is not None
    if role not in Membership.Role.values:
        raise ApiError("invalid", f"Unknown role {role!r}.", fields={"role": ["Choose a role."]})
    _owner_role_check(actor, role, membership)
    return membership_set(agency=membership.agency, user=membership.user, role=role)


def member_remove(*, actor: Membership | None, membership: Membership) -> None:
    _members_gate(actor, membership.agency)
    assert actor is not None
    _owner_role_check(actor, membership.role, membership)
    membership_remove(membership=membership)


# --- retention and the audit log (issue 13.6) -----------------------------------------------------


def audit_record(
    *, agency: Agency, actor: Any, action: str, target: str = "", details: dict[str, Any] | None = None
) -> AuditEvent:
    """One line of the agency's audit log. `actor` is the user (None for a scheduled task)."""
    return AuditEvent.objects.create(
        agency=agency, actor=actor, action=action, target=target[:200], details=details or {}
    )


def agency_retention_set(*, actor: Membership | None, agency: Agency, days: int | None) -> Agency:
    """Set how long the agency keeps conversations, messages and leads (None keeps them). Admins and
    owners only; audited with the old and new value."""
    if actor is not None and actor.agency_id != agency.pk:
        actor = None  # a membership of another agency holds no role here
    role_require(actor, Membership.Role.ADMIN, "change how long conversations are kept")
    allowed = {value for value, _ in Agency.RETENTION_CHOICES}
    if days is not None and days not in allowed:
        raise ApiError(
            "invalid",
            "Choose 30, 90 or 365 days, or keep everything.",
            fields={"retention_days": ["Choose 30, 90 or 365 days, or keep everything."]},
        )
    with transaction.atomic():
        locked = Agency.objects.select_for_update().get(pk=agency.pk)
        old = locked.retention_days
        if old != days:
            locked.retention_days = days
            locked.save(update_fields=["retention_days"])
            audit_record(
                agency=locked,
                actor=actor.user,
                action=AuditEvent.Action.RETENTION_SET,
                details={"old_days": old, "new_days": days},
            )
    agency.retention_days = days
    return agency
