"""The configurator's preview chat: the DRAFT config's n8n webhook, through widgets/n8n.py.

Not the public proxy: no license/Origin check (callers are agency members or a share link), no
conversation recorded and nothing counted as usage.
"""

from __future__ import annotations

from typing import Any

from config.api import error_body
from widgets.aio import upstream_run
from widgets.models import Widget
from widgets.n8n import N8nError, N8nStream, n8n_history, n8n_send, n8n_target

MAX_INPUT = 4000


async def _collect(stream: N8nStream) -> list[dict[str, Any]]:
    await stream.open()
    return [event async for batch in stream.batches() for event in batch]


def preview_chat_reply(*, widget: Widget, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Answer one preview chat request `{action, sessionId, chatInput}` as the public /chat would."""
    config = widget.config
    action = body.get("action") or "sendMessage"
    session_id = str(body.get("sessionId") or "preview")[:200]
    chat_input = body.get("chatInput") if isinstance(body.get("chatInput"), str) else ""
    if action not in ("sendMessage", "loadPreviousSession"):
        return 400, error_body("invalid_action", "action must be sendMessage or loadPreviousSession.")
    target = n8n_target(config=config, secrets=widget.secrets)
    if target is None:
        if action == "loadPreviousSession":
            return 200, {"sessionId": session_id, "messages": []}
        return 503, error_body("not_configured", "Set the n8n webhook URL in Connection and save to chat here.")
    if action == "sendMessage" and not chat_input.strip():
        return 400, error_body("empty_message", "chatInput must not be empty.")
    metadata = {"preview": True}
    try:
        if action == "loadPreviousSession":
            messages = n8n_history(target=target, session_id=session_id, metadata=metadata)
            return 200, {"sessionId": session_id, "messages": messages}
        if config["connection"]["n8n"].get("streaming"):
            # The preview waits for the whole streamed answer: simpler, and fine for a preview.
            stream = N8nStream(target=target, session_id=session_id, chat_input=chat_input[:MAX_INPUT],
                               metadata=metadata)
            for event in upstream_run(_collect(stream)):
                if event["type"] == "error":
                    return 502, error_body(event["code"], event["message"])
                if event["type"] == "end":
                    return 200, {"output": event["output"], "ui": event["ui"]}
            return 502, error_body("upstream_error", "The assistant's answer was cut short.")
        reply = n8n_send(target=target, session_id=session_id, chat_input=chat_input[:MAX_INPUT], metadata=metadata)
    except N8nError as exc:
        return exc.status, error_body(exc.code, exc.message)
    return 200, {"output": reply.text, "ui": reply.ui}
