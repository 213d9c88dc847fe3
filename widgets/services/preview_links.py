"""Share-preview links: signed, expiring, revocable URLs showing a widget's draft signed-out.

The URL carries `signing.dumps(token_id)`; the row decides expiry and revocation, so a link can be
revoked at once and a forged or edited token never resolves.
"""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.core import signing
from django.utils import timezone

from licenses.api import ApiError
from licenses.models import Membership
from licenses.tenancy import role_require
from widgets.models import PreviewLink, Widget

SALT = "switchboard.preview-link"
MAX_DAYS = 30


def preview_link_create(
    *, widget: Widget, user: AbstractBaseUser | None, membership: Membership | None, days: int = 7, label: str = ""
) -> PreviewLink:
    role_require(membership, Membership.Role.EDITOR, "share previews")
    if not 1 <= days <= MAX_DAYS:
        raise ApiError("invalid", f"A link lasts 1 to {MAX_DAYS} days.", fields={"days": [f"1 to {MAX_DAYS}."]})
    return PreviewLink.objects.create(
        widget=widget,
        created_by=user,
        label=(label or "").strip()[:200],
        expires_at=timezone.now() + timedelta(days=days),
    )


def preview_link_revoke(*, link: PreviewLink, membership: Membership | None) -> PreviewLink:
    role_require(membership, Membership.Role.EDITOR, "revoke previews")
    if link.revoked_at is None:
        link.revoked_at = timezone.now()
        link.save(update_fields=["revoked_at"])
    return link


def preview_link_token(link: PreviewLink) -> str:
    return signing.dumps(link.token_id, salt=SALT)
