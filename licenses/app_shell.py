"""The /app/ shell every agency page shares: the current agency, rendering a page, the role flags and the
POST-button helper that turns a service refusal into the forbidden page or a message."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render

from licenses.api import ApiError, error_body, json_object
from licenses.branding import brand_for_membership
from licenses.models import Membership
from licenses.selectors import membership_list_for_user
from licenses.tenancy import current_membership


def render_app(
    request: HttpRequest, template: str, context: dict[str, Any] | None = None, status: int = 200
) -> HttpResponse:
    membership = current_membership(request)
    base = {
        "membership": membership,
        # The current agency's own brand (issue 15.5), from the row the membership query joined.
        "brand": brand_for_membership(membership),
        "memberships": list(membership_list_for_user(user=request.user)),
    }
    return render(request, template, {**base, **(context or {})}, status=status)


def agency_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Signed in (else redirect to login) and a member of some agency (else a friendly page)."""

    @login_required
    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        membership = current_membership(request)
        if membership is None:
            return render_app(request, "app/no_agency.html", status=403)
        return view(request, membership, *args, **kwargs)

    return wrapper


def forbidden(request: HttpRequest, exc: ApiError) -> HttpResponse:
    return render_app(request, "app/forbidden.html", {"message": exc.message}, status=exc.status_code)


def api_error_json(exc: ApiError) -> JsonResponse:
    return JsonResponse(error_body(exc.code, exc.message, exc.fields), status=exc.status_code)


def json_body(request: HttpRequest) -> dict[str, Any]:
    """The JSON object body (empty → {}), under the one parser's rules (licenses.api.json_object)."""
    return json_object(request, empty={})


def role_flags(membership: Membership) -> dict[str, bool]:
    return {"can_edit": membership.can_edit, "can_publish": membership.can_publish}


def post_action(
    request: HttpRequest,
    action: Callable[[], object],
    *,
    success: str | Callable[[], str],
    to: str,
    **to_kwargs: Any,
) -> HttpResponse:
    """Run one service call for a POST button: refused by role → the forbidden page; any other
    refusal → its message; done → `success`. Then back to `to` (a URL name)."""
    try:
        action()
    except ApiError as exc:
        if exc.status_code == 403:
            return forbidden(request, exc)
        messages.error(request, exc.message)
    else:
        messages.success(request, success() if callable(success) else success)
    return redirect(to, **to_kwargs)
