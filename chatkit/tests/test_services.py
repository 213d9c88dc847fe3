"""Pure ChatKit rules: the options mapping, the visitor's user id and token, frame-ancestors, origin
comparison, cost."""

from __future__ import annotations

import pytest

from chatkit.options import chatkit_color_scheme_auto, chatkit_options
from chatkit.tokens import chatkit_user_id
from licenses.domains import frame_ancestors, same_origin
from widgets.config_schema import config_normalize


def test_default_config_maps_to_valid_chatkit_option_names():
    options = chatkit_options(config_normalize({"connection": {"provider": "chatkit"}}))

    assert set(options) == {"theme", "header", "history", "startScreen", "composer"}
    assert set(options["theme"]) == {"colorScheme", "color", "radius", "density", "typography"}
    assert options["theme"]["color"]["grayscale"] == {"hue": 220, "tint": 6, "shade": -1}
    assert options["startScreen"]["prompts"] == []
    assert options["composer"]["attachments"] == {"enabled": False}


def test_auto_color_scheme_is_light_plus_a_flag():
    config = config_normalize(
        {"connection": {"provider": "chatkit"}, "appearance": {"chatkit": {"color_scheme": "auto"}}}
    )
    assert chatkit_options(config)["theme"]["colorScheme"] == "light"
    assert chatkit_color_scheme_auto(config) is True


def test_disclaimer_is_mapped_when_set():
    config = config_normalize({"connection": {"provider": "chatkit"}, "behaviour": {"disclaimer": "AI answers."}})
    assert chatkit_options(config)["disclaimer"] == {"text": "AI answers."}


def test_user_id_is_deterministic_hashed_and_license_scoped(db):
    from licenses.tests.factories import LicenseFactory

    a, b = LicenseFactory(), LicenseFactory()
    user = chatkit_user_id(license=a, visitor_id="v1")
    assert user == chatkit_user_id(license=a, visitor_id="v1")
    assert user != chatkit_user_id(license=b, visitor_id="v1")
    assert user != chatkit_user_id(license=a, visitor_id="v2")
    assert user.startswith("sb_") and len(user) == 67
    assert user[3:] != "v1" and all(c in "0123456789abcdef" for c in user[3:])


@pytest.mark.parametrize(
    ("patterns", "expected"),
    [
        ([], "'none'"),
        (["shop.example.com"], "https://shop.example.com:* http://shop.example.com:*"),
        (["localhost:3000"], "https://localhost:3000 http://localhost:3000"),
        (["*.example.org"], "https://*.example.org:* http://*.example.org:*"),
    ],
)
def test_frame_ancestors(patterns, expected):
    assert frame_ancestors(patterns) == expected


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("http://testserver", "http://testserver", True),
        ("http://testserver:80", "http://testserver", True),
        ("https://testserver", "http://testserver", False),
        ("http://localhost:8001", "http://localhost:8002", False),
        ("null", "http://testserver", False),
        (None, "http://testserver", False),
    ],
)
def test_same_origin(a, b, same):
    assert same_origin(a, b) is same


def test_attachments_are_off_whatever_the_config_says():
    """Server mode has no attachment store: the composer never offers uploads."""
    config = config_normalize({"connection": {"provider": "chatkit"}, "behaviour": {"file_uploads": True}})
    assert chatkit_options(config)["composer"]["attachments"] == {"enabled": False}


def test_visitor_token_round_trip_and_binding(db):
    from chatkit.tokens import visitor_token_issue, visitor_token_read
    from licenses.tests.factories import LicenseFactory

    a, b = LicenseFactory(), LicenseFactory()
    token = visitor_token_issue(license=a)
    visitor = visitor_token_read(license=a, token=token)
    assert visitor and len(visitor) >= 24  # >= 128 random bits
    assert visitor_token_issue(license=a) != token
    assert visitor_token_read(license=b, token=token) is None
    assert visitor_token_read(license=a, token=token[:-2] + "xx") is None
    assert visitor_token_read(license=a, token=None) is None


def test_cost_uses_the_price_settings(settings):
    from decimal import Decimal

    from chatkit.services import chatkit_cost

    settings.CHATKIT_MODELS = {"m": {"input": 1.0, "input_cached": 0.1, "output": 10.0}}
    usage = {"input_tokens": 1_000_000, "input_cached_tokens": 500_000, "output_tokens": 100_000}
    assert chatkit_cost(model="m", usage=usage) == Decimal("1.550000")
