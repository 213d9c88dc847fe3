"""The signed-in user's current agency, resolved once per request, and the one role gate.

Not a middleware on purpose: DRF authenticates token users after Django's middleware has run,
so views (Django and DRF alike) call `current_membership(request)`, which caches on the request.
"""

from __future__ import annotations

from typing import Any

from licenses.api import ApiError
from licenses.models import Membership
from licenses.selectors import membership_list_for_user

SESSION_KEY = "current_agency_id"
HEADER = "HTTP_X_SWITCHBOARD_AGENCY"
_CACHE = "_switchboard_membership"


def current_membership(request: Any) -> Membership | None:
    """The membership for the agency the user works in now: header, then session, then the first."""
    django_request = getattr(request, "_request", request)
    if hasattr(django_request, _CACHE):
        return getattr(django_request, _CACHE)
    user = getattr(request, "user", None)
    membership = None
    if user is not None and user.is_authenticated:
        memberships = list(membership_list_for_user(user=user))
        wanted = django_request.META.get(HEADER)
        session = getattr(django_request, "session", None)
        if not wanted and session is not None:
            wanted = session.get(SESSION_KEY)
        membership = next(
            (m for m in memberships if wanted and (str(m.agency_id) == str(wanted) or m.agency.slug == wanted)),
            memberships[0] if memberships else None,
        )
    setattr(django_request, _CACHE, membership)
    return membership


def current_agency_set(request: Any, membership: Membership) -> None:
    django_request = getattr(request, "_request", request)
    django_request.session[SESSION_KEY] = membership.agency_id
    setattr(django_request, _CACHE, membership)


def role_require(membership: Membership | None, role: str, action: str) -> None:
    """The one role gate of every write: 403 `permission_denied` unless `membership` holds `role` or a
    higher one. Services call it; views call it too where they refuse before a service runs."""
    if membership is None or not membership.has_role(role):
        raise ApiError("permission_denied", f"Your role may not {action}.", status_code=403)
