"""The agency shell pages under /app/: licenses and their allowed sites, members and invitations, the
agency switch. The widget pages live in widgets.views."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.tokens import default_token_generator
from django.core.mail import EmailMessage
from django.db.models import Count
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode
from django.views.decorators.http import require_http_methods, require_POST

from licenses import identity
from licenses import services as license_services
from licenses.api import ApiError
from licenses.app_shell import agency_required, forbidden, post_action, render_app
from licenses.branding import brand_for_agency, brand_mail_headers
from licenses.domains import domains_split
from licenses.models import Membership
from licenses.selectors import (
    install_origins,
    license_get_for_user,
    license_list_for_user,
    membership_get,
    membership_list_for_user,
    usage_for_month,
)
from licenses.tenancy import current_agency_set


@agency_required
def license_list(request: HttpRequest, membership: Membership) -> HttpResponse:
    rows = []
    for lic in license_list_for_user(user=request.user, agency=membership.agency).annotate(n_widgets=Count("widgets")):
        usage = usage_for_month(license=lic)
        conversations = (usage.conversations + usage.chatkit_sessions) if usage else 0
        minutes = usage.voice_minutes if usage else 0
        rows.append(
            {
                "license": lic,
                "meters": [
                    _meter("Conversations this month", conversations, lic.monthly_conversations),
                    _meter("Voice minutes this month", minutes, lic.monthly_voice_minutes),
                    _meter("Widgets", lic.n_widgets, lic.max_widgets),
                ],
            }
        )
    return render_app(
        request,
        "app/license_list.html",
        {
            "rows": rows,
            "nav": "licenses",
            "can_manage_domains": membership.can_publish,
        },
    )


def _matches(pattern: str) -> str:
    host, _, port = pattern.partition(":")
    where = f"port {port} only" if port else "any port"
    if host.startswith("*."):
        return f"every subdomain of {host[2:]}, not {host[2:]} itself"
    return f"{host} ({where})"


@agency_required
@require_http_methods(["GET", "POST"])
def license_domains(request: HttpRequest, membership: Membership, key: str) -> HttpResponse:
    """A license's allowed domains: everyone in the agency sees them, admins and owners change them."""
    license = license_get_for_user(user=request.user, key=key)
    actor = membership_get(user=request.user, agency=license.agency_id)
    if actor is None:  # staff without a membership: the admin is their place
        raise Http404("License not found.")
    errors: list[str] = []
    value = ""
    if request.method == "POST":
        current = list(license.allowed_domains or [])
        action = request.POST.get("action", "")
        if action == "remove":
            domains = [d for d in current if d != request.POST.get("domain", "")]
            done = f"Removed {request.POST.get('domain', '')}: widgets stop loading there now."
        else:
            value = request.POST.get("domains", "")
            added = domains_split(value)
            domains = current + added
            done = f"Added {', '.join(added)}: widgets load there now." if added else ""
            if not added:
                errors = ["Enter a host such as shop.example.com or *.example.com."]
        if not errors:
            try:
                license_services.license_domains_set(actor=actor, license=license, domains=domains)
            except ApiError as exc:
                if exc.status_code == 403:
                    return forbidden(request, exc)
                # Positions count from the current list; the messages name the entry itself.
                errors = [
                    m for field_errors in exc.fields.values() for m in field_errors if not m.startswith("At most")
                ] or [exc.message]
            else:
                messages.success(request, done)
                return redirect("app-license-domains", key=license.key)
    cap = license.max_allowed_domains
    domains = license.allowed_domains or []
    return render_app(
        request,
        "app/license_domains.html",
        {
            "license": license,
            "nav": "licenses",
            "can_manage": actor.can_publish,
            "errors": errors,
            "value": value,
            "domains": [{"pattern": d, "matches": _matches(d)} for d in domains],
            "cap": cap,
            "left": max(0, cap - len(domains)),
            "installs": install_origins(license=license),
        },
        status=400 if errors else 200,
    )


def _meter(label: str, used: float, limit: int) -> dict:
    percent = 100 if limit <= 0 else min(100, round(100 * used / limit))
    level = "danger" if percent >= 90 else "warn" if percent >= 70 else "ok"
    shown = f"{used:g}" if isinstance(used, float) else str(used)
    return {"label": label, "used": shown, "limit": limit, "percent": percent, "level": level}


