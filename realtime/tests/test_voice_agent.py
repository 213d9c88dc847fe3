"""The voice agent's wiring under livekit-agents' own test helpers (AgentSession.run + RunResult.expect),
with a scripted model in place of OpenAI: the raw function tools built from the one session run our
tools, the browser gets the relay's events, and the turns land in the database."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from livekit import api
from livekit.agents import AgentSession, llm
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS

from realtime.livekit_call import LiveKitCall
from realtime.tests.conftest import KEY, SECRET, post_token
from realtime.voice_agent import build_agent, wire_session
from widgets import ui_events
from widgets.models import Conversation, Message, Product

pytestmark = [pytest.mark.django_db(transaction=True)]


class ScriptedLLM(llm.LLM):
    """A model that calls `search_products` for the first user turn, then answers from the tool output."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[dict[str, Any]] = []

    @property
    def model(self) -> str:
        return "scripted"

    def chat(self, *, chat_ctx: llm.ChatContext, tools: list | None = None, **kwargs: Any) -> llm.LLMStream:
        self.requests.append({"tools": sorted(t.info.name for t in tools or []), "items": list(chat_ctx.items)})
        return ScriptedStream(self, chat_ctx=chat_ctx, tools=tools or [], conn_options=DEFAULT_API_CONNECT_OPTIONS)


class ScriptedStream(llm.LLMStream):
    async def _run(self) -> None:
        outputs = [i for i in self._chat_ctx.items if i.type == "function_call_output"]
        if not outputs:
            delta = llm.ChoiceDelta(
                role="assistant",
                tool_calls=[
                    llm.FunctionToolCall(
                        name="search_products", arguments='{"query": "phone", "max_price": 500}', call_id="call_1"
                    )
                ],
            )
            self._event_ch.send_nowait(llm.ChatChunk(id="chunk", delta=delta))
        else:  # the answer streams in three pieces, as a model's transcript deltas do
            said = json.loads(outputs[-1].output)["say"]
            for piece in (said[:10], said[10:30], said[30:]):
                self._event_ch.send_nowait(
                    llm.ChatChunk(id="chunk", delta=llm.ChoiceDelta(role="assistant", content=piece))
                )
        usage = llm.CompletionUsage(prompt_tokens=100, completion_tokens=20, total_tokens=120)
        self._event_ch.send_nowait(llm.ChatChunk(id="chunk", usage=usage))


