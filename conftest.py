"""Shared fixtures: the three personas (owner and member of agency A, outsider from agency B)."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from rest_framework.test import APIClient

from licenses.models import Membership
from licenses.tests.factories import AgencyFactory, LicenseFactory, MembershipFactory, UserFactory
from widgets.services.widgets import widget_publish
from widgets.tests.factories import WidgetFactory


@pytest.fixture(autouse=True)
def _isolated_cache_and_eager_celery(settings):
    """Each test starts with an empty cache; Celery runs tasks in-process (no worker in tests)."""
    from django.core.cache import cache

    from chatkit.selectors import chatkit_server_cache
    from config.celery import app
    from widgets.chat import chat_cache

    cache.clear()
    chat_cache.clear()  # the public chat's per-process caches
    chatkit_server_cache.clear()  # the ChatKit server's
    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = True
    yield
    cache.clear()
    chat_cache.clear()
    chatkit_server_cache.clear()


@pytest.fixture
def artifacts_dir() -> str:
    path = os.environ.get("ARTIFACTS_DIR") or os.path.join(os.path.dirname(__file__), "artifacts")
    os.makedirs(path, exist_ok=True)
    return path


# --- browser ---------------------------------------------------------------------------------
# One Playwright driver per test session: its sync API runs an event loop in this thread, and a
# second driver in the same process fails. Tests that need extra Chromium flags (fake microphone)
# launch their own browser from `playwright_driver`.

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_path() -> str:
    """Debian's Chromium; skipped locally when missing, a failure when CI requires browsers."""
    path = CHROMIUM if os.path.exists(CHROMIUM) else (shutil.which("chromium") or "")
    reason = "" if path else f"Chromium not found at {CHROMIUM} (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        reason = "playwright is not installed"
    if reason:
        if os.environ.get("SWITCHBOARD_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{reason}; SWITCHBOARD_REQUIRE_BROWSER=1 makes browser tests mandatory.")
        pytest.skip(reason)
    return path


def pytest_collection_modifyitems(config, items):
    """Browser tests run last: the session's Playwright driver keeps an event loop running in this
    thread from its first use on, and asyncio tests (consumers, relay) cannot start theirs beside it.
    (`make test`'s xdist workers get their tests in this order too: `--dist load` hands them out by index.)"""
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)
    _refuse_dist_modes_that_drop_tests(config, items)


_DROPPED_BY_DIST = pytest.StashKey[str]()


def _refuse_dist_modes_that_drop_tests(config, items) -> None:
    """xdist's loadscope/loadfile/loadgroup queue tests by node id, so of the tests that share one (the API
    fuzzer's: one per operation, config/tests/test_api_fuzz.py) one runs and the rest vanish from the count
    without a word. Under those modes the one that runs fails, saying so; `--dist load` (make test) queues
    tests by index and runs them all."""
    dist = getattr(config, "workerinput", {}).get("dist", "no")  # a worker's own option says "no"
    if dist not in {"loadscope", "loadfile", "loadgroup"}:
        return
    counts = Counter(item.nodeid for item in items)
    for item in items:
        if counts[item.nodeid] > 1:
            item.stash[_DROPPED_BY_DIST] = (
                f"--dist {dist} runs one of the {counts[item.nodeid]} tests with this node id and drops the others "
                "unreported; run the suite with --dist load (make test does)."
            )


def pytest_runtest_setup(item):
    reason = item.stash.get(_DROPPED_BY_DIST, "")
    if reason:
        pytest.fail(reason, pytrace=False)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """xdist (controller side): tell each worker the --dist mode, for `_refuse_dist_modes_that_drop_tests`."""
    node.workerinput["dist"] = node.config.option.dist


@pytest.fixture(scope="session")
def playwright_driver():
    chromium_path()
    from playwright.sync_api import sync_playwright

    # The driver's event loop trips Django's async-safety check for the ORM calls the test body and
    # its fixtures make (the servers under test run in their own threads or processes).
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as driver:
            yield driver
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture(scope="session")
def chromium(playwright_driver):
    """One headless Chromium shared by every browser test."""
    browser = playwright_driver.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Expose each phase's report on the item, so `browser_contexts` can screenshot failures."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, "rep_" + report.when, report)


