"""The floor of any ChatKit server built on the SDKs issue 8 mandates: openai-chatkit's `ChatKitServer`
running an openai-agents agent, with NO Django, no database, no checks, as a bare ASGI app.

    uvicorn bench.chatkit_floor:app --port P     (env: OPENAI_BASE_URL, FLOOR_API_KEY, FLOOR_MODEL)

`bench/chatkit_server.py` serves it with the same Uvicorn settings as the production web process and
sends it the same ChatKit request it sends our endpoint. What it costs per conversation is what the two
SDKs cost; what our endpoint costs above it is ours (checks, store, transcript, usage, Django).

The store is a dict in memory; the agent has the same model settings as ours (store=False, usage,
tracing off, a per-request provider over one pooled HTTP client) and the same instructions length,
but no tools (the fake never calls one, so tools would only add their schemas to the request body).
"""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Any

import httpx2
from agents import Agent, ModelSettings, OpenAIProvider, RunConfig, Runner, set_tracing_disabled
from chatkit.agents import AgentContext, simple_to_agent_input, stream_agent_response
from chatkit.server import ChatKitServer, StreamingResult
from chatkit.store import NotFoundError, Store
from chatkit.types import Page, ThreadMetadata
from openai import AsyncOpenAI, DefaultAsyncHttpx2Client
from openai.types.shared import Reasoning

from bench.asgi_plain import body_read, lifespan

set_tracing_disabled(True)
INSTRUCTIONS = "Be brief.\n\n" + "Answer from the business's facts; never make up prices or stock. " * 12


class MemoryStore(Store[dict]):
    def __init__(self) -> None:
        self.threads: dict[str, ThreadMetadata] = {}
        self.items: dict[str, dict[str, Any]] = defaultdict(dict)

    async def load_thread(self, thread_id, context):
        if thread_id not in self.threads:
            raise NotFoundError(thread_id)
        return self.threads[thread_id]

    async def save_thread(self, thread, context):
        self.threads[thread.id] = thread

    async def load_thread_items(self, thread_id, after, limit, order, context):
        items = list(self.items[thread_id].values())
        if order == "desc":
            items.reverse()
        if after is not None:
            ids = [i.id for i in items]
            items = items[ids.index(after) + 1 :] if after in ids else []
        page = items[:limit]
        return Page(data=page, has_more=len(items) > limit, after=page[-1].id if page else None)

    async def add_thread_item(self, thread_id, item, context):
        self.items[thread_id][item.id] = item

    async def save_item(self, thread_id, item, context):
        self.items[thread_id][item.id] = item

    async def load_item(self, thread_id, item_id, context):
        return self.items[thread_id][item_id]

    async def load_threads(self, limit, after, order, context):
        threads = list(self.threads.values())[:limit]
        return Page(data=threads, has_more=False, after=None)

    async def delete_thread(self, thread_id, context):
        self.threads.pop(thread_id, None)
        self.items.pop(thread_id, None)

    async def delete_thread_item(self, thread_id, item_id, context):
        self.items[thread_id].pop(item_id, None)

    async def save_attachment(self, attachment, context):
        raise NotImplementedError

    async def load_attachment(self, attachment_id, context):
        raise NotImplementedError

    async def delete_attachment(self, attachment_id, context):
        raise NotImplementedError


class FloorServer(ChatKitServer[dict]):
    http = None

    async def respond(self, thread, input_user_message, context):
        if FloorServer.http is None:
            FloorServer.http = DefaultAsyncHttpx2Client(
                limits=httpx2.Limits(max_connections=200, max_keepalive_connections=50)
            )
        agent_ctx = AgentContext(thread=thread, store=self.store, request_context=context)
        history = await self.store.load_thread_items(thread.id, None, 20, "desc", context)
        client = AsyncOpenAI(
            api_key=os.environ["FLOOR_API_KEY"],
            base_url=os.environ["OPENAI_BASE_URL"],
            max_retries=0,
            http_client=FloorServer.http,
        )
        result = Runner.run_streamed(
            Agent(name="Bench", instructions=INSTRUCTIONS),
            await simple_to_agent_input(list(reversed(history.data))),
            context=agent_ctx,
            run_config=RunConfig(
                model=os.environ.get("FLOOR_MODEL", "gpt-5-mini"),
                model_provider=OpenAIProvider(openai_client=client),
                tracing_disabled=True,
                model_settings=ModelSettings(
                    store=False,
                    include_usage=True,
                    reasoning=Reasoning(effort="low"),
                    response_include=["reasoning.encrypted_content"],
                ),
            ),
            max_turns=8,
        )
        async for event in stream_agent_response(agent_ctx, result):
            yield event


SERVER = FloorServer(MemoryStore())


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await lifespan(receive, send)
    if scope["path"] == "/healthz":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    body = await body_read(receive)
    result = await SERVER.process(body, {})
    if isinstance(result, StreamingResult):
        headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-store")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        async for chunk in result:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    else:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": result.json})
