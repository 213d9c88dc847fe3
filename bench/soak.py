"""Soak: chat, leads and voice calls through `make prod` while its dependencies and processes fail.

Starts the production topology exactly as `make prod` does (supervisord: WEB_CONCURRENCY Uvicorn web
processes on one SO_REUSEPORT port, a Celery worker, Celery beat) on a PostgreSQL database and a
redis-server of its OWN (created and removed here; the shared ones are never touched), with fake n8n,
OpenAI Realtime and CRM servers on 127.0.0.1. While visitors chat, post leads and talk, it injects, in
cycles:

  1. a Redis restart (kill -9, 3 s down, started again empty: broker messages and slots are gone),
  2. pg_terminate_backend() of every backend of the soak's own database,
  3. SIGKILL of one web process (supervisord starts a new one),
  4. SIGKILL of the Celery worker (supervisord starts a new one).

Then it lets the system settle (reapers, slot TTL, lead redelivery; bounded) and checks every record:

  chat   lost = a turn answered 2xx but not stored; duplicated = a turn stored twice
  leads  lost = answered 201 (or stored) but never delivered to the CRM; duplicated = stored twice or
         processed twice by the CRM (it dedups on Idempotency-Key; re-POSTs of one key are counted apart)
  voice  unbilled seconds = audio the upstream had answered (a response.done reached the caller) that is
         not on the conversation/licence bill; overbilled = billed beyond what was sent; open calls left
         after the reaper; leaked slots = slot keys left in Redis; licence usage = sum of its calls

Prints a table and exits 0 only if every one of those is 0. Loopback only, bounded run time.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/<db> python bench/soak.py           # ~7.5 min, at most 10
    DATABASE_URL=... python bench/soak.py --short                                        # ~2.5 min (CI)

DATABASE_URL names the PostgreSQL server; the soak creates `<db>_soak_<pid>` there and drops it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
ORIGIN = "https://soak.example"
FRAME_SECONDS = 0.04
FRAME_EVENT = json.dumps(
    {"type": "input_audio_buffer.append", "audio": base64.b64encode(b"\x00\x00" * 960).decode()}, separators=(",", ":")
)
APPENDS_PER_RESPONSE = 12  # the fake upstream answers every 0.48 s of audio with a response.done
USAGE = {
    "total_tokens": 30,
    "input_tokens": 20,
    "output_tokens": 10,
    "input_token_details": {"text_tokens": 0, "audio_tokens": 20},
    "output_token_details": {"text_tokens": 2, "audio_tokens": 8},
}
ASSISTANT_AUDIO = base64.b64encode(b"\x01\x00" * 240).decode()


def log(message: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CALLER_ADDRESS = "127.0.0.2"  # voice callers connect from here, so their connections can be told apart
CALLER_HEX = "0200007F"


def established_connections(pid: int, port: int) -> int:
    """Established voice-call connections (from CALLER_ADDRESS) on local `port` owned by `pid` (/proc)."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                local, remote = fields[1].rsplit(":", 1), fields[2].rsplit(":", 1)
                if fields[3] == "01" and int(local[1], 16) == port and remote[0] == CALLER_HEX and fields[9] in inodes:
                    count += 1
    return count


# --- fakes on 127.0.0.1 ------------------------------------------------------------------------------


