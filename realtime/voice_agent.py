"""The LiveKit voice agent (`python manage.py voice_agent`): livekit-agents + the OpenAI Realtime plugin.

A worker registers with LiveKit as `LIVEKIT_AGENT_NAME` (explicit dispatch: it joins only the rooms whose
participant token dispatches it, i.e. the rooms `POST /api/livekit/token` made). Per room (a job process):
1. `LiveKitCall.open` reads the dispatch metadata the server wrote and re-checks the call (realtime/livekit_call.py);
2. an `AgentSession` on `RealtimeModel(**realtime_model_options(session))` with an `Agent` whose
   instructions and tools are the session's, from the ONE builder `session_config`; each tool is a raw
   function tool that runs `widgets.tools.tool_run`;
3. the session's events become the relay's browser events (realtime/events.py), sent to the visitor on
   the text-stream topic `switchboard.voice`; turns, usage checkpoints, the heartbeat and the concurrency
   slot are kept as the relay keeps them; the call ends at the visitor's hang-up, max length or minutes.
Every decision is in realtime/livekit_call.py (tested directly); this module only wires the SDK.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterable
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from livekit import rtc
from livekit.agents import (
    Agent,
    AgentServer,
    AgentSession,
    JobContext,
    JobProcess,
    ModelSettings,
    RunContext,
    WorkerOptions,
    function_tool,
    room_io,
)
from livekit.agents.types import TimedString
from livekit.plugins.openai.realtime import RealtimeModel

from realtime import events
from realtime import services as svc
from realtime.livekit import EVENTS_TOPIC, event_payload
from realtime.livekit_call import (
    HEARTBEAT_SECONDS,
    SLOT_REFRESH_SECONDS,
    CallRefused,
    LiveKitCall,
    realtime_model_options,
)
from widgets.selectors import openai_api_key

logger = logging.getLogger(__name__)
TICK_SECONDS = 1.0


def prewarm(proc: JobProcess) -> None:
    """Job processes are started fresh (forkserver): set Django up once per process."""
    import django

    django.setup()


class Sender:
    """Sends our events to the visitor, one text stream each, in order."""

    def __init__(self, room: rtc.Room, identity: str) -> None:
        self.room, self.identity = room, identity
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.task = asyncio.create_task(self._run())

    def send(self, evts: list[dict[str, Any]]) -> None:
        for event in evts:
            self.queue.put_nowait(event)

    async def _run(self) -> None:
        while (event := await self.queue.get()) is not None:
            try:
                await self.room.local_participant.send_text(
                    event_payload(event), topic=EVENTS_TOPIC, destination_identities=[self.identity]
                )
            except Exception:  # the visitor left: nothing more to tell
                logger.info("voice_agent: event not delivered", exc_info=True)

    async def close(self) -> None:
        self.queue.put_nowait(None)
        await asyncio.wait_for(self.task, timeout=5)


class VoiceAgent(Agent):
    """The session's Agent; its spoken words are shown to the visitor live, as the relay shows them."""

    def __init__(self, *, call: LiveKitCall, sender: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._call, self._sender = call, sender

    async def transcription_node(
        self, text: AsyncIterable[str | TimedString], model_settings: ModelSettings
    ) -> AsyncGenerator[str | TimedString, None]:
        """The model's transcript deltas pass through unchanged (LiveKit's own text output is off); the
        words so far go to the browser as `transcript.partial` lines."""
        said = ""
        async for delta in text:
            said += str(delta)
            self._sender.send(self._call.assistant_transcript(said))
            yield delta


def build_agent(call: LiveKitCall, sender: Sender) -> Agent:
    """The Agent with the session's instructions and one raw function tool per enabled tool."""

    def make_tool(schema: dict[str, Any]) -> Any:
        name = schema["name"]

        async def run(raw_arguments: dict[str, object], context: RunContext) -> str:
            sender.send([events.tool_started(name=name)])
            output, evts = await database_sync_to_async(call.tool)(name, dict(raw_arguments))
            sender.send(evts)
            return output

        return function_tool(run, raw_schema=schema)

    return VoiceAgent(
        call=call,
        sender=sender,
        instructions=call.session["instructions"],
        tools=[make_tool(s) for s in call.tool_schemas()],
    )


def wire_session(session: AgentSession, call: LiveKitCall, sender: Any, finish: Any) -> set[asyncio.Task]:
    """Turn the session's events into the relay's browser events, turns and usage checkpoints.
    Returns the set holding the database tasks it starts (kept referenced until done)."""
    tasks: set[asyncio.Task] = set()

    def spawn(coro: Any) -> None:
        task = asyncio.create_task(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def save_turn(item: Any) -> None:
        sender.send(
            await database_sync_to_async(call.turn)(
                item.role, item.text_content or "", item_id=item.id, interrupted=item.interrupted
            )
        )

    async def checkpoint() -> None:
        try:
            await database_sync_to_async(call.checkpoint)()
        except Exception:  # a database blip costs no call: the next checkpoint carries everything
            logger.warning("voice_agent: usage checkpoint failed; the next one carries it", exc_info=True)

    def on_item(ev: Any) -> None:
        if getattr(ev.item, "type", "") == "message":
            spawn(save_turn(ev.item))

    def on_usage(ev: Any) -> None:
        if call.usage_totals([u.model_dump() for u in ev.usage.model_usage]):
            spawn(checkpoint())  # at every response with usage, as the relay

    session.on("user_state_changed", lambda ev: sender.send(call.user_state(ev.new_state)))
    session.on("agent_state_changed", lambda ev: sender.send(call.agent_state(ev.old_state, ev.new_state)))
    session.on(
        "user_input_transcribed",
        lambda ev: sender.send(call.user_transcript(ev.transcript, final=ev.is_final, item_id=ev.item_id or "")),
    )
    session.on("conversation_item_added", on_item)
    session.on("session_usage_updated", on_usage)
    session.on("close", lambda ev: finish("upstream_closed" if ev.error else "hangup"))
    return tasks


async def entrypoint(ctx: JobContext) -> None:
    try:
        call = await database_sync_to_async(LiveKitCall.open)(metadata_text=ctx.job.metadata, room=ctx.room.name)
    except CallRefused as exc:
        logger.warning("voice_agent: refused job %s in room %s: %s", ctx.job.id, ctx.room.name, exc.code)
        ctx.shutdown(reason=exc.code)
        return
    await ctx.connect()
    sender = Sender(ctx.room, call.metadata.visitor)
    api_key = openai_api_key(secrets=call.widget.secrets)
    if not api_key:  # as the relay: the visitor hears why, the call is recorded as ended
        reason = "upstream_not_configured"
        sender.send([events.error(code=reason, message=events.END_MESSAGES[reason], fatal=True)])
        sender.send(await database_sync_to_async(call.end)(reason))
        await sender.close()
        ctx.shutdown(reason=reason)
        return
    model = RealtimeModel(**realtime_model_options(call.session), api_key=api_key, base_url=settings.OPENAI_BASE_URL)
    model.update_options(max_response_output_tokens=call.session["max_output_tokens"])
    session: AgentSession = AgentSession(llm=model)
    done = asyncio.Event()
    end_reason = {"value": "hangup"}

    def finish(reason: str) -> None:
        if not done.is_set():
            end_reason["value"] = reason
            done.set()

    tasks = wire_session(session, call, sender, finish)
    ctx.room.on(
        "participant_disconnected",
        lambda p: finish("hangup") if p.identity == call.metadata.visitor else None,
    )

    await session.start(
        agent=build_agent(call, sender),
        room=ctx.room,
        room_options=room_io.RoomOptions(
            participant_identity=call.metadata.visitor,
            text_output=False,  # transcripts go out as our own events
            close_on_disconnect=True,
            delete_room_on_close=True,
        ),
    )
    sender.send(call.ready_events())

    async def limits() -> None:
        last_checkpoint = last_refresh = asyncio.get_running_loop().time()
        while not done.is_set():
            await asyncio.sleep(TICK_SECONDS)
            warnings, reason = call.tick()
            sender.send(warnings)
            if reason:
                finish(reason)
                return
            now = asyncio.get_running_loop().time()
            if now - last_checkpoint >= HEARTBEAT_SECONDS:
                last_checkpoint = now
                try:
                    await database_sync_to_async(call.checkpoint)()
                except Exception:  # the next checkpoint carries everything
                    logger.warning("voice_agent: usage checkpoint failed", exc_info=True)
            if now - last_refresh >= SLOT_REFRESH_SECONDS:
                last_refresh = now
                try:
                    await database_sync_to_async(svc.voice_slot_refresh)(
                        key=call.metadata.slot, token=call.metadata.slot_token
                    )
                except Exception:
                    logger.warning("voice_agent: slot refresh failed; the call goes on", exc_info=True)

    ticker = asyncio.create_task(limits())
    try:
        await done.wait()
    finally:
        ticker.cancel()
        if tasks:
            await asyncio.wait(set(tasks), timeout=5)
        sender.send(await database_sync_to_async(call.end)(end_reason["value"]))
        await sender.close()
        await session.aclose()
        ctx.shutdown(reason=end_reason["value"])


def server() -> AgentServer:
    """The worker: explicit dispatch under LIVEKIT_AGENT_NAME, credentials from settings."""
    return AgentServer.from_server_options(
        WorkerOptions(
            entrypoint_fnc=entrypoint,
            prewarm_fnc=prewarm,
            agent_name=settings.LIVEKIT_AGENT_NAME,
            ws_url=settings.LIVEKIT_URL,
            api_key=settings.LIVEKIT_API_KEY,
            api_secret=settings.LIVEKIT_API_SECRET,
            port=settings.LIVEKIT_AGENT_PORT,
            num_idle_processes=settings.LIVEKIT_AGENT_IDLE_PROCESSES,
        )
    )
