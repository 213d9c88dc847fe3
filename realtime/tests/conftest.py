from __future__ import annotations

import asyncio
import base64
import json
from decimal import Decimal
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.core.cache import cache
from django.test import Client

from conftest import RedisServer
from realtime.tests.fakes import FakeRealtime
from widgets.config_schema import config_normalize
from widgets.models import Widget
from widgets.tests.factories import KnowledgeEntryFactory, ProductFactory, WidgetFactory, publish

ORIGIN = "https://shop.example.com"
FRAME = base64.b64encode(b"\x00\x00" * 480).decode()  # 20 ms of PCM16 24 kHz silence (960 bytes)

VOICE_CONFIG = {
    "voice": {
        "enabled": True,
        "instructions": "You are Ava, the voice of Phone Shop.",
        "business_facts": "Open 9-5 Monday to Friday.",
        "voice": "coral",
        "tools": {
            "search_knowledge": True,
            "search_products": True,
            "start_trade_in": True,
            "get_demo_clip": True,
            "create_meeting_link": True,
            "log_lead": True,
        },
    },
    "tools": {
        "booking_url": "https://cal.example.com/shop",
        "trade_in_devices": ["iPhone 12", "Pixel 7"],
        "demo_clips": [{"topic": "camera", "title": "Night camera", "url": "https://video.example.com/cam"}],
    },
}


@pytest.fixture
def voice_widget(license_a, owner):
    widget = WidgetFactory(license=license_a, name="Voice A", created_by=owner, config=config_normalize(VOICE_CONFIG))
    widget = publish(widget, owner)
    ProductFactory(widget=widget, title="Phone X", price=Decimal("449.00"))
    ProductFactory(widget=widget, title="Phone Ultra", price=Decimal("999.00"))
    KnowledgeEntryFactory(
        widget=widget, question="What is your returns policy?", answer="You can return any phone within 30 days."
    )
    return Widget.objects.select_related("license", "published_version").get(pk=widget.pk)


@pytest.fixture
def make_voice_widget():
    """make_voice_widget(license=, user=, name=): another published voice widget (VOICE_CONFIG) by `user`."""

    def make(*, license, user, name: str) -> Widget:
        widget = WidgetFactory(license=license, name=name, created_by=user, config=config_normalize(VOICE_CONFIG))
        return publish(widget, user)

    return make


@pytest.fixture
async def fake_realtime(settings):
    fake = await FakeRealtime().start()
    settings.OPENAI_REALTIME_URL = fake.url
    settings.OPENAI_API_KEY = "sk-platform-test"
    yield fake
    await fake.stop()


def ws_path(widget, *, key: str | None = None) -> str:
    return f"/ws/realtime/{key or widget.license.key}/?widget={widget.public_id}&visitor=visitor-1"


def communicator(widget, *, origin: str | None = ORIGIN, key: str | None = None) -> WebsocketCommunicator:
    from config.asgi import application

    headers = [(b"host", b"testserver")]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    return WebsocketCommunicator(application, ws_path(widget, key=key), headers=headers)


async def receive_until(comm: WebsocketCommunicator, kind: str, *, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Collect browser events up to and including the first of `kind`."""
    seen: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        left = deadline - loop.time()
        if left <= 0:
            raise AssertionError(f"no {kind} in {[e.get('type') for e in seen]}")
        output = await comm.receive_output(timeout=left)
        if output["type"] == "websocket.close":
            seen.append({"type": "<close>", "code": output.get("code")})
            if kind == "<close>":
                return seen
            raise AssertionError(f"closed ({output.get('code')}) before {kind}: {seen}")
        event = json.loads(output["text"])
        seen.append(event)
        if event["type"] == kind:
            return seen


async def wait_for(predicate, timeout: float = 10.0) -> None:
    """Wait for a condition; the timeout is a bound for a loaded CI machine, not an expected time."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


@pytest.fixture
def fake_openai_http(settings, fake_http):
    fake = fake_http([(200, {"value": "ek_test_123", "expires_at": 1893456000, "session": {"id": "sess_x"}})])
    settings.OPENAI_BASE_URL = fake.url + "/v1"
    settings.OPENAI_API_KEY = "sk-platform-test"
    return fake


@pytest.fixture(autouse=True)
def _close_async_db_connections():
    """database_sync_to_async keeps a connection open in asgiref's one sync thread; close it so the test
    database can be dropped at the end (PostgreSQL refuses while a session is open)."""
    yield
    from asgiref.sync import SyncToAsync
    from django.db import connections

    SyncToAsync.single_thread_executor.submit(connections.close_all).result(timeout=10)


# --- live servers for the browser test ---------------------------------------------------------


class LoopThread:
    """An asyncio loop in a background thread, for servers a sync (Playwright) test needs."""

    def __init__(self) -> None:
        import threading

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 10):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def fake_realtime_thread(settings):
    """The fake Realtime server on its own loop thread (for sync tests driving a browser)."""
    runner = LoopThread()
    fake = runner.run(FakeRealtime().start())
    settings.OPENAI_REALTIME_URL = fake.url
    settings.OPENAI_API_KEY = "sk-platform-test"
    yield fake
    runner.run(fake.stop())
    runner.stop()


# --- a Redis server of the test's own (fault tests stop and restart it; never the shared one) ----


@pytest.fixture
def own_redis(settings):
    """Cache (voice slots) and channel layer on a redis-server of this test's own."""
    server = RedisServer().start()
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": server.url,
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [server.url]}}
    }
    yield server
    # Later teardowns (the root conftest clears the cache) must not reach the stopped server.
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    server.stop()


# --- LiveKit ----------------------------------------------------------------------------------

KEY, SECRET = "APIlivekittest", "livekit-test-secret-0123456789abcdef"
SERVER_URL = "wss://livekit.example.test"


@pytest.fixture
def livekit_settings(settings):
    settings.LIVEKIT_URL = SERVER_URL
    settings.LIVEKIT_API_KEY = KEY
    settings.LIVEKIT_API_SECRET = SECRET
    settings.LIVEKIT_AGENT_NAME = "switchboard-voice"
    cache.clear()
    yield settings
    cache.clear()


@pytest.fixture
def livekit_widget(voice_widget, owner, livekit_settings):
    voice_widget.config = config_normalize({"voice": {"transport": "livekit"}}, base=voice_widget.config)
    voice_widget.save()
    publish(voice_widget, owner)
    return Widget.objects.select_related("license", "published_version").get(pk=voice_widget.pk)


def post_token(widget, *, origin=ORIGIN, key=None, **extra):
    body = {"license": key or widget.license.key, "widget": widget.public_id, "visitor_id": "visitor-1", **extra}
    headers = {"HTTP_ORIGIN": origin} if origin else {}
    return Client().post("/api/livekit/token", json.dumps(body), content_type="application/json", **headers)
