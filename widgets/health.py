"""Bot health (issue 13.4): is a widget's bot answering? Incidents, and the agency's alert settings.

`health_scan()` (Celery beat, every HEALTH_CHECK_SECONDS) looks at the last HEALTH_WINDOW_MINUTES of
visitor turns on the chat channels (n8n chat and ChatKit; voice has its own call records):
- an attempt is a visitor's turn (a user `Message`), or a ChatKit turn that failed upstream
  (`Conversation.failed_at`: a failed ChatKit turn leaves no transcript row);
- a failure is a turn that got no answer (`Message.failure_kind`: n8n timed out, failed, refused) or a
  failed ChatKit turn.
A widget is **down** when, in the window, at least HEALTH_MIN_ATTEMPTS attempts failed at a rate of
HEALTH_FAILURE_RATE or more, or its last HEALTH_CONSECUTIVE_FAILURES attempts all failed (the upstream
stopped answering, whatever the traffic). Then an `Incident` opens (one open per widget, a database
constraint) and the agency is told once: an email to its admins and owners and, when set, a signed POST
to its alert webhook. The incident closes — with one "recovered" notice — when a turn has succeeded since
it opened and the widget is no longer down. Silence alone never closes it: no traffic proves nothing.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, Q
from django.utils import timezone

from licenses.api import ApiError
from licenses.models import Agency, Membership
from licenses.tenancy import role_require
from widgets.models import Channel, Conversation, Incident, Message
from widgets.n8n import n8n_target_allowed

ALERT_SECRET = "alert_webhook_secret"
CHAT_CHANNELS = (Channel.CHAT, Channel.CHATKIT)


def _turns(widget_ids: Any = None) -> Any:
    turns = Message.objects.filter(
        role=Message.Role.USER, conversation__is_preview=False, conversation__channel__in=CHAT_CHANNELS
    )
    return turns if widget_ids is None else turns.filter(conversation__widget_id__in=widget_ids)


def _window_stats(since: datetime) -> dict[int, list[int]]:
    """{widget id: [attempts, failures]} in the window."""
    stats: dict[int, list[int]] = {}
    rows = (
        _turns()
        .filter(created_at__gte=since)
        .values("conversation__widget_id")
        .annotate(attempts=Count("pk"), failures=Count("pk", filter=~Q(failure_kind="")))
    )
    for row in rows:
        stats[row["conversation__widget_id"]] = [row["attempts"], row["failures"]]
    chatkit = (
        Conversation.objects.filter(channel=Channel.CHATKIT, is_preview=False, failed_at__gte=since)
        .values("widget_id")
        .annotate(n=Count("pk"))
    )
    for row in chatkit:
        entry = stats.setdefault(row["widget_id"], [0, 0])
        entry[0] += row["n"]
        entry[1] += row["n"]
    return stats


def _latest(widget_id: int, since: datetime, n: int) -> list[tuple[datetime, str]]:
    """The widget's last `n` attempts in the window, newest first: (when, failure kind or "")."""
    turns = list(
        _turns([widget_id])
        .filter(created_at__gte=since)
        .order_by("-created_at")
        .values_list("created_at", "failure_kind")[:n]
    )
    failed = list(
        Conversation.objects.filter(
            widget_id=widget_id, channel=Channel.CHATKIT, is_preview=False, failed_at__gte=since
        )
        .order_by("-failed_at")
        .values_list("failed_at", "end_reason")[:n]
    )
    chatkit = [(at, reason.removeprefix("failed:") or "upstream_error") for at, reason in failed]
    return sorted(turns + chatkit, key=lambda attempt: attempt[0], reverse=True)[:n]


def widget_down(*, widget_id: int, attempts: int, failures: int, since: datetime) -> tuple[bool, str]:
    """(down?, the latest failure's kind)."""
    if not failures:
        return False, ""
    streak = settings.HEALTH_CONSECUTIVE_FAILURES
    latest = _latest(widget_id, since, streak)
    kind = next((k for _, k in latest if k), "")
    if attempts >= settings.HEALTH_MIN_ATTEMPTS and failures / attempts >= settings.HEALTH_FAILURE_RATE:
        return True, kind
    return len(latest) == streak and all(k for _, k in latest), kind


def _notify(incident: Incident, event: str) -> None:
    from widgets.tasks import incident_notify  # tasks import this module

    transaction.on_commit(lambda: incident_notify.delay(incident.pk, event))


