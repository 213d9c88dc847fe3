"""Helpers shared by the /app/ views: the current agency, rendering the shell, turning service errors
into pages or form errors."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from asgiref.sync import iscoroutinefunction
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse

from widgets.aio import db_step
from widgets.config_schema import ConfigError, config_normalize
from widgets.models import Widget
from widgets.selectors import widget_get_for_user
from widgets.services import widgets as services


def widget_view(view: Callable[..., Any]) -> Callable[..., Any]:
    """Signed in + the one access check for the widget (outsider → 404). An async view (the preview
    chat, which waits on n8n) gets the check as one short DB step and stays async."""
    if iscoroutinefunction(view):

        @login_required
        @wraps(view)
        async def async_wrapper(request: HttpRequest, public_id: str, *args: Any, **kwargs: Any) -> HttpResponse:
            widget, membership = await db_step(widget_get_for_user, user=request.user, public_id=public_id)
            return await view(request, widget, membership, *args, **kwargs)

        return async_wrapper

    @login_required
    @wraps(view)
    def wrapper(request: HttpRequest, public_id: str, *args: Any, **kwargs: Any) -> HttpResponse:
        widget, membership = widget_get_for_user(user=request.user, public_id=public_id)
        return view(request, widget, membership, *args, **kwargs)

    return wrapper


def draft_connection(*, widget: Widget, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The config and secrets as the editor's form has them now (unsaved), merged over the saved draft:
    the one rule Test connection and the preview chat share (issue 10.6). Raises ApiError 400."""
    from widgets.views.configurator.fields import control_label

    try:
        config = config_normalize(body.get("config") or {}, base=widget.config)
    except ConfigError as exc:
        path, problems = next(iter(exc.errors.items()))
        raise exc.api_error(f"{control_label(path)}: {problems[0][:1].lower()}{problems[0][1:]}")
    changes = body.get("secrets") if isinstance(body.get("secrets"), dict) else {}
    secrets = services.secrets_clean(current=widget.secrets or {}, changes=changes, config=config)
    return config, secrets
