"""Benchmark: the server's whole share of a WebRTC or LiveKit call — its HTTP endpoints — under Uvicorn, loopback.

    /work/main/.venv/bin/python bench/voice_endpoints.py [--concurrency 50] [--requests 300] [--rounds 3]

  client-secret  POST /api/realtime/client-secret         (checks, a slot, OpenAI's client_secrets, a conversation)
  livekit/token  POST /api/livekit/token                  (checks, a slot, a LiveKit participant token, minted here)
  tool call      POST /api/widget/<key>/tools/search_products  (a WebRTC call's token, a catalogue search)

Starts a fake OpenAI HTTP API on 127.0.0.1 (a subprocess answering `POST /v1/realtime/client_secrets` as
OpenAI does; nothing leaves the machine), and one Uvicorn process (DEBUG=0, as the relay bench) on a
temporary SQLite database (or $DATABASE_URL) seeded with `seed_demo`; the demo widget gets voice with
`transport: livekit` (client-secret does not look at the transport) and its license a call cap above the
run's request count (each client secret and token holds a slot). LIVEKIT_* name a placeholder server: no
LiveKit is contacted. The tool calls use the call tokens the warm-up's client secrets returned, each for at
most a few calls (the per-call cap is WIDGET_CHAT_RATE_PER_MINUTE). The three endpoints run in interleaved
rounds (rotating order) so a noisy neighbour hits them alike. Prints requests/s, p50, p99 and the server's
CPU per request, and writes bench/results-voice-endpoints.json. HTTP load loop: bench/httpload.py.

Note: a slot is found by trying the license's slot keys in order (realtime.services.voice_slot_acquire), so
the n-th concurrent call of a license costs n cache `add`s; the run holds up to `2 × (requests + concurrency)`
slots. Real caps are small (5 by default).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from httpload import PYTHON, ROOT, cpu_seconds, free_port, pct, start_server, stop_server, timed_batch  # noqa: E402

ORIGIN = "http://localhost:8000"

SETUP = """
from widgets.config_schema import config_normalize
from widgets.models import Widget
from widgets.services.widgets import widget_publish
from licenses.models import Membership
widget = Widget.objects.select_related("license").order_by("created_at", "id").first()
widget.config = config_normalize({"voice": {"enabled": True, "transport": "livekit"}}, base=widget.config)
widget.secrets = {**(widget.secrets or {}), "openai_api_key": "sk-bench"}
widget.save()
membership = Membership.objects.filter(agency=widget.license.agency, role="owner").first()
widget_publish(widget=widget, user=membership.user, membership=membership)
license = widget.license
license.limits = {**license.limits, "max_concurrent_voice_sessions": %d, "monthly_voice_minutes": 10**6}
license.save()
print("WIDGET", widget.public_id, license.key)
"""


# --- the fake OpenAI HTTP API (own process: `uvicorn voice_endpoints:fake_openai`) ------------------------


async def fake_openai(scope, receive, send) -> None:
    """`POST /v1/realtime/client_secrets` → OpenAI's answer shape (value, expires_at, session)."""
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["method"] == "POST" and scope["path"] == "/v1/realtime/client_secrets":
        session = json.loads(body).get("session", {})
        status, answer = (
            200,
            {"value": "ek_" + uuid.uuid4().hex, "expires_at": int(time.time()) + 60, "session": session},
        )
    else:
        status, answer = 404, {"error": {"message": "not found"}}
    data = json.dumps(answer).encode()
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": data})


