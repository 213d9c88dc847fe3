"""Benchmark: POST /api/livekit/token (the server's whole share of a LiveKit call's set-up), Uvicorn, loopback.

    /work/main/.venv/bin/python bench/livekit_token.py [--concurrency 50] [--requests 500]

Starts Uvicorn (subprocess, one worker, free port, DEBUG=1) on a temporary SQLite database (or
$DATABASE_URL; $REDIS_URL is used only with BENCH_KEEP_REDIS=1), migrated and seeded with `seed_demo`; the
demo widget is switched to `voice.transport = livekit` and published, its license allowed enough concurrent
calls for every request of the run (each token holds a slot for 75 s: the agent would take it over), and
LIVEKIT_* point at a placeholder server (no LiveKit is contacted: minting is local). Then, with a concurrent
async httpx client, one warm-up batch and `--requests` timed requests, and prints requests/s, p50, p99 and
the server's CPU time per token.

Note: a slot is found by trying the license's slot keys in order (realtime.services.voice_slot_acquire), so
the n-th concurrent call of a license costs n cache `add`s; with this run's cap of --requests + warm-up the
later requests pay for that scan. Real caps are small (5 by default).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from httpload import PYTHON, ROOT, cpu_seconds, free_port, start_server, stop_server, timed_batch  # noqa: E402

ORIGIN = "http://localhost:8000"

SETUP = """
from widgets.config_schema import config_normalize
from widgets.models import Widget
from widgets.services.widgets import widget_publish
from licenses.models import Membership
widget = Widget.objects.select_related("license").order_by("created_at", "id").first()
widget.config = config_normalize({"voice": {"enabled": True, "transport": "livekit"}}, base=widget.config)
widget.save()
membership = Membership.objects.filter(agency=widget.license.agency, role="owner").first()
widget_publish(widget=widget, user=membership.user, membership=membership)
license = widget.license
license.limits = {**license.limits, "max_concurrent_voice_sessions": %d, "monthly_voice_minutes": 10**6}
license.save()
print("WIDGET", widget.public_id, license.key)
"""


def prepare(env: dict[str, str], slots: int) -> tuple[str, str]:
    subprocess.run([PYTHON, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
    subprocess.run([PYTHON, "manage.py", "seed_demo", "--force"], cwd=ROOT, env=env, check=True, capture_output=True)
    done = subprocess.run(
        [PYTHON, "manage.py", "shell", "-c", SETUP % slots], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if done.returncode:
        raise SystemExit(f"setup failed:\n{done.stderr[-3000:]}")
    out = done.stdout
    match = re.search(r"WIDGET (\S+) (\S+)", out)
    if not match:
        raise SystemExit(f"setup printed no widget:\n{out}")
    return match.group(1), match.group(2)


async def run(base: str, key: str, widget: str, total: int, concurrency: int, pid: int) -> dict[str, float]:
    body = json.dumps({"license": key, "widget": widget, "visitor_id": "bench"})
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:
        first = await client.post("/api/livekit/token", content=body, headers={"Origin": ORIGIN})
        if first.status_code != 200:
            raise SystemExit(f"token endpoint answered {first.status_code}: {first.text[:300]}")

        def request(client: httpx.AsyncClient, _i: int):
            return client.post(
                "/api/livekit/token", content=body, headers={"Origin": ORIGIN, "Content-Type": "text/plain"}
            )

        def ok(response: httpx.Response) -> bool:
            return response.status_code == 200 and "participant_token" in response.text

        await timed_batch(client, request, concurrency, concurrency, ok)  # warm-up
        cpu0 = cpu_seconds(pid)
        lat, elapsed, errors = await timed_batch(client, request, total, concurrency, ok)
        cpu = cpu_seconds(pid) - cpu0
    lat.sort()
    return {
        "rps": total / elapsed,
        "p50": statistics.median(lat) * 1000,
        "p99": lat[max(0, int(len(lat) * 0.99) - 1)] * 1000,
        "cpu_ms": cpu / total * 1000,
        "errors": errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=500, help="timed requests (default 500)")
    parser.add_argument("--concurrency", type=int, default=50, help="concurrent clients (default 50)")
    args = parser.parse_args()

    tmp = tempfile.TemporaryDirectory(prefix="sb-bench-")
    env = {
        **os.environ,
        "DEBUG": "1",
        "LOG_LEVEL": "WARNING",
        "LIVEKIT_URL": "wss://livekit.bench.invalid",
        "LIVEKIT_API_KEY": "APIbench",
        "LIVEKIT_API_SECRET": "bench-secret-" + "x" * 32,
    }
    if "BENCH_KEEP_REDIS" not in os.environ:
        env.pop("REDIS_URL", None)
    if not env.get("DATABASE_URL"):
        env["DATABASE_URL"] = f"sqlite:///{tmp.name}/bench.sqlite3"
    widget, key = prepare(env, args.requests + 2 * args.concurrency + 10)
    port = free_port()
    uvicorn = [PYTHON, "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1", "--port", str(port)]
    proc = start_server([*uvicorn, "--log-level", "warning", "--lifespan", "off"], env, port, "uvicorn")
    try:
        r = asyncio.run(run(f"http://127.0.0.1:{port}", key, widget, args.requests, args.concurrency, proc.pid))
    finally:
        stop_server(proc)
        tmp.cleanup()
    print(
        f"\nPOST /api/livekit/token — Uvicorn, 1 process, DEBUG=1, db={env['DATABASE_URL'].split('://')[0]}, "
        f"cache={'redis' if env.get('REDIS_URL') else 'locmem'}, loopback, {args.requests} requests, "
        f"concurrency {args.concurrency}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    print(f"{'req/s':>8}{'p50 ms':>10}{'p99 ms':>10}{'CPU ms/token':>14}{'errors':>8}")
    print(f"{r['rps']:>8.0f}{r['p50']:>10.1f}{r['p99']:>10.1f}{r['cpu_ms']:>14.2f}{int(r['errors']):>8}")
    if r["errors"]:
        raise SystemExit("some requests failed")


if __name__ == "__main__":
    main()
