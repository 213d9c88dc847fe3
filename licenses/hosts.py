"""Custom domains (issue 15.5): hosts an agency CNAMEs to the platform, e.g. chat.agency.example.

Staff add a domain in the admin (pending), then check it: it is verified when the host resolves to
the same addresses as settings.CUSTOM_DOMAIN_TARGET (the host agencies are told to CNAME to), or
when staff mark it verified by hand (a proxy in front that resolves differently). Only verified
hosts are served; TLS for them is the proxy's job.

Every web process keeps the verified hosts in memory (`host_map`), refreshed from the database at
most every CUSTOM_DOMAIN_REFRESH_SECONDS by config.hosts.CustomHostMiddleware (outside the event loop)
and at once in the process that made a change: the host check on every request reads memory only.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from datetime import timedelta

from django.conf import settings
from django.core.mail import EmailMessage
from django.db import transaction
from django.http.request import split_domain_port, validate_host
from django.utils import timezone

from licenses.domains import _HOST_RE, _IPV4_RE
from licenses.models import Agency, CustomDomain


class CustomDomainError(ValueError):
    pass


def custom_domain_normalize(raw: str) -> str:
    """A bare host name (`chat.agency.example`): no scheme, port, path, wildcard or IP address, and not
    one of the platform's own hosts."""
    host = (raw or "").strip().lower().rstrip(".")
    if "://" in host or "/" in host or ":" in host:
        raise CustomDomainError("Enter the host name alone, such as chat.agency.example (no https://, port or path).")
    if not host or host.startswith("*.") or _IPV4_RE.match(host) or not _HOST_RE.match(host) or "." not in host:
        raise CustomDomainError(f"{raw!r} is not a host name such as chat.agency.example.")
    if validate_host(host, list(settings.ALLOWED_HOSTS)):
        raise CustomDomainError(f"{host} is one of the platform's own hosts.")
    return host


def custom_domain_list(*, agency: Agency) -> list[CustomDomain]:
    return list(CustomDomain.objects.filter(agency=agency).order_by("host"))


def custom_domain_primary(*, agency_id: int) -> str | None:
    """The host the Embed tab prints for this agency: its first verified domain, or None."""
    return (
        CustomDomain.objects.filter(agency_id=agency_id, status=CustomDomain.Status.VERIFIED)
        .order_by("verified_at", "host")
        .values_list("host", flat=True)
        .first()
    )


def _changed() -> None:
    # Now (this process's next request) and again once committed (a reload in between saw the old rows).
    host_map_invalidate()
    transaction.on_commit(host_map_invalidate)


@transaction.atomic
def custom_domain_add(*, agency: Agency, host: str) -> CustomDomain:
    host = custom_domain_normalize(host)
    if CustomDomain.objects.filter(host=host).exists():
        raise CustomDomainError(f"{host} is already mapped.")
    return CustomDomain.objects.create(agency=agency, host=host)


def _addresses(host: str, resolve: Callable[..., list]) -> set[str]:
    try:
        return {info[4][0] for info in resolve(host, None, proto=socket.IPPROTO_TCP)}
    except (OSError, UnicodeError):
        return set()


def _dns_verdict(host: str, resolve: Callable[..., list]) -> tuple[str | None, str]:
    """(VERIFIED or FAILED, message), or (None, why) when the platform's own target does not resolve:
    then nothing can be said about the agency's host."""
    target = settings.CUSTOM_DOMAIN_TARGET
    if not target:
        return CustomDomain.Status.FAILED, "CUSTOM_DOMAIN_TARGET is not set: mark it verified by hand."
    mine, theirs = _addresses(target, resolve), _addresses(host, resolve)
    if not theirs:
        return CustomDomain.Status.FAILED, f"{host} does not resolve (yet)."
    if mine & theirs:
        return CustomDomain.Status.VERIFIED, f"{host} points to {target}."
    if not mine:
        return None, f"{target} (CUSTOM_DOMAIN_TARGET) does not resolve here."
    return (
        CustomDomain.Status.FAILED,
        f"{host} resolves to {', '.join(sorted(theirs))}, not to {target}: add a CNAME to {target}.",
    )