@agency_required
@require_http_methods(["GET", "POST"])
def member_list(request: HttpRequest, membership: Membership) -> HttpResponse:
    agency = membership.agency
    errors: dict[str, list[str]] = {}
    values = {"email": "", "role": Membership.Role.EDITOR}
    if request.method == "POST":
        values = {"email": request.POST.get("email", ""), "role": request.POST.get("role", "")}
        try:
            new, new_user = license_services.member_invite(
                actor=membership, agency=agency, email=values["email"], role=values["role"]
            )
        except ApiError as exc:
            if exc.status_code == 403:
                return forbidden(request, exc)
            errors = exc.fields or {"email": [exc.message]}
        else:
            _invite(request, new, new_user)
            values = {"email": "", "role": Membership.Role.EDITOR}
    members = Membership.objects.filter(agency=agency).select_related("user").order_by("user__email", "user__username")
    return render_app(
        request,
        "app/member_list.html",
        {
            "members": members,
            "errors": errors,
            "values": values,
            "nav": "members",
            "roles": Membership.Role.choices,
            "can_manage": membership.can_publish,
            "is_owner": membership.role == Membership.Role.OWNER,
        },
        status=400 if errors else 200,
    )


def _invite(request: HttpRequest, membership: Membership, new_user: bool) -> None:
    """Email the invitation. The password-set link goes to the invitee's mailbox only: shown to the
    inviter, it would let them take over the address's account (and every agency that later adds it)."""
    user = membership.user
    brand = brand_for_agency(agency=membership.agency_id)  # the inviting agency's own brand (issue 15.5)
    if new_user:
        path = reverse(
            "app-password-reset-confirm",
            kwargs={
                "uidb64": urlsafe_base64_encode(force_bytes(user.pk)),
                "token": default_token_generator.make_token(user),
            },
        )
        link = request.build_absolute_uri(path)
        body = f"You have been invited to {membership.agency.name} on {brand.name}.\n\nSet your password here: {link}\n"
    else:
        home = request.build_absolute_uri("/app/")
        body = f"You now have access to {membership.agency.name} on {brand.name}: {home}\n"
    if brand.support_email:
        body += f"\nQuestions? Write to {brand.support_email}.\n"
    mail = EmailMessage(f"Invitation to {membership.agency.name}", body, to=[user.email], **brand_mail_headers(brand))
    mail.send(fail_silently=True)
    messages.success(
        request, f"Invited {user.email} as {membership.get_role_display().lower()}; the invitation was emailed to them."
    )


def _member(membership: Membership, pk: int) -> Membership:
    return get_object_or_404(Membership.objects.select_related("user", "agency"), pk=pk, agency=membership.agency)


@agency_required
@require_POST
def member_role(request: HttpRequest, membership: Membership, pk: int) -> HttpResponse:
    target = _member(membership, pk)
    return post_action(
        request,
        lambda: license_services.member_set_role(
            actor=membership, membership=target, role=request.POST.get("role", "")
        ),
        success=lambda: f"{target.user.email or target.user.username} is now {target.role}.",
        to="app-members",
    )


@agency_required
@require_POST
def member_remove(request: HttpRequest, membership: Membership, pk: int) -> HttpResponse:
    target = _member(membership, pk)
    return post_action(
        request,
        lambda: license_services.member_remove(actor=membership, membership=target),
        success=f"Removed {target.user.email or target.user.username}.",
        to="app-members",
    )


@agency_required
@require_POST
def agency_switch(request: HttpRequest, membership: Membership) -> HttpResponse:
    wanted = request.POST.get("agency", "")
    chosen = next((m for m in membership_list_for_user(user=request.user) if str(m.agency_id) == wanted), None)
    if chosen is None:
        messages.error(request, "You are not a member of that agency.")
    else:
        current_agency_set(request, chosen)
        messages.success(request, f"Switched to {chosen.agency.name}.")
    return redirect("app-home")


@agency_required
@require_http_methods(["GET", "POST"])
def license_identity(request: HttpRequest, membership: Membership, key: str) -> HttpResponse:
    """Verified identity (issue 15.2): everyone in the agency sees whether a secret is set and whether
    verification is required; admins and owners rotate the secret (shown once, on this response only)
    and require verification."""
    license = license_get_for_user(user=request.user, key=key)
    actor = membership_get(user=request.user, agency=license.agency_id)
    if actor is None:  # staff without a membership: the admin is their place
        raise Http404("License not found.")
    new_secret = ""
    if request.method == "POST":
        action = request.POST.get("action", "")
        try:
            if action == "rotate":
                new_secret = identity.identity_secret_rotate(actor=actor, license=license)
                license.refresh_from_db()
            elif action in ("require", "allow-unverified"):
                identity.identity_required_set(actor=actor, license=license, required=action == "require")
                messages.success(
                    request,
                    "Only verified identities are accepted now."
                    if action == "require"
                    else "Unverified identities are accepted again (marked unverified).",
                )
                return redirect("app-license-identity", key=license.key)
        except ApiError as exc:
            if exc.status_code == 403:
                return forbidden(request, exc)
            messages.error(request, exc.message)
            return redirect("app-license-identity", key=license.key)
    response = render_app(
        request,
        "app/license_identity.html",
        {
            "license": license,
            "nav": "licenses",
            "can_manage": actor.can_publish,
            "secret_set": identity.identity_secret_is_set(license=license),
            "new_secret": new_secret,
        },
    )
    response["Cache-Control"] = "no-store"  # the secret is on this page once
    return response
