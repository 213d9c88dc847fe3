"""Benchmark: the ChatKit session endpoint's own overhead over its (fake) upstream, in one run.

    DEBUG=1 .venv/bin/python bench/chatkit_sessions.py [--requests 300] [--concurrency 10]

Starts the fake OpenAI server (chatkit/tests/fake_openai.py) on 127.0.0.1, migrates and seeds a
temporary SQLite database, serves the project with Daphne on a free port (a subprocess, DEBUG=1),
then sends the same session requests
  A) to POST /api/chatkit/sessions through Daphne (license + Origin check, quota reservation,
     upstream call, Conversation row), and
  B) straight to the fake upstream's POST /v1/chatkit/sessions,
plus C) GET /healthz through the same Daphne (Daphne + Django + one query: the floor any view pays),
sequentially and with N concurrent clients, and prints p50/p99 for both and the added milliseconds.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ORIGIN = "http://localhost:3000"
TENANT_KEY = "sk-bench-tenant-key"
WORKFLOW = "wf_benchworkflow"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def seed() -> tuple[str, str]:
    import django

    django.setup()
    from django.core.management import call_command

    from licenses.models import Agency, Membership
    from licenses.services import license_create
    from licenses.tests.factories import UserFactory
    from widgets.services import widget_create, widget_publish

    call_command("migrate", verbosity=0, interactive=False)
    user = UserFactory(username="bench-owner")
    agency = Agency.objects.create(name="Bench", slug="bench")
    membership = Membership.objects.create(user=user, agency=agency, role=Membership.Role.OWNER)
    license = license_create(agency=agency, client_name="Bench", allowed_domains=["localhost"],
                             limits={"monthly_conversations": 10**9})
    widget = widget_create(
        license=license, user=user, membership=membership, name="Bench ChatKit",
        config={"connection": {"provider": "chatkit", "chatkit": {"mode": "hosted", "workflow_id": WORKFLOW}}},
        secrets={"openai_api_key": TENANT_KEY},
    )
    widget_publish(widget=widget, user=user, membership=membership)
    return license.key, widget.public_id


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def run(send, n: int, concurrency: int) -> tuple[list[float], float]:
    """Latencies (ms) of n calls of send(i) spread over `concurrency` threads, and the wall time."""

    def worker(indexes: range) -> list[float]:
        out = []
        with httpx.Client(timeout=30) as client:
            for i in indexes:
                start = time.perf_counter()
                send(client, i)
                out.append((time.perf_counter() - start) * 1000)
        return out

    chunks = [range(k, n, concurrency) for k in range(concurrency)]
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(worker, chunks))
    return [ms for chunk in results for ms in chunk], time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--upstream-delay", type=float, default=0.0,
                        help="seconds the fake upstream waits before answering (OpenAI takes ~0.2-0.5 s)")
    parser.add_argument("--database-url", default="",
                        help="an EMPTY scratch database to use instead of a temporary SQLite file")
    args = parser.parse_args()

    from chatkit.tests.fake_openai import FakeOpenAI

    fake = FakeOpenAI(delay=args.upstream_delay).start()
    tmp = tempfile.mkdtemp(prefix="sb-bench-chatkit-")
    env = {
        **os.environ,
        "DEBUG": "1",
        # The settings' own SQLite default has timeout=20; a URL needs it spelled out. IMMEDIATE makes
        # the quota reservation take SQLite's write lock up front instead of failing on upgrade.
        "DATABASE_URL": args.database_url or f"sqlite:///{tmp}/bench.sqlite3?timeout=20&transaction_mode=IMMEDIATE",
        "OPENAI_BASE_URL": fake.base_url,
        "OPENAI_API_KEY": "",
        "LOG_LEVEL": "WARNING",
        "DJANGO_SETTINGS_MODULE": "config.settings",
    }
    env.pop("REDIS_URL", None)
    # Under Daphne every request runs in its own thread, so persistent connections (the settings'
    # DB_CONN_MAX_AGE=60) pile up one per thread until PostgreSQL refuses clients; see README-chatkit.md.
    env.setdefault("DB_CONN_MAX_AGE", "0")
    os.environ.update(env)
    license_key, widget_id = seed()

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise SystemExit("Daphne did not come up")

        def via_endpoint(client: httpx.Client, i: int) -> None:
            r = client.post(f"{base}/api/chatkit/sessions", headers={"Origin": ORIGIN},
                            json={"license": license_key, "widget": widget_id, "visitor_id": f"visitor-{i}"})
            assert r.status_code == 200, r.text

        upstream_body = {
            "workflow": {"id": WORKFLOW}, "user": "sb_" + "0" * 64,
            "chatkit_configuration": {"file_upload": {"enabled": False}, "history": {"enabled": True}},
            "expires_after": {"anchor": "created_at", "seconds": 600},
            "rate_limits": {"max_requests_per_1_minute": 30},
        }

        def direct(client: httpx.Client, i: int) -> None:
            r = client.post(f"{fake.base_url}/chatkit/sessions", json=upstream_body,
                            headers={"Authorization": f"Bearer {TENANT_KEY}", "OpenAI-Beta": "chatkit_beta=v1"})
            assert r.status_code == 200, r.text

        def floor(client: httpx.Client, i: int) -> None:
            assert client.get(f"{base}/healthz").status_code == 200

        run(via_endpoint, args.warmup, 1)
        run(direct, args.warmup, 1)
        database = args.database_url.split(":")[0] if args.database_url else "SQLite"
        print(f"ChatKit session endpoint vs fake upstream: {args.requests} requests each, Daphne on {base}, "
              f"{database}, DEBUG=1, upstream delay {args.upstream_delay * 1000:.0f} ms, "
              f"python {sys.version.split()[0]}")
        print(f"{'':46}{'p50 ms':>9}{'p99 ms':>9}{'mean ms':>9}{'req/s':>9}")
        for label, concurrency in (("sequential", 1), (f"concurrent x{args.concurrency}", args.concurrency)):
            rows = {}
            for name, send in (("POST /api/chatkit/sessions", via_endpoint), ("upstream direct", direct),
                               ("GET /healthz (Daphne floor)", floor)):
                latencies, wall = run(send, args.requests, concurrency)
                rows[name] = latencies
                print(f"  {label:<16}{name:<28}"
                      f"{percentile(latencies, 50):9.2f}{percentile(latencies, 99):9.2f}"
                      f"{statistics.fmean(latencies):9.2f}{len(latencies) / wall:9.0f}")
            ours, up = rows["POST /api/chatkit/sessions"], rows["upstream direct"]
            print(f"  {label:<16}{'added by the endpoint':<28}"
                  f"{percentile(ours, 50) - percentile(up, 50):9.2f}{percentile(ours, 99) - percentile(up, 99):9.2f}"
                  f"{statistics.fmean(ours) - statistics.fmean(up):9.2f}")
        print(f"upstream requests recorded: {len(fake.requests)}")
    finally:
        server.terminate()
        server.wait(timeout=10)
        fake.stop()


if __name__ == "__main__":
    main()