@transaction.atomic
def custom_domain_check(*, domain: CustomDomain, resolve: Callable[..., list] = socket.getaddrinfo) -> CustomDomain:
    """Look the host up in DNS: verified when it resolves to an address of CUSTOM_DOMAIN_TARGET."""
    status, message = _dns_verdict(domain.host, resolve)
    domain = custom_domain_set_status(domain=domain, status=status or CustomDomain.Status.FAILED, message=message[:300])
    if domain.status == CustomDomain.Status.VERIFIED and not domain.verified_by_dns:
        domain.verified_by_dns = True
        domain.save(update_fields=["verified_by_dns"])
    return domain


@transaction.atomic
def custom_domain_recheck(
    *, domain: CustomDomain, resolve: Callable[..., list] = socket.getaddrinfo, now=None
) -> CustomDomain:
    """Beat's re-check of a DNS-verified domain. A failure keeps it served and flagged (`failing_since`,
    the message says until when); only a domain that failed every re-check for
    CUSTOM_DOMAIN_RECHECK_GRACE_HOURS stops being served, so one DNS blip takes nothing down. One success
    clears the flag; a blip of our own target's lookup counts for nothing."""
    now = now or timezone.now()
    domain = CustomDomain.objects.select_for_update().get(pk=domain.pk)
    if domain.status != CustomDomain.Status.VERIFIED or not domain.verified_by_dns:
        return domain
    status, message = _dns_verdict(domain.host, resolve)
    if status is None:
        return domain
    if status == CustomDomain.Status.VERIFIED:
        if domain.failing_since is not None:
            _notify_on_commit(domain, "recovered", message)
        domain.failing_since, domain.checked_at, domain.check_message = None, now, message[:300]
        domain.save(update_fields=["failing_since", "checked_at", "check_message"])
        return domain
    first_failure = domain.failing_since is None
    domain.failing_since = domain.failing_since or now
    until = domain.failing_since + timedelta(hours=settings.CUSTOM_DOMAIN_RECHECK_GRACE_HOURS)
    if now >= until:
        _notify_on_commit(domain, "stopped", message)
        return custom_domain_set_status(
            domain=domain, status=CustomDomain.Status.FAILED, message=f"Stopped serving: {message}"[:300], now=now
        )
    if first_failure:
        _notify_on_commit(domain, "failing", f"{message} It is still served until {until:%Y-%m-%d %H:%M} UTC.")
    domain.checked_at = now
    domain.check_message = f"Re-check failed (still served until {until:%Y-%m-%d %H:%M} UTC): {message}"[:300]
    domain.save(update_fields=["failing_since", "checked_at", "check_message"])
    return domain


DOMAIN_MAIL_SUBJECTS = {
    "failing": "Action needed: {host} no longer points to us",
    "stopped": "{host} is no longer served",
    "recovered": "{host} points to us again",
}


def _notify_on_commit(domain: CustomDomain, event: str, message: str) -> None:
    """Tell the agency's owners and admins once per change of a re-checked domain (first failure, stopped,
    recovered), after the re-check's transaction commits, from the agency's own sender (its other mails do)."""
    host, agency_id = domain.host, domain.agency_id
    transaction.on_commit(lambda: custom_domain_notify(host=host, agency_id=agency_id, event=event, message=message))


def custom_domain_notify(*, host: str, agency_id: int, event: str, message: str) -> int:
    """The e-mail of one re-check event to the agency's owners and admins; returns how many were sent."""
    # branding and selectors import this module
    from licenses.branding import brand_for_agency, brand_mail_headers
    from licenses.selectors import agency_alert_emails

    recipients = agency_alert_emails(agency=agency_id)
    if not recipients:
        return 0
    brand = brand_for_agency(agency=agency_id)
    action = {
        "failing": f"Point it to {settings.CUSTOM_DOMAIN_TARGET} again (a CNAME) before then; nothing else is needed.",
        "stopped": f"Embeds and links on {host} no longer work. Point it to {settings.CUSTOM_DOMAIN_TARGET} and run "
        "“Check DNS” again on your Brand page.",
        "recovered": "Nothing to do.",
    }[event]
    body = f"{message}\n\n{action}\n\n{brand.name}"
    subject = DOMAIN_MAIL_SUBJECTS[event].format(host=host)
    return EmailMessage(subject, body, to=recipients, **brand_mail_headers(brand)).send(fail_silently=True)


