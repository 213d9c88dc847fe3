"""Relay benchmark: added latency and CPU of the voice relay, under Daphne and Uvicorn.

N concurrent sessions each send a 20 ms PCM16 frame (960 bytes, base64) every 20 ms through the relay
to a local fake upstream that echoes every append back as one audio delta; the same load is then sent
straight to the fake upstream. Per frame: round-trip latency; added = relay - direct (p50/p99). CPU per
session = server process CPU seconds (from /proc) / wall seconds / N (connects included); CPU per frame in
the window = server CPU over the measured window / frames relayed in it (the steady per-frame cost, which a
busy machine distorts least). Loopback only, bounded run time.

    python bench/relay.py                                  # daphne+uvicorn, 50/100/150/200, 10 s each
    python bench/relay.py --servers uvicorn --levels 50,100 --seconds 5
    python bench/relay.py --servers uvicorn --levels 100 --profile   # + where the server's CPU goes (py-spy)

Prints a table and writes bench/results-relay.json.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FRAME_SECONDS = 0.020
TAIL = base64.b64encode(b"\x00" * 954).decode()  # frame = 6 header bytes (seq, 0) + 954 zero bytes
AUDIO_DELTA = ('"type":"audio.delta"', '"type":"response.output_audio.delta"')
SETUP = """
from widgets.config_schema import config_normalize
from licenses.models import Agency, License
from widgets.models import Widget
agency = Agency.objects.create(name="Bench", slug="bench")
license = License.objects.create(agency=agency, client_name="Bench", allowed_domains=["127.0.0.1"],
    limits={"max_widgets": 5, "monthly_conversations": 10**6, "monthly_voice_minutes": 10**7,
            "max_concurrent_voice_sessions": 10**4})
widget = Widget.objects.create(license=license, name="Bench", widget_type="n8n",
    config=config_normalize({"voice": {"enabled": True, "max_session_seconds": 3600}}),
    secrets={"openai_api_key": "sk-bench"})
from widgets.models import WidgetVersion
version = WidgetVersion.objects.create(widget=widget, number=1, widget_type="n8n", config=widget.config)
Widget.objects.filter(pk=widget.pk).update(published_version=version)
print(license.key, widget.public_id)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def frame(seq: int) -> str:
    return base64.b64encode(struct.pack("<IH", seq, 0)).decode() + TAIL


def seq_of(delta: str) -> int:
    return struct.unpack("<I", base64.b64decode(delta[:8])[:4])[0]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


READY: list[float] = []


def own_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


# --- the fake upstream (own process) -------------------------------------------------------------


async def fake_upstream(port: int) -> None:
    import logging

    from websockets.asyncio.server import serve
    from websockets.exceptions import ConnectionClosed

    logging.getLogger("websockets").setLevel(logging.CRITICAL)

    async def handler(ws) -> None:
        try:
            async for raw in ws:
                if '"input_audio_buffer.append"' in raw:
                    audio = json.loads(raw)["audio"]
                    await ws.send('{"type":"response.output_audio.delta","delta":"' + audio + '"}')
        except ConnectionClosed:
            pass

    async with serve(handler, "127.0.0.1", port, compression=None, max_size=2**22):
        await asyncio.Future()


# --- load ----------------------------------------------------------------------------------------


