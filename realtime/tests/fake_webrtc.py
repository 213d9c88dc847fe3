"""A fake OpenAI Realtime API for browser WebRTC calls, on 127.0.0.1, built with aiortc.

It speaks the GA HTTP + WebRTC contract the widget uses:
- `POST /v1/realtime/client_secrets` (our server, platform/tenant key) → `{value, expires_at, session}`;
- `POST /v1/realtime/calls` (the browser, `Authorization: Bearer <ephemeral key>`, `Content-Type:
  application/sdp`, the SDP offer as body) → 201 with the SDP answer and `Location: /v1/realtime/calls/<id>`,
  CORS included (the browser posts from the customer's page);
- a real `RTCPeerConnection` on the other end: it receives the fake microphone's audio track (decoded Opus,
  its loudness measured), sends an audio track back (a tone while the assistant "speaks", silence otherwise)
  and talks GA events on the `oai-events` data channel the browser opened.

Script ("conversation"): once ~0.8 s of real speech arrived on the mic track, the visitor's turn runs
(speech_started/stopped, committed, input transcription delta + completed), then the first response calls
`search_products`; after the browser's `function_call_output` + `response.create` the assistant answers
(output_audio_buffer.started, transcript deltas + done, response.done with usage, output_audio_buffer.stopped
once the tone has played). Every event the browser sends is recorded in `received`.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import fractions
import json
import math
import time
from typing import Any

import aioice.ice
import av
import uvicorn
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

USAGE = {
    "total_tokens": 330,
    "input_tokens": 200,
    "output_tokens": 130,
    "input_token_details": {
        "text_tokens": 100,
        "audio_tokens": 100,
        "image_tokens": 0,
        "cached_tokens": 50,
        "cached_tokens_details": {"text_tokens": 50, "audio_tokens": 0, "image_tokens": 0},
    },
    "output_token_details": {"text_tokens": 30, "audio_tokens": 100},
}
RATE = 48000
FRAME = 960  # 20 ms at 48 kHz
SPEECH_SECONDS = 0.8  # loud mic audio needed before the visitor's turn "is heard"
ASSISTANT_SECONDS = 1.2  # how long the assistant's tone plays


def _tone_chunk() -> bytes:
    # 400 Hz: exactly 8 periods per 20 ms frame, so frames join without clicks.
    samples = array.array("h", (int(8000 * math.sin(2 * math.pi * 400 * i / RATE)) for i in range(FRAME)))
    return samples.tobytes()


TONE = _tone_chunk()
SILENCE = bytes(2 * FRAME)


class AssistantVoice(MediaStreamTrack):
    """The model's audio track: paced 20 ms frames, a tone while `speaking` is set, else silence."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.speaking = False
        self.loud_frames = 0
        self._pts = 0
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self._start is None:
            self._start = time.monotonic()
        else:
            wait = self._start + self._pts / RATE - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME)
        frame.planes[0].update(TONE if self.speaking else SILENCE)
        if self.speaking:
            self.loud_frames += 1
        frame.sample_rate = RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, RATE)
        self._pts += FRAME
        return frame


