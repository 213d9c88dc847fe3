"""Who a ChatKit call is for: the visitor (a server-signed random id issued with the page), the ChatKit user id
derived from it, and the page token with which a session call from OUR origin proves which customer page it serves."""

from __future__ import annotations

import functools
import secrets
import time
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

# Verified signatures kept per process, per kind (least recently used first out). A token's signature is checked
# once (HMAC, base64 and JSON: ~0.1 ms of the event loop's CPU per token before a ChatKit request's first byte,
# bench/chatkit_server.py); everything that can change is checked on every use: a page token's age, and whether
# the payload names this license, widget and an origin the license allows now (the callers). Keyed by the token
# and the signing keys: the same token under the same keys always verifies the same way. A forged or malformed
# token raises, so it is never kept.
VERIFIED_PAGE_TOKENS = 4096
VERIFIED_VISITOR_TOKENS = 10_000


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
        license_id, visitor = _visitor_token_verified(token, *_signing_keys())
    except signing.BadSignature:
        return None
    return visitor if license_id == license.pk else None


@functools.lru_cache(maxsize=VERIFIED_VISITOR_TOKENS)
def _visitor_token_verified(token: str, key: str, fallback_keys: tuple[str, ...]) -> tuple[Any, str]:
    """(the license id, the visitor id) a visitor token names, its signature verified. Raises BadSignature."""
    data = signing.loads(token, key=key, fallback_keys=list(fallback_keys), salt=VISITOR_SALT)
    if not isinstance(data, dict) or not isinstance(data.get("v"), str):
        raise signing.BadSignature("not a visitor token")
    return data.get("l"), data["v"]


def _signing_keys() -> tuple[str, tuple[str, ...]]:
    """The keys `signing` verifies with (settings.SECRET_KEY and SECRET_KEY_FALLBACKS): part of the verified
    tokens' cache key, so a key rotated in settings (tests) never finds a token verified under another."""
    return settings.SECRET_KEY, tuple(settings.SECRET_KEY_FALLBACKS)


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
    """The page token's payload, or None for a forged, malformed or expired one (older than
    CHATKIT_PAGE_TOKEN_SECONDS: checked on every read, also for a token whose signature was verified before)."""
    if not isinstance(token, str):
        return None
    try:
        page, signed_at = _page_token_verified(token, *_signing_keys())
    except (signing.BadSignature, KeyError, TypeError, ValueError):
        return None
    if time.time() - signed_at > settings.CHATKIT_PAGE_TOKEN_SECONDS:  # django.core.signing's own age rule
        return None
    return page


@functools.lru_cache(maxsize=VERIFIED_PAGE_TOKENS)
def _page_token_verified(token: str, key: str, fallback_keys: tuple[str, ...]) -> tuple[PageToken, int]:
    """(the page token's payload, when it was signed) once its signature (which covers the time) is verified; its
    age is the caller's. Raises BadSignature, KeyError or TypeError for anything but a page token."""
    data = signing.loads(token, key=key, fallback_keys=list(fallback_keys), salt=PAGE_TOKEN_SALT)
    page = PageToken(license_key=str(data["l"]), widget_id=str(data["w"]), origin=str(data["o"]))
    # `dumps` signs "<payload>:<time>" (TimestampSigner), so a verified token's time is its second-last field.
    return page, signing.b62_decode(token.rsplit(":", 2)[1])


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
