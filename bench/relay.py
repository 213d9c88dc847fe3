"""Relay benchmark: added latency and CPU of the voice relay, under Daphne and Uvicorn, against direct.

N concurrent calls each send one PCM16 frame (base64) every `--frame-ms` through the relay to a local fake
upstream that echoes every append back as one audio delta; the frame defaults to what the widget sends (FRAME_MS in
static/widget/voice.js, read from there, so the two cannot drift); the same load is sent straight to the fake
upstream first, in the same run, at the same level. The measured window opens `--warmup` seconds after the
last call is up (no call is connecting in it) and lasts `--seconds`. Per level: round-trip p50/p99 of the
frames sent in the window; added = relay - direct, and relay p99 / direct p99; the server's CPU per
call-second over the window (from /proc), and its ratio to the fake upstream's in the direct run (both ends
do the same socket work per frame); `delivered` = frames back within the window / frames due. A level is
"behind" when under 99 % came back or a call failed; "meets goal" when added p99 <= 5 ms and CPU <= 5 ms/s
per call (issue 14). Loopback only, bounded run time.

    python bench/relay.py                                          # daphne+uvicorn, 50/100/150/200, 10 s each
    python bench/relay.py --servers uvicorn --levels 100,150,200 --pin   # the server alone on CPU 0
    python bench/relay.py --servers uvicorn --levels 100 --profile   # + where the server's CPU goes (py-spy)
    python bench/relay.py --servers uvicorn --levels 100,150,200 --pin --frame-ms 20   # the old 20 ms load

Prints a row per level and the cliff, and writes bench/results-relay.json.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import os
import re
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

VOICE_JS = ROOT / "static" / "widget" / "voice.js"
PCM_BYTES_PER_MS = 48  # 24 kHz PCM16 mono (realtime.session_config.SAMPLE_RATE)


def widget_frame_ms() -> int:
    """The microphone frame the widget sends, one input_audio_buffer.append each (`var FRAME_MS = …;` in voice.js)."""
    found = re.search(r"^\s*var FRAME_MS = (\d+);", VOICE_JS.read_text(), re.MULTILINE)
    if found is None:
        raise RuntimeError(f"no `var FRAME_MS = <ms>;` in {VOICE_JS}")
    return int(found.group(1))


FRAME_SECONDS = [0.0]  # frame_setup(--frame-ms)
TAIL = [""]  # a frame = 6 header bytes (seq, 0) + zero bytes (a multiple of 3: the two base64 parts concatenate)


def frame_setup(frame_ms: int) -> None:
    """The load's frame: `frame_ms` of 24 kHz PCM16 per append, one every `frame_ms`."""
    FRAME_SECONDS[0] = frame_ms / 1000
    TAIL[0] = base64.b64encode(b"\x00" * (PCM_BYTES_PER_MS * frame_ms - 6)).decode()


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
    return base64.b64encode(struct.pack("<IH", seq, 0)).decode() + TAIL[0]


def seq_of(delta: str) -> int:
    return struct.unpack("<I", base64.b64decode(delta[:8])[:4])[0]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


RAMP_PER_SECOND = [50.0]  # call connects per second
PIN: list[str] = []  # `taskset -c 0` for the server when --pin


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


class Window:
    """The measured window of one level: it opens `warmup` seconds after the last call is up (or has failed), so
    no call is still connecting in it, and lasts `seconds`. Until then, start and stop are in the future."""

    def __init__(self, n: int, seconds: float, warmup: float):
        self.n, self.seconds, self.warmup = n, seconds, warmup
        self.start = self.stop = math.inf
        self.up = 0
        self.all_up_after = math.nan  # seconds from the first connect to the last call up
        self.first_connect = math.nan
        self.opened = asyncio.Event()

    def call_settled(self) -> None:
        """A call is up (session.ready) or failed to connect."""
        self.up += 1
        if self.up == self.n:
            self.open()

    def open(self) -> None:
        if not self.opened.is_set():
            now = asyncio.get_running_loop().time()
            self.all_up_after = now - self.first_connect
            self.start = now + self.warmup
            self.stop = self.start + self.seconds
            self.opened.set()