def health_scan(*, now: datetime | None = None) -> dict[str, int]:
    """Beat task body: open and close incidents; notifications go out through `incident_notify`."""
    now = now or timezone.now()
    since = now - timedelta(minutes=settings.HEALTH_WINDOW_MINUTES)
    stats = _window_stats(since)
    open_incidents = {i.widget_id: i for i in Incident.objects.filter(closed_at__isnull=True)}
    opened = closed = 0
    for widget_id in sorted(set(stats) | set(open_incidents)):
        attempts, failures = stats.get(widget_id, (0, 0))
        down, kind = widget_down(widget_id=widget_id, attempts=attempts, failures=failures, since=since)
        incident = open_incidents.get(widget_id)
        if down and incident is None:
            try:
                with transaction.atomic():
                    incident = Incident.objects.create(
                        widget_id=widget_id, opened_at=now, attempts=attempts, failures=failures, failure_kind=kind
                    )
                    _notify(incident, "down")
            except IntegrityError:
                continue  # another scan opened it a moment ago
            opened += 1
        elif down and incident is not None:
            Incident.objects.filter(pk=incident.pk).update(failure_kind=kind or incident.failure_kind)
        elif incident is not None and _answered_since(widget_id, incident.opened_at):
            with transaction.atomic():
                if Incident.objects.filter(pk=incident.pk, closed_at__isnull=True).update(closed_at=now):
                    _notify(incident, "recovered")
                    closed += 1
    return {"opened": opened, "closed": closed, "open": Incident.objects.filter(closed_at__isnull=True).count()}


def _answered_since(widget_id: int, since: datetime) -> bool:
    return _turns([widget_id]).filter(created_at__gt=since, failure_kind="").exists()


def open_incidents_by_widget(*, widget_ids: list[int]) -> dict[int, Incident]:
    """For the widget list's health badge."""
    return {i.widget_id: i for i in Incident.objects.filter(widget_id__in=widget_ids, closed_at__isnull=True)}


def incidents_for_agency(*, agency: Agency, limit: int = 50) -> list[Incident]:
    return list(
        Incident.objects.filter(widget__license__agency=agency)
        .select_related("widget__license")
        .order_by("closed_at", "-opened_at")[:limit]  # open ones (NULL sorts last in DESC, first in ASC) first
    )


# --- the agency's alert settings ------------------------------------------------------------------


def agency_alert_webhook_set(
    *, actor: Membership | None, agency: Agency, url: str, secret: str | None = None
) -> Agency:
    """Where bot-down alerts are POSTed (empty: email only) and their signing secret (None keeps the
    stored one, "" clears it; a new URL without the secret entered again clears it, so a secret never
    signs for an address it was not given for). Admins and owners; https only, never a private address."""
    if actor is not None and actor.agency_id != agency.pk:
        actor = None
    role_require(actor, Membership.Role.ADMIN, "change where alerts are sent")
    url = (url or "").strip()
    if url:
        problem = ""
        if len(url) > 200:
            problem = "The address is at most 200 characters."
        elif not url.startswith("https://") and not settings.N8N_ALLOW_PRIVATE_NETWORKS:
            problem = "Use an https:// address."
        elif not url.startswith(("https://", "http://")):
            problem = "Enter a full https:// address."
        elif not n8n_target_allowed(url):
            problem = "That address points into a private network."
        if problem:
            raise ApiError("invalid", problem, fields={"alert_webhook_url": [problem]})
    if secret is not None and len(secret.strip()) > 500:
        raise ApiError("invalid", "The signing secret is at most 500 characters.", fields={ALERT_SECRET: ["Too long."]})
    binding = ALERT_SECRET + "_url"
    with transaction.atomic():
        locked = Agency.objects.select_for_update().get(pk=agency.pk)
        secrets = dict(locked.secrets or {})
        if secret is not None and secret.strip():
            secrets[ALERT_SECRET] = secret.strip()
        elif secret is not None or secrets.get(binding) != url:
            secrets.pop(ALERT_SECRET, None)
        if secrets.get(ALERT_SECRET):
            secrets[binding] = url
        else:
            secrets.pop(binding, None)
        locked.alert_webhook_url, locked.secrets = url, secrets
        locked.save(update_fields=["alert_webhook_url", "secrets"])
    agency.alert_webhook_url, agency.secrets = locked.alert_webhook_url, locked.secrets
    return agency


def alert_secret(agency: Agency) -> str:
    """The signing secret, only for the exact URL it was saved with."""
    secrets = agency.secrets or {}
    if secrets.get(ALERT_SECRET + "_url") == agency.alert_webhook_url:
        return secrets.get(ALERT_SECRET, "")
    return ""
