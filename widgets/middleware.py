"""Serve the embed loader before the session/auth/CSRF middleware, as WhiteNoise serves static files.

Every page view of every customer site requests the loader; it reads no session, user or cookie
(authorization happens on the API calls it makes), so it skips the rest of the stack. Placed right
after WhiteNoiseMiddleware in settings.MIDDLEWARE. The view is the same one the URLconf routes, so
behaviour does not depend on this shortcut (tests cover both).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.http import HttpRequest, HttpResponse

LOADER_PATH = re.compile(r"^/api/widget/(?P<license_key>[^/]{1,64})/chat-widget\.js$")


class LoaderMiddleware:
    # Async-capable so the async chat view is not pushed into a thread by a sync-only middleware.
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)

    def _loader_key(self, request: HttpRequest) -> str | None:
        if request.method in ("GET", "HEAD"):
            match = LOADER_PATH.match(request.path_info)
            if match:
                return match["license_key"]
        return None

    def __call__(self, request: HttpRequest) -> Any:
        if self._async:
            return self._acall(request)
        key = self._loader_key(request)
        if key is not None:
            from widgets.views.embed import chat_widget_js

            return chat_widget_js(request, license_key=key)
        return self.get_response(request)

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        key = self._loader_key(request)
        if key is not None:
            from widgets.views.embed import chat_widget_js

            return await sync_to_async(chat_widget_js)(request, license_key=key)
        return await self.get_response(request)
