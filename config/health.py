"""Health check of each process kind of the production topology (`make prod-status` runs them all).

    python -m config.health [web] [worker] [beat] [--host 127.0.0.1] [--port 8000]

- web:    `GET /healthz` on HOST:PORT answers 200 (that process reaches PostgreSQL and Redis). Every web
          process listens on the same port (SO_REUSEPORT), so one call checks one of them; supervisord's
          `status` lists each `web:web-N` and restarts a dead one at once.
- worker: Celery `ping`: every worker answers within 5 s.
- beat:   both reapers (config/celery.py) ran within 3 × REAPER_INTERVAL_SECONDS — beat schedules them and a
          worker runs them, so this also proves the worker consumes the queue.
Prints one line per check; exits 1 if any failed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import urllib.error
import urllib.request


def check_web(host: str, port: int) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=5) as response:
            return response.status == 200, f"/healthz {response.status}"
    except urllib.error.HTTPError as exc:
        return False, f"/healthz {exc.code} {exc.read()[:200].decode('utf-8', 'replace')}"
    except OSError as exc:
        return False, f"/healthz unreachable: {exc}"


def check_worker() -> tuple[bool, str]:
    from config.celery import app

    try:
        replies = app.control.ping(timeout=5)
    except Exception as exc:  # noqa: BLE001 - the broker itself may be down
        return False, f"ping failed: {type(exc).__name__}: {exc}"
    names = sorted(name for reply in replies for name in reply)
    return bool(names), f"pong from {', '.join(names)}" if names else "no worker answered"


def check_beat() -> tuple[bool, str]:
    from django.conf import settings
    from django.core.cache import cache

    from realtime.tasks import LAST_RUN_KEY
    from widgets.tasks import LEADS_REAP_LAST_RUN_KEY

    limit = 3 * settings.REAPER_INTERVAL_SECONDS
    try:
        runs = {
            name: cache.get(key) for name, key in (("voice-calls", LAST_RUN_KEY), ("leads", LEADS_REAP_LAST_RUN_KEY))
        }
    except Exception as exc:  # noqa: BLE001
        return False, f"cache unreachable: {type(exc).__name__}"
    ages = {name: (time.time() - at) if at else None for name, at in runs.items()}
    ok = all(age is not None and age <= limit for age in ages.values())
    shown = ", ".join(f"{name} {'never' if age is None else f'{age:.0f} s ago'}" for name, age in ages.items())
    return ok, f"reapers ran: {shown} (limit {limit} s)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Health of each production process kind.")
    parser.add_argument("checks", nargs="*", metavar="web|worker|beat", help="default: all three")
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    args = parser.parse_args(argv)
    unknown = set(args.checks) - {"web", "worker", "beat"}
    if unknown:
        parser.error(f"unknown check(s): {', '.join(sorted(unknown))}")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    results = []
    for name in args.checks or ["web", "worker", "beat"]:
        ok, detail = (
            check_web(args.host, args.port) if name == "web" else check_worker() if name == "worker" else check_beat()
        )
        results.append(ok)
        print(f"{name:7} {'ok' if ok else 'FAIL'}  {detail}")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
