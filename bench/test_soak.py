"""The short soak (bench/soak.py --short) as a test: `make prod` under a Redis restart, terminated
PostgreSQL backends, a SIGKILLed web process, a SIGKILLed Celery worker and a graceful web restart loses
no message, lead or billed second and leaks no slot. It needs PostgreSQL (pg_terminate_backend), so it
runs in CI (DATABASE_URL is PostgreSQL there) and is skipped on the SQLite default; it creates and drops
a database of its own and runs its own redis-server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_short_soak_loses_nothing_under_faults(tmp_path):
    if not os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")):
        pytest.skip("the soak terminates PostgreSQL backends: it runs on PostgreSQL (CI)")
    if not shutil.which("redis-server"):
        pytest.skip("redis-server is not installed")
    out = tmp_path / "soak.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench/soak.py"), "--short", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert out.exists(), result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert result.returncode == 0 and not any(report["totals"].values()), result.stdout[-3000:]
    # It really ran: traffic of each kind got through, every fault happened, and the killed web process held
    # calls that the reaper then ended with their usage.
    assert report["chat"]["answered_2xx"] > 0 and report["leads"]["accepted_201"] > 0
    assert report["voice"]["connected"] > 0 and report["voice"]["seconds_billed"] > 0
    assert {f["fault"] for f in report["faults"]} == {
        "redis_restart",
        "postgres_terminate",
        "kill_web",
        "kill_celery",
        "restart_web",
    }
    reasons = report["voice"]["end_reasons"]
    assert reasons.get("worker_lost", 0) > 0 and reasons.get("server_restart", 0) > 0