@pytest.fixture
def browser_contexts(chromium, artifacts_dir, request):
    """new_context(**kwargs) on the shared Chromium; every page is screenshotted into artifacts_dir
    when the test fails, and every context is closed afterwards."""
    contexts = []

    def new_context(**kwargs):
        context = chromium.new_context(**kwargs)
        contexts.append(context)
        return context

    yield new_context
    failed = getattr(request.node, "rep_call", None)
    for index, context in enumerate(contexts):
        if failed is not None and failed.failed:
            for page in context.pages:
                page.screenshot(path=os.path.join(artifacts_dir, f"FAILED-{request.node.name}-{index}.png"))
        context.close()


@pytest.fixture
def chatkit_stand_in(settings):
    """chatkit_stand_in(context): ChatKit's CDN script, in that browser context, is the stand-in element
    (chatkit/tests/chatkit_stand_in.js): it records setOptions in window.__chatkit and talks to our ChatKit
    server through options.api like the real one (the CDN is not reachable in tests)."""
    body = (Path(__file__).parent / "chatkit" / "tests" / "chatkit_stand_in.js").read_text()

    def install(context) -> None:
        context.route(
            settings.CHATKIT_JS_URL,
            lambda route: route.fulfill(status=200, content_type="application/javascript", body=body),
        )

    return install


