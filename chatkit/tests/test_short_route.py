"""The embedded page's ChatKit calls take the public chat's short route under ASGI (config/chat_route.py): the
same answer as Django's full stack — status, every header, the body (a streamed answer's event types: its ids
are new each time) — for answers and for every refusal, without the full stack's request_started and
request_finished hops through Django's one thread-sensitive thread. The configurator's preview (session,
CSRF), share links and anything unusual go the full way untouched."""

from __future__ import annotations

import json

import pytest

from chatkit.tests.conftest import ChatKitVisitor
from conftest import full_and_short

pytestmark = pytest.mark.django_db(transaction=True)

CREATE = {
    "type": "threads.create",
    "params": {
        "input": {"content": [{"type": "input_text", "text": "Hi"}], "attachments": [], "inference_options": {}}
    },
}
LIST = {"type": "threads.list", "params": {}}


def both(visitor: ChatKitVisitor, body, *, path: str = "", **headers):
    """The same call through the full stack and through the short route: (full, short, requests the short
    route's app handed to the full stack)."""
    request = {
        "path": path or visitor.url,
        "body": body if isinstance(body, bytes) else json.dumps(body).encode(),
        "headers": {"Content-Type": "application/json", **visitor.headers, **headers},
    }
    request["headers"] = {k: v for k, v in request["headers"].items() if v is not None}
    return full_and_short(**request)


def events(content: bytes) -> list[str]:
    return [json.loads(frame[6:])["type"] for frame in content.split(b"\n\n") if frame.startswith(b"data: ")]


def test_a_streamed_answer_is_the_full_stacks(fake_openai, visitor):
    full, short, through_full = both(visitor, CREATE)
    assert full[0] == 200 and ("content-type", "text/event-stream") in full[1]
    assert events(full[2])[0] == "thread.created" and "thread.item.done" in events(full[2])
    assert (short[0], short[1], events(short[2])) == (full[0], full[1], events(full[2]))
    assert through_full == 0


def test_a_json_answer_is_the_full_stacks(fake_openai, visitor):
    full, short, through_full = both(visitor, LIST)
    assert full[0] == 200 and json.loads(full[2])["data"] == []
    assert (short, through_full) == (full, 0)


@pytest.mark.parametrize(
    ("case", "status", "code"),
    [
        ("no_origin", 403, "origin_missing"),
        ("foreign_origin", 403, "domain_not_allowed"),
        ("no_page_token", 403, "page_token_missing"),
        ("bad_visitor", 403, "visitor_invalid"),
        ("invalid_json", 400, "invalid_json"),
        ("not_chatkit", 400, "invalid_request"),
        ("foreign_thread", 404, "not_found"),
        ("unknown_license", 403, "page_token_invalid"),  # the page token names another license
    ],
)
def test_refusals_are_the_full_stacks(fake_openai, visitor, chatkit_widget, case, status, code):
    body, headers, path = CREATE, {}, ""
    if case == "no_origin":
        headers["Origin"] = None
    elif case == "foreign_origin":
        headers["Origin"] = "https://evil.example.net"
    elif case == "no_page_token":
        headers["X-Switchboard-Page-Token"] = None
    elif case == "bad_visitor":
        headers["X-Switchboard-Visitor"] = "forged"
    elif case == "invalid_json":
        body = b"{nope"
    elif case == "not_chatkit":
        body = {"type": "threads.nothing"}
    elif case == "foreign_thread":
        other = ChatKitVisitor(chatkit_widget)
        thread_id = next(e["thread"]["id"] for e in other.send("Mine")[1] if e["type"] == "thread.created")
        body = {"type": "threads.get_by_id", "params": {"thread_id": thread_id}}
    elif case == "unknown_license":
        path = "/api/chatkit/no-such-key/"
    full, short, through_full = both(visitor, body, path=path, **headers)
    assert (full[0], json.loads(full[2])["error"]["code"]) == (status, code)
    assert (short, through_full) == (full, 0)


@pytest.mark.parametrize("case", ["preview", "share", "too_large", "get"])
def test_previews_shares_and_anything_unusual_go_through_the_full_stack(fake_openai, visitor, settings, case):
    path, body, method = visitor.url, json.dumps(LIST).encode(), "POST"
    if case == "preview":
        path += f"?preview={visitor.widget.public_id}"  # a member's session and CSRF: the full stack's
    elif case == "share":
        path += "?share=not-a-link"
    elif case == "too_large":
        settings.CHATKIT_MAX_BODY_BYTES = 1024
        body = json.dumps({**LIST, "pad": "x" * 2000}).encode()
    elif case == "get":
        method, body = "GET", b""
    request = {
        "path": path,
        "body": body,
        "method": method,
        "headers": {"Content-Type": "application/json", **visitor.headers},
    }
    full, short, through_full = full_and_short(**request)
    assert short == full
    assert through_full == 1
    # preview: not signed in; share: no such link (410 like an expired one); too_large: 413; GET: 405
    expected = {"preview": 403, "share": 410, "too_large": 413, "get": 405}[case]
    assert full[0] == expected
