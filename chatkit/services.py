"""ChatKit: the options a page mounts, the visitor's `user`, the page token and session minting.

`chatkit_options(config)` is the ONE mapping from a widget config to ChatKit's JS options
(DESIGN rule 1): the iframe page, the configurator preview and the later server mode all embed its
JSON; nothing of the config is copied into JavaScript.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core import signing
from django.db import transaction
from django.utils.crypto import salted_hmac

from chatkit.client import ChatKitError, ChatKitSession, chatkit_error, session_create, session_request_body
from licenses.domains import origin_normalize
from licenses.models import License
from licenses.selectors import REASON_MESSAGES, usage_for_month
from licenses.services import usage_increment
from widgets.models import Channel, Conversation, Widget

PAGE_TOKEN_SALT = "switchboard.chatkit.page"
USER_SALT = "switchboard.chatkit.user"
VISITOR_ID_MAX = 128
AGENT_BUILDER_SHUTDOWN = "2026-11-30"


# --- what the page mounts -------------------------------------------------------------------


def chatkit_options(config: dict[str, Any]) -> dict[str, Any]:
    """ChatKit `setOptions` values (everything but `api`) from a normalised widget config.

    Names follow openai/chatkit-js `ChatKitOptions` / `ThemeOption` / `StartScreenOption` /
    `ComposerOption` / `HistoryOption`. ChatKit knows only light and dark: "auto" is sent as light
    and `chatkit_color_scheme_auto(config)` tells the page to follow prefers-color-scheme.
    """
    look = config["appearance"]["chatkit"]
    behaviour = config["behaviour"]
    options: dict[str, Any] = {
        "theme": {
            "colorScheme": "dark" if look["color_scheme"] == "dark" else "light",
            "color": {
                "grayscale": {
                    "hue": look["grayscale_hue"],
                    "tint": look["grayscale_tint"],
                    "shade": look["grayscale_shade"],
                },
                "accent": {"primary": look["accent_color"], "level": look["accent_level"]},
            },
            "radius": look["radius"],
            "density": look["density"],
            "typography": {"baseSize": look["base_font_size"]},
        },
        "header": {"enabled": True},
        "history": {"enabled": bool(behaviour["history"])},
        "startScreen": {
            "greeting": behaviour["greeting"],
            "prompts": [{"label": prompt, "prompt": prompt} for prompt in behaviour["starter_prompts"]],
        },
        "composer": {
            "placeholder": behaviour["placeholder"],
            "attachments": {"enabled": bool(behaviour["file_uploads"])},
        },
    }
    if behaviour["locale"]:
        options["locale"] = behaviour["locale"]
    if behaviour["disclaimer"]:
        options["disclaimer"] = {"text": behaviour["disclaimer"]}
    return options


def chatkit_color_scheme_auto(config: dict[str, Any]) -> bool:
    return config["appearance"]["chatkit"]["color_scheme"] == "auto"


def chatkit_mode(config: dict[str, Any]) -> str:
    return config["connection"]["chatkit"]["mode"]


def chatkit_api_key(widget: Widget) -> str:
    """The tenant's key (encrypted widget secret), else the platform key. Server-side only."""
    return (widget.secrets or {}).get("openai_api_key") or settings.OPENAI_API_KEY or ""


def chatkit_setup_problem(*, widget: Widget, config: dict[str, Any]) -> str:
    """Why a hosted-mode widget cannot mint sessions yet ("" when it can)."""
    if chatkit_mode(config) != "hosted":
        return ""
    missing = []
    if not config["connection"]["chatkit"]["workflow_id"]:
        missing.append("an Agent Builder workflow id")
    if not chatkit_api_key(widget):
        missing.append("an OpenAI API key")
    if not missing:
        return ""
    return f"This chat is not connected yet: its ChatKit connection needs {' and '.join(missing)}."


def frame_ancestors(patterns: list[str]) -> str:
    """CSP `frame-ancestors` sources for a license's allowed-domain patterns (see licenses.domains):
    a pattern without a port allows any port, like the Origin check does."""
    sources: list[str] = []
    for pattern in patterns or []:
        host, _, port = pattern.partition(":")
        if not host or any(c in host for c in " ;,'\""):
            continue
        for scheme in ("https", "http"):
            sources.append(f"{scheme}://{host}:{port or '*'}")
    return " ".join(sources) or "'none'"


# --- the visitor ---------------------------------------------------------------------------


def chatkit_user_id(*, license: License, visitor_id: str) -> str:
    """The ChatKit `user`: a string stable per (license, visitor), never the raw id, never random.

    HMAC-SHA256 under a key derived from SECRET_KEY. The license's id (not its key) goes in, so
    rotating a leaked license key does not cut visitors off from their ChatKit history.
    """
    digest = salted_hmac(USER_SALT, f"{license.pk}\x00{visitor_id}", algorithm="sha256").hexdigest()
    return f"sb_{digest}"