@pytest.fixture(autouse=True)
def _fast_password_hasher(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def agency_a(db):
    return AgencyFactory(name="Agency A", slug="agency-a")


@pytest.fixture
def agency_b(db):
    return AgencyFactory(name="Agency B", slug="agency-b")


def _member(agency, username: str, role: str):
    user = UserFactory(username=username)
    MembershipFactory(user=user, agency=agency, role=role)
    return user


@pytest.fixture
def owner(agency_a):
    return _member(agency_a, "owner-a", Membership.Role.OWNER)


@pytest.fixture
def member(agency_a):
    """An editor of agency A."""
    return _member(agency_a, "member-a", Membership.Role.EDITOR)


@pytest.fixture
def viewer(agency_a):
    return _member(agency_a, "viewer-a", Membership.Role.VIEWER)


@pytest.fixture
def outsider(agency_b):
    return _member(agency_b, "outsider-b", Membership.Role.OWNER)


@pytest.fixture
def staff(db):
    return UserFactory(username="staff", is_staff=True, is_superuser=True)


@pytest.fixture
def license_a(agency_a):
    return LicenseFactory(agency=agency_a, client_name="Client A")


@pytest.fixture
def license_b(agency_b):
    return LicenseFactory(agency=agency_b, client_name="Client B")


@pytest.fixture
def widget_a(license_a, owner):
    """A published n8n widget of agency A."""
    widget = WidgetFactory(license=license_a, name="Widget A", created_by=owner)
    widget_publish(widget=widget, user=owner, membership=owner.memberships.get())
    widget.refresh_from_db()
    return widget


@pytest.fixture
def widget_b(license_b, outsider):
    widget = WidgetFactory(license=license_b, name="Widget B")
    widget_publish(widget=widget, user=outsider, membership=outsider.memberships.get())
    widget.refresh_from_db()
    return widget


@pytest.fixture
def api():
    """An API client factory: api(user) is signed in as user, api() is anonymous."""

    def make(user=None) -> APIClient:
        client = APIClient()
        if user is not None:
            client.force_authenticate(user)
        return client

    return make


@pytest.fixture
def frozen_minute(monkeypatch):
    """A fixed clock for the rate limiter's per-minute windows (widgets/ratelimit.py): a test that counts
    requests up to a limit must not straddle a minute boundary, which a slow machine makes likely."""
    import time

    now = (time.time() // 60) * 60 + 20
    monkeypatch.setattr("widgets.ratelimit.time.time", lambda: now)


# --- the fake-HTTP recorder --------------------------------------------------------------------
# One recorder for every outside HTTP service a test stands in for (OpenAI REST, CRM and alert
# webhooks). Tests take the `fake_http` fixture; the servers it starts stop at teardown.


class FakeHTTP:
    """A tiny threaded HTTP server recording requests; `responses` is a list of (status, json or raw bytes) served in
    order (the last one repeats). Used as the fake OpenAI REST API and as a fake CRM webhook."""

    def __init__(self, responses: list[tuple[int, Any]] | None = None, headers: list[tuple[str, str]] = ()) -> None:
        self.responses = responses or [(200, {})]
        self.headers = list(headers)  # added to every answer (e.g. a Set-Cookie)
        self.requests: list[dict[str, Any]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server API
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fake.requests.append(
                    {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body}
                )
                status, payload = fake.responses[min(len(fake.requests) - 1, len(fake.responses) - 1)]
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()  # bytes: as they are
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in fake.headers:
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_http():
    """`fake_http(responses)` starts a FakeHTTP on 127.0.0.1; every one started is stopped after the test."""
    started: list[FakeHTTP] = []

    def start(responses: list[tuple[int, Any]] | None = None, headers: list[tuple[str, str]] = ()) -> FakeHTTP:
        fake = FakeHTTP(responses, headers)
        started.append(fake)
        return fake

    yield start
    for fake in started:
        fake.stop()


# --- the live app and a customer's site (one of each for every browser test) -------------------------


class LiveServer(str):
    """The running ASGI app's base URL, `http://localhost:<port>` (a str; also `.url` and `.port`)."""

    port: int

    @property
    def url(self) -> str:
        return str(self)


@pytest.fixture
def asgi_live_server(transactional_db):
    """The real ASGI app (config.asgi: HTTP + WebSockets, as production serves it) under Uvicorn in a
    thread, at http://localhost:<port> — another site than `customer_site`'s 127.0.0.1, so a frame of
    ours on a customer page is cross-site as in production. Streams answer as they are produced (the
    WSGI live_server would buffer them)."""
    import socket
    import time

    import uvicorn
    from django.db import connections

    from config.asgi import application

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # The server's threads must not keep database connections open past the test (PostgreSQL would
    # refuse to drop the test database): close them at the end of every request.
    db_settings = connections.settings["default"]
    max_age = db_settings.get("CONN_MAX_AGE", 0)
    db_settings["CONN_MAX_AGE"] = 0
    server = uvicorn.Server(
        uvicorn.Config(application, host="127.0.0.1", port=port, log_level="warning", lifespan="off", ws="auto")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    live = LiveServer(f"http://localhost:{port}")
    live.port = port
    yield live
    server.should_exit = True
    thread.join(timeout=5)
    db_settings["CONN_MAX_AGE"] = max_age


class CustomerSite:
    """A customer's web site on http://127.0.0.1:<port>: `page(name, html)` writes a file into `dir` and
    returns its URL; `add(path, html)` serves HTML at any path. Any other file written into `dir` is
    served as it is (static files by extension)."""

    def __init__(self, directory: Path, port: int) -> None:
        self.dir = directory
        self.root = str(directory)
        self.port = port
        self.host = f"127.0.0.1:{port}"
        self.origin = f"http://{self.host}"
        self.pages: dict[str, bytes] = {}

    def page(self, name: str, html: str) -> str:
        (self.dir / name).write_text(html)
        return f"{self.origin}/{name}"

    def add(self, path: str, html: str) -> str:
        self.pages[path] = html.encode()
        return self.origin + path

    def url(self, path: str) -> str:
        return self.origin + path


@pytest.fixture
def customer_site(tmp_path):
    import functools
    from http.server import SimpleHTTPRequestHandler

    directory = tmp_path / "customer-site"
    directory.mkdir()
    pages: dict[str, bytes] = {}

    class Handler(SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            body = pages.get(self.path.split("?")[0])
            if body is None:
                return super().do_GET()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(directory)))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    site = CustomerSite(directory, server.server_address[1])
    site.pages = pages
    yield site
    server.shutdown()
    server.server_close()


# --- ASGI requests without a server ---------------------------------------------------------------


def http_scope(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    """An ASGI HTTP scope for `path` (its query string split off), as Uvicorn would pass it."""
    path, _, query = path.partition("?")
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }


async def asgi_request(
    app: Any, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes = b""
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """One HTTP request to an ASGI app without a server: its status, raw headers and whole body."""
    from asgiref.testing import ApplicationCommunicator

    communicator = ApplicationCommunicator(app, http_scope(method, path, headers))
    await communicator.send_input({"type": "http.request", "body": body, "more_body": False})
    start = await communicator.receive_output(10)
    content = b""
    while True:
        message = await communicator.receive_output(10)
        content += message.get("body", b"")
        if not message.get("more_body"):
            break
    await communicator.wait(10)
    return start["status"], start["headers"], content


def asgi_exchange(app: Any, *, path: str, body: bytes = b"", method: str = "POST", headers=None, host=b"testserver"):
    """`asgi_request` from sync test code: (status, sorted lower-case (name, value) headers, body); a POST
    gets its content-length."""
    from asgiref.sync import async_to_sync

    async def run():
        raw = [(b"host", host)] if host else []
        raw += [(k.lower().encode(), v.encode("latin1")) for k, v in (headers or {}).items()]
        if method == "POST" and "content-length" not in {k.lower() for k in (headers or {})}:
            raw.append((b"content-length", str(len(body)).encode()))
        status, answered, content = await asgi_request(app, method, path, raw, body)
        return status, sorted((k.decode().lower(), v.decode()) for k, v in answered), content

    return async_to_sync(run)()


@functools.cache
def counting_stack() -> type:
    """Django's full ASGI stack (config.middleware.ASGIHandler) counting the requests that reached its
    middleware chain in `.full`: what the short route (config/chat_route.py) handed over."""
    from config.middleware import ASGIHandler

    class Counting(ASGIHandler):
        full = 0

        async def get_response_async(self, request):
            type(self).full += 1
            return await super().get_response_async(request)

    return Counting


def full_and_short(**request: Any) -> tuple[Any, Any, int]:
    """The same request (`asgi_exchange`'s arguments) through the full stack and through the short route:
    (full, short, requests the short route handed to the full stack)."""
    from config.chat_route import ChatRoute

    counting = counting_stack()
    full = asgi_exchange(counting(), **request)
    counting.full = 0
    short = asgi_exchange(ChatRoute(counting()), **request)
    return full, short, counting.full


# --- local servers tests start of their own --------------------------------------------------------


def free_port() -> int:
    """A loopback TCP port nothing listens on (yet)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """A redis-server of the test's own on a free loopback port: `stop()` is an outage, `start()` the
    return (never the shared server: other processes use it)."""

    def __init__(self, password: str = "") -> None:
        self.port = free_port()
        self.password = password  # requirepass: clients AUTH first
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        from urllib.parse import quote

        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def client(self, db: int = 0, **options: Any) -> Any:
        import redis

        return redis.Redis(port=self.port, db=db, password=self.password or None, **options)

    def start(self) -> RedisServer:
        import redis

        options = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(
            ["redis-server", *options, *(["--requirepass", self.password] if self.password else [])],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client(socket_connect_timeout=0.5).ping()
                return self
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("redis-server did not start")
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def connections_received(self) -> int:
        return int(self.client().info("stats")["total_connections_received"])


@pytest.fixture
def redis_server() -> Any:
    """A redis-server of the test's own (`RedisServer`), stopped at the end."""
    from licenses.redis import redis_reset

    server = RedisServer().start()
    yield server
    server.stop()
    redis_reset()


@pytest.fixture
def redis_limiter(settings, redis_server) -> Any:
    """REDIS_URL and the cache on `redis_server`, as settings.py sets them up (the server is yielded: `.stop()`
    is an outage)."""
    from widgets.ratelimit import limiter

    settings.REDIS_URL = redis_server.url
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": redis_server.url,
            "OPTIONS": {"pool_class": "licenses.redis.SharedConnectionPool"},
        }
    }
    limiter._down_until = 0.0
    yield redis_server
    # Later teardowns (the root conftest clears the cache) must not reach the stopped server.
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    limiter._down_until = 0.0