async def one_session(
    url: str,
    headers: dict,
    start_at: float,
    measure_from: float,
    stop_at: float,
    latencies: list[float],
    errors: list[str],
    relay: bool,
    echoed: list[int],
) -> None:
    from websockets.asyncio.client import connect

    loop = asyncio.get_running_loop()
    await asyncio.sleep(max(0.0, start_at - loop.time()))
    sent: dict[int, float] = {}
    try:
        async with connect(
            url, additional_headers=headers, compression=None, max_size=2**22, open_timeout=30, ping_interval=None
        ) as ws:
            if relay:
                while '"session.ready"' not in await asyncio.wait_for(ws.recv(), 30):
                    pass
            READY.append(loop.time())

            async def reader() -> None:
                async for raw in ws:
                    now = loop.time()
                    if any(marker in raw for marker in AUDIO_DELTA):
                        echoed[0] += 1
                        if measure_from <= now < stop_at:
                            echoed[1] += 1
                        i = raw.index('"', raw.index('"delta":') + 8) + 1
                        t0 = sent.pop(seq_of(raw[i : i + 8]), None)
                        if t0 is not None and t0 >= measure_from:
                            latencies.append((now - t0) * 1000)

            task = asyncio.create_task(reader())
            seq, next_at = 0, loop.time()
            while loop.time() < stop_at:
                seq += 1
                sent[seq] = loop.time()
                await ws.send('{"type":"input_audio_buffer.append","audio":"' + frame(seq) + '"}')
                next_at += FRAME_SECONDS
                await asyncio.sleep(max(0.0, next_at - loop.time()))
            await asyncio.sleep(0.3)  # let the last echoes arrive
            task.cancel()
    except Exception as exc:  # noqa: BLE001 - a benchmark counts failures, it does not stop
        errors.append(type(exc).__name__)


WARMUP = [1.0]
NATIVE = os.environ.get("BENCH_PROFILE_NATIVE") == "1"  # py-spy --native: C frames too (uvloop, syscalls)


async def window_cpu(pid: int, measure_from: float, stop_at: float) -> float:
    """The server's CPU seconds over the measured window only (no connects, no warm-up)."""
    loop = asyncio.get_running_loop()
    await asyncio.sleep(max(0.0, measure_from - loop.time()))
    start = cpu_seconds(pid)
    await asyncio.sleep(max(0.0, stop_at - loop.time()))
    return cpu_seconds(pid) - start


async def run_level(url: str, headers: dict, n: int, seconds: float, relay: bool, pid: int | None = None) -> dict:
    loop = asyncio.get_running_loop()
    ramp = max(1.0, n / 50)  # stagger connects
    t0 = loop.time()
    measure_from = t0 + ramp + WARMUP[0]
    stop_at = measure_from + seconds
    latencies: list[float] = []
    errors: list[str] = []
    echoed = [0, 0]  # frames that came back: in all, and within the measured window
    window = asyncio.ensure_future(window_cpu(pid, measure_from, stop_at)) if pid else None
    await asyncio.gather(
        *[
            one_session(url, headers, t0 + ramp * i / n, measure_from, stop_at, latencies, errors, relay, echoed)
            for i in range(n)
        ]
    )
    late = sum(1 for t in READY[-n:] if t > measure_from)
    return {
        "n": n,
        "late_sessions": late,
        "frames": len(latencies),
        "echoed": echoed[0],
        "window_echoed": echoed[1],
        # Server CPU per relayed frame (one append in, one audio delta out) in the steady state: robust to a busy
        # machine, where a starved server relays fewer frames per second and its ms/s per call looks smaller.
        "window_cpu_us_per_frame": 1e6 * (await window) / max(1, echoed[1]) if window else None,
        "p50": pct(latencies, 0.50),
        "p99": pct(latencies, 0.99),
        "errors": len(errors),
        "window": seconds,
    }


def load(url: str, headers: dict, n: int, seconds: float, relay: bool, pid: int | None = None) -> dict:
    return asyncio.run(run_level(url, headers, n, seconds, relay, pid))


# --- servers -------------------------------------------------------------------------------------


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listening on {port}")


def server_env(db: str, upstream_port: int) -> dict:
    from cryptography.fernet import Fernet

    return {
        **os.environ,
        "DATABASE_URL": db,
        "SECRET_KEY": "bench-" + "x" * 40,
        "FIELD_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "DEBUG": "0",
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "0",
        "OPENAI_REALTIME_URL": f"ws://127.0.0.1:{upstream_port}/v1/realtime",
        "REALTIME_MAX_SESSIONS_PER_PROCESS": "100000",
        "LOG_LEVEL": "WARNING",
        "REDIS_URL": "",
    }


