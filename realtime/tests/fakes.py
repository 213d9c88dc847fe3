"""A fake OpenAI Realtime server (real WebSocket on 127.0.0.1) speaking GA or beta event names.

Scenarios:
- "conversation": the first audio append starts a scripted turn: speech_started → transcription →
  a function call (search_products) → waits for our function_call_output + response.create →
  audio + transcript deltas → response.done with usage.
- "echo": every input_audio_buffer.append comes straight back as one audio delta (benchmark).
- "close": closes the socket right after session.update.
- "idle": records what it receives, says nothing.
`reject_status` (401/429/500) refuses the handshake instead.
"""

from __future__ import annotations

import asyncio
import base64
import json
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import ServerConnection, serve

GA = {
    "audio_delta": "response.output_audio.delta",
    "transcript_delta": "response.output_audio_transcript.delta",
    "transcript_done": "response.output_audio_transcript.done",
    "item_added": "conversation.item.added",
}
BETA = {
    "audio_delta": "response.audio.delta",
    "transcript_delta": "response.audio_transcript.delta",
    "transcript_done": "response.audio_transcript.done",
    "item_added": "conversation.item.created",
}
USAGE = {
    "total_tokens": 330,
    "input_tokens": 200,
    "output_tokens": 130,
    "input_token_details": {
        "text_tokens": 100,
        "audio_tokens": 100,
        "cached_tokens": 50,
        "cached_tokens_details": {"text_tokens": 50, "audio_tokens": 0},
    },
    "output_token_details": {"text_tokens": 30, "audio_tokens": 100},
}
ASSISTANT_AUDIO = base64.b64encode(b"\x01\x00" * 2400).decode()  # 0.1 s of PCM16 24 kHz


class FakeRealtime:
    def __init__(self) -> None:
        self.scenario = "conversation"
        self.names = GA
        self.reject_status: int | None = None
        self.reject_body = ""
        self.received: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.paths: list[str] = []
        self.connections: list[ServerConnection] = []
        self.closed = asyncio.Event()
        self.user_text = "Do you have phones under 500 dollars?"
        self.tool_call = {"name": "search_products", "arguments": json.dumps({"query": "phone", "max_price": 500})}
        self.server: Any = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/realtime"

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.received if e.get("type") == kind]

    async def start(self) -> FakeRealtime:
        self.server = await serve(
            self._handler, "127.0.0.1", 0, process_request=self._process_request, compression=None, max_size=2**23
        )
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()

    def _process_request(self, connection: ServerConnection, request: Any) -> Any:
        self.headers.append({k.lower(): v for k, v in request.headers.raw_items()})
        self.paths.append(request.path)
        if self.reject_status:
            return connection.respond(HTTPStatus(self.reject_status), self.reject_body or "refused\n")
        return None

    async def send(self, ws: ServerConnection, event: dict[str, Any]) -> None:
        await ws.send(json.dumps(event))

    async def _handler(self, ws: ServerConnection) -> None:
        self.connections.append(ws)
        turn_started = False
        try:
            await self.send(ws, {"type": "session.created", "session": {"id": "sess_1", "instructions": "SECRET"}})
            async for raw in ws:
                event = json.loads(raw)
                self.received.append(event)
                kind = event.get("type")
                if kind == "session.update":
                    await self.send(ws, {"type": "session.updated", "session": event["session"]})
                    if self.scenario == "close":
                        await ws.close(1011, "bye")
                        return
                elif self.scenario == "echo" and kind == "input_audio_buffer.append":
                    await ws.send('{"type":"' + self.names["audio_delta"] + '","delta":"' + event["audio"] + '"}')
                elif self.scenario == "conversation":
                    if kind == "input_audio_buffer.append" and not turn_started:
                        turn_started = True
                        await self._user_turn(ws)
                    elif kind == "response.create":
                        await self._assistant_turn(ws)
        finally:
            self.closed.set()

    async def _user_turn(self, ws: ServerConnection) -> None:
        n = self.names
        await self.send(ws, {"type": "input_audio_buffer.speech_started", "item_id": "item_u1", "audio_start_ms": 0})
        await self.send(ws, {"type": "input_audio_buffer.speech_stopped", "item_id": "item_u1"})
        await self.send(ws, {"type": n["item_added"], "item": {"id": "item_u1", "type": "message", "role": "user"}})
        await self.send(
            ws,
            {
                "type": "conversation.item.input_audio_transcription.delta",
                "item_id": "item_u1",
                "delta": "Do you have phones",
            },
        )
        await self.send(
            ws,
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": "item_u1",
                "transcript": self.user_text,
            },
        )
        await self.send(ws, {"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}})
        await self.send(
            ws,
            {
                "type": "response.function_call_arguments.done",
                "response_id": "resp_1",
                "item_id": "item_fc1",
                "call_id": "call_1",
                **self.tool_call,
            },
        )
        await self.send(
            ws, {"type": "response.done", "response": {"id": "resp_1", "status": "completed", "usage": USAGE}}
        )

    async def _assistant_turn(self, ws: ServerConnection) -> None:
        n = self.names
        await self.send(ws, {"type": "response.created", "response": {"id": "resp_2", "status": "in_progress"}})
        await self.send(ws, {"type": n["audio_delta"], "item_id": "item_a1", "delta": ASSISTANT_AUDIO})
        await self.send(ws, {"type": n["transcript_delta"], "item_id": "item_a1", "delta": "We have "})
        await self.send(ws, {"type": n["transcript_delta"], "item_id": "item_a1", "delta": "two phones."})
        await self.send(ws, {"type": n["transcript_done"], "item_id": "item_a1", "transcript": "We have two phones."})
        await self.send(
            ws, {"type": "response.done", "response": {"id": "resp_2", "status": "completed", "usage": USAGE}}
        )

    async def barge_in(self) -> None:
        for ws in self.connections:
            await self.send(ws, {"type": "input_audio_buffer.speech_started", "item_id": "item_u2"})
