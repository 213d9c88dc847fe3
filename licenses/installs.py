"""Installation health (issue 13.5): the origins where each license's loader and public API were used, and
the refused attempts by origin and reason, without a database write on any hot path.

`install_seen()` is called by `licenses.selectors.license_check` — the one check every public surface
runs (loader, public config, n8n chat, ChatKit, voice) — and only adds to a counter in this process's
memory. A daemon thread per web process writes the counters to `InstallOrigin` every
INSTALL_FLUSH_SECONDS (`install_flush`); a crashed process loses at most that window of counts (these
are health figures, not billing). Bounded: at most INSTALL_MAX_ORIGINS origins per license are stored
(further ones count under `(other)`), and at most MAX_PENDING keys wait in memory between flushes.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import UTC, datetime
from urllib.parse import urlsplit

from django.conf import settings
from django.db import DatabaseError, IntegrityError, connections, transaction
from django.db.models import F
from django.db.models.functions import Greatest

from licenses.models import InstallOrigin, License

logger = logging.getLogger(__name__)

MAX_PENDING = 5000
NONE, OTHER = "(none)", "(other)"

_lock = threading.Lock()
# (license id or "key:<license key>", origin, outcome) -> [count, first_seen, last_seen]
_pending: dict[tuple[int | str, str, str], list[float]] = {}
_flusher: dict[str, int] = {"pid": 0}


def origin_label(origin: str | None) -> str:
    """scheme://host[:port] in lower case, or (none)."""
    if not origin or origin == "null":
        return NONE
    try:
        parts = urlsplit(origin.strip())
        host = (parts.hostname or "").lower()
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return NONE
    if parts.scheme not in ("http", "https") or not host:
        return NONE
    return f"{parts.scheme}://{host}{port}"[:200]


def install_seen(*, origin: str | None, outcome: str, license_id: int | None = None, license_key: str = "") -> None:
    """Count one use of the license (by id, or by key where only the key is at hand: the loader) from
    `origin` with `outcome` (`ok`, `loader` or a refusal reason). No I/O."""
    now = time.time()
    who: int | str = license_id if license_id is not None else f"key:{license_key[:64]}"
    key = (who, origin_label(origin), outcome[:32])
    with _lock:
        entry = _pending.get(key)
        if entry is None:
            if len(_pending) >= MAX_PENDING:
                key = (who, OTHER, key[2])
                entry = _pending.get(key)
            if entry is None:
                entry = _pending[key] = [0, now, now]
        entry[0] += 1
        entry[2] = now
    _flusher_ensure()


def _at(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def install_flush() -> int:
    """Write the counted uses to the database. Returns how many (license, origin, outcome) rows moved."""
    with _lock:
        batch = dict(_pending)
        _pending.clear()
    keys = {who[4:] for who, _, _ in batch if isinstance(who, str)}
    ids = dict(License.objects.filter(key__in=keys).values_list("key", "pk")) if keys else {}
    for (who, origin, outcome), (count, first, last) in batch.items():
        license_id = ids.get(who[4:]) if isinstance(who, str) else who
        if license_id is None:
            continue  # a key that names no license (the loader answered unknown_license)
        try:
            _flush_one(license_id, origin, outcome, int(count), _at(first), _at(last))
        except DatabaseError:
            logger.warning("installation counts of license %s not written", license_id, exc_info=True)
    return len(batch)


def _flush_one(license_id: int, origin: str, outcome: str, count: int, first: datetime, last: datetime) -> None:
    rows = InstallOrigin.objects.filter(license_id=license_id, outcome=outcome)
    if rows.filter(origin=origin).update(count=F("count") + count, last_seen=Greatest(F("last_seen"), last)):
        return
    known = InstallOrigin.objects.filter(license_id=license_id).values("origin").distinct().count()
    if known >= settings.INSTALL_MAX_ORIGINS and origin != OTHER:
        origin = OTHER
        if rows.filter(origin=origin).update(count=F("count") + count, last_seen=Greatest(F("last_seen"), last)):
            return
    try:
        with transaction.atomic():
            InstallOrigin.objects.create(
                license_id=license_id, origin=origin, outcome=outcome, count=count, first_seen=first, last_seen=last
            )
    except IntegrityError:  # another process created it a moment ago, or the license is gone
        rows.filter(origin=origin).update(count=F("count") + count, last_seen=Greatest(F("last_seen"), last))


def _flusher_ensure() -> None:
    """One daemon thread per process (recreated after a fork) that flushes every INSTALL_FLUSH_SECONDS."""
    every = settings.INSTALL_FLUSH_SECONDS
    if every <= 0 or _flusher["pid"] == os.getpid():
        return
    with _lock:
        if _flusher["pid"] == os.getpid():
            return
        _flusher["pid"] = os.getpid()

    def run() -> None:
        while True:
            time.sleep(every)
            try:
                install_flush()
            except Exception:  # never let the thread die
                logger.exception("installation counts flush failed")
            finally:
                connections.close_all()

    threading.Thread(target=run, name="install-flush", daemon=True).start()