def start_server(kind: str, port: int, env: dict) -> subprocess.Popen:
    bin_dir = Path(sys.executable).parent
    if kind == "daphne":
        cmd = [str(bin_dir / "daphne"), "-b", "127.0.0.1", "-p", str(port), "-v", "0", "config.asgi:application"]
    else:
        cmd = [
            str(bin_dir / "uvicorn"),
            "config.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--ws",
            "websockets-sansio",
            "--no-access-log",
            "--log-level",
            "warning",
        ]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    wait_port(port)
    return proc


def profile_start(pid: int, seconds: float, out: str, spies: list[subprocess.Popen]) -> None:
    """py-spy (requirements-dev.txt) on the server for the measured window, raw stacks to `out`."""
    py_spy = str(Path(sys.executable).parent / "py-spy")
    spies.append(
        subprocess.Popen(
            [
                py_spy,
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(int(seconds)),
                "--format",
                "raw",
                "-o",
                out,
                *(["--native"] if NATIVE else ["--nonblocking"]),  # native stacks need the process paused
            ]
        )
    )


def profile_summary(path: str, top: int = 15) -> None:
    """The functions the py-spy samples were in (self time), most first."""
    counts: dict[str, int] = {}
    total = 0
    for line in Path(path).read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if stack:
            frame = stack.rsplit(";", 1)[-1]
            counts[frame] = counts.get(frame, 0) + int(n)
            total += int(n)
    for frame, n in sorted(counts.items(), key=lambda item: -item[1])[:top]:
        print(f"  {100 * n / max(1, total):5.1f}%  {frame}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", default="daphne,uvicorn")
    parser.add_argument("--levels", default="50,100,150,200")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--fake-upstream", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds after the last connect before measuring")
    parser.add_argument(
        "--database-url",
        default="",
        help="server DB per kind, e.g. postgres://postgres@127.0.0.1:5432/voicebench_{kind} "
        "(an empty database; default: a temp SQLite file)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy each server over the measured window (py-spy is in requirements-dev.txt)",
    )
    args = parser.parse_args()
    if args.fake_upstream:
        asyncio.run(fake_upstream(args.fake_upstream))
        return
    levels = [int(x) for x in args.levels.split(",")]
    WARMUP[0] = args.warmup
    kinds = args.servers.split(",")
    up_port = free_port()
    upstream = subprocess.Popen([sys.executable, __file__, "--fake-upstream", str(up_port)], cwd=ROOT)
    results: dict = {
        "levels": levels,
        "seconds": args.seconds,
        "cpus": os.cpu_count(),
        "loadavg_before": os.getloadavg(),
        "direct": [],
        "servers": {k: {"rows": []} for k in kinds},
    }
    tmp = tempfile.mkdtemp(prefix="sb-bench-")
    procs: dict[str, subprocess.Popen] = {}
    spies: list[subprocess.Popen] = []
    urls: dict[str, str] = {}
    try:
        wait_port(up_port)
        direct_url = f"ws://127.0.0.1:{up_port}/v1/realtime?model=gpt-realtime"
        for kind in kinds:
            db = (
                args.database_url.replace("{kind}", kind)
                if args.database_url
                else "sqlite:///" + os.path.join(tmp, f"{kind}.sqlite3")
            )
            env = server_env(db, up_port)
            py = sys.executable
            subprocess.run([py, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
            out = subprocess.run(
                [py, "manage.py", "shell", "-c", SETUP], cwd=ROOT, env=env, check=True, capture_output=True, text=True
            ).stdout.split()
            port = free_port()
            procs[kind] = start_server(kind, port, env)
            urls[kind] = f"ws://127.0.0.1:{port}/ws/realtime/{out[-2]}/?widget={out[-1]}&visitor=bench"
        # Interleaved per level (direct, then each server) so all share the machine's state at that moment.
        for n in levels:
            up0, me0, t0 = cpu_seconds(upstream.pid), own_cpu(), time.monotonic()
            direct = load(direct_url, {"Authorization": "Bearer sk-bench"}, n, args.seconds, relay=False)
            wall = time.monotonic() - t0
            direct.update(
                fake_cpu_percent=100 * (cpu_seconds(upstream.pid) - up0) / wall,
                client_cpu_percent=100 * (own_cpu() - me0) / wall,
            )
            results["direct"].append(direct)
            print(
                f"direct   n={n:4d} p50={direct['p50']:.2f} ms p99={direct['p99']:.2f} ms "
                f"frames={direct['frames']} errors={direct['errors']} (load generator "
                f"{direct['client_cpu_percent']:.0f}% fake upstream {direct['fake_cpu_percent']:.0f}%)",
                flush=True,
            )
            for kind in kinds:
                proc = procs[kind]
                spy = None
                if args.profile:
                    # Sampled over the measured window only (after the connect ramp and the warm-up), so the
                    # profile shows the steady per-frame work, not the call set-up.
                    spy = threading.Timer(
                        max(1.0, n / 50) + args.warmup,
                        profile_start,
                        args=(proc.pid, args.seconds, f"/tmp/relay-profile-{kind}-{n}.txt", spies),
                    )
                    spy.start()
                cpu0, up0, me0, t0 = cpu_seconds(proc.pid), cpu_seconds(upstream.pid), own_cpu(), time.monotonic()
                row = load(urls[kind], {"Origin": "http://127.0.0.1"}, n, args.seconds, relay=True, pid=proc.pid)
                wall = time.monotonic() - t0
                cpu = cpu_seconds(proc.pid) - cpu0
                row.update(
                    fake_cpu_percent=100 * (cpu_seconds(upstream.pid) - up0) / wall,
                    client_cpu_percent=100 * (own_cpu() - me0) / wall,
                )
                row.update(
                    loadavg_1min=os.getloadavg()[0],
                    added_p50=row["p50"] - direct["p50"],
                    added_p99=row["p99"] - direct["p99"],
                    cpu_percent=100 * cpu / wall,
                    cpu_ms_per_session_second=1000 * cpu / wall / n,
                    cpu_us_per_frame=1e6 * cpu / max(1, row["echoed"]),  # connects included
                )
                results["servers"][kind]["rows"].append(row)
                if spy is not None:
                    spy.join()
                    for running in spies:
                        running.wait(30)
                    spies.clear()
                    profile_summary(f"/tmp/relay-profile-{kind}-{n}.txt")
                print(
                    f"{kind:8s} n={n:4d} p50={row['p50']:.2f} ms p99={row['p99']:.2f} ms "
                    f"added p50={row['added_p50']:.2f} p99={row['added_p99']:.2f} ms "
                    f"cpu={row['cpu_percent']:.0f}% ({row['cpu_ms_per_session_second']:.2f} ms/s per session, "
                    f"{row['cpu_us_per_frame']:.0f} µs per frame, {row['window_cpu_us_per_frame']:.0f} in the window) "
                    f"frames={row['frames']} late={row['late_sessions']} errors={row['errors']} "
                    f"load={row['loadavg_1min']:.1f} "
                    f"(load generator {row['client_cpu_percent']:.0f}% fake upstream {row['fake_cpu_percent']:.0f}%)",
                    flush=True,
                )
        for kind in kinds:
            rows = results["servers"][kind]["rows"]
            cliff = next((r["n"] for r in rows if r["added_p99"] > 20), None)
            results["servers"][kind]["cliff"] = cliff
            print(f"{kind}: added p99 passes 20 ms at n={cliff or '> ' + str(levels[-1])}", flush=True)
    finally:
        for proc in procs.values():
            proc.terminate()
            proc.wait(10)
        upstream.terminate()
        upstream.wait(10)
    results["loadavg_after"] = os.getloadavg()
    Path(ROOT / "bench" / "results-relay.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
