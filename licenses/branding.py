"""White-label (issue 15.5): an agency's brand — name, logo, colours, support e-mail — and whether a
license shows “Powered by Switchboard”.

`brand_for_agency` is the one read every surface uses (/app/ pages, share pages, e-mails); it falls
back to the platform's own brand field by field, so a half-filled brand still renders.
`brand_update` is the one write, behind the one role gate (admins and owners).

Logos: an upload is kept only when its first bytes are those of a PNG, JPEG, GIF or WebP image (the
browser-supplied content type is ignored), at most LOGO_MAX_BYTES; it is served back with that
sniffed type, `nosniff` and a `default-src 'none'` CSP, so nothing in it can run (SVG is refused: it
can carry script). A logo URL must be https.

“Powered by” is a staff decision per license (`License.white_label`, set in the admin): what an
agency pays for, not a setting it can flip itself.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from email.utils import formataddr, parseaddr
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction
from django.urls import reverse

from licenses.api import (
    DISPLAY_FORBIDDEN_RE,
    DISPLAY_TEXT_MESSAGE,
    ApiError,
    display_text_problem,
    email_valid,
    one_line,
)
from licenses.models import Agency, AgencyBrand, Membership
from licenses.tenancy import role_require

PLATFORM_NAME = "Switchboard"
LOGO_MAX_BYTES = 256 * 1024
COLOR_RE = re.compile(r"^#[0-9a-fA-F]{6}$")
# The shared display-name rule (licenses.api): the name is also a display name in e-mail headers (From).
CONTROL_RE = DISPLAY_FORBIDDEN_RE
NAME_MAX = 80
URL_MAX = 500


@dataclass(frozen=True)
class Brand:
    """What a page or an e-mail shows. `custom` is False for the platform's own brand."""

    name: str = PLATFORM_NAME
    support_email: str = ""
    primary_color: str = ""
    accent_color: str = ""
    logo_src: str = ""
    custom: bool = False


PLATFORM_BRAND = Brand()


