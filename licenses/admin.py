from __future__ import annotations

from datetime import timedelta
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, OuterRef, QuerySet, Subquery
from django.http import HttpRequest
from django.utils import timezone
from simple_history.admin import SimpleHistoryAdmin

from licenses import services
from licenses.api import ApiError
from licenses.domains import DomainError, domain_matches, domain_normalize, domains_split
from licenses.hosts import (
    CustomDomainError,
    custom_domain_check,
    custom_domain_delete,
    custom_domain_normalize,
    custom_domain_set_status,
)
from licenses.models import (
    DEFAULT_LIMITS,
    Agency,
    AuditEvent,
    CustomDomain,
    License,
    LicenseUsage,
    Membership,
    month_start,
)


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 1
    autocomplete_fields = ["user"]


class AgencyForm(forms.ModelForm):
    """The CRM signing secret is write-only and bound to the URL (licenses.services.agency_crm_webhook_set)."""

    crm_webhook_secret = forms.CharField(
        label="CRM signing secret",
        required=False,
        max_length=500,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Write-only. Leave empty to keep the stored secret. It signs leads for this exact URL only: "
        "changing the URL without entering it again clears it.",
    )
    crm_webhook_secret_clear = forms.BooleanField(label="Clear the signing secret", required=False)

    class Meta:
        model = Agency
        fields = ["name", "slug", "crm_webhook_url"]


@admin.register(Agency)
class AgencyAdmin(admin.ModelAdmin):
    form = AgencyForm
    list_display = ["name", "slug", "member_count", "license_count", "created_at"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    fields = [
        "name",
        "slug",
        "crm_webhook_url",
        "crm_webhook_secret",
        "crm_webhook_secret_clear",
        "crm_webhook_secret_status",
        "retention_days",
    ]
    readonly_fields = ["crm_webhook_secret_status", "retention_days"]  # agencies set it on /app/privacy/ (audited)
    inlines = [MembershipInline]

    @admin.display(description="Signing secret")
    def crm_webhook_secret_status(self, obj: Agency) -> str:
        secrets = (obj.secrets or {}) if obj.pk else {}
        if not secrets.get(services.CRM_SECRET):
            return "Not set: leads are sent unsigned."
        return f"Set (…{secrets[services.CRM_SECRET][-4:]}), for {secrets.get(services.CRM_SECRET_BINDING) or '—'}"

    def save_model(self, request: HttpRequest, obj: Agency, form: forms.ModelForm, change: bool) -> None:
        super().save_model(request, obj, form, change)
        # The URL and its secret's binding go through the one service (a new URL clears an old secret).
        secret = (
            ""
            if form.cleaned_data.get("crm_webhook_secret_clear")
            else (form.cleaned_data.get("crm_webhook_secret") or None)
        )
        services.agency_crm_webhook_set(agency=obj, url=obj.crm_webhook_url, secret=secret)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Agency]:
        return (
            super()
            .get_queryset(request)
            .annotate(_members=Count("memberships", distinct=True), _licenses=Count("licenses", distinct=True))
        )

    @admin.display(description="Members", ordering="_members")
    def member_count(self, obj: Agency) -> int:
        return obj._members

    @admin.display(description="Licenses", ordering="_licenses")
    def license_count(self, obj: Agency) -> int:
        return obj._licenses


class ExpiringFilter(admin.SimpleListFilter):
    title = "expiry"
    parameter_name = "expiring"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("30d", "Expiring within 30 days"), ("expired", "Expired"), ("never", "No expiry")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[License]) -> QuerySet[License]:
        now = timezone.now()
        if self.value() == "30d":
            return queryset.filter(expires_at__gte=now, expires_at__lte=now + timedelta(days=30))
        if self.value() == "expired":
            return queryset.filter(expires_at__lt=now)
        if self.value() == "never":
            return queryset.filter(expires_at__isnull=True)
        return queryset


class LicenseUsageInline(admin.TabularInline):
    model = LicenseUsage
    extra = 0
    can_delete = False
    fields = ["month", "conversations", "chatkit_sessions", "voice_sessions", "voice_minutes", "cost_usd"]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


