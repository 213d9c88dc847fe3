from __future__ import annotations

import secrets
from datetime import date
from typing import Any

from django.conf import settings
from django.db import models
from simple_history.models import HistoricalRecords

from licenses.fields import EncryptedJSONField

LICENSE_KEY_PREFIX = "lic_"

DEFAULT_LIMITS: dict[str, int] = {
    "max_widgets": 5,
    "monthly_conversations": 1000,
    "monthly_voice_minutes": 300,
    "max_concurrent_voice_sessions": 5,
    # How many allowed domains the agency may keep on the license from /app/ (staff are not capped).
    "max_allowed_domains": 20,
}
# Limits a license may set to override a platform setting; absent means "use the setting".
OPTIONAL_LIMITS = ("chatkit_session_seconds", "chatkit_max_requests_per_minute", "max_concurrent_chats")


def new_license_key() -> str:
    # 18 random bytes -> 24 url-safe characters.
    return LICENSE_KEY_PREFIX + secrets.token_urlsafe(18)


def default_limits() -> dict[str, int]:
    return dict(DEFAULT_LIMITS)


class Agency(models.Model):
    RETENTION_CHOICES = [(30, "30 days"), (90, "90 days"), (365, "365 days")]

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=80, unique=True)
    crm_webhook_url = models.URLField(blank=True, help_text="Leads are POSTed here, signed with HMAC-SHA256.")
    alert_webhook_url = models.URLField(
        blank=True, help_text="Bot-down and recovered alerts are POSTed here, signed with HMAC-SHA256."
    )
    secrets = EncryptedJSONField(help_text="Encrypted: crm_webhook_secret, alert_webhook_secret.")
    retention_days = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        choices=RETENTION_CHOICES,
        help_text="Conversations, messages and leads older than this are deleted nightly; empty keeps them.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "agencies"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    class Role(models.TextChoices):
        OWNER = "owner", "Owner"
        ADMIN = "admin", "Admin"
        EDITOR = "editor", "Editor"
        VIEWER = "viewer", "Viewer"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    agency = models.ForeignKey(Agency, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.EDITOR)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "agency"], name="membership_unique_user_agency")]
        ordering = ["agency__name"]

    def __str__(self) -> str:
        return f"{self.user} @ {self.agency} ({self.role})"

    RANK = {Role.VIEWER: 0, Role.EDITOR: 1, Role.ADMIN: 2, Role.OWNER: 3}

    def has_role(self, minimum: str) -> bool:
        return self.RANK[self.role] >= self.RANK[minimum]

    @property
    def can_edit(self) -> bool:
        return self.has_role(self.Role.EDITOR)

    @property
    def can_publish(self) -> bool:
        return self.has_role(self.Role.ADMIN)


class License(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        SUSPENDED = "suspended", "Suspended"
        REVOKED = "revoked", "Revoked"

    key = models.CharField(max_length=64, unique=True, default=new_license_key)
    agency = models.ForeignKey(Agency, on_delete=models.PROTECT, related_name="licenses")
    client_name = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    starts_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Empty means no expiry.")
    grace_days = models.PositiveIntegerField(default=0, help_text="Days the license keeps serving after expiry.")
    allowed_domains = models.JSONField(
        default=list,
        blank=True,
        help_text="Hosts allowed to embed: exact host (optionally with :port) or *.example.com.",
    )
    limits = models.JSONField(default=default_limits, blank=True)
    white_label = models.BooleanField(
        default=False,
        help_text="Staff only: hides “Powered by Switchboard” on this license's share pages (widgets show none).",
    )
    # Verified visitor identity (issue 15.2, licenses/identity.py): the HMAC secret the agency's server
    # signs user ids with (encrypted; shown once in /app/), and whether unverified identities are refused.
    secrets = EncryptedJSONField(help_text="Encrypted: identity_secret.")
    identity_required = models.BooleanField(
        default=False, help_text="Refuse a visitor identity unless its user_hash is valid."
    )
    notes = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    history = HistoricalRecords(excluded_fields=["secrets"])

    class Meta:
        ordering = ["client_name"]
        indexes = [models.Index(fields=["agency", "status"])]

    def __str__(self) -> str:
        return f"{self.client_name} ({self.key[:10]}…)"

    def limit(self, name: str) -> int:
        value: Any = (self.limits or {}).get(name, DEFAULT_LIMITS[name])
        return int(value)

    @property
    def max_widgets(self) -> int:
        return self.limit("max_widgets")

    @property
    def monthly_conversations(self) -> int:
        return self.limit("monthly_conversations")

    @property
    def monthly_voice_minutes(self) -> int:
        return self.limit("monthly_voice_minutes")

    @property
    def max_concurrent_voice_sessions(self) -> int:
        return self.limit("max_concurrent_voice_sessions")

    @property
    def max_allowed_domains(self) -> int:
        return self.limit("max_allowed_domains")


class LicenseUsage(models.Model):
    """Monthly usage counters of one license, updated with atomic F() increments."""

    license = models.ForeignKey(License, on_delete=models.CASCADE, related_name="usage")
    month = models.DateField(help_text="First day of the month (UTC).")
    conversations = models.PositiveIntegerField(default=0)
    chatkit_sessions = models.PositiveIntegerField(default=0)
    voice_sessions = models.PositiveIntegerField(default=0)
    voice_seconds = models.FloatField(default=0)
    cost_usd = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["license", "month"], name="usage_unique_license_month")]
        ordering = ["-month"]

    def __str__(self) -> str:
        return f"{self.license_id} {self.month:%Y-%m}"

    @property
    def voice_minutes(self) -> float:
        return round(self.voice_seconds / 60.0, 2)