class FakeHTTP:
    """n8n Chat Trigger (echoes chatInput) and a CRM webhook (records Idempotency-Keys) in one server."""

    def __init__(self) -> None:
        self.crm: list[str] = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server API
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.startswith("/crm"):
                    with fake.lock:
                        fake.crm.append(self.headers.get("Idempotency-Key", ""))
                    answer: Any = {"ok": True}
                else:
                    data = json.loads(body or b"{}")
                    answer = (
                        {"output": "echo " + str(data.get("chatInput", ""))}
                        if data.get("action") == "sendMessage"
                        else {"data": []}
                    )
                raw = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def fake_realtime() -> tuple[Any, str]:
    """OpenAI Realtime: after every APPENDS_PER_RESPONSE appends, one response with audio and usage."""
    from websockets.asyncio.server import serve

    async def handler(ws: Any) -> None:
        appends = 0
        with contextlib.suppress(Exception):
            await ws.send(json.dumps({"type": "session.created", "session": {"id": "sess_soak"}}))
            async for raw in ws:
                if '"input_audio_buffer.append"' not in raw[:60]:
                    continue
                appends += 1
                if appends % APPENDS_PER_RESPONSE == 0:
                    n = appends // APPENDS_PER_RESPONSE
                    await ws.send(json.dumps({"type": "response.created", "response": {"id": f"r{n}"}}))
                    await ws.send(
                        json.dumps(
                            {"type": "response.output_audio.delta", "item_id": f"i{n}", "delta": ASSISTANT_AUDIO}
                        )
                    )
                    await ws.send(
                        json.dumps(
                            {
                                "type": "response.done",
                                "response": {"id": f"r{n}", "status": "completed", "usage": USAGE},
                            }
                        )
                    )

    server = await serve(handler, "127.0.0.1", 0, compression=None, max_size=2**22)
    return server, f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/realtime"


class OwnRedis:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        import redis

        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 10
        while True:
            try:
                redis.Redis(port=self.port, socket_connect_timeout=0.5).ping()
                return
            except redis.ConnectionError:
                if time.time() > deadline:
                    raise RuntimeError("redis-server did not start")
                time.sleep(0.05)

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


# --- the database of the soak -------------------------------------------------------------------------


class SoakDatabase:
    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("postgres", "postgresql"):
            raise SystemExit("bench/soak.py needs DATABASE_URL=postgres://… (it terminates PostgreSQL backends)")
        self.name = f"{(parts.path.lstrip('/') or 'switchboard')}_soak_{os.getpid()}"
        self.url = urlunsplit(parts._replace(path="/" + self.name))
        self.admin_url = urlunsplit(parts._replace(path="/postgres"))

    def _admin(self, sql: str, *params: Any) -> int:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            cursor = conn.execute(sql, params)
            return cursor.rowcount

    def create(self) -> None:
        self._admin(f'CREATE DATABASE "{self.name}"')

    def drop(self) -> None:
        with contextlib.suppress(Exception):
            self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def terminate_backends(self) -> int:
        """pg_terminate_backend() for the backends of THIS database only."""
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (self.name,),
            ).fetchall()
        return len(rows)


# --- load --------------------------------------------------------------------------------------------