# Each limit as a named number field; the optional ones fall back to a platform setting when empty.
LIMIT_FIELDS: dict[str, tuple[str, str]] = {
    "max_widgets": ("Widgets", "How many widgets the agency may create on this license."),
    "monthly_conversations": ("Conversations per month", "Chat and ChatKit conversations (UTC month)."),
    "monthly_voice_minutes": ("Voice minutes per month", ""),
    "max_concurrent_voice_sessions": ("Voice calls at once", ""),
    "max_allowed_domains": (
        "Allowed domains the agency may keep",
        "Staff may list more here; the agency can then only remove until it is under the cap.",
    ),
    "chatkit_session_seconds": ("ChatKit session length (seconds)", "Empty: the platform setting."),
    "chatkit_max_requests_per_minute": ("ChatKit requests per minute", "Empty: the platform setting."),
}


class _LicenseAdminForm(forms.ModelForm):
    """Allowed domains as one host per line and limits as named numbers, validated by the same
    services as the REST API (licenses.services.domains_normalize / limits_normalize)."""

    domains = forms.CharField(
        label="Allowed domains",
        required=False,
        widget=forms.Textarea(attrs={"rows": 5, "cols": 60}),
        help_text="One per line: shop.example.com, localhost:3000 (that port only) or *.example.com (any "
        "subdomain). A pasted URL is reduced to its host.",
    )

    class Meta:
        model = License
        fields = ["agency", "client_name", "status", "starts_at", "expires_at", "grace_days", "white_label", "notes"]

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        limits = self.instance.limits or {}
        self.fields["domains"].initial = "\n".join(self.instance.allowed_domains or [])
        for name in LIMIT_FIELDS:
            if f"limit_{name}" in self.fields:
                self.fields[f"limit_{name}"].initial = limits.get(name, DEFAULT_LIMITS.get(name))

    def clean_domains(self) -> list[str]:
        try:
            return services.domains_normalize(domains=domains_split(self.cleaned_data["domains"]))
        except ApiError as exc:
            raise forms.ValidationError([m for messages in exc.fields.values() for m in messages] or exc.message)

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        try:  # the same date rules as the API (issue 9 finding 6)
            services.license_dates_clean(
                starts_at=data.get("starts_at"), expires_at=data.get("expires_at"), grace_days=data.get("grace_days")
            )
        except ApiError as exc:
            for name, messages_ in exc.fields.items():
                if name in self.fields and name not in self.errors:
                    self.add_error(name, messages_)
        limits = {name: data.get(f"limit_{name}") for name in LIMIT_FIELDS}
        try:
            self.limits = services.limits_normalize(limits={k: v for k, v in limits.items() if v is not None})
        except ApiError as exc:
            for path, messages_ in exc.fields.items():
                self.add_error(f"limit_{path.removeprefix('limits.')}", messages_)
        return data

    def save(self, commit: bool = True) -> License:
        self.instance.allowed_domains = self.cleaned_data["domains"]
        self.instance.limits = self.limits
        return super().save(commit)


# The admin builds its form from the fieldsets, so every limit field must be declared on the class.
LicenseAdminForm = type(
    "LicenseAdminForm",
    (_LicenseAdminForm,),
    {
        f"limit_{name}": forms.IntegerField(
            label=label, min_value=0, required=name in DEFAULT_LIMITS, help_text=help_text
        )
        for name, (label, help_text) in LIMIT_FIELDS.items()
    },
)


