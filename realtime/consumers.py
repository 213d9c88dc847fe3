"""WS /ws/realtime/<license_key>/?widget=<public_id>&visitor=<id> — the voice relay.

Every check runs in `connect()` before `accept()`:
- license + Origin (fail closed) — a failure REJECTS the handshake (close before accept, code
  4403/4404; browsers see 1006), so a foreign or broken site learns nothing more;
- a published widget with voice enabled, monthly voice minutes left, the license's concurrent
  voice sessions and this process's cap (settings.REALTIME_MAX_SESSIONS_PER_PROCESS) — a failure
  here accepts only to deliver ONE typed `error` event {code, message, fatal: true}, then closes
  with an application code and the reason code as the close reason (4403 voice_disabled,
  4404 widget_not_found, 4429 quota_exceeded / too_many_sessions, 4503 server_busy).

Why these refusals accept first (issue 9, finding 10): a browser never sees why a WebSocket
handshake was refused — the WHATWG WebSocket API reports every refused handshake as close code
1006 with an empty reason and no HTTP status, by design (so sockets cannot probe other sites).
Only an accepted socket can carry a close code and reason to the page's script, and the widget
needs them to tell a visitor "voice is off for this widget" (permanent: do not retry) from "busy"
(retry shortly). The callers who get this far have already passed the license and Origin check —
it is the license's own site — and the answer for another license's widget id is byte-for-byte
the one for an id that does not exist. Nothing is opened before the refusal: no upstream socket,
no concurrency slot, no conversation, no relay task (realtime/tests/test_refusals.py proves it).

The relay uses no channel layer: it talks to no other process, and a Redis channel layer would
tie every live call to Redis' availability (issue 11, finding 3). Nor does it use Channels' receive
loop: `await_many_dispatch` makes a task and an `asyncio.wait` per message and `dispatch` a handler
lookup and a database clean-up hop; at 50 audio frames a second per call that was pure overhead, so
frames go straight from `receive()` to the relay (issue 14.4). Whatever way the consumer
exits — disconnect, an exception, cancellation by the server — the `finally` in `__call__` ends
the relay: upstream socket closed, slot released, conversation finalised with its usage.
Then the RelaySession (realtime/relay.py) opens the upstream and pumps both ways.

Who calls from which page (issue 15): with `&context=1` the socket's first frame is
`{"type": "session.context", "identity": "<identify's token>", "page_context": {page, title, referrer,
context}}`; the upstream opens only once the server has read it (realtime.services.voice_context_read: the
chat path's rules, a forged token refused) and the ONE session.update carries it. No such frame within
CONTEXT_WAIT_SECONDS, or a refused one: a fatal `error` and the socket closes (nothing opened upstream).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.sessions import InstanceSessionWrapper
from django.http import Http404

from licenses.api import ApiError
from licenses.hosts import host_agency_id_loaded, request_host_agency
from licenses.selectors import license_status_reason
from realtime import events, preview
from realtime import services as svc
from realtime.relay import RelaySession, relay_draining
from realtime.session_config import session_config
from widgets.models import Widget
from widgets.selectors import widget_get_for_user

logger = logging.getLogger(__name__)

CONTEXT_WAIT_SECONDS = 10.0
CONTEXT_MAX_BYTES = 32 * 1024


def scope_header(scope: dict, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _voice_access_on_host(*, host: str | None, **kwargs) -> svc.VoiceAccess:
    """svc.voice_access for a socket that came in on `host`: on an agency's own domain only that agency's
    licenses serve, as on the HTTP surface (config.hosts.CustomHostMiddleware)."""
    token = request_host_agency.set(host_agency_id_loaded(host))
    try:
        return svc.voice_access(**kwargs)
    finally:
        request_host_agency.reset(token)


class RealtimeRelayConsumer(AsyncWebsocketConsumer):
    relay: RelaySession | None = None
    awaiting_context: svc.VoiceAccess | None = None  # accepted; starts on the browser's session.context
    context_timer: asyncio.Task | None = None

    async def __call__(self, scope, receive, send) -> None:
        exit_reason = "server_error"
        try:
            await self._serve(scope, receive, send)
            exit_reason = "browser_gone"
        except asyncio.CancelledError:
            exit_reason = "server_restart"  # the server tore the connection down (shutdown, timeout)
            raise
        finally:
            # A no-op when disconnect() already ended it; otherwise the relay must not outlive the socket.
            if self.relay is not None and not self.relay.ended:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.relay.end(exit_reason, notify=False))

    async def _serve(self, scope, receive, send) -> None:
        """`AsyncConsumer.__call__` for a consumer with no channel layer (a Redis outage cannot drop a live
        call), reading the socket itself: audio frames go from `receive()` to the relay with no task, no
        handler lookup and no thread hop per frame (frames touch no database; every ORM call of the relay goes
        through database_sync_to_async, which cleans up itself). Connect and disconnect still go through
        `dispatch`."""
        self.scope = scope
        self.channel_layer = None
        self.base_send = send
        # Channels' session middleware wraps `send` only to save a changed session with an HTTP response; the
        # relay's frames go to the server's own send (a wrapper call and two lazy-object lookups less a frame).
        wrapper = getattr(send, "__self__", None)
        self.frame_send = wrapper.real_send if isinstance(wrapper, InstanceSessionWrapper) else send
        try:
            while True:
                message = await receive()
                if message["type"] == "websocket.receive":
                    if self.relay is not None:
                        text = message.get("text")
                        if self.awaiting_context is not None:
                            await self._start_with_context(text)
                        else:
                            await self.relay.from_browser(text if text is not None else message.get("bytes"))
                else:
                    await self.dispatch(message)
        except StopConsumer:
            pass

    async def connect(self) -> None:
        key = self.scope["url_route"]["kwargs"]["license_key"]
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        widget_id = (query.get("widget") or [""])[0][:40]
        visitor = (query.get("visitor") or [""])[0][:128]
        wants_context = (query.get("context") or [""])[0] == "1"
        try:
            access = await database_sync_to_async(_voice_access_on_host)(
                host=scope_header(self.scope, b"host"),
                key=key,
                widget_public_id=widget_id,
                origin=scope_header(self.scope, b"origin"),
            )
        except Exception:  # the database is unreachable: a clean "try again", not a 500 handshake
            logger.warning("realtime: access check failed", exc_info=True)
            await self._refuse(svc.voice_refusal("server_busy"))
            return
        if access.code in svc.HANDSHAKE_REFUSALS:
            await self.close(code=access.close_code)
            return
        if not access.ok:
            await self._refuse(access)
            return
        if relay_draining():
            await self._refuse(svc.voice_refusal("server_restart"))
            return
        relay = RelaySession(
            widget=access.widget,
            config=access.config,
            session=session_config(config=access.config, widget=access.widget),
            visitor_id=visitor,
            send_browser=self._send_text,
            close_browser=self._close,
        )
        if not relay.reserve():
            await self._refuse(svc.voice_refusal("server_busy"))
            return
        token = secrets.token_hex(8)
        try:
            slot = await database_sync_to_async(svc.voice_slot_acquire)(license=access.license, token=token)
        except Exception:  # Redis is unreachable: the cap cannot be enforced, so refuse cleanly
            logger.warning("realtime: slot acquire failed", exc_info=True)
            relay.unreserve()
            await self._refuse(svc.voice_refusal("server_busy"))
            return
        if slot is None:
            relay.unreserve()
            await self._refuse(svc.voice_refusal("too_many_sessions"))
            return
        relay.slot_keys, relay.slot_token = [slot], token
        self.relay = relay
        await self.accept()
        if wants_context:
            self.awaiting_context = access
            self.context_timer = asyncio.ensure_future(self._context_deadline())
            return
        await relay.start()

    async def _start_with_context(self, raw: str | None) -> None:
        """The call's first frame, `session.context`: read by the chat path's rules, then the relay starts
        with the session built from it (realtime.session_config, the ONE builder)."""
        access, self.awaiting_context = self.awaiting_context, None
        if self.context_timer is not None:
            self.context_timer.cancel()
        try:
            event = json.loads(raw) if isinstance(raw, str) and len(raw) <= CONTEXT_MAX_BYTES else None
        except ValueError:
            event = None
        if not isinstance(event, dict) or event.get("type") != "session.context":
            await self._refuse_context("bad_request", "A call with context=1 starts with a session.context event.")
            return
        try:
            context = svc.voice_context_read(
                license=access.license,
                config=access.config,
                identity_token=event.get("identity"),
                page_context=event.get("page_context"),
            )
        except ApiError as exc:
            await self._refuse_context(exc.code, exc.message, 4403 if exc.status_code == 403 else 4400)
            return
        self.relay.context = context
        self.relay.session = session_config(config=access.config, widget=access.widget, **context.session_kwargs())
        await self.relay.start()

    async def _context_deadline(self) -> None:
        await asyncio.sleep(CONTEXT_WAIT_SECONDS)
        if self.awaiting_context is not None:
            self.awaiting_context = None
            await self._refuse_context("bad_request", "The call did not send its session.context in time.")

    async def _refuse_context(self, code: str, message: str, close_code: int = 4400) -> None:
        """Nothing was opened upstream; the slot goes back and the browser hears why."""
        await self.relay.end(code, notify=False)
        with contextlib.suppress(Exception):
            await self.send(text_data=json.dumps(events.error(code=code, message=message, fatal=True)))
            await self.close(code=close_code, reason=code)

    async def _refuse(self, access: svc.VoiceAccess) -> None:
        await self.accept()
        await self.send(text_data=json.dumps(events.error(code=access.code, message=access.message, fatal=True)))
        await self.close(code=access.close_code, reason=access.code)

    async def _send_text(self, text: str) -> None:
        await self.frame_send({"type": "websocket.send", "text": text})

    async def _close(self, code: int, reason: str = "") -> None:
        await self.close(code=code, reason=reason or None)

    async def disconnect(self, code: int) -> None:
        self.awaiting_context = None
        if self.context_timer is not None:
            self.context_timer.cancel()
        if self.relay is not None:
            # 1012 is the server's own "service restart" close (a plain `uvicorn` shutting down; browsers
            # cannot send it); config.serve ends calls with session.ended before it gets that far.
            reason = "hangup" if code in (1000, 1001) else "server_restart" if code == 1012 else "browser_gone"
            await self.relay.end(reason, notify=False)


class RealtimePreviewConsumer(RealtimeRelayConsumer):
    """WS /ws/realtime/preview/<ticket>/ — the configurator's test call on the UNSAVED draft
    (realtime/preview.py). Checked before accept, failing closed: the Origin is our own host (the socket
    carries the member's session cookie), the session's user is signed in — else the handshake is refused
    (4403) and nothing more is said. Then the ticket: taken once, this user's, for a widget they are still a
    member of (else 4404 `invalid_ticket`, accepted only to say why), the license may serve, a preview slot
    of the member's and of the agency's. The relay runs on the ticket's draft, never billed."""

    async def connect(self) -> None:
        user = self.scope.get("user")
        origin, host = scope_header(self.scope, b"origin"), scope_header(self.scope, b"host")
        if user is None or not user.is_authenticated or not preview.same_origin(origin=origin, host=host):
            await self.close(code=4403)
            return
        ticket = self.scope["url_route"]["kwargs"]["ticket"]
        try:
            opened = await database_sync_to_async(_preview_open)(ticket=ticket, user=user)
        except Exception:
            logger.warning("realtime: preview access check failed", exc_info=True)
            await self._refuse(svc.voice_refusal("server_busy"))
            return
        if isinstance(opened, svc.VoiceAccess):
            await self._refuse(opened)
            return
        widget, config = opened
        if relay_draining():
            await self._refuse(svc.voice_refusal("server_restart"))
            return
        relay = RelaySession(
            widget=widget,
            config=config,
            session=session_config(config=config, widget=widget),
            visitor_id=f"preview:{user.pk}",
            send_browser=self._send_text,
            close_browser=self._close,
            preview=True,
        )
        if not relay.reserve():
            await self._refuse(svc.voice_refusal("server_busy"))
            return
        token = secrets.token_hex(8)
        try:
            keys, refusal = await database_sync_to_async(preview.voice_preview_slots_acquire)(
                user_id=user.pk, agency_id=widget.license.agency_id, token=token, ttl=svc.SLOT_TTL_SECONDS
            )
        except Exception:  # Redis is unreachable: the caps cannot be enforced, so refuse cleanly
            logger.warning("realtime: preview slot acquire failed", exc_info=True)
            relay.unreserve()
            await self._refuse(svc.voice_refusal("server_busy"))
            return
        if refusal:
            relay.unreserve()
            await self._refuse(_preview_refusal(refusal))
            return
        relay.slot_keys, relay.slot_token = keys, token
        self.relay = relay
        await self.accept()
        await relay.start()


def _preview_refusal(code: str) -> svc.VoiceAccess:
    return svc.VoiceAccess(code, preview.PREVIEW_MESSAGES[code], 404 if code == "invalid_ticket" else 429)


def _preview_open(*, ticket: str, user) -> tuple[Widget, dict] | svc.VoiceAccess:
    """The ticket's widget and draft for this user, or the refusal (sync: one trip to the database thread)."""
    taken = preview.voice_preview_ticket_take(ticket=ticket, user_id=user.pk)
    if taken is None:
        return _preview_refusal("invalid_ticket")
    try:
        widget, _membership = widget_get_for_user(user=user, public_id=taken.public_id)
    except Http404:  # no longer a member (removed since the ticket was minted)
        return _preview_refusal("invalid_ticket")
    reason = license_status_reason(license=widget.license)
    if reason != "ok":
        return svc.VoiceAccess("license_not_serving", preview.license_not_serving_message(reason), 409)
    return widget, taken.config