async def one_session(
    url: str,
    headers: dict,
    start_at: float,
    window: Window,
    latencies: list[float],
    errors: list[str],
    relay: bool,
    echoed: list[int],
) -> None:
    from websockets.asyncio.client import connect

    loop = asyncio.get_running_loop()
    await asyncio.sleep(max(0.0, start_at - loop.time()))
    sent: dict[int, float] = {}
    settled = False
    try:
        async with connect(
            url, additional_headers=headers, compression=None, max_size=2**22, open_timeout=60, ping_interval=None
        ) as ws:
            if relay:
                while '"session.ready"' not in await asyncio.wait_for(ws.recv(), 60):
                    pass
            settled = True
            window.call_settled()

            async def reader() -> None:
                async for raw in ws:
                    now = loop.time()
                    if any(marker in raw for marker in AUDIO_DELTA):
                        echoed[0] += 1
                        if window.start <= now < window.stop:
                            echoed[1] += 1
                        i = raw.index('"', raw.index('"delta":') + 8) + 1
                        t0 = sent.pop(seq_of(raw[i : i + 8]), None)
                        if t0 is not None and window.start <= t0 < window.stop:
                            latencies.append((now - t0) * 1000)

            task = asyncio.create_task(reader())
            seq, next_at = 0, loop.time()
            while loop.time() < window.stop:
                seq += 1
                sent[seq] = loop.time()
                await ws.send('{"type":"input_audio_buffer.append","audio":"' + frame(seq) + '"}')
                next_at += FRAME_SECONDS[0]
                await asyncio.sleep(max(0.0, next_at - loop.time()))
            await asyncio.sleep(0.5)  # let the last echoes arrive
            task.cancel()
    except Exception as exc:  # noqa: BLE001 - a benchmark counts failures, it does not stop
        errors.append(type(exc).__name__)
        if not settled:
            window.call_settled()


WARMUP = [2.0]
NATIVE = os.environ.get("BENCH_PROFILE_NATIVE") == "1"  # py-spy --native: C frames too (uvloop, syscalls)


