"""Writes for widgets: create, update, publish, rollback, duplicate, delete. Keyword-only, atomic."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Max

from licenses.api import ApiError, text_problem
from licenses.models import License, Membership
from licenses.services import license_cache_bump
from licenses.tenancy import role_require
from widgets.config_schema import DEFAULT_CONFIG, ConfigError, config_normalize, config_widget_type
from widgets.models import Widget, WidgetVersion
from widgets.n8n import N8N_AUTH_BINDING, n8n_destination

SECRET_NAMES = ("openai_api_key", "n8n_basic_auth_user", "n8n_basic_auth_password")


N8N_AUTH = ("n8n_basic_auth_user", "n8n_basic_auth_password")

# Secrets that are sent to an address the tenant chooses, bound to that address: the key holding the
# destination they were saved with, the secrets, and how the config names the destination. A stored
# secret is only ever sent to that destination (the client checks the binding before sending), and a
# change of destination that does not re-enter a secret clears it. openai_api_key is not here: it only
# ever goes to settings.OPENAI_BASE_URL / OPENAI_REALTIME_URL, which no tenant can change.
BOUND_SECRETS: tuple[tuple[str, tuple[str, ...], Callable[[dict[str, Any]], str]], ...] = (
    (N8N_AUTH_BINDING, N8N_AUTH, n8n_destination),
)
_LEGACY_BINDINGS = ("n8n_basic_auth_origin",)


def secrets_clean(
    *, current: dict[str, str], changes: dict[str, Any] | None, config: dict[str, Any] | None = None
) -> dict[str, str]:
    """Apply write-only secret changes (a string sets, "" or None clears, a missing key keeps) and the
    destination binding of BOUND_SECRETS against `config`, the config these secrets will be used with.

    Called for every change of the draft config, not only of secrets: moving the n8n webhook to any
    other URL clears the stored basic-auth user and password unless this same change re-enters them."""
    if changes is None:
        changes = {}
    if not isinstance(changes, dict):
        raise ApiError("invalid", "secrets must be an object.", fields={"secrets": ["Not an object."]})
    out = dict(current)
    entered: set[str] = set()
    for name, value in changes.items():
        if name not in SECRET_NAMES:
            raise ApiError("invalid", f"Unknown secret {name!r}.", fields={f"secrets.{name}": ["Unknown secret."]})
        if value in (None, ""):
            out.pop(name, None)
        elif not isinstance(value, str) or len(value) > 500:
            raise ApiError("invalid", f"secrets.{name} must be text.", fields={f"secrets.{name}": ["Must be text."]})
        elif text_problem(value) is not None:
            raise ApiError(
                "invalid",
                f"secrets.{name}: remove {text_problem(value)}.",
                fields={f"secrets.{name}": ["Invalid characters."]},
            )
        else:
            out[name] = value.strip()
            entered.add(name)
    for legacy in _LEGACY_BINDINGS:
        out.pop(legacy, None)
    for binding, names, destination_of in BOUND_SECRETS:
        destination = destination_of(config or {})
        if current.get(binding) != destination:
            for name in names:
                if name not in entered:
                    out.pop(name, None)
        if any(out.get(name) for name in names):
            out[binding] = destination
        else:
            out.pop(binding, None)
    return out


def widget_create(
    *,
    license: License,
    user: AbstractBaseUser | None,
    membership: Membership | None,
    name: str,
    config: dict[str, Any] | None = None,
    secrets: dict[str, Any] | None = None,
) -> Widget:
    role_require(membership, Membership.Role.EDITOR, "create widgets")
    if membership is not None and membership.agency_id != license.agency_id:
        raise ApiError("not_found", "License not found.", status_code=404)
    name = (name or "").strip()
    if not name:
        raise ApiError("invalid", "name: give the widget a name.", fields={"name": ["This field is required."]})
    try:
        normalized = config_normalize(config)
    except ConfigError as exc:
        raise exc.api_error()
    clean_secrets = secrets_clean(current={}, changes=secrets, config=normalized)
    with transaction.atomic():
        # Lock the license row so two concurrent creates cannot both pass max_widgets.
        locked = License.objects.select_for_update().get(pk=license.pk)
        if Widget.objects.filter(license=locked).count() >= locked.max_widgets:
            raise ApiError(
                "widget_limit_reached",
                f"This license allows {locked.max_widgets} widget(s); delete one or raise the limit.",
            )
        return Widget.objects.create(
            license=locked,
            name=name[:200],
            config=normalized,
            widget_type=config_widget_type(normalized),
            secrets=clean_secrets,
            created_by=user,
        )


def widget_update(
    *,
    widget: Widget,
    membership: Membership | None,
    name: str | None = None,
    config: dict[str, Any] | None = None,
    replace: bool = False,
    secrets: dict[str, Any] | None = None,
    expected_revision: int | None = None,
) -> Widget:
    """Save the draft. `config` merges into the draft (or replaces it with replace=True).

    `expected_revision` guards against silently overwriting someone else's newer draft.
    """
    role_require(membership, Membership.Role.EDITOR, "edit widgets")
    with transaction.atomic():
        current = Widget.objects.select_for_update().get(pk=widget.pk)
        if expected_revision is not None and expected_revision != current.revision:
            raise ApiError(
                "stale_draft",
                "Someone else saved or published this widget since you opened it. Reload to see their "
                "changes; your edits were not saved.",
                status_code=409,
            )
        fields = ["revision", "updated_at"]
        if name is not None:
            if not name.strip():
                raise ApiError("invalid", "name: give the widget a name.", fields={"name": ["Required."]})
            current.name = name.strip()[:200]
            fields.append("name")
        if config is not None:
            try:
                current.config = config_normalize(config, base=None if replace else current.config)
            except ConfigError as exc:
                raise exc.api_error()
            current.widget_type = config_widget_type(current.config)
            fields += ["config", "widget_type"]
        if secrets is not None or config is not None:
            current.secrets = secrets_clean(current=current.secrets or {}, changes=secrets, config=current.config)
            fields.append("secrets")
        current.revision += 1
        current.save(update_fields=fields)
        if "secrets" in fields:  # live (not versioned): the public chat's cached target uses them
            license_cache_bump(key=current.license.key)
    return current


def _publish_snapshot(*, widget: Widget, user: AbstractBaseUser | None, config: dict, note: str) -> WidgetVersion:
    number = (widget.versions.aggregate(n=Max("number"))["n"] or 0) + 1
    version = WidgetVersion.objects.create(
        widget=widget,
        number=number,
        config=config,
        widget_type=config_widget_type(config),
        published_by=user,
        note=note[:300],
    )
    widget.published_version = version
    return version


def widget_publish(
    *,
    widget: Widget,
    user: AbstractBaseUser | None,
    membership: Membership | None,
    note: str = "",
    expected_revision: int | None = None,
) -> WidgetVersion:
    """Snapshot the draft into a new version; the embed serves it at once."""
    role_require(membership, Membership.Role.ADMIN, "publish widgets")
    with transaction.atomic():
        current = Widget.objects.select_for_update().get(pk=widget.pk)
        if expected_revision is not None and expected_revision != current.revision:
            raise ApiError(
                "stale_draft", "The draft changed since you opened it; reload before publishing.", status_code=409
            )
        # Re-validate: defaults may have grown since the draft was saved.
        try:
            snapshot = config_normalize(current.config)
        except ConfigError as exc:
            raise exc.api_error()
        version = _publish_snapshot(widget=current, user=user, config=snapshot, note=note)
        current.save(update_fields=["published_version", "updated_at"])
        license_cache_bump(key=current.license.key)
    return version


def widget_rollback(
    *, widget: Widget, user: AbstractBaseUser | None, membership: Membership | None, number: int
) -> WidgetVersion:
    """Publish an old snapshot again as a new version; the draft becomes that snapshot too."""
    role_require(membership, Membership.Role.ADMIN, "publish widgets")
    with transaction.atomic():
        current = Widget.objects.select_for_update().get(pk=widget.pk)
        old = current.versions.filter(number=number).first()
        if old is None:
            raise ApiError("version_not_found", f"Version {number} does not exist.", status_code=404)
        try:
            snapshot = config_normalize(old.config)
        except ConfigError as exc:
            raise exc.api_error()
        version = _publish_snapshot(widget=current, user=user, config=snapshot, note=f"Rollback to v{number}")
        current.config = snapshot
        current.widget_type = config_widget_type(snapshot)
        current.secrets = secrets_clean(current=current.secrets or {}, changes=None, config=snapshot)
        current.revision += 1
        current.save(update_fields=["published_version", "config", "widget_type", "secrets", "revision", "updated_at"])
        license_cache_bump(key=current.license.key)
    return version


def widget_duplicate(*, widget: Widget, user: AbstractBaseUser | None, membership: Membership | None) -> Widget:
    copy = widget_create(
        license=widget.license,
        user=user,
        membership=membership,
        name=f"{widget.name} (copy)",
        config=widget.config,
    )
    # Tenant data comes along; secrets do too (same agency), still encrypted.
    Widget.objects.filter(pk=copy.pk).update(secrets=widget.secrets)
    for entry in widget.knowledge.all():
        entry.pk = None
        entry.widget = copy
        entry.save()
    for product in widget.products.all():
        product.pk = None
        product.widget = copy
        product.save()
    copy.refresh_from_db()
    return copy


def widget_delete(*, widget: Widget, membership: Membership | None) -> None:
    role_require(membership, Membership.Role.ADMIN, "delete widgets")
    key = widget.license.key
    widget.delete()
    license_cache_bump(key=key)


def widget_chatkit_migrate(
    *, widget: Widget, user: AbstractBaseUser | None, membership: Membership | None
) -> tuple[Widget, bool]:
    """A hosted (Agent Builder, shut down 2026-11-30) ChatKit widget moves to server mode.

    Theme and start screen (appearance, behaviour) stay as they are; the dead workflow id goes; empty or
    default instructions are pre-filled from the widget's name and client so it answers at once (the
    agency refines them). Published too when the member may publish and the draft held nothing else
    unpublished; otherwise the draft waits for review. Returns (widget, published)."""
    role_require(membership, Membership.Role.EDITOR, "change widgets")
    connection = widget.config.get("connection") or {}
    chatkit = connection.get("chatkit") or {}
    if connection.get("provider") != "chatkit" or chatkit.get("mode") != "hosted":
        raise ApiError("not_hosted", "This widget is not a hosted ChatKit widget: nothing to migrate.", status_code=409)
    clean = not widget.has_unpublished_changes
    instructions = (chatkit.get("instructions") or "").strip()
    if not instructions or instructions == DEFAULT_CONFIG["connection"]["chatkit"]["instructions"]:
        instructions = (
            f"You are the chat assistant of {widget.license.client_name} on its website ({widget.name}). Answer "
            "visitors' questions about its products, services and policies in a friendly, concise way, using the "
            "tools to look things up, and never make up prices, stock or policies. When you do not know, offer to "
            "take the visitor's details for the team."
        )
    widget = widget_update(
        widget=widget,
        membership=membership,
        config={
            "connection": {
                "chatkit": {"mode": "server", "workflow_id": "", "workflow_version": "", "instructions": instructions}
            }
        },
    )
    if clean and membership is not None and membership.can_publish:
        widget_publish(widget=widget, user=user, membership=membership, note="Moved to the ChatKit server")
        widget.refresh_from_db()
        return widget, True
    return widget, False
