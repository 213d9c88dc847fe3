"""WS /ws/realtime/<license_key>/?widget=<public_id>&visitor=<id> — the voice relay.

Every check runs in `connect()` before `accept()`:
- license + Origin (fail closed) — a failure REJECTS the handshake (close before accept, code
  4403/4404; browsers see 1006), so a foreign or broken site learns nothing more;
- a published widget with voice enabled, monthly voice minutes left, the license's concurrent
  voice sessions and this process's cap (settings.REALTIME_MAX_SESSIONS_PER_PROCESS) — a failure
  here accepts only to deliver ONE typed `error` event {code, message, fatal: true}, then closes
  with an application code (4403 voice_disabled, 4404 widget_not_found, 4429 quota_exceeded /
  too_many_sessions, 4503 server_busy), so the widget can tell the visitor why.
Then the RelaySession (realtime/relay.py) opens the upstream and pumps both ways.
"""

from __future__ import annotations

import json
import secrets
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from realtime import events
from realtime import services as svc
from realtime.relay import RelaySession
from realtime.session_config import session_config


def scope_header(scope: dict, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


class RealtimeRelayConsumer(AsyncWebsocketConsumer):
    relay: RelaySession | None = None

    async def connect(self) -> None:
        key = self.scope["url_route"]["kwargs"]["license_key"]
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        widget_id = (query.get("widget") or [""])[0][:40]
        visitor = (query.get("visitor") or [""])[0][:128]
        access = await database_sync_to_async(svc.voice_access)(
            key=key, widget_public_id=widget_id, origin=scope_header(self.scope, b"origin"))
        if access.code in svc.HANDSHAKE_REFUSALS:
            await self.close(code=access.close_code)
            return
        if not access.ok:
            await self._refuse(access)
            return
        relay = RelaySession(
            widget=access.widget, config=access.config, session=session_config(config=access.config,
                                                                                widget=access.widget),
            visitor_id=visitor, send_browser=self._send_text, close_browser=self._close,
        )
        if not relay.reserve():
            await self._refuse(svc.voice_refusal("server_busy"))
            return
        token = secrets.token_hex(8)
        slot = await database_sync_to_async(svc.voice_slot_acquire)(license=access.license, token=token)
        if slot is None:
            await relay.end("too_many_sessions", notify=False)
            await self._refuse(svc.voice_refusal("too_many_sessions"))
            return
        relay.slot_key, relay.slot_token = slot, token
        self.relay = relay
        await self.accept()
        await relay.start()

    async def _refuse(self, access: svc.VoiceAccess) -> None:
        await self.accept()
        await self.send(text_data=json.dumps(events.error(code=access.code, message=access.message, fatal=True)))
        await self.close(code=access.close_code)

    async def _send_text(self, text: str) -> None:
        await self.send(text_data=text)

    async def _close(self, code: int) -> None:
        await self.close(code=code)

    async def dispatch(self, message: dict) -> None:
        # Channels runs close_old_connections() in a worker thread before EVERY message; for audio frames
        # (50/s per call) that thread hop dominated the relay's CPU (py-spy, bench/README-relay.md). Frames
        # touch no database here; every ORM call goes through database_sync_to_async, which cleans up itself.
        if message["type"] == "websocket.receive":
            await self.websocket_receive(message)
            return
        await super().dispatch(message)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.relay is not None:
            await self.relay.from_browser(text_data if text_data is not None else bytes_data)

    async def disconnect(self, code: int) -> None:
        if self.relay is not None:
            await self.relay.end("hangup" if code in (1000, 1001) else "browser_gone", notify=False)
