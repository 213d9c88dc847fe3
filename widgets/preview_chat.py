"""The configurator's preview chat: what a visitor would get from the DRAFT, through the same rules
and the same n8n client as the public chat (widgets/chat.py), streaming included.

The draft is the editor's form as it is now, unsaved, merged over the saved draft exactly as Test
connection does (`draft_connection`); share links (signed-out) use the saved draft only. Not the
public proxy: no license/Origin check (callers are agency members or a share link), no
conversation recorded and nothing counted as usage; it takes one of the license's upstream permits
like any chat.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from licenses.api import ApiError
from widgets.chat import ChatRequest, chat_request_from
from widgets.models import Widget
from widgets.n8n import N8nTarget, n8n_target
from widgets.page_context import page_context_upstream

PREVIEW_METADATA = {"preview": True}


def preview_chat_prepare(
    *, widget: Widget, data: dict[str, Any], config: dict[str, Any], secrets: dict[str, Any]
) -> tuple[ChatRequest, N8nTarget, bool]:
    """The chat request, where it goes and whether it streams; raises ApiError like the public chat."""
    chat = chat_request_from(data=data)
    if config["connection"]["provider"] != "n8n":
        raise ApiError("wrong_widget_type", "This widget does not use the n8n chat.", status_code=400)
    target = n8n_target(config=config, secrets=secrets)
    if target is None:
        raise ApiError("not_configured", "Enter the n8n webhook URL under Connection to chat here.", status_code=503)
    chat = replace(chat, metadata={**page_context_upstream(chat.metadata, config=config), **PREVIEW_METADATA})
    widget.license  # noqa: B018 - loaded here (sync), used by the async caller for the license's permit
    return chat, target, bool(config["connection"]["n8n"].get("streaming"))
