"""The built-in demo n8n Chat Trigger (widgets/demo_n8n.py): DEBUG only, 404 otherwise."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from licenses.api import ApiError, json_loads
from widgets.demo_n8n import DemoReply, demo_chunks, demo_history, demo_remember, demo_reply
from widgets.models import Widget

STREAM_DELAY = 0.03  # seconds between streamed pieces: slow enough to see, fast enough not to bore


def _lookup(public_id: str) -> Widget | None:
    return Widget.objects.select_related("published_version").filter(public_id=public_id[:40]).first()


def _line(obj: dict) -> bytes:
    return (json.dumps(obj, ensure_ascii=False) + "\n").encode()


async def _stream(reply: DemoReply, node: str) -> AsyncIterator[bytes]:
    meta = {"nodeId": "demo-agent", "nodeName": node, "itemIndex": 0, "runIndex": 0}
    yield _line({"type": "begin", "metadata": {**meta, "timestamp": int(time.time() * 1000)}})
    for piece in demo_chunks(reply.text):
        await asyncio.sleep(STREAM_DELAY)
        yield _line({"type": "item", "content": piece, "metadata": meta})
    yield _line({"type": "end", "metadata": {**meta, "timestamp": int(time.time() * 1000)}, "ui": reply.ui})


@csrf_exempt
async def demo_chat(request: HttpRequest, public_id: str) -> HttpResponse:
    """POST /demo/n8n/<public_id>/chat[?stream=0] — speaks the n8n Chat Trigger protocol."""
    if not settings.DEBUG:
        raise Http404("The demo workflow only runs with DEBUG on.")
    if request.method != "POST":
        return JsonResponse({"code": 405, "message": "Use POST, as the Chat Trigger does."}, status=405)
    widget = await sync_to_async(_lookup)(public_id)
    if widget is None:
        return JsonResponse({"code": 404, "message": "The requested webhook is not registered."}, status=404)
    try:
        body = json_loads(request.body or b"{}")  # the one JSON body rule, as on every endpoint
    except ApiError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("sessionId"), str) or not body["sessionId"]:
        return JsonResponse({"message": "Expected {action, sessionId, chatInput}."}, status=400)
    session = body["sessionId"]
    if body.get("action") == "loadPreviousSession":
        return JsonResponse({"data": await sync_to_async(demo_history)(public_id=widget.public_id, session_id=session)})
    text = body.get("chatInput") if isinstance(body.get("chatInput"), str) else ""
    if not text.strip():
        return JsonResponse({"message": "chatInput is empty."}, status=400)
    reply = await sync_to_async(demo_reply)(widget=widget, text=text[:4000])
    await sync_to_async(demo_remember)(public_id=widget.public_id, session_id=session, user=text, assistant=reply.text)
    if request.GET.get("stream") == "0":
        return JsonResponse({"output": reply.text, "ui": reply.ui})
    response = StreamingHttpResponse(_stream(reply, "Demo agent"), content_type="application/json; charset=utf-8")
    response["Cache-Control"] = "no-cache"
    return response
