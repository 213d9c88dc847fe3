"""Serve the embed loader before the session/auth/CSRF middleware, as WhiteNoise serves static files.

Every page view of every customer site requests the loader; it reads no session, user or cookie
(authorization happens on the API calls it makes), so it skips the rest of the stack. Placed right
after WhiteNoiseMiddleware in settings.MIDDLEWARE. The view is the same one the URLconf routes, so
behaviour does not depend on this shortcut (tests cover both).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

LOADER_PATH = re.compile(r"^/api/widget/(?P<license_key>[^/]{1,64})/chat-widget\.js$")


class LoaderMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method in ("GET", "HEAD"):
            match = LOADER_PATH.match(request.path_info)
            if match:
                from widgets.views.embed import chat_widget_js

                return chat_widget_js(request, license_key=match["license_key"])
        return self.get_response(request)
