"""`widgets.n8n.upstream_json`, the one parse of what n8n sends: orjson first, and for what orjson refuses the
standard library decides exactly as before (issue 11 bench). A hostile or broken webhook is an upstream error
(ValueError), never a 500."""

from __future__ import annotations

import json

import pytest

from widgets.n8n import upstream_json
from widgets.tests.conftest import ORIGIN

SAME = [
    '{"output": "Hello", "ui": [{"type": "card", "n": 1.5e-7}]}',
    '{"output": "caf\\u00e9 \\ud83d\\ude00 ok"}',  # escapes, a surrogate pair
    '{"n": NaN, "m": Infinity}',  # orjson refuses; json accepts
    '{"big": 123456789012345678901234567890}',  # past 64 bits
    '{"a": 1, "a": 2}',  # the last one wins in both
    "[1, 2, 3]",
    '"just text"',
    '  {"spaces": true}  ',
]


@pytest.mark.parametrize("raw", SAME)
def test_what_it_parses_is_what_the_standard_library_parsed(raw):
    expected = json.loads(raw)
    for given in (raw, raw.encode()):
        got = upstream_json(given)
        assert repr(got) == repr(expected)  # repr: NaN != NaN, and int vs float must not change


@pytest.mark.parametrize("raw", ["", "{", "not json", '{"a": 1} trailing', "[" * 5000 + "]" * 5000, "\x00"])
def test_what_neither_parser_takes_is_a_value_error(raw):
    with pytest.raises(ValueError):
        upstream_json(raw)


@pytest.mark.django_db
def test_a_deeply_nested_reply_is_an_upstream_error_not_a_500(client, n8n_widget, fake_n8n):
    fake_n8n.default = {"raw": '{"output": ' + "[" * 5000 + "]" * 5000 + "}", "content_type": "application/json"}
    response = client.post(
        f"/api/widget/{n8n_widget.license.key}/chat?widget={n8n_widget.public_id}",
        data={"action": "sendMessage", "sessionId": "deep", "chatInput": "hi"},
        content_type="application/json",
        headers={"Origin": ORIGIN},
    )
    assert response.status_code == 502 and response.json()["error"]["code"] == "upstream_error"


# --- what PostgreSQL cannot store and UTF-8 cannot encode -----------------------------------------------------

MENDED = [
    ('{"output": "lone \\ud800 surrogate"}', {"output": "lone \ufffd surrogate"}),  # orjson refuses; json took it
    ('{"output": "a\\u0000b"}', {"output": "a\ufffdb"}),
    (
        '{"a\\u0000": ["x\\udfff", {"k": "\\u0000\\ud83d"}], "n": 1}',
        {"a\ufffd": ["x\ufffd", {"k": "\ufffd\ufffd"}], "n": 1},
    ),
    ('{"output": "pair \\ud83d\\ude00 kept"}', {"output": "pair \U0001f600 kept"}),  # a valid pair is one character
    ('{"output": "not an escape \\\\u0000"}', {"output": "not an escape \\u0000"}),  # an escaped backslash
    ('{"n": NaN, "output": "\\u0000"}', None),  # the standard library's path too
]


@pytest.mark.parametrize(("raw", "expected"), MENDED)
def test_nul_and_lone_surrogates_in_a_reply_come_out_as_the_replacement_character(raw, expected):
    for given in (raw, raw.encode()):
        got = upstream_json(given)
        if expected is None:
            assert got["output"] == "\ufffd"
        else:
            assert got == expected
        json.dumps(got, ensure_ascii=False).encode()  # encodable as UTF-8