def prepare(env: dict[str, str], slots: int) -> tuple[str, str]:
    subprocess.run([PYTHON, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
    subprocess.run([PYTHON, "manage.py", "seed_demo", "--force"], cwd=ROOT, env=env, check=True, capture_output=True)
    done = subprocess.run(
        [PYTHON, "manage.py", "shell", "-c", SETUP % slots], cwd=ROOT, env=env, capture_output=True, text=True
    )
    match = re.search(r"WIDGET (\S+) (\S+)", done.stdout)
    if done.returncode or not match:
        raise SystemExit(f"setup failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return match.group(1), match.group(2)


async def run(base: str, key: str, widget: str, total: int, concurrency: int, rounds: int, pid: int) -> dict:
    call = json.dumps({"license": key, "widget": widget, "visitor_id": "bench"})
    headers = {"Origin": ORIGIN, "Content-Type": "text/plain"}  # text/plain: no CORS preflight, as the widget
    tokens: list[str] = []

    def secret_ok(response: httpx.Response) -> bool:
        if response.status_code != 200:
            return False
        tokens.append(response.json()["tools_token"])
        return True

    def tool(client: httpx.AsyncClient, i: int):
        body = {"token": tokens[i % len(tokens)], "arguments": {"query": "phone"}}
        return client.post(f"/api/widget/{key}/tools/search_products", json=body, headers={"Origin": ORIGIN})

    scenarios = {
        "client-secret": (
            lambda client, _i: client.post("/api/realtime/client-secret", content=call, headers=headers),
            secret_ok,
        ),
        "livekit/token": (
            lambda client, _i: client.post("/api/livekit/token", content=call, headers=headers),
            lambda r: r.status_code == 200 and "participant_token" in r.text,
        ),
        "tool call": (tool, lambda r: r.status_code == 200 and '"output"' in r.text),
    }
    acc = {name: {"lat": [], "time": 0.0, "cpu": 0.0, "errors": 0, "n": 0} for name in scenarios}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=120) as client:
        for name, (request, ok) in scenarios.items():  # warm-up: connections, caches, bytecode; call tokens
            _, _, errors = await timed_batch(client, request, concurrency, concurrency, ok)
            if errors:
                raise SystemExit(f"{name}: {errors} of the warm-up's {concurrency} requests failed")
        per_round = max(1, total // rounds)
        names = list(scenarios)
        for index in range(rounds):
            for name in names[index % len(names) :] + names[: index % len(names)]:
                request, ok = scenarios[name]
                cpu0 = cpu_seconds(pid)
                lat, elapsed, errors = await timed_batch(client, request, per_round, concurrency, ok)
                acc[name]["cpu"] += cpu_seconds(pid) - cpu0
                acc[name]["lat"] += lat
                acc[name]["time"] += elapsed
                acc[name]["errors"] += errors
                acc[name]["n"] += per_round
    results = {}
    for name, a in acc.items():
        lat = sorted(a["lat"])
        results[name] = {
            "requests": a["n"],
            "rps": a["n"] / a["time"],
            "p50_ms": pct(lat, 0.50) * 1000,
            "p99_ms": pct(lat, 0.99) * 1000,
            "cpu_ms_per_request": 1000 * a["cpu"] / a["n"],
            "errors": a["errors"],
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300, help="timed requests per endpoint (default 300)")
    parser.add_argument("--concurrency", type=int, default=50, help="concurrent clients (default 50)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    args = parser.parse_args()

    from cryptography.fernet import Fernet

    tmp = tempfile.TemporaryDirectory(prefix="sb-bench-")
    fake_port, port = free_port(), free_port()
    env = {
        **os.environ,
        "DEBUG": "0",
        "SECRET_KEY": "bench-" + "x" * 40,
        "FIELD_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "0",
        "SECURE_HSTS_SECONDS": "0",
        "LOG_LEVEL": "WARNING",
        "OPENAI_BASE_URL": f"http://127.0.0.1:{fake_port}/v1",
        "OPENAI_API_KEY": "sk-bench",
        "LIVEKIT_URL": "wss://livekit.bench.invalid",
        "LIVEKIT_API_KEY": "APIbench",
        "LIVEKIT_API_SECRET": "bench-secret-" + "x" * 32,
    }
    if "BENCH_KEEP_REDIS" not in os.environ:
        env.pop("REDIS_URL", None)
    if not env.get("DATABASE_URL"):
        env["DATABASE_URL"] = f"sqlite:///{tmp.name}/bench.sqlite3"
    widget, key = prepare(env, 2 * (args.requests + args.concurrency) + 10)
    uvicorn = [PYTHON, "-m", "uvicorn", "--host", "127.0.0.1", "--log-level", "warning", "--lifespan", "off"]
    uvicorn += ["--timeout-keep-alive", "120"]  # the client's idle connections between rounds stay open
    fake = subprocess.Popen(
        [*uvicorn, "--port", str(fake_port), "--app-dir", str(ROOT / "bench"), "voice_endpoints:fake_openai"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    proc = None
    load_before = os.getloadavg()[0]
    try:
        proc = start_server([*uvicorn, "--port", str(port), "config.asgi:application"], env, port, "uvicorn")
        results = asyncio.run(
            run(f"http://127.0.0.1:{port}", key, widget, args.requests, args.concurrency, args.rounds, proc.pid)
        )
    finally:
        for running in (proc, fake):
            if running is not None:
                stop_server(running)
        tmp.cleanup()
    load_after = os.getloadavg()[0]
    print(
        f"\nVoice endpoints — Uvicorn, 1 process, DEBUG=0, db={env['DATABASE_URL'].split('://')[0]}, "
        f"cache={'redis' if env.get('REDIS_URL') else 'locmem'}, loopback, fake OpenAI on 127.0.0.1, "
        f"{args.requests} requests per endpoint in {args.rounds} interleaved rounds, concurrency {args.concurrency}, "
        f"{os.cpu_count()} CPUs, load average {load_before:.1f} → {load_after:.1f}"
    )
    print(f"{'endpoint':<16}{'req/s':>8}{'p50 ms':>10}{'p99 ms':>10}{'CPU ms/req':>12}{'errors':>8}")
    for name, r in results.items():
        print(
            f"{name:<16}{r['rps']:>8.0f}{r['p50_ms']:>10.1f}{r['p99_ms']:>10.1f}"
            f"{r['cpu_ms_per_request']:>12.2f}{r['errors']:>8}"
        )
    (ROOT / "bench" / "results-voice-endpoints.json").write_text(
        json.dumps(
            {
                "concurrency": args.concurrency,
                "requests": args.requests,
                "rounds": args.rounds,
                "cpus": os.cpu_count(),
                "loadavg_before": load_before,
                "loadavg_after": load_after,
                "db": env["DATABASE_URL"].split("://")[0],
                "endpoints": results,
            },
            indent=2,
        )
    )
    if any(r["errors"] for r in results.values()):
        raise SystemExit("some requests failed")


if __name__ == "__main__":
    main()
