"""Sign-in throttling (issue 9 finding 7): django-axes for passwords, the same numbers for API tokens.

- Passwords (`/app/login/`, `/admin/login/`, anything calling `authenticate()`): django-axes locks
  the pair (username, client IP) out after AXES_FAILURE_LIMIT failures for AXES_COOLOFF_TIME. The
  lockout answer is the sign-in page again with a plain message (429), or the JSON error shape for
  JSON callers. It says the same for a username that does not exist, so it reveals no account.
- API tokens (`Authorization: Token …`): no username to pair with, so AXES_FAILURE_LIMIT wrong
  tokens from one IP lock that IP out of token authentication for the same cool-off (429
  `rate_limited` with Retry-After), counted in the cache (Redis in production).
"""

from __future__ import annotations

import math
from typing import Any

from django.conf import settings
from django.contrib import admin
from django.contrib.auth.forms import AuthenticationForm
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication

from licenses.api import error_response


def cooloff_seconds() -> int:
    return int(settings.AXES_COOLOFF_TIME.total_seconds())


def lockout_message() -> str:
    minutes = max(1, math.ceil(cooloff_seconds() / 60))
    return (
        f"Too many failed sign-in attempts. For your security, signing in with this username from this "
        f"network is paused for {minutes} minutes. You can reset your password meanwhile."
    )


def lockout_response(request: HttpRequest, original_response: Any = None, credentials: Any = None) -> HttpResponse:
    """AXES_LOCKOUT_CALLABLE. (axes' async middleware passes `credentials` second: accept both orders.)"""
    from config.middleware import wants_json

    message = lockout_message()
    if wants_json(request):
        response: HttpResponse = error_response("locked_out", message, 429)
    else:
        # Unbound (validating would call authenticate() again and count one more failure), with the
        # username kept and the lockout as the form's one error.
        form = AuthenticationForm(request, initial={"username": request.POST.get("username", "")})
        form.cleaned_data = {}
        form.add_error(None, message)
        if request.path_info.startswith("/admin/"):
            context = {
                **admin.site.each_context(request),
                "form": form,
                "title": "Log in",
                "app_path": request.get_full_path(),
                "username": request.POST.get("username", ""),
            }
            response = TemplateResponse(request, "admin/login.html", context, status=429)
        else:
            context = {"form": form, "next": request.POST.get("next") or request.GET.get("next", "")}
            response = TemplateResponse(request, "registration/login.html", context, status=429)
        response.render()
    response["Retry-After"] = str(cooloff_seconds())
    return response


def _client_ip(request: Any) -> str:
    return request.META.get("REMOTE_ADDR", "")


def _failures_key(ip: str) -> str:
    return f"sb:authfail:token:{ip}"


class ThrottledTokenAuthentication(TokenAuthentication):
    """DRF's TokenAuthentication with a lockout of the client IP after repeated wrong tokens."""

    def authenticate(self, request: Any) -> Any:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header.lower().startswith(self.keyword.lower() + " ") and header.lower() != self.keyword.lower():
            return None  # no token presented: nothing to count
        key = _failures_key(_client_ip(request))
        if (cache.get(key) or 0) >= settings.AXES_FAILURE_LIMIT:
            raise exceptions.Throttled(
                wait=cooloff_seconds(),
                detail=lockout_message().replace(
                    "signing in with this username from this network", "token sign-in from this network"
                ),
            )
        try:
            return super().authenticate(request)
        except exceptions.AuthenticationFailed:
            if cache.add(key, 1, timeout=cooloff_seconds()) is False:
                try:
                    cache.incr(key)
                except ValueError:  # expired between add and incr
                    cache.set(key, 1, timeout=cooloff_seconds())
            raise
