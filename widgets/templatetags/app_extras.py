"""Small template filters for the agency UI."""

from __future__ import annotations

from datetime import datetime
from urllib.parse import urlencode

from django import template
from django.utils import timezone
from django.utils.timesince import timesince

register = template.Library()


@register.filter
def ago(value: datetime | None) -> str:
    """ "just now" under a minute, else "5 minutes ago" (the largest unit only)."""
    if value is None:
        return ""
    if (timezone.now() - value).total_seconds() < 60:
        return "just now"
    return timesince(value, depth=1) + " ago"


@register.filter
def urlencode_dict(values: dict[str, str]) -> str:
    """A dict of GET parameters as a query string (the inbox's filters in links and exports)."""
    return urlencode(values)
