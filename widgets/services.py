"""Writes for widgets: create, update, publish, rollback, duplicate, delete. Keyword-only, atomic."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Max

from config.api import ApiError
from licenses.crypto import secret_hint
from licenses.domains import origin_normalize
from licenses.models import License, Membership
from licenses.services import license_cache_bump
from widgets.config_schema import ConfigError, config_normalize, config_widget_type
from widgets.models import Widget, WidgetVersion

SECRET_NAMES = ("openai_api_key", "n8n_basic_auth_user", "n8n_basic_auth_password")


def _invalid_config(exc: ConfigError) -> ApiError:
    fields = {f"config.{path}" if path != "config" else "config": msgs for path, msgs in exc.errors.items()}
    return ApiError("invalid_config", str(exc), fields=fields)


def _require(membership: Membership | None, role: str, action: str) -> None:
    if membership is None or not membership.has_role(role):
        raise ApiError("permission_denied", f"Your role may not {action}.", status_code=403)


N8N_AUTH = ("n8n_basic_auth_user", "n8n_basic_auth_password")


def secrets_clean(
    *, current: dict[str, str], changes: dict[str, Any] | None, config: dict[str, Any] | None = None
) -> dict[str, str]:
    """Apply write-only secret changes: a string sets, "" or None clears, a missing key keeps.

    n8n credentials set here are bound to the origin of `config`'s webhook URL (widgets.n8n sends
    them nowhere else); moving the webhook to another host means entering them again."""
    if changes is None:
        return current
    if not isinstance(changes, dict):
        raise ApiError("invalid", "secrets must be an object.", fields={"secrets": ["Not an object."]})
    out = dict(current)
    for name, value in changes.items():
        if name not in SECRET_NAMES:
            raise ApiError("invalid", f"Unknown secret {name!r}.", fields={f"secrets.{name}": ["Unknown secret."]})
        if value in (None, ""):
            out.pop(name, None)
        elif not isinstance(value, str) or len(value) > 500:
            raise ApiError("invalid", f"secrets.{name} must be text.", fields={f"secrets.{name}": ["Must be text."]})
        else:
            out[name] = value.strip()
    if any(name in changes for name in N8N_AUTH):
        if any(out.get(name) for name in N8N_AUTH):
            webhook = ((config or {}).get("connection", {}).get("n8n", {}).get("webhook_url") or "")
            out["n8n_basic_auth_origin"] = origin_normalize(webhook) or ""
        else:
            out.pop("n8n_basic_auth_origin", None)
    return out


def secrets_status(*, widget: Widget) -> dict[str, dict[str, Any]]:
    """Whether each secret is set and its last 4 characters; never the value."""
    stored = widget.secrets or {}
    return {name: secret_hint(stored.get(name)) for name in SECRET_NAMES}


def widget_create(
    *,
    license: License,
    user: AbstractBaseUser | None,
    membership: Membership | None,
    name: str,
    config: dict[str, Any] | None = None,
    secrets: dict[str, Any] | None = None,
) -> Widget:
    _require(membership, Membership.Role.EDITOR, "create widgets")
    if membership is not None and membership.agency_id != license.agency_id:
        raise ApiError("not_found", "License not found.", status_code=404)
    name = (name or "").strip()
    if not name:
        raise ApiError("invalid", "name: give the widget a name.", fields={"name": ["This field is required."]})
    try:
        normalized = config_normalize(config)
    except ConfigError as exc:
        raise _invalid_config(exc)
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
    _require(membership, Membership.Role.EDITOR, "edit widgets")
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
                raise _invalid_config(exc)
            current.widget_type = config_widget_type(current.config)
            fields += ["config", "widget_type"]
        if secrets is not None:
            current.secrets = secrets_clean(current=current.secrets or {}, changes=secrets, config=current.config)
            fields.append("secrets")
        current.revision += 1
        current.save(update_fields=fields)
    return current


def _publish_snapshot(*, widget: Widget, user: AbstractBaseUser | None, config: dict, note: str) -> WidgetVersion:
    number = (widget.versions.aggregate(n=Max("number"))["n"] or 0) + 1
    version = WidgetVersion.objects.create(
        widget=widget, number=number, config=config, widget_type=config_widget_type(config),
        published_by=user, note=note[:300],
    )
    widget.published_version = version
    return version


def widget_publish(
    *, widget: Widget, user: AbstractBaseUser | None, membership: Membership | None, note: str = "",
    expected_revision: int | None = None,
) -> WidgetVersion:
    """Snapshot the draft into a new version; the embed serves it at once."""
    _require(membership, Membership.Role.ADMIN, "publish widgets")
    with transaction.atomic():
        current = Widget.objects.select_for_update().get(pk=widget.pk)
        if expected_revision is not None and expected_revision != current.revision:
            raise ApiError("stale_draft", "The draft changed since you opened it; reload before publishing.",
                           status_code=409)
        # Re-validate: defaults may have grown since the draft was saved.
        try:
            snapshot = config_normalize(current.config)
        except ConfigError as exc:
            raise _invalid_config(exc)
        version = _publish_snapshot(widget=current, user=user, config=snapshot, note=note)
        current.save(update_fields=["published_version", "updated_at"])
        license_cache_bump(key=current.license.key)
    return version


def widget_rollback(
    *, widget: Widget, user: AbstractBaseUser | None, membership: Membership | None, number: int
) -> WidgetVersion:
    """Publish an old snapshot again as a new version; the draft becomes that snapshot too."""
    _require(membership, Membership.Role.ADMIN, "publish widgets")
    with transaction.atomic():
        current = Widget.objects.select_for_update().get(pk=widget.pk)
        old = current.versions.filter(number=number).first()
        if old is None:
            raise ApiError("version_not_found", f"Version {number} does not exist.", status_code=404)
        try:
            snapshot = config_normalize(old.config)
        except ConfigError as exc:
            raise _invalid_config(exc)
        version = _publish_snapshot(widget=current, user=user, config=snapshot, note=f"Rollback to v{number}")
        current.config = snapshot
        current.widget_type = config_widget_type(snapshot)
        current.revision += 1
        current.save(update_fields=["published_version", "config", "widget_type", "revision", "updated_at"])
        license_cache_bump(key=current.license.key)
    return version


def widget_duplicate(*, widget: Widget, user: AbstractBaseUser | None, membership: Membership | None) -> Widget:
    copy = widget_create(
        license=widget.license, user=user, membership=membership, name=f"{widget.name} (copy)",
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
    _require(membership, Membership.Role.ADMIN, "delete widgets")
    key = widget.license.key
    widget.delete()
    license_cache_bump(key=key)