class Recorder:
    """Stands in for the text-stream sender: what the visitor's browser would receive."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def send(self, evts: list[dict[str, Any]]) -> None:
        self.events.extend(evts)


def open_call(widget) -> LiveKitCall:
    claims = api.TokenVerifier(KEY, SECRET).verify(post_token(widget).json()["participant_token"])
    return LiveKitCall.open(metadata_text=claims.room_config.agents[0].metadata, room=claims.room_config.name)


async def test_tool_call_turns_and_events_under_the_sdk(livekit_widget):
    call = await sync_to_async(open_call)(livekit_widget)
    browser = Recorder()
    model = ScriptedLLM()
    ended: list[str] = []
    async with AgentSession(llm=model) as session:
        tasks = wire_session(session, call, browser, ended.append)
        await session.start(build_agent(call, browser))
        result = await session.run(user_input="Do you have phones under 500 dollars?")
        await result
        result.expect.next_event().is_function_call(
            name="search_products", arguments={"query": "phone", "max_price": 500}
        )
        output = result.expect.next_event().is_function_call_output().event().item
        assert json.loads(output.output)["products"] == [{"title": "Phone X", "price": "449.00", "in_stock": True}]
        result.expect.next_event().is_message(role="assistant")
        result.expect.no_more_events()
        if tasks:
            await asyncio.wait(set(tasks), timeout=5)

    # The model saw exactly the session's tools (from the one session-config function).
    assert model.requests[0]["tools"] == sorted(t["name"] for t in call.session["tools"])
    phone_x = await Product.objects.aget(widget=livekit_widget, title="Phone X")
    said = "I found 1 option: Phone X (USD 449.00). They're on your screen now."
    sent = [e for e in browser.events if e["type"] in ("tool.started", "ui.event", "transcript.final")]
    assert [e for e in sent if e["type"] != "transcript.final"] == [
        {"type": "tool.started", "name": "search_products"},
        {"type": "ui.event", "event": ui_events.product_cards([phone_x])},
    ]
    finals = [(e["role"], e["text"]) for e in sent if e["type"] == "transcript.final"]
    assert finals == [("user", "Do you have phones under 500 dollars?"), ("assistant", said)]
    # The answer was shown live while it was generated (the relay's live line), then as the one final bubble.
    lines = [e["text"] for e in browser.events if e["type"] == "transcript.partial" and e["role"] == "assistant"]
    assert lines == [said[:10], said[:30], said]
    order = [e["type"] for e in browser.events if e.get("role") == "assistant"]
    assert order == ["transcript.partial"] * 3 + ["transcript.final"]
    rows = [(m.role, m.text) async for m in Message.objects.filter(conversation_id=call.conversation_id).order_by("id")]
    assert sorted(rows) == sorted(
        [("user", "Do you have phones under 500 dollars?"), ("tool", said), ("assistant", said)]
    )
    # Usage: the SDK's running totals (two requests) checkpointed on the conversation, as the relay does.
    conversation = await Conversation.objects.aget(pk=call.conversation_id)
    assert conversation.usage["input_tokens"] == 200 and conversation.usage["output_tokens"] == 40
    assert conversation.heartbeat_at is not None and conversation.ended_at is None
    assert ended == ["hangup"]  # the session closed: the call ends as a hang-up


def test_command_needs_the_livekit_settings(settings):
    from django.core.management import CommandError, call_command

    settings.LIVEKIT_URL = ""
    with pytest.raises(CommandError) as refused:
        call_command("voice_agent")
    assert str(refused.value) == "Set LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET to run the voice agent."


class FakeLiveKitAgentEndpoint:
    """LiveKit's worker endpoint (`/agent`, protobuf over WebSocket) on 127.0.0.1: it checks the worker's
    token, answers its registration as a LiveKit server does and records what the worker said."""

    def __init__(self) -> None:
        self.auth: list[str] = []
        self.messages: list[Any] = []
        self.registered = asyncio.Event()

    async def handler(self, connection: Any) -> None:
        from livekit.protocol import agent

        self.auth.append(connection.request.path + " " + connection.request.headers.get("Authorization", ""))
        async for raw in connection:
            message = agent.WorkerMessage()
            message.ParseFromString(raw)
            self.messages.append(message)
            if message.HasField("register"):
                reply = agent.ServerMessage()
                reply.register.worker_id = "AW_fake"
                reply.register.server_info.version = "fake"
                await connection.send(reply.SerializeToString())
                self.registered.set()


async def test_worker_registers_with_livekit_under_our_agent_name(tmp_path):
    """`python manage.py voice_agent start` against a fake LiveKit: the worker authenticates with an agent
    token signed by our key and registers for explicit dispatch as LIVEKIT_AGENT_NAME."""
    import os
    import signal
    import sys

    import websockets
    from django.conf import settings

    fake = FakeLiveKitAgentEndpoint()
    server = await websockets.serve(fake.handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    env = {
        **os.environ,
        "DEBUG": "1",
        "LIVEKIT_URL": f"ws://127.0.0.1:{port}",
        "LIVEKIT_API_KEY": KEY,
        "LIVEKIT_API_SECRET": SECRET,
        "LIVEKIT_AGENT_NAME": "switchboard-voice-test",
        "LIVEKIT_AGENT_PORT": "0",
        "LIVEKIT_AGENT_IDLE_PROCESSES": "0",
    }
    log = (tmp_path / "agent.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "manage.py",
        "voice_agent",
        "start",
        cwd=settings.BASE_DIR,
        env=env,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    try:
        await asyncio.wait_for(fake.registered.wait(), timeout=60)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout=30)
        except TimeoutError:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
        server.close()
        log.close()
    path, _, bearer = fake.auth[0].partition(" Bearer ")
    assert path == "/agent"
    claims = api.TokenVerifier(KEY, SECRET).verify(bearer)
    assert claims.video.agent is True and claims.video.room_join is None
    register = fake.messages[0].register
    assert register.agent_name == "switchboard-voice-test"
    assert register.type == 0  # JT_ROOM: one job per room
    assert register.allowed_permissions.agent is True
