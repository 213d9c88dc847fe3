"""Benchmark: what our ChatKit server adds to a streamed answer, against the fake Responses API called directly.

    DEBUG=1 .venv/bin/python bench/chatkit_server.py [--conversations 100] [--concurrency 50] [--chunks 20]

One run. Starts the fake OpenAI server (chatkit/tests/fake_openai.py) on 127.0.0.1, migrates and seeds a
temporary SQLite database (or --database-url, an EMPTY scratch database), serves the project with Daphne
on a free port (a subprocess, DEBUG=1, as `make run` does), then streams the same answers
  A) through POST /api/chatkit/<key>/ `threads.create` (page token + visitor + license checks, rate limits,
     monthly count, thread + items + transcript rows, the Agents SDK run against the fake, SSE out), and
  B) straight from the fake's POST /v1/responses (the same request body the SDK sends),
first one conversation at a time, then --concurrency at once. For each it measures
  - first byte: until the first body byte (ours: `thread.created`, sent before OpenAI is called),
  - first token: until the first text delta (ours: ChatKit's text_delta event; direct: output_text.delta),
  - per event: (last delta - first delta) / (deltas - 1), the cost of relaying one streamed event,
and prints p50/p99 of both paths, the milliseconds ours adds and the ratio. The goal (issue 8): at most
15 ms added to the first token p50 at 50 concurrent conversations.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

EMBEDDING_ORIGIN = "http://localhost:3000"
TENANT_KEY = "sk-bench-tenant-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def seed(conversations: int) -> tuple[str, str, list[str]]:
    """Migrate, create a license with a server-mode ChatKit widget; a page token and visitor tokens."""
    import django

    django.setup()
    from django.core.management import call_command

    from chatkit.services import page_token_issue, visitor_token_issue
    from licenses.models import Agency, Membership
    from licenses.services import license_create
    from licenses.tests.factories import UserFactory
    from widgets.services import widget_create, widget_publish

    call_command("migrate", verbosity=0, interactive=False)
    user = UserFactory(username="bench-owner")
    agency = Agency.objects.create(name="Bench", slug="bench")
    membership = Membership.objects.create(user=user, agency=agency, role=Membership.Role.OWNER)
    license = license_create(
        agency=agency, client_name="Bench", allowed_domains=["localhost"], limits={"monthly_conversations": 10**9}
    )
    widget = widget_create(
        license=license,
        user=user,
        membership=membership,
        name="Bench ChatKit",
        config={"connection": {"provider": "chatkit", "chatkit": {"mode": "server", "instructions": "Be brief."}}},
        secrets={"openai_api_key": TENANT_KEY},
    )
    widget_publish(widget=widget, user=user, membership=membership)
    token = page_token_issue(license=license, widget=widget, origin=EMBEDDING_ORIGIN)
    return license.key, token, [visitor_token_issue(license=license) for _ in range(conversations * 2 + 100)]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def stream(
    client: httpx.Client, method: str, url: str, *, delta_marker: bytes, **kwargs
) -> tuple[float, float, list[float]]:
    """(ms to the first body byte, ms to the first text delta, ms of every text delta) of one streamed answer."""
    start = time.perf_counter()
    first_byte = first_token = 0.0
    deltas: list[float] = []
    buffer = b""
    with client.stream(method, url, **kwargs) as response:
        assert response.status_code == 200, response.read()[:300]
        for chunk in response.iter_raw():
            now = (time.perf_counter() - start) * 1000
            first_byte = first_byte or now
            buffer += chunk
            while b"\n\n" in buffer:
                frame, buffer = buffer.split(b"\n\n", 1)
                if delta_marker in frame:
                    deltas.append(now)
                    first_token = first_token or now
    assert deltas, "no text delta arrived"
    return first_byte, first_token, deltas


def run(send, n: int, concurrency: int) -> list[tuple[float, float, list[float]]]:
    def worker(indexes: range) -> list[tuple[float, float, list[float]]]:
        with httpx.Client(timeout=60) as client:
            return [send(client, i) for i in indexes]

    with ThreadPoolExecutor(concurrency) as pool:
        chunks = pool.map(worker, [range(k, n, concurrency) for k in range(concurrency)])
    return [r for chunk in chunks for r in chunk]


def summary(results: list[tuple[float, float, list[float]]]) -> dict[str, list[float]]:
    per_event = [(d[-1] - d[0]) / (len(d) - 1) for _, _, d in results if len(d) > 1]
    return {"first_byte": [r[0] for r in results], "first_token": [r[1] for r in results], "per_event": per_event}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=100, help="conversations per path and concurrency")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--chunks", type=int, default=20, help="text deltas per answer")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between the fake's deltas")
    parser.add_argument("--upstream-delay", type=float, default=0.0, help="seconds before the fake answers")
    parser.add_argument("--database-url", default="", help="an EMPTY scratch database instead of temporary SQLite")
    parser.add_argument("--json", default="", help="also write the figures to this JSON file")
    args = parser.parse_args()

    from chatkit.tests.fake_openai import FakeOpenAI

    fake = FakeOpenAI(delay=args.upstream_delay).start()
    fake.reply = " ".join(f"word{i}" for i in range(args.chunks * 2))
    fake.chunks, fake.chunk_delay = args.chunks, args.chunk_delay
    tmp = tempfile.mkdtemp(prefix="sb-bench-chatkit-server-")
    env = {
        **os.environ,
        "DEBUG": "1",
        "DATABASE_URL": args.database_url or f"sqlite:///{tmp}/bench.sqlite3?timeout=20&transaction_mode=IMMEDIATE",
        "OPENAI_BASE_URL": fake.base_url,
        "OPENAI_API_KEY": "",
        "LOG_LEVEL": "WARNING",
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "CHATKIT_VISITOR_RATE_PER_MINUTE": "100000",
        "CHATKIT_LICENSE_RATE_PER_MINUTE": "100000",
        "CHATKIT_READ_RATE_PER_MINUTE": "100000",
    }
    env.pop("REDIS_URL", None)
    env.setdefault("DB_CONN_MAX_AGE", "0")
    os.environ.update(env)
    license_key, page_token, visitors = seed(args.conversations)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    visitor_iter = iter(visitors)
    try:
        for _ in range(100):
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise SystemExit("Daphne did not come up")

        def ours(client: httpx.Client, i: int):
            body = {
                "type": "threads.create",
                "params": {
                    "input": {
                        "content": [{"type": "input_text", "text": f"Question {i}?"}],
                        "attachments": [],
                        "inference_options": {},
                    }
                },
            }
            headers = {
                "Origin": base,
                "X-Switchboard-Page-Token": page_token,
                "X-Switchboard-Visitor": next(visitor_iter),
            }
            return stream(
                client,
                "POST",
                f"{base}/api/chatkit/{license_key}/",
                json=body,
                headers=headers,
                delta_marker=b'"assistant_message.content_part.text_delta"',
            )

        # The body the Agents SDK sent for our first conversation: the direct path replays it.
        ours(httpx.Client(timeout=60), -1)
        sdk_body = next(r.body for r in fake.requests if r.path == "/v1/responses")

        def direct(client: httpx.Client, i: int):
            return stream(
                client,
                "POST",
                f"{fake.base_url}/responses",
                json=sdk_body,
                headers={"Authorization": f"Bearer {TENANT_KEY}"},
                delta_marker=b"event: response.output_text.delta",
            )

        run(ours, 10, 1)
        run(direct, 10, 1)
        database = args.database_url.split(":")[0] if args.database_url else "SQLite"
        print(
            f"ChatKit server vs fake Responses API: {args.conversations} conversations per row, Daphne on {base}, "
            f"{database}, DEBUG=1, {args.chunks} deltas/answer, chunk delay {args.chunk_delay * 1000:.0f} ms, "
            f"upstream delay {args.upstream_delay * 1000:.0f} ms, python {sys.version.split()[0]}, "
            f"{os.cpu_count()} CPUs"
        )
        print(f"{'':36}{'first byte p50/p99':>20}{'first token p50/p99':>22}{'per event p50 ms':>18}")
        figures: dict[str, dict] = {}
        for label, concurrency in (("1 at a time", 1), (f"{args.concurrency} concurrent", args.concurrency)):
            rows = {}
            for name, send in (("POST /api/chatkit/<key>/", ours), ("fake /v1/responses direct", direct)):
                rows[name] = summary(run(send, args.conversations, concurrency))
                s = rows[name]
                print(
                    f"  {label:<14}{name:<22}"
                    f"{percentile(s['first_byte'], 50):9.2f}/{percentile(s['first_byte'], 99):<9.2f}"
                    f"{percentile(s['first_token'], 50):11.2f}/{percentile(s['first_token'], 99):<9.2f}"
                    f"{percentile(s['per_event'], 50):14.3f}"
                )
            a, b = rows["POST /api/chatkit/<key>/"], rows["fake /v1/responses direct"]
            added = percentile(a["first_token"], 50) - percentile(b["first_token"], 50)
            added99 = percentile(a["first_token"], 99) - percentile(b["first_token"], 99)
            per_event = percentile(a["per_event"], 50) - percentile(b["per_event"], 50)
            ratio = percentile(a["first_token"], 50) / max(percentile(b["first_token"], 50), 1e-9)
            print(
                f"  {label:<14}{'added by our server':<22}{'':20}{added:11.2f}/{added99:<9.2f}{per_event:14.3f}"
                f"   ratio {ratio:.1f}x"
            )
            figures[label] = {
                "ours": {k: [percentile(v, 50), percentile(v, 99)] for k, v in a.items()},
                "direct": {k: [percentile(v, 50), percentile(v, 99)] for k, v in b.items()},
                "added_first_token_ms": [added, added99],
                "added_per_event_ms": per_event,
                "ratio_first_token_p50": ratio,
            }
        goal = figures[f"{args.concurrency} concurrent"]["added_first_token_ms"][0]
        print(
            f"goal: <= 15 ms added to the first token p50 at {args.concurrency} concurrent: "
            f"{'MET' if goal <= 15 else 'NOT MET'} ({goal:.1f} ms)"
        )
        if args.json:
            Path(args.json).write_text(json.dumps({"args": vars(args), "figures": figures}, indent=2))
    finally:
        server.terminate()
        server.wait(timeout=10)
        fake.stop()


if __name__ == "__main__":
    main()
