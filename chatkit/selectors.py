"""Reads for ChatKit: which widget (and which config) a public or preview request is about."""

from __future__ import annotations

from typing import Any

from chatkit.client import ChatKitError
from licenses.models import License
from widgets.models import Widget, WidgetType
from widgets.selectors import widget_get_published


def chatkit_widget_published(*, license: License, public_id: str = "") -> tuple[Widget, dict[str, Any]]:
    """The license's published ChatKit widget and its published config, else ChatKitError (404/409)."""
    widget = widget_get_published(license=license, public_id=public_id or None)
    if widget is None or widget.published_version is None:
        raise ChatKitError("widget_not_found", "This license has no published widget with that id.", 404)
    version = widget.published_version
    if version.widget_type != WidgetType.CHATKIT:
        raise ChatKitError("wrong_widget_type", "This widget is not a ChatKit widget.", 409)
    return widget, version.config


def chatkit_widget_draft(*, widget: Widget) -> dict[str, Any]:
    """The draft config of a ChatKit widget for the configurator preview, else ChatKitError (409)."""
    if widget.widget_type != WidgetType.CHATKIT:
        raise ChatKitError("wrong_widget_type", "This widget is not a ChatKit widget.", 409)
    return widget.config
