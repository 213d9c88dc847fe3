"""Reads for ChatKit: which widget (and which config) a public or preview request is about."""

from __future__ import annotations

import threading
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


class ServerEntry:
    """What one license key serves the ChatKit server, as read from the database after one cache generation
    was read: the license and its published ChatKit widgets (widget, published config) by public id."""

    __slots__ = ("license", "token", "widgets")

    def __init__(self, license: License, token: object) -> None:
        self.license = license
        self.token = token
        self.widgets: dict[str, tuple[Widget, dict[str, Any]]] = {}


class _ServerCache:
    """Per-process cache of the ChatKit server's license and widget resolution (bench/chatkit_server.py: two
    queries and their pool checkout per request). An entry is used only once the license's cache generation
    (licenses.selectors.license_cache_generation, bumped by every publish, suspend, revoke, domain, key,
    secret or identity change) still has the value it was read with; the endpoint reads the generation in
    the rate limiter's own Redis round trip on every request, so a change made in any process takes effect
    on the next request everywhere. Without a readable generation (Redis away) nothing is cached. Only
    positive resolutions are kept: a refusal is always decided on the database's current rows."""

    MAX = 50_000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, ServerEntry] = {}

    def get(self, key: str) -> ServerEntry | None:
        return self._entries.get(key)

    def put(self, key: str, entry: ServerEntry) -> None:
        with self._lock:
            if len(self._entries) >= self.MAX:
                self._entries.clear()
            self._entries[key] = entry

    def drop(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


chatkit_server_cache = _ServerCache()
