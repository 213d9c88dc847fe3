"""The preview: the sandboxed frame that mounts the widget with a DRAFT config, the preview chat
(draft webhook, not counted as usage) and share-preview links (signed, expiring, revocable)."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.views.decorators.clickjacking import xframe_options_sameorigin
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_POST

from licenses.api import ApiError, error_response
from licenses.app_shell import api_error_json, forbidden, json_body, post_action, render_app, role_flags
from licenses.branding import brand_for_agency
from licenses.models import Membership
from widgets.aio import db_step
from widgets.chat import ChatRequest, chat_rate_check
from widgets.config_schema import config_draft, config_public
from widgets.models import Widget
from widgets.n8n import N8nTarget
from widgets.preview_chat import preview_chat_prepare
from widgets.selectors import preview_link_resolve
from widgets.services import preview_links
from widgets.views.configurator.common import draft_connection, widget_view
from widgets.views.configurator.editor import embed_origin
from widgets.views.embed import chat_answer, chat_error


def _channel_url(name: str, **kwargs: str) -> str:
    """A page of the channels built on widgets (chatkit, realtime), linked by URL name only (imports point
    down)."""
    try:
        return reverse(name, kwargs=kwargs)
    except NoReverseMatch:
        return ""


def _chatkit_preview_url(widget: Widget) -> str:
    return _channel_url("chatkit:preview", public_id=widget.public_id)


def _frame(
    request: HttpRequest, widget: Widget, *, chat_url: str, chatkit_url: str, voice_url: str = ""
) -> HttpResponse:
    response = render(
        request,
        "app/preview_frame.html",
        {
            "widget": widget,
            "preview": {
                "config": config_public(widget.config),
                "chatUrl": chat_url,
                # The page a ChatKit widget's bundle frames here: the member's preview page, or the
                # share link's page (the saved draft, a visitor of the link's own).
                "chatkitUrl": chatkit_url,
                # Where the member's test call on the draft gets its one-use ticket (realtime's view; a
                # share link has none: its frame makes no calls).
                "voicePreviewUrl": voice_url,
                "widgetId": widget.public_id,
                "licenseKey": widget.license.key,
            },
        },
    )
    # The frame renders tenant-authored text (greeting, replies) on our own origin: only our own
    # script files may run in it, never an inline script or event handler. `blob:` is for voice.js's
    # microphone AudioWorklet (test calls); only a script already running here can mint a blob: URL.
    response["Content-Security-Policy"] = "script-src 'self' blob:; object-src 'none'; base-uri 'none'"
    return response


@xframe_options_sameorigin
@widget_view
def preview_frame(request: HttpRequest, widget: Widget, membership: Membership) -> HttpResponse:
    return _frame(
        request,
        widget,
        chat_url=reverse("app-widget-preview-chat", kwargs={"public_id": widget.public_id}),
        chatkit_url=_chatkit_preview_url(widget),
        voice_url=_channel_url("realtime:voice-preview", public_id=widget.public_id),
    )


@widget_view
@require_POST
def preview_config(request: HttpRequest, widget: Widget, membership: Membership) -> HttpResponse:
    """POST {config} — what a visitor's browser would get of this UNSAVED draft: the form's config merged
    over the saved draft, validated like a save, projected by `config_public` (the one projection; the
    configurator copies none of it into JavaScript). Nothing is saved; any member may preview."""
    try:
        body = json_body(request)
        config = config_draft(body.get("config"), base=widget.config)
    except ApiError as exc:
        return api_error_json(exc)
    response = JsonResponse({"config": config_public(config)})
    response["Cache-Control"] = "no-store"
    return response


@widget_view
async def preview_chat(request: HttpRequest, widget: Widget, membership: Membership) -> HttpResponse:
    """POST — the preview's chat with the editor's current (unsaved) draft, answered like the live
    widget (JSON, or NDJSON when streaming). Editors may send `config`/`secrets` (the form's values, as
    Test connection does); viewers chat with the saved draft."""
    if request.method != "POST":
        return error_response("method_not_allowed", "Use POST.", 405)
    try:
        data = json_body(request)

        def prepare():
            if membership.can_edit and ("config" in data or "secrets" in data):
                config, secrets = draft_connection(widget=widget, body=data)
            else:
                config, secrets = widget.config, widget.secrets or {}
            return preview_chat_prepare(widget=widget, data=data, config=config, secrets=secrets)

        chat, target, streaming = await db_step(prepare)
        return await chat_answer(request, widget=widget, target=target, chat=chat, streaming=streaming, record=False)
    except ApiError as exc:
        return chat_error(exc)


# --- share links ------------------------------------------------------------------------------


def _share_url(link, *, origin: str) -> str:
    return origin + reverse("app-share", kwargs={"token": preview_links.preview_link_token(link)})


@widget_view
@require_http_methods(["GET", "POST"])
def share_links(request: HttpRequest, widget: Widget, membership: Membership) -> HttpResponse:
    errors: dict[str, list[str]] = {}
    if request.method == "POST":
        try:
            days = int(request.POST.get("days") or 7)
        except ValueError:
            days = 0
        try:
            link = preview_links.preview_link_create(
                widget=widget, user=request.user, membership=membership, days=days, label=request.POST.get("label", "")
            )
        except ApiError as exc:
            if exc.status_code == 403:
                return forbidden(request, exc)
            errors = exc.fields
        else:
            messages.success(request, "Share link created. Copy it below.")
            return redirect(reverse("app-widget-share", kwargs={"public_id": widget.public_id}) + f"#link-{link.pk}")
    now = timezone.now()
    # On the agency's verified domain, like the Embed tab's snippets: a white-labelled agency's client
    # never gets a link on the platform's host (share pages answer on mapped hosts).
    origin = embed_origin(request, agency_id=widget.license.agency_id)
    links = [
        {
            "link": link,
            "url": _share_url(link, origin=origin),
            "state": "revoked" if link.revoked_at else "expired" if link.expires_at <= now else "active",
        }
        for link in widget.preview_links.select_related("created_by")
    ]
    return render_app(
        request,
        "app/share.html",
        {
            "widget": widget,
            "tab": "share",
            "links": links,
            "errors": errors,
            "nav": "widgets",
            **role_flags(membership),
        },
        status=400 if errors else 200,
    )


@widget_view
@require_POST
def share_revoke(request: HttpRequest, widget: Widget, membership: Membership, pk: int) -> HttpResponse:
    link = get_object_or_404(widget.preview_links, pk=pk)
    return post_action(
        request,
        lambda: preview_links.preview_link_revoke(link=link, membership=membership),
        success="Link revoked: it stops working at once.",
        to="app-widget-share",
        public_id=widget.public_id,
    )


def _resolve(request: HttpRequest, token: str) -> tuple[Widget | None, HttpResponse | None]:
    lookup = preview_link_resolve(token=token)
    if lookup.ok and lookup.link is not None:
        return lookup.link.widget, None
    # An expired or revoked link still belongs to an agency: its page keeps that agency's brand.
    agency_id = lookup.link.widget.license.agency_id if lookup.link is not None else None
    if lookup.reason.startswith("license_"):
        reason, status = "unavailable", 403
    else:
        reason, status = lookup.reason, 410 if lookup.gone else 404
    response = render(
        request,
        "app/share_unavailable.html",
        {"reason": reason, "brand": brand_for_agency(agency=agency_id)},
        status=status,
    )
    return None, response


def share_page(request: HttpRequest, token: str) -> HttpResponse:
    widget, error = _resolve(request, token)
    if error is not None:
        return error
    return render(
        request,
        "app/share_page.html",
        {
            "widget": widget,
            "brand": brand_for_agency(agency=widget.license.agency_id),
            "powered_by": not widget.license.white_label,
            "frame_url": reverse("app-share-frame", kwargs={"token": token}),
        },
    )


@xframe_options_sameorigin
def share_frame(request: HttpRequest, token: str) -> HttpResponse:
    widget, error = _resolve(request, token)
    if error is not None:
        return error
    return _frame(
        request,
        widget,
        chat_url=reverse("app-share-chat", kwargs={"token": token}),
        chatkit_url=_channel_url("chatkit:share", token=token),
    )


def _share_chat_prepare(request: HttpRequest, token: str, data: dict) -> tuple[Widget, ChatRequest, N8nTarget, bool]:
    lookup = preview_link_resolve(token=token)
    if not lookup.ok or lookup.link is None:
        code, message, status = lookup.refusal()
        raise ApiError(code, message, status_code=status)
    widget = lookup.link.widget
    # Signed-out callers: the same per-minute limit as the public chat, keyed by the link.
    retry_after = chat_rate_check(
        license=widget.license,
        visitor_id=f"share:{lookup.link.token_id}",
        session_id="",
        ip=request.META.get("REMOTE_ADDR", ""),
    )
    if retry_after:
        raise ApiError(
            "rate_limited",
            "Too many messages; wait a moment and try again.",
            status_code=429,
            fields={"retry_after": retry_after},
        )
    chat, target, streaming = preview_chat_prepare(
        widget=widget, data=data, config=widget.config, secrets=widget.secrets or {}
    )
    return widget, chat, target, streaming


@csrf_exempt  # signed-out visitor; the signed token is the credential, and the view only reads
async def share_chat(request: HttpRequest, token: str) -> HttpResponse:
    """POST — the share link's chat: the SAVED draft (a share link cannot change the config)."""
    if request.method != "POST":
        return error_response("method_not_allowed", "Use POST.", 405)
    try:
        data = json_body(request)
        widget, chat, target, streaming = await db_step(_share_chat_prepare, request, token, data)
        return await chat_answer(request, widget=widget, target=target, chat=chat, streaming=streaming, record=False)
    except ApiError as exc:
        return chat_error(exc)
