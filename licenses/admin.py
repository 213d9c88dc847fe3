from __future__ import annotations

from datetime import timedelta

from django.contrib import admin, messages
from django.db.models import Count, OuterRef, QuerySet, Subquery
from django.http import HttpRequest
from django.utils import timezone
from simple_history.admin import SimpleHistoryAdmin

from licenses import services
from licenses.models import Agency, License, LicenseUsage, Membership, month_start


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 1
    autocomplete_fields = ["user"]


@admin.register(Agency)
class AgencyAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "member_count", "license_count", "created_at"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    fields = ["name", "slug", "crm_webhook_url"]
    inlines = [MembershipInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Agency]:
        return super().get_queryset(request).annotate(
            _members=Count("memberships", distinct=True), _licenses=Count("licenses", distinct=True)
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


@admin.register(License)
class LicenseAdmin(SimpleHistoryAdmin):
    list_display = [
        "key", "agency", "client_name", "status", "expires_at", "widget_count", "conversations_this_month",
        "voice_minutes_this_month",
    ]
    list_display_links = ["key", "client_name"]
    list_filter = ["status", "agency", ExpiringFilter]
    search_fields = ["key", "client_name", "agency__name", "agency__slug"]
    readonly_fields = ["key", "created_at", "updated_at"]
    fields = [
        "key", "agency", "client_name", "status", "starts_at", "expires_at", "grace_days", "allowed_domains",
        "limits", "notes", "created_at", "updated_at",
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

    def save_model(self, request: HttpRequest, obj: License, form: object, change: bool) -> None:
        obj.allowed_domains = services.domains_normalize(domains=obj.allowed_domains or [])
        obj.limits = services.limits_normalize(limits=obj.limits)
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
