"""The two chores every bare ASGI app of the benchmarks has (the fake n8n, the proxy floor, the ChatKit
SDK floor): answer Uvicorn's lifespan messages, and read a request body."""

from __future__ import annotations


async def lifespan(receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def body_read(receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body