def machine_busy_seconds() -> float:
    """CPU seconds all processes of the machine spent busy (everything in /proc/stat's cpu line but idle and
    iowait)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


async def window_cpu(pids: list[int], window: Window) -> list[float]:
    """CPU seconds of each process over the measured window only (no connects, no warm-up), then the CPU
    seconds every other process of the machine used meanwhile (other engineers' test suites: a quiet machine
    has ~0)."""
    loop = asyncio.get_running_loop()
    await window.opened.wait()
    await asyncio.sleep(max(0.0, window.start - loop.time()))
    start = [cpu_seconds(pid) for pid in [*pids, os.getpid()]]
    busy = machine_busy_seconds()
    await asyncio.sleep(max(0.0, window.stop - loop.time()))
    used = [cpu_seconds(pid) - before for pid, before in zip([*pids, os.getpid()], start, strict=True)]
    return [*used[:-1], machine_busy_seconds() - busy - sum(used)]


async def run_level(url: str, headers: dict, n: int, seconds: float, relay: bool, pids: list[int]) -> dict:
    """`pids`: the relay server (relay runs only), then the fake upstream."""
    loop = asyncio.get_running_loop()
    ramp = max(1.0, n / RAMP_PER_SECOND[0])  # stagger connects
    window = Window(n, seconds, WARMUP[0])
    window.first_connect = loop.time()
    latencies: list[float] = []
    errors: list[str] = []
    echoed = [0, 0]  # frames that came back: in all, and within the measured window
    cpu = asyncio.ensure_future(window_cpu(pids, window))
    loop.call_later(ramp + 90, window.open)  # calls that neither connect nor fail in time: measure anyway
    t0 = loop.time()
    await asyncio.gather(
        *[one_session(url, headers, t0 + ramp * i / n, window, latencies, errors, relay, echoed) for i in range(n)]
    )
    *cpus, others = await cpu
    expected = n * seconds / FRAME_SECONDS[0]
    row = {
        "n": n,
        "frame_ms": round(FRAME_SECONDS[0] * 1000),
        "all_up_after_s": window.all_up_after,
        "frames": len(latencies),
        "echoed": echoed[0],
        "window_echoed": echoed[1],
        "delivered": echoed[1] / expected,  # share of the window's frames that came back within it
        "p50": pct(latencies, 0.50),
        "p99": pct(latencies, 0.99),
        "errors": len(errors),
        "window": seconds,
        # Other processes' share of the machine's CPUs during the window (test suites beside the bench).
        "others_cpu_percent": 100 * others / seconds / (os.cpu_count() or 1),
    }
    names = ["server", "fake_upstream"] if relay else ["fake_upstream"]
    for name, used in zip(names, cpus, strict=True):
        # CPU per call-second in the steady state, and per frame relayed (one append in, one audio delta out).
        row[f"{name}_cpu_ms_per_call_s"] = 1000 * used / seconds / n
        row[f"{name}_cpu_us_per_frame"] = 1e6 * used / max(1, echoed[1])
    return row


def load(url: str, headers: dict, n: int, seconds: float, relay: bool, pids: list[int]) -> dict:
    return asyncio.run(run_level(url, headers, n, seconds, relay, pids))


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
    kind, _, tree = kind.partition("@")
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
    proc = subprocess.Popen([*PIN, *cmd], cwd=tree or ROOT, env=env)
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


GOAL_ADDED_P99_MS = 5.0  # issue 14: added p99 <= 5 ms ...
GOAL_CPU_MS_PER_CALL_S = 5.0  # ... and CPU <= 5 ms/s per call, at 200 calls per Uvicorn worker


def label(kind: str) -> str:
    """`uvicorn`, or `uvicorn-<directory>` for `uvicorn@/path/to/<directory>`."""
    kind, _, tree = kind.partition("@")
    return f"{kind}-{Path(tree).name}" if tree else kind


def verdict(row: dict) -> str:
    """Whether a level keeps up and meets the goal: every frame back within the window, none failed."""
    if row["errors"] or row["delivered"] < 0.99:
        return "behind"
    ok = row["added_p99"] <= GOAL_ADDED_P99_MS and row["server_cpu_ms_per_call_s"] <= GOAL_CPU_MS_PER_CALL_S
    return "meets goal" if ok else "misses goal"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--servers",
        default="daphne,uvicorn",
        help="daphne, uvicorn, or KIND@/path/to/another/checkout (e.g. the code before a change) for an A/B run",
    )
    parser.add_argument("--levels", default="50,100,150,200")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--fake-upstream", type=int, help=argparse.SUPPRESS)
    parser.add_argument(
        "--warmup", type=float, default=2.0, help="seconds after the last call is up before measuring (default 2)"
    )
    parser.add_argument("--ramp", type=float, default=50.0, help="call connects per second (default 50)")
    parser.add_argument(
        "--frame-ms",
        type=int,
        default=None,
        help="audio per append (default: the widget's, FRAME_MS in static/widget/voice.js); 20 = the load measured "
        "before 2026-12-04 12:00",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="the server on CPU 0, the fake upstream and the load generator on the others (taskset): one core "
        "per worker, as in production",
    )
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
    frame_ms = args.frame_ms or widget_frame_ms()
    if not 10 <= frame_ms <= 1000:
        parser.error("--frame-ms must be 10..1000")
    frame_setup(frame_ms)
    WARMUP[0] = args.warmup
    RAMP_PER_SECOND[0] = args.ramp
    others = ",".join(str(cpu) for cpu in range(1, os.cpu_count() or 1)) or "0"
    if args.pin:
        PIN[:] = ["taskset", "-c", "0"]
        os.sched_setaffinity(0, {int(cpu) for cpu in others.split(",")})
    kinds = args.servers.split(",")
    up_port = free_port()
    upstream = subprocess.Popen(
        [*(["taskset", "-c", others] if args.pin else []), sys.executable, __file__, "--fake-upstream", str(up_port)],
        cwd=ROOT,
    )
    results: dict = {
        "levels": levels,
        "seconds": args.seconds,
        "warmup": args.warmup,
        "ramp_per_second": args.ramp,
        "frame_ms": frame_ms,
        "widget_frame_ms": widget_frame_ms(),
        "pinned": args.pin,
        "cpus": os.cpu_count(),
        "loadavg_before": os.getloadavg(),
        "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "goal": {"added_p99_ms": GOAL_ADDED_P99_MS, "cpu_ms_per_call_s": GOAL_CPU_MS_PER_CALL_S},
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
                args.database_url.replace("{kind}", label(kind))
                if args.database_url
                else "sqlite:///" + os.path.join(tmp, f"{label(kind)}.sqlite3")
            )
            env = server_env(db, up_port)
            py = sys.executable
            tree = kind.partition("@")[2] or ROOT  # `uvicorn@/path/to/other/checkout`: that code, for an A/B run
            subprocess.run([py, "manage.py", "migrate", "-v", "0"], cwd=tree, env=env, check=True)
            out = subprocess.run(
                [py, "manage.py", "shell", "-c", SETUP], cwd=tree, env=env, check=True, capture_output=True, text=True
            ).stdout.split()
            port = free_port()
            procs[kind] = start_server(kind, port, env)
            urls[kind] = f"ws://127.0.0.1:{port}/ws/realtime/{out[-2]}/?widget={out[-1]}&visitor=bench"
        # Interleaved per level (direct, then each server) so all share the machine's state at that moment.
        for n in levels:
            direct = load(direct_url, {"Authorization": "Bearer sk-bench"}, n, args.seconds, False, [upstream.pid])
            direct["loadavg_1min"] = os.getloadavg()[0]
            results["direct"].append(direct)
            print(
                f"direct   n={n:4d} frame={frame_ms} ms p50={direct['p50']:.2f} ms p99={direct['p99']:.2f} ms "
                f"delivered={100 * direct['delivered']:.1f}% errors={direct['errors']} "
                f"fake upstream {direct['fake_upstream_cpu_ms_per_call_s']:.2f} ms/s per call "
                f"load={direct['loadavg_1min']:.1f} others={direct['others_cpu_percent']:.0f}%",
                flush=True,
            )
            for kind in kinds:
                proc = procs[kind]
                profiling = None
                if args.profile:
                    # Sampled from the window's likely start (the connects and the warm-up are over by then at
                    # the default ramp), so the profile shows the steady per-frame work, not the call set-up.
                    profiling = threading.Timer(
                        max(1.0, n / args.ramp) + args.warmup + 1.0,
                        profile_start,
                        args=(proc.pid, args.seconds, f"/tmp/relay-profile-{label(kind)}-{n}.txt", spies),
                    )
                    profiling.start()
                row = load(urls[kind], {"Origin": "http://127.0.0.1"}, n, args.seconds, True, [proc.pid, upstream.pid])
                row.update(
                    loadavg_1min=os.getloadavg()[0],
                    added_p50=row["p50"] - direct["p50"],
                    added_p99=row["p99"] - direct["p99"],
                    p99_ratio=row["p99"] / direct["p99"],
                    # The relay's CPU per call-second against the fake upstream's in the direct run: both ends
                    # do the same socket work per frame (one message in, one out).
                    cpu_ratio=row["server_cpu_ms_per_call_s"] / max(1e-9, direct["fake_upstream_cpu_ms_per_call_s"]),
                )
                row["verdict"] = verdict(row)
                results["servers"][kind]["rows"].append(row)
                if profiling is not None:
                    profiling.join()
                    for running in spies:
                        running.wait(60)
                    spies.clear()
                    profile_summary(f"/tmp/relay-profile-{label(kind)}-{n}.txt")
                print(
                    f"{label(kind):8s} n={n:4d} frame={frame_ms} ms p50={row['p50']:.2f} ms p99={row['p99']:.2f} ms "
                    f"added p50={row['added_p50']:.2f} p99={row['added_p99']:.2f} ms (p99 {row['p99_ratio']:.2f}x "
                    f"direct) cpu={row['server_cpu_ms_per_call_s']:.2f} ms/s per call "
                    f"({row['cpu_ratio']:.2f}x the fake upstream's direct, {row['server_cpu_us_per_frame']:.0f} µs "
                    f"per frame) delivered={100 * row['delivered']:.1f}% up in {row['all_up_after_s']:.1f} s "
                    f"errors={row['errors']} load={row['loadavg_1min']:.1f} others={row['others_cpu_percent']:.0f}% "
                    f"→ {row['verdict']}",
                    flush=True,
                )
        for kind in kinds:
            rows = results["servers"][kind]["rows"]
            cliff = next((r["n"] for r in rows if r["verdict"] == "behind" or r["added_p99"] > 20), None)
            goal_cliff = next((r["n"] for r in rows if r["verdict"] != "meets goal"), None)
            results["servers"][kind].update(cliff=cliff, goal_cliff=goal_cliff)
            print(
                f"{kind}: falls behind or added p99 > 20 ms at n={cliff or '> ' + str(levels[-1])}; "
                f"first level missing the goal (added p99 <= {GOAL_ADDED_P99_MS:g} ms, CPU <= "
                f"{GOAL_CPU_MS_PER_CALL_S:g} ms/s per call): n={goal_cliff or 'none'}",
                flush=True,
            )
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