def custom_domains_recheck(*, resolve: Callable[..., list] = socket.getaddrinfo, now=None) -> dict[str, int]:
    """Re-check every DNS-verified domain (licenses.tasks.custom_domains_recheck, on beat)."""
    counts = {"ok": 0, "failing": 0, "stopped": 0}
    for domain in CustomDomain.objects.filter(status=CustomDomain.Status.VERIFIED, verified_by_dns=True):
        domain = custom_domain_recheck(domain=domain, resolve=resolve, now=now)
        key = (
            "stopped" if domain.status != CustomDomain.Status.VERIFIED else "failing" if domain.failing_since else "ok"
        )
        counts[key] += 1
    return counts


@transaction.atomic
def custom_domain_set_status(*, domain: CustomDomain, status: str, message: str = "", now=None) -> CustomDomain:
    now = now or timezone.now()
    domain.status, domain.checked_at, domain.check_message = status, now, message
    if status == CustomDomain.Status.VERIFIED and domain.verified_at is None:
        domain.verified_at = now
    if status != CustomDomain.Status.VERIFIED:
        domain.verified_at = None
    # Any decision starts over: by hand it is not DNS's to re-check (custom_domain_check sets it back).
    domain.verified_by_dns, domain.failing_since = False, None
    domain.save(
        update_fields=["status", "checked_at", "check_message", "verified_at", "verified_by_dns", "failing_since"]
    )
    _changed()
    return domain


@transaction.atomic
def custom_domain_delete(*, domain: CustomDomain) -> None:
    domain.delete()
    _changed()


# --- the per-process map of verified hosts ----------------------------------------------------------

_lock = threading.Lock()
_state: dict[str, object] = {"hosts": {}, "loaded": float("-inf")}


# The agency whose verified domain the current request came in on (None: a platform host). Set by
# config.hosts.CustomHostMiddleware for the length of one request; read by the one rule below.
request_host_agency: ContextVar[int | None] = ContextVar("request_host_agency", default=None)


def host_serves_agency(agency_id: int | None) -> bool:
    """May the current request's host serve this agency's public surface? A platform host serves every
    agency; an agency's own domain serves that agency only (another agency's key or link is unknown there)."""
    mapped = request_host_agency.get()
    return mapped is None or mapped == agency_id


def host_agency_id_loaded(raw_host: str | None) -> int | None:
    """The agency whose verified domain `raw_host` (a Host header, maybe with a port) is, or None, for
    callers outside the HTTP middleware (the voice WebSocket). Sync: reloads a stale map from the
    database; a host the settings allow is never looked up."""
    domain, _port = split_domain_port(raw_host or "")
    if not domain:
        return None
    if host_map_stale() and not validate_host(domain, list(settings.ALLOWED_HOSTS)):
        host_map_refresh()
    return host_map().get(domain)


def host_map() -> dict[str, int]:
    """Verified host → agency id, as last loaded (memory only: safe inside the event loop)."""
    return _state["hosts"]  # type: ignore[return-value]


def host_map_stale() -> bool:
    return time.monotonic() - _state["loaded"] >= settings.CUSTOM_DOMAIN_REFRESH_SECONDS  # type: ignore[operator]


def host_map_refresh() -> dict[str, int]:
    """Reload the verified hosts from the database (sync: call it outside the event loop)."""
    rows = CustomDomain.objects.filter(status=CustomDomain.Status.VERIFIED).values_list("host", "agency_id")
    hosts = dict(rows)
    with _lock:
        _state["hosts"], _state["loaded"] = hosts, time.monotonic()
    return hosts


def host_map_invalidate() -> None:
    """This process reloads on its next request; others within CUSTOM_DOMAIN_REFRESH_SECONDS."""
    with _lock:
        _state["loaded"] = float("-inf")


def host_agency_id(host: str) -> int | None:
    """The agency a request's Host header (`host[:port]`) is mapped to, or None."""
    domain, _port = split_domain_port(host)
    return host_map().get(domain) if domain else None
