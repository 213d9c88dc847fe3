"""A webhook's answer holding a NUL or a lone surrogate (a broken workflow, or a hostile one) is answered and
stored with U+FFFD in their place (`widgets.n8n.storable`): PostgreSQL refuses NUL in text and JSONB and a lone
surrogate cannot be encoded, and before, the plain chat answered a 500 with nothing stored, and a stream ended
`not_stored` or broke. PostgreSQL in CI (SQLite would store a NUL)."""

from __future__ import annotations

import json

import pytest

from widgets.models import Message
from widgets.tests.conftest import ORIGIN, publish

pytestmark = pytest.mark.django_db(transaction=True)

UNSTORABLE = {"nul": "a\u0000b", "surrogate": "a\ud800b"}


def _chat(client, widget):
    response = client.post(
        f"/api/widget/{widget.license.key}/chat",
        {"action": "sendMessage", "sessionId": "s-mend", "chatInput": "hi"},
        content_type="application/json",
        HTTP_ORIGIN=ORIGIN,
    )
    body = b"".join(response.streaming_content) if response.streaming else response.content
    return response.status_code, body


def _stored():
    return [(m.role, m.text, m.failure_kind) for m in Message.objects.order_by("id")]


@pytest.mark.parametrize("kind", UNSTORABLE)
def test_a_whole_reply_is_answered_and_stored_mended(client, n8n_widget, owner, fake_n8n, kind):
    product = {"id": "1", "title": UNSTORABLE[kind], "price": "449.00", "currency": "USD", "in_stock": True}
    cards = {"type": "ui.product_cards", "products": [product]}  # stored with the answer (JSONB)
    fake_n8n.reply(raw=json.dumps({"output": UNSTORABLE[kind], "ui": [cards]}), content_type="application/json")
    status, body = _chat(client, n8n_widget)
    assert status == 200
    answer = json.loads(body)
    assert answer["output"] == "a\ufffdb" and answer["ui"][0]["products"][0]["title"] == "a\ufffdb"
    assert _stored() == [("user", "hi", ""), ("assistant", "a\ufffdb", "")]


def test_a_plain_text_reply_with_a_nul_byte_is_answered_and_stored_mended(client, n8n_widget, fake_n8n):
    fake_n8n.reply(raw="hello\u0000world", content_type="text/plain")
    status, body = _chat(client, n8n_widget)
    assert status == 200 and json.loads(body)["output"] == "hello\ufffdworld"
    assert _stored()[-1] == ("assistant", "hello\ufffdworld", "")


@pytest.mark.parametrize("kind", UNSTORABLE)
def test_a_streamed_reply_is_relayed_and_stored_mended(client, n8n_widget, owner, fake_n8n, kind):
    publish(n8n_widget, owner, config={"connection": {"n8n": {"streaming": True}}})
    item = json.dumps({"type": "item", "content": UNSTORABLE[kind]})  # escaped, as JSON carries them
    fake_n8n.reply(chunks=[(item + "\n").encode(), b'{"type": "end"}\n'])
    status, body = _chat(client, n8n_widget)
    lines = [json.loads(line) for line in body.splitlines()]
    assert status == 200
    assert lines == [{"type": "item", "content": "a\ufffdb"}, {"type": "end", "output": "a\ufffdb", "ui": []}]
    assert _stored() == [("user", "hi", ""), ("assistant", "a\ufffdb", "")]


@pytest.mark.parametrize(
    "body",
    [
        b'{"output": "a\xed\xa0\x80b"}',  # a surrogate encoded as UTF-8 bytes, no escape (json.loads reads it)
        '{"output": "a\\u0000b"}'.encode("utf-16-le"),  # a UTF-16 body: its escape is not the UTF-8 one
    ],
    ids=["utf8-surrogate", "utf16-nul"],
)
def test_a_whole_reply_the_standard_library_reads_is_mended_too(client, n8n_widget, fake_n8n, body):
    fake_n8n.reply(raw=body, content_type="application/json")
    status, answer = _chat(client, n8n_widget)
    assert status == 200 and json.loads(answer)["output"] == "a\ufffdb"
    assert _stored() == [("user", "hi", ""), ("assistant", "a\ufffdb", "")]