class Load:
    def __init__(self, base: str, key: str, widget: str) -> None:
        self.base, self.key, self.widget = base, key, widget
        self.chat: list[dict[str, Any]] = []
        self.leads: list[dict[str, Any]] = []
        self.calls: list[dict[str, Any]] = []
        self.headers = {"Origin": ORIGIN, "X-Forwarded-Proto": "https", "Content-Type": "application/json"}

    async def chat_visitor(self, n: int, until: float, pause: float) -> None:
        import httpx

        session = f"soak-chat-{n}-{uuid.uuid4().hex[:8]}"
        async with httpx.AsyncClient(timeout=httpx.Timeout(20.0, connect=5.0)) as client:
            i = 0
            while time.monotonic() < until:
                i += 1
                text = f"{session} message {i}"
                record = {"session": session, "text": text, "status": 0}
                try:
                    response = await client.post(
                        f"{self.base}/api/widget/{self.key}/chat",
                        headers=self.headers,
                        json={"action": "sendMessage", "sessionId": session, "chatInput": text},
                    )
                    record["status"] = response.status_code
                except httpx.HTTPError as exc:
                    record["status"] = type(exc).__name__
                self.chat.append(record)
                await asyncio.sleep(pause * random.uniform(0.5, 1.5))

    async def lead_poster(self, until: float, pause: float) -> None:
        import httpx

        async with httpx.AsyncClient(timeout=httpx.Timeout(20.0, connect=5.0)) as client:
            while time.monotonic() < until:
                name = f"soak-lead-{uuid.uuid4().hex[:12]}"
                record = {"name": name, "status": 0}
                try:
                    response = await client.post(
                        f"{self.base}/api/widget/{self.key}/leads",
                        headers=self.headers,
                        json={
                            "source": "contact_form",
                            "name": name,
                            "email": f"{name}@soak.example",
                            "interest": "soak",
                        },
                    )
                    record["status"] = response.status_code
                except httpx.HTTPError as exc:
                    record["status"] = type(exc).__name__
                self.leads.append(record)
                await asyncio.sleep(pause * random.uniform(0.5, 1.5))

    async def caller(self, n: int, until: float, call_seconds: tuple[float, float]) -> None:
        from websockets.asyncio.client import connect

        ws_base = self.base.replace("http://", "ws://")
        attempt = 0
        while time.monotonic() < until:
            attempt += 1
            visitor = f"soak-call-{n}-{attempt}-{uuid.uuid4().hex[:6]}"
            record: dict[str, Any] = {"visitor": visitor, "sent": 0, "dones": 0, "outcome": "", "ended": ""}
            self.calls.append(record)
            url = f"{ws_base}/ws/realtime/{self.key}/?widget={self.widget}&visitor={visitor}"
            try:
                async with connect(
                    url,
                    origin=ORIGIN,
                    additional_headers={"X-Forwarded-Proto": "https"},
                    open_timeout=10,
                    close_timeout=3,
                    max_size=2**22,
                    compression=None,
                    local_addr=(CALLER_ADDRESS, 0),
                ) as ws:
                    first = json.loads(await asyncio.wait_for(ws.recv(), 15))
                    if first.get("type") != "session.ready":
                        record["outcome"] = f"refused:{first.get('code')}"
                        await asyncio.sleep(1.0)
                        continue
                    record["connected"] = True
                    reader = asyncio.ensure_future(self._read_call(ws, record))
                    loop = asyncio.get_running_loop()
                    started, duration = loop.time(), random.uniform(*call_seconds)
                    while loop.time() - started < duration and not reader.done() and time.monotonic() < until:
                        await ws.send(FRAME_EVENT)
                        record["sent"] += 1
                        await asyncio.sleep(max(0.0, started + record["sent"] * FRAME_SECONDS - loop.time()))
                    if reader.done():
                        record["outcome"] = f"cut:{record['ended'] or 'closed'}"
                    else:
                        await ws.close(1000)
                        record["outcome"] = "hangup"
                    reader.cancel()
            except Exception as exc:  # noqa: BLE001 - a killed worker, a refused handshake...: try again
                record["outcome"] = record["outcome"] or f"cut:{type(exc).__name__}"
                await asyncio.sleep(0.5)

    @staticmethod
    async def _read_call(ws: Any, record: dict[str, Any]) -> None:
        with contextlib.suppress(Exception):
            async for raw in ws:
                event = json.loads(raw)
                if event.get("type") == "response.done":
                    record["dones"] += 1
                elif event.get("type") == "session.ended":
                    record["ended"] = event.get("reason", "")


