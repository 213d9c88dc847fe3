"""CPU per chat turn: the n8n chat proxy's own work (`POST /api/widget/<key>/chat`), measured in-process, with a
baseline tree in the same run.

`bench/chat_proxy.py` measures throughput and p99 with a real server, the fake n8n and the visitors' client on
the same 2 CPUs, and its "server CPU per turn" moves by a quarter or more from run to run with what else runs
(the same code gave 1.12 and 1.83 ms per streamed turn ten minutes apart) — too coarse to tell whether a change
of 5-10% on the hot path helped. This bench calls the production ASGI application (`config.asgi.application`,
DEBUG=0, PostgreSQL with its pool, Redis) directly from an event loop in one process (uvloop, as Uvicorn runs it:
no HTTP server, no load generator in the process), with `--concurrency` visitors in flight against the fake n8n
of bench/chat_proxy.py in its own process (answering at once), and divides the process's CPU time
(`time.process_time()`: the loop and any DB-step thread) by the turns. Four phases, each `--turns` turns:

- plain / streaming, continuing: every turn continues a session opened in the warm-up (the common turn);
- plain / streaming, first turn: every turn opens a new session (the quota check, the conversation insert and
  the usage count).

`--baseline-tree DIR` (another checkout of this repo with the same migrations, e.g. `git archive <commit>`
unpacked, with a `.venv` link) is measured the same way, alternating processes (baseline, this, baseline,
this, ...: `--rounds` each), each on its own database; the table gives the median of the rounds and this /
baseline. What is not in the figure: Uvicorn's own HTTP work (parse, socket writes), the same for every
version, and the fake n8n's.

    python bench/chat_cpu.py --database-url postgres://postgres@127.0.0.1:5432/bench_cpu \\
        --redis-url redis://127.0.0.1:6379/12 [--baseline-tree /tmp/chat-prev] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ORIGIN = "https://bench.example.com"
PHASES = ("plain continuing", "plain first turn", "stream continuing", "stream first turn")


# --- the driver: runs in the tree under test (its own process) -------------------------------------------


def drive(args: argparse.Namespace) -> None:
    """In the tree under test (cwd): import its production ASGI app and send it the phases' turns."""
    sys.path.insert(0, os.getcwd())
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import uvloop

    from config.asgi import application  # noqa: PLC0415 - the tree's own app, after its path is set

    keys = json.loads(args.keys)
    result = uvloop.run(_drive(application, keys, args))
    print("RESULT" + json.dumps(result), flush=True)


