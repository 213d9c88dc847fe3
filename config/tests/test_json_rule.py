"""The one JSON body rule (config.api) on the REST API (DRF's parser is ours) — issue 9 findings 3, 4, 5, 8."""

from __future__ import annotations

import json

import pytest

from licenses.api import JSON_MAX_DEPTH, ApiError, json_loads
from widgets.models import Widget

pytestmark = pytest.mark.django_db


def patch(client, widget, raw: bytes, content_type: str = "application/json"):
    return client.patch(f"/api/v1/widgets/{widget.public_id}/", data=raw, content_type=content_type)


def _state(widget) -> tuple:
    widget.refresh_from_db()
    return widget.name, widget.config, widget.revision


@pytest.mark.parametrize(
    "raw,status,code",
    [
        (b"[" * 100_000 + b"]" * 100_000, 400, "invalid_json"),
        (json.dumps({"config": json.loads('{"a":' * 40 + "1" + "}" * 40)}).encode(), 400, "invalid_json"),
        (json.dumps({"name": "Support \ud800"}).encode(), 400, "invalid_text"),
        (json.dumps({"name": "Support\u0000"}).encode(), 400, "invalid_text"),
        (json.dumps({"config": {"voice": {"instructions": "Be nice\u0000"}}}).encode(), 400, "invalid_text"),
        (json.dumps({"config": {"voice": {"speed": 1}}}).encode()[:-2] + b', "x": 1e999}}', 400, "invalid_json"),
        (json.dumps({"name": "x" * (10 * 1024 * 1024)}).encode(), 413, "payload_too_large"),
    ],
)
def test_rest_api_hostile_body_is_4xx_and_changes_nothing(api, member, widget_a, raw, status, code):
    before = _state(widget_a)
    response = patch(api(member), widget_a, raw)
    assert response.status_code == status, response.content[:300]
    assert response.json()["error"]["code"] == code
    assert _state(widget_a) == before


def test_rest_api_takes_json_only(api, member, widget_a):
    response = patch(api(member), widget_a, b"name=Other", "application/x-www-form-urlencoded")
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"
    assert Widget.objects.get(pk=widget_a.pk).name == "Widget A"


def test_rest_api_valid_unicode_still_saves(api, member, widget_a):
    response = patch(api(member), widget_a, json.dumps({"name": "Café 😀 支持"}).encode())
    assert response.status_code == 200
    assert Widget.objects.get(pk=widget_a.pk).name == "Café 😀 支持"


@pytest.mark.parametrize("name", [" " + "x" * 200, "x" * 200 + "\u2003", "\U0001f600" * 201])
def test_max_length_holds_for_the_text_as_sent(api, member, widget_a, name):
    """The schema's maxLength (200) counts the characters sent: DRF trimmed first, so 201 with a space at an
    end passed as 200 (the API fuzzer's negative case). 200 characters still save, trimmed."""
    before = _state(widget_a)
    response = patch(api(member), widget_a, json.dumps({"name": name}).encode())
    assert response.status_code == 400, response.content[:300]
    assert "200" in json.dumps(response.json())
    assert _state(widget_a) == before
    response = patch(api(member), widget_a, json.dumps({"name": " " + "x" * 199}).encode())
    assert response.status_code == 200 and Widget.objects.get(pk=widget_a.pk).name == "x" * 199


@pytest.mark.parametrize(
    "raw",
    [
        "[" * (JSON_MAX_DEPTH + 1) + "]" * (JSON_MAX_DEPTH + 1),
        "[" * 5000 + "]" * 5000,
        "[" * 1_000_000,
    ],
)
def test_depth_is_bounded_without_recursion(raw):
    with pytest.raises(ApiError) as exc:
        json_loads(raw)
    assert exc.value.code == "invalid_json"


def test_depth_at_the_limit_parses():
    raw = "[" * JSON_MAX_DEPTH + "]" * JSON_MAX_DEPTH
    assert json_loads(raw) is not None


@pytest.mark.parametrize(
    "raw,code",
    [
        ('"\\ud800"', "invalid_text"),
        ('{"\\udc00": 1}', "invalid_text"),
        ('"\\u0000"', "invalid_text"),
        ("9223372036854775808", "invalid_json"),
        ("-1e400", "invalid_json"),
        ("Infinity", "invalid_json"),
    ],
)
def test_text_and_number_rules(raw, code):
    with pytest.raises(ApiError) as exc:
        json_loads(raw)
    assert exc.value.code == code


def test_paired_surrogates_and_big_but_valid_numbers_pass():
    assert json_loads('["\\ud83d\\ude00", 9223372036854775807, 1.5e300]') == ["😀", 9223372036854775807, 1.5e300]