class FakeRealtimeWebRTC:
    def __init__(self) -> None:
        self.ephemeral_key = "ek_fake_webrtc_1"
        self.secret_requests: list[dict[str, Any]] = []
        self.call_requests: list[dict[str, Any]] = []
        self.received: list[dict[str, Any]] = []
        self.mic_seconds = 0.0  # decoded audio received on the mic track
        self.mic_loud_seconds = 0.0  # of which loud (peak > 1000): speech, not silence
        self.mic_peak = 0
        self.user_text = "Do you have phones under 500 dollars?"
        self.assistant_text = "We have two phones."
        self.tool_call = {"name": "search_products", "arguments": json.dumps({"query": "phone", "max_price": 500})}
        self.peers: list[RTCPeerConnection] = []
        self.voice: AssistantVoice | None = None
        self.channel: Any = None
        self.tasks: set[asyncio.Task] = set()
        self.server: uvicorn.Server | None = None
        self.port = 0
        self._turn_started = False
        self._answered = False
        self._host_addresses: Any = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.received if e.get("type") == kind]

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> FakeRealtimeWebRTC:
        # ICE on loopback only: the test needs no network interface (Chromium runs with
        # --allow-loopback-in-peer-connection); aioice leaves 127.0.0.1 out by default.
        self._host_addresses = aioice.ice.get_host_addresses
        aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]
        config = uvicorn.Config(
            self._asgi, host="127.0.0.1", port=0, lifespan="off", log_level="warning", interface="asgi3"
        )
        self.server = uvicorn.Server(config)
        self._spawn(self.server.serve())
        while not self.server.started:
            await asyncio.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        for pc in self.peers:
            with contextlib.suppress(Exception):
                await pc.close()
        if self.server is not None:
            self.server.should_exit = True
        for task in list(self.tasks):
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(task, timeout=5)
        if self._host_addresses is not None:
            aioice.ice.get_host_addresses = self._host_addresses

    def _spawn(self, coro: Any) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    # --- HTTP -----------------------------------------------------------------------------------

    async def _asgi(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        status, content_type, payload, extra = await self._route(scope["method"], scope["path"], headers, body)
        cors = [
            (b"access-control-allow-origin", headers.get("origin", "*").encode()),
            (b"access-control-allow-headers", b"authorization, content-type"),
            (b"access-control-allow-methods", b"POST, OPTIONS"),
            (b"access-control-expose-headers", b"location"),
        ]
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", content_type.encode()), *cors, *extra],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    async def _route(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, str, bytes, list[tuple[bytes, bytes]]]:
        if method == "OPTIONS":
            return 204, "text/plain", b"", []
        if method == "POST" and path == "/v1/realtime/client_secrets":
            self.secret_requests.append({"headers": headers, "body": json.loads(body)})
            session = json.loads(body)["session"]
            reply = {"value": self.ephemeral_key, "expires_at": int(time.time()) + 60, "session": session}
            return 200, "application/json", json.dumps(reply).encode(), []
        if method == "POST" and path == "/v1/realtime/calls":
            self.call_requests.append({"headers": headers, "body": body.decode()})
            if headers.get("authorization") != f"Bearer {self.ephemeral_key}":
                error = {"error": {"type": "invalid_request_error", "code": "invalid_api_key", "message": "Bad key."}}
                return 401, "application/json", json.dumps(error).encode(), []
            if headers.get("content-type", "").split(";")[0] != "application/sdp":
                error = {"error": {"type": "invalid_request_error", "message": "Send application/sdp."}}
                return 400, "application/json", json.dumps(error).encode(), []
            answer = await self._answer(body.decode())
            call_id = f"rtc_fake_{len(self.peers)}"
            return 201, "application/sdp", answer.encode(), [(b"location", f"/v1/realtime/calls/{call_id}".encode())]
        return 404, "application/json", b'{"error": {"message": "not found"}}', []

    # --- WebRTC ---------------------------------------------------------------------------------

    async def _answer(self, offer_sdp: str) -> str:
        pc = RTCPeerConnection()
        self.peers.append(pc)
        self.voice = AssistantVoice()

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "audio":
                self._spawn(self._listen(track))

        @pc.on("datachannel")
        def on_datachannel(channel: Any) -> None:
            if channel.label != "oai-events":
                return
            self.channel = channel
            channel.on("message", self._on_message)
            self._send({"type": "session.created", "session": {"id": "sess_webrtc_1", "type": "realtime"}})

        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        pc.addTrack(self.voice)  # joins the browser's audio transceiver: sendrecv
        await pc.setLocalDescription(await pc.createAnswer())
        return pc.localDescription.sdp

    async def _listen(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            pcm = array.array("h", bytes(frame.planes[0])[: frame.samples * 2 * len(frame.layout.channels)])
            peak = max((abs(s) for s in pcm), default=0)
            seconds = frame.samples / frame.sample_rate
            self.mic_seconds += seconds
            self.mic_peak = max(self.mic_peak, peak)
            if peak > 1000:
                self.mic_loud_seconds += seconds
            if self.mic_loud_seconds >= SPEECH_SECONDS and not self._turn_started and self.channel is not None:
                self._turn_started = True
                self._spawn(self._user_turn())

    def _send(self, event: dict[str, Any]) -> None:
        if self.channel is not None and self.channel.readyState == "open":
            self.channel.send(json.dumps(event))

    def _on_message(self, raw: str | bytes) -> None:
        event = json.loads(raw)
        self.received.append(event)
        if event.get("type") == "response.create" and self._turn_started and not self._answered:
            self._answered = True
            self._spawn(self._assistant_turn())

    async def _user_turn(self) -> None:
        send = self._send
        send({"type": "input_audio_buffer.speech_started", "item_id": "item_u1", "audio_start_ms": 0})
        send({"type": "input_audio_buffer.speech_stopped", "item_id": "item_u1", "audio_end_ms": 900})
        send({"type": "input_audio_buffer.committed", "item_id": "item_u1", "previous_item_id": None})
        send({"type": "conversation.item.added", "item": {"id": "item_u1", "type": "message", "role": "user"}})
        send(
            {
                "type": "conversation.item.input_audio_transcription.delta",
                "item_id": "item_u1",
                "content_index": 0,
                "delta": "Do you have phones",
            }
        )
        send(
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": "item_u1",
                "content_index": 0,
                "transcript": self.user_text,
            }
        )
        send({"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}})
        item = {"id": "item_fc1", "type": "function_call", "call_id": "call_1", **self.tool_call}
        send({"type": "response.output_item.added", "response_id": "resp_1", "output_index": 0, "item": item})
        send(
            {
                "type": "response.function_call_arguments.done",
                "response_id": "resp_1",
                "item_id": "item_fc1",
                "output_index": 0,
                "call_id": "call_1",
                **self.tool_call,
            }
        )
        send(
            {
                "type": "response.done",
                "response": {"id": "resp_1", "status": "completed", "output": [item], "usage": USAGE},
            }
        )

    async def _assistant_turn(self) -> None:
        send = self._send
        send({"type": "response.created", "response": {"id": "resp_2", "status": "in_progress"}})
        send({"type": "output_audio_buffer.started", "response_id": "resp_2"})
        assert self.voice is not None
        self.voice.speaking = True
        half = self.assistant_text.index(" ", len(self.assistant_text) // 2) + 1
        for delta in (self.assistant_text[:half], self.assistant_text[half:]):
            send({"type": "response.output_audio_transcript.delta", "item_id": "item_a1", "delta": delta})
        send({"type": "response.output_audio_transcript.done", "item_id": "item_a1", "transcript": self.assistant_text})
        send({"type": "response.done", "response": {"id": "resp_2", "status": "completed", "usage": USAGE}})
        await asyncio.sleep(ASSISTANT_SECONDS)  # the tone plays out on the track after response.done
        self.voice.speaking = False
        send({"type": "output_audio_buffer.stopped", "response_id": "resp_2"})
