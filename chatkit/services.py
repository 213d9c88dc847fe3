"""ChatKit: the options a page mounts, the visitor, the page token, and the writes of server mode.

`chatkit_options(config)` is the ONE mapping from a widget config to ChatKit's JS options
(DESIGN rule 1): the iframe page and the configurator preview embed its JSON; nothing of the
config is copied into JavaScript.

Server mode (our ChatKit server, `POST /api/chatkit/<key>/`): the visitor is a server-signed random
id issued with the page (`visitor_token_*`), new threads are counted against the monthly cap before
streaming (`chatkit_thread_reserve`), each completed turn lands as `widgets.Message` rows
(`chatkit_turn_record`) and each run's tokens and estimated cost are added to the conversation
and the license's month (`chatkit_usage_record`).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core import signing
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from django.utils.crypto import salted_hmac

from chatkit.client import ChatKitError
from licenses.domains import same_origin
from licenses.models import License
from licenses.selectors import REASON_MESSAGES, usage_for_month
from licenses.services import usage_increment
from widgets.models import Conversation, Widget
from widgets.ratelimit import rate_hit
from widgets.selectors import openai_api_key
from widgets.services.turns import chatkit_turn_record

PAGE_TOKEN_SALT = "switchboard.chatkit.page"
VISITOR_SALT = "switchboard.chatkit.visitor"
USER_SALT = "switchboard.chatkit.user"
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
            # Off until an attachment store exists: our ChatKit server refuses attachments.
            "attachments": {"enabled": False},
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


def chatkit_setup_problem(*, widget: Widget, config: dict[str, Any]) -> str:
    """Why this ChatKit widget cannot answer ("" when it can)."""
    if chatkit_mode(config) == "hosted":
        return (
            f"This chat ran on an OpenAI Agent Builder workflow, which OpenAI shut down on "
            f"{AGENT_BUILDER_SHUTDOWN}. The site owner needs to switch it to the Switchboard ChatKit server."
        )
    if not openai_api_key(secrets=widget.secrets):
        return "This chat is not connected yet: its ChatKit connection needs an OpenAI API key."
    return ""


def chatkit_model(config: dict[str, Any]) -> str:
    return config["connection"]["chatkit"].get("model") or settings.CHATKIT_DEFAULT_MODEL


# --- the visitor ---------------------------------------------------------------------------


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


# --- server mode: limits, the monthly cap, turns and usage -----------------------------------


def chatkit_rate_check(*, license: License, owner: str, generates: bool) -> int | None:
    """Per visitor and per license: model calls (`generates`) per minute, and every request per visitor
    (the shared limiter, widgets/ratelimit.py). Seconds to wait when over a limit, else None."""
    visitor = hashlib.sha256(owner.encode()).hexdigest()[:24]
    checks = (
        (
            (f"chatkit:visitor:{license.pk}:{visitor}", settings.CHATKIT_VISITOR_RATE_PER_MINUTE),
            (f"chatkit:license:{license.pk}", settings.CHATKIT_LICENSE_RATE_PER_MINUTE),
        )
        if generates
        else ((f"chatkit:reads:{license.pk}:{visitor}", settings.CHATKIT_READ_RATE_PER_MINUTE),)
    )
    for key, limit in checks:
        count, left = rate_hit(key)
        if count > limit:
            return left
    return None


def chatkit_thread_reserve(*, license: License) -> None:
    """Count a new public ChatKit thread against the monthly cap, before anything streams. Raises 429.

    Exact under concurrency: the atomic increment locks the month's row until commit, so concurrent
    threads serialise and each sees its own total; one over the cap rolls its increment back."""
    with transaction.atomic():
        usage_increment(license=license, chatkit_sessions=1)
        usage = usage_for_month(license=license)
        assert usage is not None
        if usage.conversations + usage.chatkit_sessions > license.monthly_conversations:
            raise ChatKitError("quota_exceeded", REASON_MESSAGES["quota_exceeded"], 429)


def chatkit_conversation_fail(*, conversation_id: int, code: str) -> None:
    """Mark the conversation failed (the agency sees why); the next good turn clears it."""
    Conversation.objects.filter(pk=conversation_id).exclude(end_reason="deleted_by_visitor").update(
        end_reason=f"failed:{code}"[:64],
        failed_at=timezone.now(),  # failed_at: bot health (widgets/health.py)
    )


USAGE_KEYS = ("requests", "input_tokens", "input_cached_tokens", "output_tokens", "reasoning_tokens", "total_tokens")


def chatkit_cost(*, model: str, usage: dict[str, int]) -> Decimal:
    """Estimated USD from settings.CHATKIT_MODELS (list prices per 1M tokens)."""
    prices = settings.CHATKIT_MODELS.get(model) or settings.CHATKIT_MODELS[settings.CHATKIT_DEFAULT_MODEL]
    cached = usage.get("input_cached_tokens", 0)
    micro = (
        prices["input"] * max(usage.get("input_tokens", 0) - cached, 0)
        + prices["input_cached"] * cached
        + prices["output"] * usage.get("output_tokens", 0)
    )
    return (Decimal(str(micro)) / Decimal(1_000_000)).quantize(Decimal("0.000001"))


def chatkit_usage_record(
    *,
    conversation_id: int,
    model: str,
    usage: dict[str, int],
    counted: bool,
    turn: dict[str, Any] | None = None,
) -> Decimal:
    """Add one run's tokens and estimated cost to its conversation and (unless a preview) the license's month,
    and the run's completed turn (`turn`: chatkit_turn_record's arguments) in the same transaction.

    Called from `finally`, so a run cut short by a disconnect still counts what it used (with no turn)."""
    usage = {k: int(usage.get(k) or 0) for k in USAGE_KEYS}
    cost = chatkit_cost(model=model, usage=usage) if any(usage.values()) else Decimal(0)
    with transaction.atomic():
        if turn is not None:
            chatkit_turn_record(conversation_id=conversation_id, **turn)
        if not any(usage.values()):
            return cost
        conversation = (
            Conversation.objects.select_for_update().select_related("widget").filter(pk=conversation_id).first()
        )
        if conversation is None:
            return cost
        totals = dict(conversation.usage or {})
        for key, value in usage.items():
            totals[key] = int(totals.get(key, 0)) + value
        totals["model"] = model
        conversation.usage = totals
        conversation.save(update_fields=["usage"])
        Conversation.objects.filter(pk=conversation_id).update(cost_usd=F("cost_usd") + cost)
        if counted:
            usage_increment(license=conversation.widget.license_id, cost_usd=cost)
    return cost
