"""Reads for widgets: one access function per object, scoped to the user's agencies."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import QuerySet
from django.http import Http404

from licenses.models import Agency, License, Membership
from widgets.models import Widget, WidgetVersion


def widget_list_for_user(
    *, user: AbstractBaseUser | AnonymousUser, agency: Agency | None, license: License | None = None
) -> QuerySet[Widget]:
    """Widgets of the user's current agency (optionally one license)."""
    if not user.is_authenticated or agency is None:
        return Widget.objects.none()
    qs = Widget.objects.select_related("license", "license__agency", "published_version").filter(
        license__agency=agency, license__agency__memberships__user=user
    )
    if license is not None:
        qs = qs.filter(license=license)
    return qs.order_by("license__client_name", "name", "id")


def widget_get_for_user(*, user: AbstractBaseUser | AnonymousUser, public_id: str) -> tuple[Widget, Membership]:
    """The one access check for a widget: the user is a member of the widget's agency, else 404.

    Returns the widget and the membership that grants access (its role decides what may change).
    """
    if not user.is_authenticated:
        raise Http404("Widget not found.")
    widget = (
        Widget.objects.select_related("license", "license__agency", "published_version")
        .filter(public_id=public_id, license__agency__memberships__user=user)
        .first()
    )
    if widget is None:
        raise Http404("Widget not found.")
    membership = Membership.objects.get(user=user, agency_id=widget.license.agency_id)
    return widget, membership


def widget_versions(*, widget: Widget) -> QuerySet[WidgetVersion]:
    return widget.versions.select_related("published_by").order_by("-number")


def widget_get_published(*, license: License, public_id: str | None = None) -> Widget | None:
    """The license's published widget for public serving (the named one, else the first published)."""
    qs = Widget.objects.select_related("published_version").filter(license=license, published_version__isnull=False)
    if public_id:
        qs = qs.filter(public_id=public_id)
    return qs.order_by("created_at", "id").first()


def openai_api_key(*, secrets: dict | None) -> str:
    """The key every OpenAI call of a widget uses: the tenant's own (an encrypted widget secret), else the
    platform key (`OPENAI_API_KEY`), else "". Server-side only: never in a response."""
    return (secrets or {}).get("openai_api_key") or settings.OPENAI_API_KEY or ""