# --- the run -----------------------------------------------------------------------------------------


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="switchboard-soak-"))
        self.db = SoakDatabase(os.environ.get("DATABASE_URL", ""))
        self.redis = OwnRedis(self.tmp)
        self.port = free_port()
        self.prod: subprocess.Popen | None = None
        self.faults: list[dict[str, Any]] = []
        self.env: dict[str, str] = {}

    def prod_env(self, realtime_url: str) -> dict[str, str]:
        from cryptography.fernet import Fernet

        drop = ("DJANGO_SETTINGS_MODULE", "PYTEST_CURRENT_TEST", "PYTEST_XDIST_WORKER", "DEBUG")
        env = {k: v for k, v in os.environ.items() if k not in drop}
        env.update(
            {
                "DATABASE_URL": self.db.url,
                "REDIS_URL": f"redis://127.0.0.1:{self.redis.port}/0",
                "DEBUG": "0",
                "SECRET_KEY": uuid.uuid4().hex * 2,
                "FIELD_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
                "ALLOWED_HOSTS": "127.0.0.1,localhost",
                "HOST": "127.0.0.1",
                "PORT": str(self.port),
                "WEB_CONCURRENCY": str(self.args.web),
                "GRACEFUL_TIMEOUT": "10",
                "CELERY_CONCURRENCY": "2",
                "PROD_RUN_DIR": str(self.tmp / "run"),
                "LOG_LEVEL": "WARNING",
                "REAPER_INTERVAL_SECONDS": "2",
                "REALTIME_STALE_SECONDS": "20",
                "LEAD_PENDING_STALE_SECONDS": "10",
                "CELERY_TASK_TIME_LIMIT": "20",
                "OPENAI_REALTIME_URL": realtime_url,
                "OPENAI_API_KEY": "sk-soak",
                "N8N_ALLOW_PRIVATE_NETWORKS": "1",
                "WIDGET_CHAT_RATE_PER_MINUTE": "100000",
                "REALTIME_MAX_SESSIONS_PER_PROCESS": "200",
            }
        )
        return env

    def django_setup(self) -> None:
        os.environ.update({**self.env, "DB_POOL": "0"})
        sys.path.insert(0, str(ROOT))
        os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
        import django

        django.setup()

    def seed(self, fake: FakeHTTP) -> tuple[str, str]:
        from licenses.models import Agency, License
        from widgets.config_schema import config_normalize
        from widgets.models import Widget, WidgetVersion

        agency = Agency.objects.create(name="Soak", slug=f"soak-{os.getpid()}", crm_webhook_url=fake.url + "/crm")
        license = License.objects.create(
            agency=agency,
            client_name="Soak",
            allowed_domains=["soak.example"],
            limits={
                "max_widgets": 5,
                "monthly_conversations": 10**7,
                "monthly_voice_minutes": 10**7,
                "max_concurrent_voice_sessions": 100,
            },
        )
        config = config_normalize(
            {
                "connection": {"provider": "n8n", "n8n": {"webhook_url": fake.url + "/chat"}},
                "voice": {"enabled": True, "max_session_seconds": 3600},
            }
        )
        widget = Widget.objects.create(license=license, name="Soak", widget_type="n8n", config=config)
        version = WidgetVersion.objects.create(widget=widget, number=1, widget_type="n8n", config=config)
        Widget.objects.filter(pk=widget.pk).update(published_version=version)
        self.license_id = license.pk
        return license.key, widget.public_id

    def start_prod(self) -> None:
        self.prod_log = open(self.tmp / "prod.log", "w")  # noqa: SIM115 - closed in stop_prod
        self.prod = subprocess.Popen(
            ["make", "--no-print-directory", "prod"],
            cwd=ROOT,
            env=self.env,
            stdout=self.prod_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.wait_healthy(timeout=120)

    def wait_healthy(self, timeout: float) -> None:
        import httpx

        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.prod is not None and self.prod.poll() is not None:
                raise RuntimeError(f"make prod exited ({self.prod.returncode}); see {self.tmp / 'prod.log'}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=3).status_code == 200:
                    return
            time.sleep(0.5)
        raise RuntimeError(f"make prod not healthy in {timeout} s; see {self.tmp / 'prod.log'}")

    def supervisorctl(self, *args: str, timeout: float = 20) -> str:
        out = subprocess.run(
            [str(ROOT / ".venv/bin/supervisorctl"), "-c", str(ROOT / "config/supervisord.conf"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return out.stdout.strip()

    def supervisor_pid(self, name: str) -> int:
        return int(self.supervisorctl("pid", name))

    def busiest_web(self) -> tuple[str, int, int]:
        """The web process holding the most voice calls (waits up to 10 s for one that holds any)."""
        deadline = time.time() + 10
        while True:
            best = ("web:web-0", self.supervisor_pid("web:web-0"), -1)
            for index in range(self.args.web):
                name = f"web:web-{index}"
                pid = self.supervisor_pid(name)
                count = established_connections(pid, self.port)
                if count > best[2]:
                    best = (name, pid, count)
            if best[2] > 0 or time.time() > deadline:
                return best
            time.sleep(0.2)

    def stop_prod(self) -> None:
        if self.prod is None:
            return
        with contextlib.suppress(Exception):
            pid = int((self.tmp / "run" / "supervisord.pid").read_text())
            os.kill(pid, signal.SIGTERM)
        try:
            self.prod.wait(60)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.prod.pid, signal.SIGKILL)
            self.prod.wait(10)
        self.prod_log.close()

    # --- faults ---

    async def fault(self, kind: str) -> None:
        started = time.monotonic()
        detail = ""
        if kind == "redis_restart":
            self.redis.kill()
            await asyncio.sleep(3)
            await asyncio.to_thread(self.redis.start)
        elif kind == "postgres_terminate":
            detail = f"{await asyncio.to_thread(self.db.terminate_backends)} backends"
        elif kind == "kill_web":
            name, pid, connections = await asyncio.to_thread(self.busiest_web)
            os.kill(pid, signal.SIGKILL)
            detail = f"{name} pid {pid} holding {connections} voice calls"
        elif kind == "restart_web":  # a deploy: SIGTERM, graceful shutdown, a new process
            name, pid, connections = await asyncio.to_thread(self.busiest_web)
            await asyncio.to_thread(self.supervisorctl, "restart", name, timeout=60)
            detail = f"{name} pid {pid} holding {connections} voice calls"
        elif kind == "kill_celery":
            pid = await asyncio.to_thread(self.supervisor_pid, "celery-worker")
            os.kill(pid, signal.SIGKILL)
            detail = f"celery-worker pid {pid}"
        self.faults.append({"fault": kind, "at": round(started - self.load_started, 1), "detail": detail})
        log(f"fault {kind} {detail}")

    async def fault_schedule(self, until: float) -> None:
        kinds = ["redis_restart", "postgres_terminate", "kill_web", "kill_celery", "restart_web"]
        gap = self.args.fault_gap
        i = 0
        await asyncio.sleep(gap)
        while time.monotonic() + 5 < until:
            await self.fault(kinds[i % len(kinds)])
            i += 1
            await asyncio.sleep(gap)

    async def run_load(self, key: str, widget: str) -> Load:
        load = Load(f"http://127.0.0.1:{self.port}", key, widget)
        self.load_started = time.monotonic()
        until = self.load_started + self.args.seconds
        a = self.args
        tasks = [load.chat_visitor(n, until, a.chat_pause) for n in range(a.chat_visitors)]
        tasks += [load.lead_poster(until, a.lead_pause) for _ in range(a.lead_posters)]
        tasks += [load.caller(n, until, (a.call_min, a.call_max)) for n in range(a.calls)]
        tasks.append(self.fault_schedule(until))
        await asyncio.gather(*tasks)
        return load

    # --- verdict ---

    def check(self, load: Load, fake: FakeHTTP) -> dict[str, Any]:
        import redis
        from django.db import connections
        from django.db.models import Sum

        from licenses.models import LicenseUsage
        from widgets.models import Channel, Conversation, Lead, Message

        connections.close_all()
        sent_texts = [r["text"] for r in load.chat]
        stored = Counter(
            Message.objects.filter(role="user", conversation__channel=Channel.CHAT, text__in=sent_texts).values_list(
                "text", flat=True
            )
        )
        ok_chat = [r for r in load.chat if r["status"] == 200]
        chat = {
            "sent": len(load.chat),
            "answered_2xx": len(ok_chat),
            "errors": dict(Counter(str(r["status"]) for r in load.chat if r["status"] != 200)),
            "lost": sum(1 for r in ok_chat if stored[r["text"]] == 0),
            "duplicated": sum(1 for n in stored.values() if n > 1),
        }
        names = [r["name"] for r in load.leads]
        rows = list(Lead.objects.filter(name__in=names).values_list("pk", "name", "delivery_status"))
        by_name = Counter(name for _, name, _ in rows)
        keys = Counter(fake.crm)
        delivered = {pk for pk, _, status in rows if status == "delivered" and keys[f"lead-{pk}"]}
        accepted = {r["name"] for r in load.leads if r["status"] == 201}
        leads = {
            "posted": len(load.leads),
            "accepted_201": len(accepted),
            "stored": len(rows),
            "errors": dict(Counter(str(r["status"]) for r in load.leads if r["status"] != 201)),
            "lost": sum(1 for name in accepted if by_name[name] == 0)
            + sum(1 for pk, _, _ in rows if pk not in delivered),
            "duplicated": sum(1 for n in by_name.values() if n > 1),
            "crm_reposts_same_key": sum(n - 1 for n in keys.values() if n > 1),
        }
        conversations = {
            c.visitor_id: c
            for c in Conversation.objects.filter(
                channel=Channel.VOICE, visitor_id__in=[r["visitor"] for r in load.calls]
            )
        }
        unbilled = overbilled = 0.0
        for record in load.calls:
            conversation = conversations.get(record["visitor"])
            floor = record["dones"] * APPENDS_PER_RESPONSE * FRAME_SECONDS
            billed = conversation.audio_in_seconds if conversation else 0.0
            unbilled += max(0.0, floor - billed)
            overbilled += max(0.0, billed - record["sent"] * FRAME_SECONDS - 1e-6)
        usage = LicenseUsage.objects.filter(license_id=self.license_id).aggregate(s=Sum("voice_seconds"))["s"] or 0
        calls_total = sum(c.audio_in_seconds for c in conversations.values())
        slots = redis.Redis(port=self.redis.port).keys(f"*switchboard:voice-slot:{self.license_id}:*")
        voice = {
            "calls": len(load.calls),
            "connected": sum(1 for r in load.calls if r.get("connected")),
            "outcomes": dict(Counter(r["outcome"] for r in load.calls)),
            "end_reasons": dict(Counter(c.end_reason or "<open>" for c in conversations.values())),
            "seconds_sent": round(sum(r["sent"] for r in load.calls) * FRAME_SECONDS, 2),
            "seconds_billed": round(calls_total, 2),
            "unbilled_seconds": round(unbilled, 3),
            "overbilled_seconds": round(overbilled, 3),
            "open_calls": sum(1 for c in conversations.values() if c.ended_at is None),
            # Calls told `server_restart` (a graceful restart) must be recorded as such, with their usage.
            "restarts_misrecorded": sum(
                1
                for r in load.calls
                if r["ended"] == "server_restart"
                and getattr(conversations.get(r["visitor"]), "end_reason", "") != "server_restart"
            ),
            "leaked_slots": len(slots),
            "licence_usage_mismatch_seconds": round(abs(usage - calls_total), 3),
        }
        totals = {
            "lost_messages": chat["lost"],
            "duplicated_messages": chat["duplicated"],
            "lost_leads": leads["lost"],
            "duplicated_leads": leads["duplicated"],
            "unbilled_seconds": voice["unbilled_seconds"],
            "overbilled_seconds": voice["overbilled_seconds"],
            "open_calls": voice["open_calls"],
            "leaked_slots": voice["leaked_slots"],
            "restarts_misrecorded": voice["restarts_misrecorded"],
            "licence_usage_mismatch_seconds": voice["licence_usage_mismatch_seconds"],
        }
        return {"chat": chat, "leads": leads, "voice": voice, "totals": totals}

    def settled(self, load: Load, fake: FakeHTTP) -> dict[str, Any]:
        """Check until every lead is delivered, every call ended and every slot expired (bounded)."""
        deadline = time.time() + self.args.settle
        while True:
            report = self.check(load, fake)
            if not any(report["totals"].values()) or time.time() > deadline:
                return report
            time.sleep(2)

    def run(self) -> dict[str, Any]:
        fake = FakeHTTP()
        loop = asyncio.new_event_loop()
        realtime_server, realtime_url = loop.run_until_complete(fake_realtime())
        try:
            self.db.create()
            self.redis.start()
            self.env = self.prod_env(realtime_url)
            subprocess.run(
                [str(ROOT / ".venv/bin/python"), "manage.py", "migrate", "--noinput", "-v", "0"],
                cwd=ROOT,
                env=self.env,
                check=True,
                timeout=300,
            )
            self.django_setup()
            key, widget = self.seed(fake)
            log(
                f"database {self.db.name}, redis :{self.redis.port}, make prod on :{self.port} "
                f"({self.args.web} web processes)"
            )
            self.start_prod()
            log(f"healthy; load for {self.args.seconds} s")
            load = loop.run_until_complete(self.run_load(key, widget))
            log(f"load done; settling (at most {self.args.settle} s)")
            report = self.settled(load, fake)
            report["faults"] = self.faults
            report["config"] = {
                k: getattr(self.args, k)
                for k in ("seconds", "web", "calls", "chat_visitors", "lead_posters", "fault_gap")
            }
            return report
        finally:
            self.stop_prod()
            realtime_server.close()
            loop.run_until_complete(realtime_server.wait_closed())
            loop.close()
            fake.stop()
            self.redis.kill()
            with contextlib.suppress(Exception):
                from django.db import connections

                connections.close_all()
            self.db.drop()


def print_report(report: dict[str, Any]) -> None:
    print("\n== soak report")
    for section in ("chat", "leads", "voice"):
        print(f"{section:6} " + ", ".join(f"{k}={v}" for k, v in report[section].items()))
    print("faults " + ", ".join(f"{f['fault']}@{f['at']}s" for f in report["faults"]))
    print("\n== must all be 0")
    for key, value in report["totals"].items():
        print(f"  {key:32} {value}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Soak make prod under faults (loopback, bounded).")
    parser.add_argument("--short", action="store_true", help="CI mode: ~1 min of load, each fault once")
    parser.add_argument("--seconds", type=float, help="load duration (default 300, --short 70)")
    parser.add_argument(
        "--settle", type=float, help="max seconds to wait for reapers/redelivery (default 90, --short 100)"
    )
    parser.add_argument("--web", type=int, default=2, help="web processes")
    parser.add_argument("--calls", type=int, help="concurrent voice callers (default 6, --short 3)")
    parser.add_argument("--chat-visitors", type=int, help="concurrent chat visitors (default 8, --short 4)")
    parser.add_argument("--lead-posters", type=int, default=1)
    parser.add_argument("--json", help="write the report here")
    args = parser.parse_args(argv)
    short = args.short
    args.seconds = args.seconds or (70.0 if short else 300.0)
    args.settle = args.settle or (100.0 if short else 90.0)
    args.calls = args.calls or (3 if short else 6)
    args.chat_visitors = args.chat_visitors or (4 if short else 8)
    args.fault_gap = 10.0 if short else 15.0
    args.chat_pause, args.lead_pause = 1.0, 1.0
    args.call_min, args.call_max = (5.0, 9.0) if short else (8.0, 20.0)
    soak = Soak(args)
    report = soak.run()
    print_report(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    passed = not any(report["totals"].values())
    if passed:
        shutil.rmtree(soak.tmp, ignore_errors=True)
    else:
        print(f"\nlogs of make prod kept in {soak.tmp / 'prod.log'}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