def visitor_id_clean(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ChatKitError("invalid", "visitor_id: send the visitor's id (a string).", 400)
    value = value.strip()
    if len(value) > VISITOR_ID_MAX:
        raise ChatKitError("invalid", f"visitor_id: at most {VISITOR_ID_MAX} characters.", 400)
    return value


# --- the page token: how a session call from OUR origin proves which customer page it serves ----


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


def same_origin(a: str | None, b: str | None) -> bool:
    normalized = origin_normalize(a)
    return normalized is not None and normalized == origin_normalize(b)


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


# --- minting sessions ---------------------------------------------------------------------------


def _session_limits(license: License) -> tuple[int, int]:
    limits = license.limits or {}
    seconds = int(limits.get("chatkit_session_seconds") or settings.CHATKIT_SESSION_SECONDS)
    per_minute = int(limits.get("chatkit_max_requests_per_minute") or settings.CHATKIT_MAX_REQUESTS_PER_MINUTE)
    return seconds, per_minute


def _secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def chatkit_session_record(
    *, license: License, widget: Widget, user: str, session: ChatKitSession, preview: bool,
    previous_secret: str = "",
) -> Conversation:
    """Count the session against the monthly cap and record its Conversation: one transaction.

    A refresh (ChatKit asks again when its secret expires, passing the current one) that presents the
    secret this visitor's conversation got last continues that conversation uncounted, at most
    CHATKIT_MAX_REFRESHES times; only a hash of the secret is stored.

    Exact under concurrency: the atomic increment locks the month's row until commit, so concurrent
    sessions serialise and each sees its own total; one that went over the cap raises
    `quota_exceeded`, which rolls the increment back (its client secret is never handed out).
    Previews are recorded but never counted.
    """
    with transaction.atomic():
        if previous_secret:
            ongoing = (
                Conversation.objects.select_for_update()
                .filter(widget=widget, channel=Channel.CHATKIT, visitor_id=user, is_preview=preview,
                        usage__chatkit_secret_sha256=_secret_hash(previous_secret))
                .first()
            )
            refreshes = int((ongoing.usage or {}).get("chatkit_refreshes", 0)) if ongoing else 0
            if ongoing is not None and refreshes < settings.CHATKIT_MAX_REFRESHES:
                ongoing.usage = {**ongoing.usage, "chatkit_secret_sha256": _secret_hash(session.client_secret),
                                 "chatkit_refreshes": refreshes + 1}
                ongoing.session_id = session.session_id[:200]
                ongoing.save(update_fields=["usage", "session_id"])
                return ongoing
        if not preview:
            usage_increment(license=license, chatkit_sessions=1)
            usage = usage_for_month(license=license)
            assert usage is not None
            if usage.conversations + usage.chatkit_sessions > license.monthly_conversations:
                raise ChatKitError("quota_exceeded", REASON_MESSAGES["quota_exceeded"], 429)
        return Conversation.objects.create(
            widget=widget, channel=Channel.CHATKIT, visitor_id=user, session_id=session.session_id[:200],
            is_preview=preview, usage={"chatkit_secret_sha256": _secret_hash(session.client_secret)},
        )


def chatkit_session_start(
    *, license: License, widget: Widget, config: dict[str, Any], visitor_id: str, preview: bool = False,
    previous_secret: str = "",
) -> ChatKitSession:
    """Mint a ChatKit session for a hosted-workflow widget and record its Conversation.

    Public sessions count against the license's monthly cap (429 `quota_exceeded`); a session the
    upstream refuses is not counted. Previews (the configurator, draft config) are never counted.
    The caller has already checked the quota (license_check quota="conversations"), so sessions
    over the cap are rarely minted; the exact check happens when the session is counted.
    """
    if chatkit_mode(config) != "hosted":
        raise ChatKitError(
            "wrong_mode",
            "This widget runs on the Switchboard ChatKit server (server mode), which does not use sessions: "
            "point ChatKit's api.url at POST /api/chatkit/<license_key>/.",
            409,
        )
    connection = config["connection"]["chatkit"]
    api_key = chatkit_api_key(widget)
    if not api_key or not connection["workflow_id"]:
        raise chatkit_error("not_configured")
    user = chatkit_user_id(license=license, visitor_id=visitor_id)
    seconds, per_minute = _session_limits(license)
    body = session_request_body(
        workflow_id=connection["workflow_id"],
        workflow_version=connection["workflow_version"],
        user=user,
        file_upload=bool(config["behaviour"]["file_uploads"]),
        history=bool(config["behaviour"]["history"]),
        expires_seconds=seconds,
        max_requests_per_minute=per_minute,
    )
    session = session_create(api_key=api_key, body=body)
    chatkit_session_record(license=license, widget=widget, user=user, session=session, preview=preview,
                           previous_secret=previous_secret)
    return session