def logo_sniff(data: bytes) -> str | None:
    """The image type the bytes really are (PNG, JPEG, GIF, WebP), or None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def brand_from_row(row: AgencyBrand | None) -> Brand:
    if row is None:
        return PLATFORM_BRAND
    if row.logo_digest:
        logo = reverse("brand-logo", kwargs={"agency_id": row.agency_id, "digest": row.logo_digest})
    else:
        logo = row.logo_url
    return Brand(
        name=row.name or PLATFORM_NAME,
        support_email=row.support_email,
        primary_color=row.primary_color,
        accent_color=row.accent_color,
        logo_src=logo,
        custom=bool(row.name or logo or row.primary_color or row.accent_color or row.support_email),
    )


def brand_for_agency(*, agency: Agency | int | None) -> Brand:
    """The brand of one agency (never another's): the platform's where it has none."""
    if agency is None:
        return PLATFORM_BRAND
    agency_id = agency.pk if isinstance(agency, Agency) else agency
    row = AgencyBrand.objects.defer("logo").filter(agency_id=agency_id).first()
    return brand_from_row(row)


def brand_for_membership(membership: Membership | None) -> Brand:
    """The brand of the membership's agency, from the row its selector already joined (no query)."""
    if membership is None:
        return PLATFORM_BRAND
    try:
        return brand_from_row(membership.agency.brand)
    except AgencyBrand.DoesNotExist:
        return PLATFORM_BRAND


def brand_row_get(*, agency: Agency) -> AgencyBrand:
    """The agency's brand row for its edit form (unsaved and empty when it has none)."""
    return AgencyBrand.objects.defer("logo").filter(agency=agency).first() or AgencyBrand(agency=agency)


def brand_logo_get(*, agency_id: int, digest: str) -> tuple[bytes, str] | None:
    row = AgencyBrand.objects.filter(agency_id=agency_id, logo_digest=digest).only("logo", "logo_type").first()
    if row is None or not row.logo:
        return None
    return bytes(row.logo), row.logo_type


def _clean_color(value: str, field: str, errors: dict[str, list[str]]) -> str:
    value = (value or "").strip()
    if value and not COLOR_RE.match(value):
        errors[field] = ["Use a colour like #1d4ed8 (a # and six hex digits)."]
    return value.lower()


def _clean_logo_url(value: str, errors: dict[str, list[str]]) -> str:
    value = (value or "").strip()
    if not value:
        return ""
    parts = urlsplit(value)
    if len(value) > URL_MAX or parts.scheme != "https" or not parts.hostname or any(c in value for c in "\"'<> "):
        errors["logo_url"] = [f"Give an https:// address of an image (at most {URL_MAX} characters)."]
        return ""
    return value


def _clean_logo_file(data: bytes | None, errors: dict[str, list[str]]) -> tuple[bytes, str]:
    if not data:
        return b"", ""
    if len(data) > LOGO_MAX_BYTES:
        errors["logo"] = [f"The logo is larger than {LOGO_MAX_BYTES // 1024} KB; upload a smaller PNG, JPEG or WebP."]
        return b"", ""
    kind = logo_sniff(data)
    if kind is None:
        errors["logo"] = ["Upload a PNG, JPEG, GIF or WebP image (SVG and other files are refused)."]
        return b"", ""
    return data, kind


@transaction.atomic
def brand_update(
    *,
    actor: Membership | None,
    agency: Agency,
    name: str = "",
    support_email: str = "",
    primary_color: str = "",
    accent_color: str = "",
    logo_url: str = "",
    logo_file: bytes | None = None,
    logo_clear: bool = False,
) -> AgencyBrand:
    """Replace the agency's brand. Raises ApiError 403 for a role below admin, 400 naming each bad field."""
    role_require(actor, Membership.Role.ADMIN, "change the agency's brand")
    if actor is None or actor.agency_id != agency.pk:
        raise ApiError("not_found", "No such agency.", status_code=404)  # another agency's brand: as if absent
    errors: dict[str, list[str]] = {}
    name = (name or "").strip()
    if len(name) > NAME_MAX:
        errors["name"] = [f"At most {NAME_MAX} characters."]
    elif display_text_problem(name):
        errors["name"] = [DISPLAY_TEXT_MESSAGE]
    support_email = (support_email or "").strip()
    if support_email and not email_valid(support_email):
        errors["support_email"] = ["Enter an e-mail address such as help@agency.example."]
    colors = {
        "primary_color": _clean_color(primary_color, "primary_color", errors),
        "accent_color": _clean_color(accent_color, "accent_color", errors),
    }
    url = _clean_logo_url(logo_url, errors)
    data, kind = _clean_logo_file(logo_file, errors)
    if errors:
        raise ApiError("invalid", next(iter(errors.values()))[0], fields=errors)
    row = AgencyBrand.objects.select_for_update().filter(agency=agency).first() or AgencyBrand(agency=agency)
    row.name, row.support_email = name, support_email
    row.primary_color, row.accent_color = colors["primary_color"], colors["accent_color"]
    if data:  # an upload replaces any URL
        row.logo, row.logo_type, row.logo_url = data, kind, ""
        row.logo_digest = hashlib.sha256(data).hexdigest()[:16]
    elif logo_clear or url:  # a URL replaces any upload; "remove" clears both
        row.logo, row.logo_type, row.logo_digest, row.logo_url = b"", "", "", "" if logo_clear else url
    elif not row.logo_digest:  # the URL box emptied, no upload kept
        row.logo_url = ""
    row.save()
    return row


def brand_for_user(*, user: Any) -> Brand:
    """The brand of e-mails sent to a user about their account (password reset): their agency's when
    they belong to exactly one, else the platform's (a user of two agencies must not see one's brand
    in a mail about the other)."""
    agency_ids = list(Membership.objects.filter(user=user).values_list("agency_id", flat=True)[:2])
    return brand_for_agency(agency=agency_ids[0]) if len(agency_ids) == 1 else PLATFORM_BRAND


def brand_mail_headers(brand: Brand) -> dict[str, Any]:
    """From (the brand's name on the platform's address) and Reply-To (its support address)."""
    address = parseaddr(settings.DEFAULT_FROM_EMAIL)[1]
    # One line whatever the row holds (one saved before names were checked): a header cannot break.
    name = one_line(CONTROL_RE.sub(" ", brand.name))
    headers: dict[str, Any] = {"from_email": formataddr((name, address)) if brand.custom else None}
    if brand.support_email:
        headers["reply_to"] = [brand.support_email]
    return headers
