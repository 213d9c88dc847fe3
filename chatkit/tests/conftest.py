"""ChatKit fixtures: the fake OpenAI server, server-mode (and retired hosted-mode) ChatKit widgets,
and `ChatKitVisitor`, which calls our ChatKit server the way the iframe page does."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from django.test import Client

from chatkit.tests.factories import (  # noqa: F401 (the chatkit tests import these from here)
    HOSTED_CONFIG,
    PLATFORM_KEY,
    SERVER_CONFIG,
    TENANT_KEY,
    WORKFLOW_ID,
    make_chatkit_widget,
)
from chatkit.tests.fake_openai import FakeOpenAI

ALLOWED = "https://shop.example.com"


OWN_ORIGIN = "http://testserver"


@pytest.fixture(scope="session")
def _fake_openai_server() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI().start()
    yield fake
    fake.stop()


@pytest.fixture
def fake_openai(_fake_openai_server: FakeOpenAI, settings) -> FakeOpenAI:
    _fake_openai_server.reset()
    settings.OPENAI_BASE_URL = _fake_openai_server.base_url
    settings.OPENAI_API_KEY = PLATFORM_KEY
    return _fake_openai_server


@pytest.fixture
def hosted_widget(license_a, owner):
    """A published hosted-mode (retired) ChatKit widget of agency A with the tenant's own OpenAI key."""
    return make_chatkit_widget(license=license_a, user=owner)


@pytest.fixture
def chatkit_widget(license_a, owner):
    """A published server-mode ChatKit widget of agency A with the tenant's own OpenAI key, products
    and knowledge."""
    from widgets.models import KnowledgeEntry, Product

    widget = make_chatkit_widget(license=license_a, user=owner, config=SERVER_CONFIG)
    Product.objects.create(
        widget=widget,
        sku="P7",
        title="Pixel 7 phone",
        price="399.00",
        currency="USD",
        image_url="https://img.example.com/p7.png",
        url="https://shop.example.com/p7",
    )
    Product.objects.create(
        widget=widget,
        sku="IP12",
        title="iPhone 12 phone",
        price="449.00",
        currency="USD",
        url="https://shop.example.com/ip12",
        in_stock=False,
    )
    KnowledgeEntry.objects.create(widget=widget, question="Opening hours", answer="We open 9 to 5.", tags="hours")
    return widget


class ChatKitVisitor:
    """One visitor's browser on the ChatKit page: the page token (for `origin`) and a signed visitor id,
    sent to POST /api/chatkit/<key>/ from our own origin, as templates/chatkit/page.html does."""

    def __init__(self, widget, *, origin: str = ALLOWED, visitor_token: str | None = None):
        from chatkit.tokens import page_token_issue, visitor_token_issue

        self.widget = widget
        self.url = f"/api/chatkit/{widget.license.key}/"
        self.headers = {
            "Origin": OWN_ORIGIN,
            "X-Switchboard-Page-Token": page_token_issue(license=widget.license, widget=widget, origin=origin),
            "X-Switchboard-Visitor": visitor_token or visitor_token_issue(license=widget.license),
        }

    async def apost(self, body, **headers):
        from django.test import AsyncClient

        data = body if isinstance(body, str | bytes) else json.dumps(body)
        return await AsyncClient().post(
            self.url, data=data, content_type="application/json", headers={**self.headers, **headers}
        )

    async def acall(self, body, **headers):
        """(response, events): the SSE `data:` events decoded, or the JSON body as the one event."""
        response = await self.apost(body, **headers)
        if response.streaming:
            raw = b"".join([chunk async for chunk in response.streaming_content])
            events = [json.loads(line[6:]) for line in raw.split(b"\n\n") if line.startswith(b"data: ")]
            return response, events
        return response, [json.loads(response.content)] if response.content else []

    def call(self, body, **headers):
        from asgiref.sync import async_to_sync

        return async_to_sync(self.acall)(body, **headers)

    def send(self, text: str, thread_id: str | None = None):
        """A user message: a new thread, or one more turn of `thread_id`."""
        content = {
            "input": {"content": [{"type": "input_text", "text": text}], "attachments": [], "inference_options": {}}
        }
        if thread_id is None:
            return self.call({"type": "threads.create", "params": content})
        return self.call({"type": "threads.add_user_message", "params": {"thread_id": thread_id, **content}})


def thread_id_of(events) -> str:
    return next(e["thread"]["id"] for e in events if e["type"] == "thread.created")


@pytest.fixture
def visitor(chatkit_widget, fake_openai):
    return ChatKitVisitor(chatkit_widget)


@pytest.fixture
def post_session():
    """post_session(body, origin=ALLOWED) → response of POST /api/chatkit/sessions."""

    def post(body: dict, origin: str | None = ALLOWED, **headers):
        client = Client()
        if origin is not None:
            headers["HTTP_ORIGIN"] = origin
        return client.post("/api/chatkit/sessions", data=json.dumps(body), content_type="application/json", **headers)

    return post


# --- browser helpers -------------------------------------------------------------------------------


@pytest.hookimpl(hookwrapper=True)
def pytest_pyfunc_call(pyfuncitem):
    """While Playwright's sync API runs its event loop, Django keeps the test body's DB connection
    in a context-local slot that fixture teardown never sees: close it here, in the test's own
    context, or PostgreSQL refuses to drop the test database at the end of the run."""
    yield
    if pyfuncitem.get_closest_marker("browser"):
        from django.db import connections

        connections.close_all()
