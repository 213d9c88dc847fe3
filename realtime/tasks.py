"""Celery tasks of the voice relay (scheduled by config/celery.py)."""

from __future__ import annotations

import logging
import time

from celery import shared_task
from django.conf import settings
from django.core.cache import cache

from realtime import services as svc

logger = logging.getLogger(__name__)

LAST_RUN_KEY = "switchboard:reaper:voice-calls:last-run"  # read by `python -m config.health beat`


@shared_task(ignore_result=True)
def voice_calls_reap() -> int:
    """End relayed calls whose heartbeat stopped (their web worker died): `worker_lost`, with the usage of
    their last checkpoint (already billed). Their slots have expired by then (services.SLOT_TTL_SECONDS)."""
    reaped = svc.voice_conversations_reap(stale_seconds=settings.REALTIME_STALE_SECONDS)
    cache.set(LAST_RUN_KEY, time.time(), timeout=None)
    if reaped:
        logger.warning("voice reaper: %s call(s) of a lost worker ended as worker_lost", reaped)
    return reaped