def month_start(day: date) -> date:
    return day.replace(day=1)


class AuditEvent(models.Model):
    """Who did what to an agency's data that cannot be undone or leaves the system: retention runs,
    visitor exports and erasures, retention changes. Written by the service that acts, never edited."""

    class Action(models.TextChoices):
        RETENTION_SET = "retention.set", "Retention changed"
        RETENTION_APPLIED = "retention.applied", "Retention applied"
        VISITOR_EXPORTED = "visitor.exported", "Visitor data exported"
        VISITOR_ERASED = "visitor.erased", "Visitor data erased"

    agency = models.ForeignKey(Agency, on_delete=models.CASCADE, related_name="audit_events")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    action = models.CharField(max_length=32, choices=Action.choices)
    target = models.CharField(max_length=200, blank=True, help_text="e.g. the visitor id or email searched for.")
    details = models.JSONField(default=dict, blank=True, help_text="Counts and settings; never message text.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["agency", "-created_at"], name="audit_agency_recent")]

    def __str__(self) -> str:
        return f"{self.get_action_display()} ({self.agency})"


class InstallOrigin(models.Model):
    """Where a license's widgets were actually used (issue 13.5): one row per (license, origin, outcome),
    outcome `ok` or the refusal reason (`domain_not_allowed`, `origin_missing`, `suspended`, ...).
    Counted in each web process's memory and flushed here every INSTALL_FLUSH_SECONDS
    (licenses/installs.py): no database write on the loader's or the API's hot path."""

    license = models.ForeignKey(License, on_delete=models.CASCADE, related_name="install_origins")
    origin = models.CharField(max_length=200, help_text="scheme://host[:port], (none) or (other)")
    outcome = models.CharField(max_length=32)
    count = models.PositiveBigIntegerField(default=0)
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["license", "origin", "outcome"], name="install_origin_unique")]
        indexes = [models.Index(fields=["license", "-last_seen"], name="install_origin_recent")]

    def __str__(self) -> str:
        return f"{self.origin} {self.outcome} ×{self.count}"


class AgencyBrand(models.Model):
    """An agency's own brand (issue 15.5): shown on /app/, on its share pages and in its e-mails instead
    of Switchboard's. Written only by licenses.branding.brand_update (admins and owners)."""

    agency = models.OneToOneField(Agency, on_delete=models.CASCADE, related_name="brand")
    name = models.CharField(max_length=80, blank=True, help_text="Shown instead of “Switchboard”.")
    support_email = models.EmailField(blank=True)
    primary_color = models.CharField(max_length=7, blank=True, help_text="#RRGGBB")
    accent_color = models.CharField(max_length=7, blank=True, help_text="#RRGGBB")
    # An uploaded raster logo (PNG, JPEG, GIF or WebP; the bytes are sniffed, SVG is refused), or an
    # https URL of one. Never both: setting one clears the other.
    logo = models.BinaryField(blank=True, default=b"", editable=False)
    logo_type = models.CharField(max_length=32, blank=True)
    logo_digest = models.CharField(max_length=16, blank=True, help_text="Cache-busting part of the logo URL.")
    logo_url = models.URLField(blank=True, max_length=500)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"Brand of {self.agency}"


class CustomDomain(models.Model):
    """A host the agency CNAMEs to the platform (issue 15.5), e.g. chat.agency.example: once verified,
    the loader, the public API and share pages answer on it, and the Embed tab prints it. Hosts are
    accepted by config.hosts (ALLOWED_HOSTS and CSRF trusted origins follow this table)."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending verification"
        VERIFIED = "verified", "Verified"
        FAILED = "failed", "Verification failed"

    agency = models.ForeignKey(Agency, on_delete=models.CASCADE, related_name="custom_domains")
    host = models.CharField(max_length=253, unique=True, help_text="Lower-case host name, no port or scheme.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    checked_at = models.DateTimeField(null=True, blank=True)
    check_message = models.CharField(max_length=300, blank=True)
    verified_at = models.DateTimeField(null=True, blank=True)
    # Verified by the DNS check (re-checked by beat) or by hand (a proxy in front resolves it: never re-checked).
    verified_by_dns = models.BooleanField(default=False)
    failing_since = models.DateTimeField(
        null=True, blank=True, help_text="First failed DNS re-check of a verified domain in a row (still served)."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["host"]

    def __str__(self) -> str:
        return self.host