async def _request(app, path: str, body: bytes, visitor: str) -> bytes:
    path, _, query = path.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"origin", ORIGIN.encode()),
            (b"x-switchboard-visitor", visitor.encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    sent = False
    done = asyncio.get_running_loop().create_future()
    out: list[bytes] = []
    status = [0]

    async def receive() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await done  # the visitor stays until the answer is complete
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            status[0] = message["status"]
        else:
            out.append(message.get("body", b""))
            if not message.get("more_body") and not done.done():
                done.set_result(None)

    await app(scope, receive, send)
    if not done.done():
        done.set_result(None)
    if status[0] != 200:
        raise RuntimeError(f"turn answered {status[0]}: {b''.join(out)[:300]!r}")
    return b"".join(out)


async def _drive(app, keys: list[dict], args: argparse.Namespace) -> dict:
    urls = {
        mode: [f"/api/widget/{k['key']}/chat?widget={k[mode]}" for k in keys[: args.licenses]]
        for mode in ("plain", "stream")
    }
    tag = f"cpu-{time.time_ns()}"

    async def turns(mode: str, sessions, count: int) -> None:
        async def visitor(v: int) -> None:
            for t in range(v, count, args.concurrency):
                session = sessions(v, t)
                body = json.dumps({"action": "sendMessage", "sessionId": session, "chatInput": f"message {t}"})
                answer = await _request(app, urls[mode][v % len(urls[mode])], body.encode(), f"{tag}-v{v}")
                if mode == "stream" and b'"end"' not in answer.splitlines()[-1]:
                    raise RuntimeError(f"a streamed turn did not end: {answer[-300:]!r}")

        await asyncio.gather(*(visitor(v) for v in range(args.concurrency)))

    def continuing(mode: str):
        return lambda v, t: f"{tag}-{mode}-s{v}"

    def opening(mode: str, phase_round: int):
        return lambda v, t: f"{tag}-{mode}-r{phase_round}-t{t}"

    # Warm-up: every session the continuing phases use is opened here; pools, caches, prepared statements.
    for mode in ("plain", "stream"):
        await turns(mode, continuing(mode), args.concurrency * 4)
        await turns(mode, opening(mode, -1), args.concurrency * 4)
    phases = args.phases.split(",")
    figures: dict[str, list[float]] = {phase: [] for phase in phases}
    for phase_round in range(args.inner_rounds):
        for phase in phases:
            mode = phase.split()[0]
            sessions = continuing(mode) if "continuing" in phase else opening(mode, phase_round)
            cpu = time.process_time()
            await turns(mode, sessions, args.turns)
            figures[phase].append((time.process_time() - cpu) * 1e6 / args.turns)
    return {phase: statistics.median(values) for phase, values in figures.items()}


# --- the parent: databases, the fake n8n, alternating rounds --------------------------------------------


def setup_tree(tree: Path, env: dict[str, str], fake_url: str) -> list[dict]:
    from bench.chat_proxy import LICENSES, SETUP

    python = str(tree / ".venv" / "bin" / "python")
    subprocess.run([python, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=tree, env=env, check=True)
    out = subprocess.run(
        [python, "manage.py", "shell", "-c", SETUP.format(n=LICENSES, fake=fake_url)],
        cwd=tree,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out.split("BENCH", 1)[1])


def database_for(base_url: str, name: str, recreate: bool) -> str:
    import psycopg

    server, _, _ = base_url.rpartition("/")
    if recreate:
        with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
    return f"{server}/{name}"


def redis_db(url: str, offset: int) -> str:
    """`url` with its database number moved by `offset` (each tree its own Redis db: rate counts, caches)."""
    server, _, db = url.rpartition("/")
    return f"{server}/{int(db or 0) + offset}"


def measure(tree: Path, env: dict[str, str], keys: list[dict], args: argparse.Namespace) -> dict[str, float]:
    python = str(tree / ".venv" / "bin" / "python")
    command = [
        python,
        str(Path(__file__).resolve()),
        "--drive",
        "--keys",
        json.dumps(keys),
        "--turns",
        str(args.turns),
        "--concurrency",
        str(args.concurrency),
        "--licenses",
        str(args.licenses),
        "--inner-rounds",
        str(args.inner_rounds),
        "--phases",
        args.phases,
    ]
    run = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True, timeout=600)
    if run.returncode != 0 or "RESULT" not in run.stdout:
        raise RuntimeError(f"driver in {tree} failed:\n{run.stdout[-2000:]}\n{run.stderr[-4000:]}")
    return json.loads(run.stdout.split("RESULT", 1)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", ""))
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12"))
    parser.add_argument("--baseline-tree", type=Path, help="another checkout to measure in the same run")
    parser.add_argument("--rounds", type=int, default=3, help="driver processes per tree (alternating)")
    parser.add_argument("--inner-rounds", type=int, default=3, help="rounds of the four phases per process")
    parser.add_argument("--turns", type=int, default=1000, help="turns per phase")
    parser.add_argument("--phases", default=",".join(PHASES), help="comma-separated: which of the four to run")
    parser.add_argument("--concurrency", type=int, default=50, help="visitors in flight")
    parser.add_argument("--licenses", type=int, default=4)
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--drive", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--keys", help=argparse.SUPPRESS)
    args = parser.parse_args()
    phases = args.phases.split(",")
    if not set(phases) <= set(PHASES):
        parser.error(f"--phases: each of {', '.join(PHASES)}")
    if args.drive:
        drive(args)
        return
    if not args.database_url.startswith("postgres"):
        sys.exit("--database-url postgres://... is required (the production setup runs on PostgreSQL)")

    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("DEBUG", "1")
    import django

    django.setup()
    from bench.chat_proxy import fake_wait
    from widgets.tests.prod_server import free_port, prod_env

    fake_port = free_port()
    fake_url = f"http://127.0.0.1:{fake_port}"
    fake = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "chat_proxy.py"), "--fake-n8n", str(fake_port), "--delay-ms", "0"],
        cwd=ROOT,
    )
    trees = {"this": ROOT}
    if args.baseline_tree:
        trees = {"baseline": args.baseline_tree.resolve(), **trees}
    figures: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    try:
        fake_wait(fake_url)
        base = args.database_url
        setups = {}
        for i, (name, tree) in enumerate(trees.items()):
            env = prod_env(
                database_url=database_for(base, f"{base.rpartition('/')[2]}_{name}", recreate=True),
                redis_url=redis_db(args.redis_url, i),
                secret_key="bench-" + "s" * 40,
                encryption_keys=["ZmDfcTF7_60GrrY167zsiPd67pEvs0aGOv2oasOM1Pg="],
                WIDGET_CHAT_RATE_PER_MINUTE="10000000",
            )
            setups[name] = (tree, env, setup_tree(tree, env, fake_url))
        print(f"load average at start {os.getloadavg()[0]:.2f}", flush=True)
        for r in range(args.rounds):
            for name, (tree, env, keys) in setups.items():
                figures[name].append(measure(tree, env, keys, args))
                print(f"round {r + 1} {name}: " + ", ".join(f"{p} {figures[name][-1][p]:.0f} µs" for p in phases))
    finally:
        fake.kill()
        fake.wait(10)
    print(f"load average at end {os.getloadavg()[0]:.2f}")
    print(
        f"\nCPU per turn (µs, median of {args.rounds} processes x {args.inner_rounds} rounds of {args.turns} turns, "
        f"{args.concurrency} in flight):"
    )
    table = {}
    for phase in phases:
        row = {name: statistics.median(f[phase] for f in rounds) for name, rounds in figures.items()}
        table[phase] = row
        line = f"  {phase:<18} this {row['this']:7.0f}"
        if "baseline" in row:
            line += f" | baseline {row['baseline']:7.0f} | this / baseline {row['this'] / row['baseline']:.3f}"
        print(line)
    if args.json:
        args.json.write_text(json.dumps({"median_us": table, "rounds": figures, "params": vars(args)}, default=str))


if __name__ == "__main__":
    main()