@admin.register(License)
class LicenseAdmin(SimpleHistoryAdmin):
    form = LicenseAdminForm
    list_display = [
        "key",
        "agency",
        "client_name",
        "status",
        "expires_at",
        "widget_count",
        "conversations_this_month",
        "voice_minutes_this_month",
    ]
    list_display_links = ["key", "client_name"]
    list_filter = ["status", "agency", ExpiringFilter]
    search_fields = ["key", "client_name", "agency__name", "agency__slug", "allowed_domains"]
    search_help_text = "Key, client, agency, or a domain: a host (or URL) finds every license that allows it."
    readonly_fields = ["key", "created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["key", "agency", "client_name", "status", "starts_at", "expires_at", "grace_days"]}),
        ("Where the widgets may load", {"fields": ["domains"]}),
        ("White-label", {"fields": ["white_label"]}),
        ("Limits", {"fields": [f"limit_{name}" for name in LIMIT_FIELDS]}),
        (None, {"fields": ["notes", "created_at", "updated_at"]}),
    ]
    actions = ["suspend", "reactivate", "extend_one_year", "rotate_key"]
    inlines = [LicenseUsageInline]
    history_list_display = ["status", "expires_at", "key"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[License]:
        usage = LicenseUsage.objects.filter(license=OuterRef("pk"), month=month_start(timezone.now().date()))
        # Widgets are counted through the reverse relation's name: licenses imports nothing of widgets.
        return (
            super()
            .get_queryset(request)
            .select_related("agency")
            .annotate(
                _widgets=Count("widgets", distinct=True),
                _conversations=Subquery(usage.values("conversations")[:1]),
                _chatkit=Subquery(usage.values("chatkit_sessions")[:1]),
                _voice_seconds=Subquery(usage.values("voice_seconds")[:1]),
            )
        )

    def get_fieldsets(self, request: HttpRequest, obj: License | None = None) -> list:
        # The key exists once the license is saved: an add form would show a value that is never stored.
        if obj is None:
            first = self.fieldsets[0]
            fields = [f for f in first[1]["fields"] if f != "key"]
            return [(first[0], {"fields": fields}), *self.fieldsets[1:-1], (None, {"fields": ["notes"]})]
        return self.fieldsets

    def get_search_results(self, request: HttpRequest, queryset: QuerySet[License], search_term: str):
        """Besides the text search, a host or URL finds the licenses whose patterns allow it
        (`www.shop.example.com` finds `*.example.com`)."""
        results, distinct = super().get_search_results(request, queryset, search_term)
        term = search_term.strip()
        try:
            host = domain_normalize(term) if term and " " not in term else ""
        except DomainError:
            host = ""
        if host and "*" not in host:
            name, _, port = host.partition(":")
            ports = [port] if port else ["443", "80", ""]
            matching = [
                pk
                for pk, patterns in queryset.values_list("pk", "allowed_domains")
                if any(domain_matches(p, name, x) or p == host for p in patterns or [] for x in ports)
            ]
            results = results | queryset.filter(pk__in=matching)
        return results, distinct

    def save_model(self, request: HttpRequest, obj: License, form: object, change: bool) -> None:
        old_key = License.objects.filter(pk=obj.pk).values_list("key", flat=True).first() if change else None
        super().save_model(request, obj, form, change)
        for key in {old_key, obj.key} - {None}:
            services.license_cache_bump(key=key)

    def delete_model(self, request: HttpRequest, obj: License) -> None:
        key = obj.key
        super().delete_model(request, obj)
        services.license_cache_bump(key=key)

    @admin.display(description="Widgets", ordering="_widgets")
    def widget_count(self, obj: License) -> int:
        return obj._widgets

    @admin.display(description="Chats / mo")
    def conversations_this_month(self, obj: License) -> str:
        return f"{(obj._conversations or 0) + (obj._chatkit or 0)} / {obj.monthly_conversations}"

    @admin.display(description="Voice min / mo")
    def voice_minutes_this_month(self, obj: License) -> str:
        return f"{round((obj._voice_seconds or 0) / 60, 1)} / {obj.monthly_voice_minutes}"

    def _each(self, request: HttpRequest, queryset: QuerySet[License], action, verb: str) -> None:
        count = 0
        for license in queryset:
            action(license=license)
            count += 1
        self.message_user(request, f"{verb} {count} license(s).", messages.SUCCESS)

    @admin.action(description="Suspend selected licenses")
    def suspend(self, request: HttpRequest, queryset: QuerySet[License]) -> None:
        self._each(request, queryset, services.license_suspend, "Suspended")

    @admin.action(description="Reactivate selected licenses")
    def reactivate(self, request: HttpRequest, queryset: QuerySet[License]) -> None:
        self._each(request, queryset, services.license_reactivate, "Reactivated")

    @admin.action(description="Extend selected licenses by one year")
    def extend_one_year(self, request: HttpRequest, queryset: QuerySet[License]) -> None:
        self._each(request, queryset, services.license_extend, "Extended")

    @admin.action(description="Rotate key (the old key stops working at once)")
    def rotate_key(self, request: HttpRequest, queryset: QuerySet[License]) -> None:
        self._each(request, queryset, services.license_rotate_key, "Rotated the key of")


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "agency", "role", "created_at"]
    list_filter = ["role", "agency"]
    search_fields = ["user__username", "user__email", "agency__name"]
    autocomplete_fields = ["user", "agency"]


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """The agencies' audit log (retention, visitor exports and erasures): read-only, even for staff."""

    list_display = ["created_at", "agency", "action", "actor", "target"]
    list_filter = ["action"]
    search_fields = ["agency__name", "target"]
    list_select_related = ["agency", "actor"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class CustomDomainForm(forms.ModelForm):
    class Meta:
        model = CustomDomain
        fields = ["agency", "host"]

    def clean_host(self) -> str:
        try:
            return custom_domain_normalize(self.cleaned_data.get("host", ""))
        except CustomDomainError as exc:
            raise forms.ValidationError(str(exc))


@admin.register(CustomDomain)
class CustomDomainAdmin(admin.ModelAdmin):
    """Agencies' own domains (issue 15.5): added pending, served once verified (DNS check or by hand)."""

    form = CustomDomainForm
    list_display = ["host", "agency", "status", "failing_since", "checked_at", "check_message"]
    list_filter = ["status"]
    search_fields = ["host", "agency__name", "agency__slug"]
    autocomplete_fields = ["agency"]
    readonly_fields = [
        "status",
        "checked_at",
        "check_message",
        "verified_at",
        "verified_by_dns",
        "failing_since",
        "created_at",
    ]
    actions = ["check_dns", "mark_verified", "mark_pending"]

    def get_readonly_fields(self, request: HttpRequest, obj: CustomDomain | None = None) -> list[str]:
        # The host is the identity of the mapping: change it by adding a new one.
        return [*self.readonly_fields, "host", "agency"] if obj else self.readonly_fields

    def save_model(self, request: HttpRequest, obj: CustomDomain, form: forms.ModelForm, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if not change:
            messages.info(request, f"{obj.host} is pending: run “Check DNS” once its CNAME is in place.")

    def delete_model(self, request: HttpRequest, obj: CustomDomain) -> None:
        custom_domain_delete(domain=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[CustomDomain]) -> None:
        for domain in queryset:
            custom_domain_delete(domain=domain)

    @admin.action(description="Check DNS (verified when the host resolves to CUSTOM_DOMAIN_TARGET)")
    def check_dns(self, request: HttpRequest, queryset: QuerySet[CustomDomain]) -> None:
        for domain in queryset:
            custom_domain_check(domain=domain)
            level = messages.SUCCESS if domain.status == CustomDomain.Status.VERIFIED else messages.WARNING
            self.message_user(request, f"{domain.host}: {domain.check_message}", level)

    @admin.action(description="Mark verified by hand (the proxy in front resolves it)")
    def mark_verified(self, request: HttpRequest, queryset: QuerySet[CustomDomain]) -> None:
        for domain in queryset:
            custom_domain_set_status(
                domain=domain, status=CustomDomain.Status.VERIFIED, message=f"Marked verified by {request.user}."
            )
        self.message_user(request, f"Marked {queryset.count()} domain(s) verified: served at once.")

    @admin.action(description="Stop serving (back to pending)")
    def mark_pending(self, request: HttpRequest, queryset: QuerySet[CustomDomain]) -> None:
        for domain in queryset:
            custom_domain_set_status(
                domain=domain, status=CustomDomain.Status.PENDING, message=f"Set pending by {request.user}."
            )
        self.message_user(request, f"{queryset.count()} domain(s) no longer served.")
