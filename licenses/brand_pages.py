"""White-label (issue 15.5): the agency's brand page on /app/ and the public logo it uploads."""

from __future__ import annotations

import logging

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.forms import PasswordResetForm
from django.core.mail import EmailMultiAlternatives
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.loader import render_to_string
from django.views.decorators.http import require_GET, require_http_methods

from licenses import branding
from licenses.api import ApiError
from licenses.app_shell import agency_required, forbidden, render_app
from licenses.hosts import custom_domain_list
from licenses.models import Membership

logger = logging.getLogger(__name__)
FIELDS = ("name", "support_email", "primary_color", "accent_color", "logo_url")


@agency_required
@require_http_methods(["GET", "POST"])
def brand_page(request: HttpRequest, membership: Membership) -> HttpResponse:
    """Everyone in the agency sees the brand; admins and owners change it (licenses.branding.brand_update)."""
    agency = membership.agency
    row = branding.brand_row_get(agency=agency)
    errors: dict[str, list[str]] = {}
    values = {field: getattr(row, field) for field in FIELDS}
    if request.method == "POST":
        values = {field: request.POST.get(field, "") for field in FIELDS}
        upload = request.FILES.get("logo")
        data = None
        if upload is not None:
            # Read one byte past the cap so an oversized file is refused without reading all of it.
            data = upload.read(branding.LOGO_MAX_BYTES + 1)
        try:
            branding.brand_update(
                actor=membership,
                agency=agency,
                logo_file=data,
                logo_clear=request.POST.get("logo_clear") == "1",
                **values,
            )
        except ApiError as exc:
            if exc.status_code == 403:
                return forbidden(request, exc)
            errors = exc.fields or {"name": [exc.message]}
        else:
            messages.success(request, "Brand saved: your pages, share links and e-mails use it now.")
            return redirect("app-brand")
    return render_app(
        request,
        "app/brand.html",
        {
            "nav": "brand",
            "row": row,
            "values": values,
            "errors": errors,
            "can_manage": membership.can_publish,
            "domains": custom_domain_list(agency=agency),
            "cname_target": settings.CUSTOM_DOMAIN_TARGET,
            "logo_max_kb": branding.LOGO_MAX_BYTES // 1024,
        },
        status=400 if errors else 200,
    )


@require_GET
def brand_logo(request: HttpRequest, agency_id: int, digest: str) -> HttpResponse:
    """An uploaded logo, public (share pages and e-mails show it signed out). Served with the type its
    bytes were sniffed as, `nosniff` and a CSP that lets nothing in it run. The URL carries the content
    digest, so it is cached for good."""
    found = branding.brand_logo_get(agency_id=agency_id, digest=digest)
    if found is None:
        raise Http404("No such logo.")
    data, kind = found
    response = HttpResponse(data, content_type=kind)
    response["Cache-Control"] = "public, max-age=31536000, immutable"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Disposition"] = "inline"
    return response


class BrandedPasswordResetForm(PasswordResetForm):
    """Django's reset form; the mail carries the brand of the user's agency (licenses.branding.brand_for_user)."""

    def send_mail(
        self,
        subject_template_name: str,
        email_template_name: str,
        context: dict,
        from_email: str | None,
        to_email: str,
        html_email_template_name: str | None = None,
    ) -> None:
        brand = branding.brand_for_user(user=context["user"])
        context = {**context, "brand": brand}
        subject = "".join(render_to_string(subject_template_name, context).splitlines())
        body = render_to_string(email_template_name, context)
        mail = EmailMultiAlternatives(subject, body, to=[to_email], **branding.brand_mail_headers(brand))
        if not mail.from_email:
            mail.from_email = from_email or settings.DEFAULT_FROM_EMAIL
        if html_email_template_name is not None:
            mail.attach_alternative(render_to_string(html_email_template_name, context), "text/html")
        try:
            mail.send()
        except Exception:  # noqa: BLE001 - as Django's form: a mail failure must not reveal whether the user exists
            logger.exception("Failed to send password reset email to %s", context["user"].pk)
