"""Who a ChatKit call is for: the visitor (a server-signed random id issued with the page), the ChatKit user id
derived from it, and the page token with which a session call from OUR origin proves which customer page it serves."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core import signing
from django.utils.crypto import salted_hmac

from chatkit.client import ChatKitError
from licenses.domains import same_origin
from licenses.models import License
from widgets.models import Widget

PAGE_TOKEN_SALT = "switchboard.chatkit.page"


VISITOR_SALT = "switchboard.chatkit.visitor"


USER_SALT = "switchboard.chatkit.user"


def chatkit_user_id(*, license: License, visitor_id: str) -> str:
    """The ChatKit `user`: a string stable per (license, visitor), never the raw id, never random.

    HMAC-SHA256 under a key derived from SECRET_KEY. The license's id (not its key) goes in, so
    rotating a leaked license key does not cut visitors off from their ChatKit history.
    """
    digest = salted_hmac(USER_SALT, f"{license.pk}\x00{visitor_id}", algorithm="sha256").hexdigest()
    return f"sb_{digest}"


def visitor_token_issue(*, license: License) -> str:
    """A new visitor: a random id signed by us and bound to the license. The page hands it out; the
    browser keeps it and sends it back (X-Switchboard-Visitor), but can never name another visitor."""
    return signing.dumps({"l": license.pk, "v": secrets.token_urlsafe(18)}, salt=VISITOR_SALT, compress=False)


def visitor_token_read(*, license: License, token: Any) -> str | None:
    """The visitor's random id, or None for a missing, forged or other-license token."""
    if not isinstance(token, str) or not token or len(token) > 300:
        return None
    try:
        data = signing.loads(token, salt=VISITOR_SALT)
    except signing.BadSignature:
        return None
    if not isinstance(data, dict) or data.get("l") != license.pk or not isinstance(data.get("v"), str):
        return None
    return data["v"]


@dataclass(frozen=True)
class PageToken:
    license_key: str
    widget_id: str
    origin: str


def page_token_issue(*, license: License, widget: Widget, origin: str) -> str:
    """Signed, short-lived proof that /widget/chatkit/<key> was served for `origin` (already checked
    against the license's allowed domains)."""
    return signing.dumps({"l": license.key, "w": widget.public_id, "o": origin}, salt=PAGE_TOKEN_SALT)


def page_token_read(token: str) -> PageToken | None:
    try:
        data = signing.loads(token, salt=PAGE_TOKEN_SALT, max_age=settings.CHATKIT_PAGE_TOKEN_SECONDS)
        return PageToken(license_key=str(data["l"]), widget_id=str(data["w"]), origin=str(data["o"]))
    except (signing.BadSignature, KeyError, TypeError):
        return None


@dataclass(frozen=True)
class SessionCaller:
    """Whom a public session request speaks for: the customer origin to check, and the widget the
    page token pins (if any)."""

    origin: str | None
    widget_id: str = ""


def session_caller_resolve(
    *, origin: str | None, own_origin: str, token: Any, license_key: str, widget_id: str
) -> SessionCaller:
    """Fail closed on Origin. A customer origin speaks for itself (the license check decides).
    Our own origin (the ChatKit iframe page) must present the page token, bound to this license and
    widget; its embedding origin is then checked. A missing or `null` Origin stays refused."""
    if not same_origin(origin, own_origin):
        return SessionCaller(origin=origin)
    if not isinstance(token, str) or not token:
        raise ChatKitError(
            "page_token_missing", "Session requests from the ChatKit page must carry its page_token.", 403
        )
    data = page_token_read(token)
    if data is None:
        raise ChatKitError("page_token_invalid", "The page token is invalid or expired; reload the page.", 403)
    if data.license_key != license_key or (widget_id and widget_id != data.widget_id):
        raise ChatKitError("page_token_invalid", "The page token was issued for another license or widget.", 403)
    return SessionCaller(origin=data.origin, widget_id=data.widget_id)
