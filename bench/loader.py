"""Benchmark: the embed loader against a static file served by WhiteNoise, same Daphne process, loopback.

    /work/main/.venv/bin/python bench/loader.py [--requests 3000] [--concurrency 32]

Starts Daphne (subprocess, free port, DEBUG=1) on a temporary SQLite database, migrated and seeded with
`seed_demo` (or on $DATABASE_URL when set), then measures in one run, with a concurrent async httpx client:
  static   GET /static/widget/widget.js             (WhiteNoise, the baseline)
  loader   GET /api/widget/<key>/chat-widget.js     (200, rendered script from the cache)
  loader304 the same with If-None-Match              (304)
and prints requests/s, p50 and p99 per scenario and the loader/static ratio (goal >= 0.8x).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from httpload import PYTHON, ROOT, free_port, start_server, stop_server, timed_batch  # noqa: E402


def prepare(env: dict[str, str]) -> str:
    """Migrate and seed; return the demo license key."""
    subprocess.run([PYTHON, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
    out = subprocess.run(
        [PYTHON, "manage.py", "seed_demo", "--force"], cwd=ROOT, env=env, check=True, capture_output=True, text=True
    ).stdout
    match = re.search(r"license key\s*:\s*(\S+)", out)
    if not match:
        raise SystemExit(f"seed_demo printed no license key:\n{out}")
    return match.group(1)


def start_daphne(env: dict[str, str], port: int):
    return start_server(
        [PYTHON, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"], env, port, "daphne"
    )


async def run(base: str, key: str, total: int, concurrency: int, rounds: int) -> dict[str, dict[str, float]]:
    loader = f"/api/widget/{key}/chat-widget.js"
    first = httpx.get(base + loader)
    if first.status_code != 200:
        raise SystemExit(f"loader answered {first.status_code}: {first.text[:200]}")
    static = "/static/widget/widget.js"
    if httpx.get(base + static).status_code != 200:
        raise SystemExit("static file not served")
    scenarios = {
        "static (WhiteNoise)": (static, {}, 200),
        "loader 200": (loader, {}, 200),
        "loader 304": (loader, {"If-None-Match": first.headers["ETag"]}, 304),
    }
    acc = {name: {"lat": [], "time": 0.0, "errors": 0, "n": 0} for name in scenarios}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
        for path, headers, _ in scenarios.values():  # warm-up: connections, caches, bytecode
            await asyncio.gather(*(client.get(path, headers=headers) for _ in range(100)))
        # Interleave the scenarios over several rounds (rotating order) so a noisy neighbour on the
        # machine affects them alike; the ratio is what this benchmark is about.
        names = list(scenarios)
        per_round = max(1, total // rounds)
        for index in range(rounds):
            order = names[index % len(names) :] + names[: index % len(names)]
            for name in order:
                path, headers, expect = scenarios[name]
                lat, elapsed, errors = await timed_batch(
                    client,
                    lambda c, _i, path=path, headers=headers: c.get(path, headers=headers),
                    per_round,
                    concurrency,
                    lambda r, expect=expect: r.status_code == expect,
                )
                acc[name]["lat"] += lat
                acc[name]["time"] += elapsed
                acc[name]["errors"] += errors
                acc[name]["n"] += per_round
    results = {}
    for name, a in acc.items():
        lat = sorted(a["lat"])
        results[name] = {
            "rps": a["n"] / a["time"],
            "p50": statistics.median(lat) * 1000,
            "p99": lat[max(0, int(len(lat) * 0.99) - 1)] * 1000,
            "errors": a["errors"],
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000, help="requests per scenario (default 3000)")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent client connections (default 32)")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds per scenario (default 10)")
    parser.add_argument(
        "--production",
        action="store_true",
        help="DEBUG=0 with collected, compressed static files (WhiteNoise's production path)",
    )
    args = parser.parse_args()

    tmp = tempfile.TemporaryDirectory(prefix="sb-bench-")
    env = {**os.environ, "DEBUG": "1", "LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"}
    if args.production:
        from cryptography.fernet import Fernet

        env.update(
            {
                "DEBUG": "0",
                "SECRET_KEY": "bench-" + "x" * 60,
                "ALLOWED_HOSTS": "127.0.0.1",
                "FIELD_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
                "SECURE_SSL_REDIRECT": "0",
                "SECURE_HSTS_SECONDS": "0",
            }
        )
        subprocess.run([PYTHON, "manage.py", "collectstatic", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
    env.pop("REDIS_URL", None) if "BENCH_KEEP_REDIS" not in os.environ else None
    if not env.get("DATABASE_URL"):
        env["DATABASE_URL"] = f"sqlite:///{tmp.name}/bench.sqlite3"
    db_label = env["DATABASE_URL"].split("://", 1)[0]
    key = prepare(env)
    port = free_port()
    proc = start_daphne(env, port)
    try:
        results = asyncio.run(run(f"http://127.0.0.1:{port}", key, args.requests, args.concurrency, args.rounds))
    finally:
        stop_server(proc)
        tmp.cleanup()

    print(
        f"\nSwitchboard loader benchmark — Daphne, 1 process, DEBUG={env['DEBUG']}, db={db_label}, loopback, "
        f"{args.requests} requests/scenario in {args.rounds} interleaved rounds, concurrency {args.concurrency}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, python {sys.version.split()[0]}"
    )
    print(f"{'scenario':<22}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}")
    for name, r in results.items():
        print(f"{name:<22}{r['rps']:>10.0f}{r['p50']:>10.2f}{r['p99']:>10.2f}{int(r['errors']):>8}")
    static = results["static (WhiteNoise)"]["rps"]
    print(
        f"ratio loader 200 / static: {results['loader 200']['rps'] / static:.2f}x   "
        f"loader 304 / static: {results['loader 304']['rps'] / static:.2f}x   (goal >= 0.80x)"
    )
    if any(r["errors"] for r in results.values()):
        raise SystemExit("some requests failed")


if __name__ == "__main__":
    main()
