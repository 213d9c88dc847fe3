"""The Celery app (tasks in each app's tasks.py) and the beat schedule of the reapers.

Beat runs exactly one instance (`make prod` starts it): every REAPER_INTERVAL_SECONDS it ends voice
calls whose worker died (realtime.tasks.voice_calls_reap) and re-enqueues leads a dead worker or a
broker outage left behind (widgets.tasks.leads_reap); every HEALTH_CHECK_SECONDS it opens and closes
bot-down incidents (widgets.tasks.health_check); every ANALYTICS_ROLLUP_SECONDS it rolls up today's and
yesterday's analytics (widgets.tasks.analytics_rollup); every CUSTOM_DOMAIN_RECHECK_SECONDS it re-checks the
DNS of verified custom domains (licenses.tasks.custom_domains_recheck); every night at RETENTION_HOUR (UTC) it
applies each agency's retention window (widgets.tasks.retention_apply).
"""

import os

from celery import Celery
from celery.schedules import crontab

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("switchboard")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.on_after_configure.connect
def reapers_schedule(sender: Celery, **kwargs) -> None:
    from django.conf import settings

    every = settings.REAPER_INTERVAL_SECONDS
    # Each run must finish (or expire) before the next one starts: no pile-up after an outage.
    options = {"expires": every}
    sender.add_periodic_task(
        every, sender.signature("realtime.tasks.voice_calls_reap", options=options), name="voice-calls-reap"
    )
    sender.add_periodic_task(every, sender.signature("widgets.tasks.leads_reap", options=options), name="leads-reap")
    sender.add_periodic_task(
        settings.HEALTH_CHECK_SECONDS,
        sender.signature("widgets.tasks.health_check", options={"expires": settings.HEALTH_CHECK_SECONDS}),
        name="health-check",
    )
    sender.add_periodic_task(
        settings.ANALYTICS_ROLLUP_SECONDS,
        sender.signature("widgets.tasks.analytics_rollup", options={"expires": settings.ANALYTICS_ROLLUP_SECONDS}),
        name="analytics-rollup",
    )
    sender.add_periodic_task(
        settings.CUSTOM_DOMAIN_RECHECK_SECONDS,
        sender.signature(
            "licenses.tasks.custom_domains_recheck", options={"expires": settings.CUSTOM_DOMAIN_RECHECK_SECONDS}
        ),
        name="custom-domains-recheck",
    )
    sender.add_periodic_task(
        crontab(hour=settings.RETENTION_HOUR, minute=15),
        sender.signature("widgets.tasks.retention_apply", options={"expires": 6 * 3600}),
        name="retention-apply",
    )
