"""The HTTP load loop the benchmarks share (bench/loader.py, bench/voice_endpoints.py): N concurrent workers on
one async httpx client take requests off a shared counter until `total` are done; each latency is measured
around one request. Plus the percentile, port, CPU-time and server-start helpers they all need."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(sorted_values: list[float], q: float) -> float:
    """The q-quantile of an already sorted list (the value below which a fraction q of them lies)."""
    if not sorted_values:
        return float("nan")
    return sorted_values[max(0, int(len(sorted_values) * q) - 1)]


async def timed_batch(
    client: httpx.AsyncClient,
    request: Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]],
    total: int,
    concurrency: int,
    ok: Callable[[httpx.Response], bool],
) -> tuple[list[float], float, int]:
    """`total` requests (`request(client, i)`), `concurrency` at a time. Returns (latencies in seconds, wall
    seconds, failures); the first failure is printed."""
    latencies: list[float] = []
    errors = 0
    queue = iter(range(total))

    async def worker() -> None:
        nonlocal errors
        for i in queue:
            t0 = time.perf_counter()
            try:
                response = await request(client, i)
            except httpx.TransportError as exc:  # counted and reported, as a failed answer is
                latencies.append(time.perf_counter() - t0)
                errors += 1
                if errors == 1:
                    print(f"first failure: {type(exc).__name__} {exc}")
                continue
            latencies.append(time.perf_counter() - t0)
            if not ok(response):
                errors += 1
                if errors == 1:
                    print(f"first failure: {response.request.url.path} {response.status_code} {response.text[:300]}")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, time.perf_counter() - started, errors


def start_server(cmd: list[str], env: dict[str, str], port: int, name: str) -> subprocess.Popen:
    """Start an ASGI server subprocess and wait until /healthz answers."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code < 500:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"{name} did not start within 30 s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
