"""Proactive rules in the config (issue 15.4): `behaviour.proactive`, off by default, its page patterns
validated and bounded, older configs and published versions upgraded to it, and served to the widget."""

from __future__ import annotations

import pytest

from widgets.config_schema import (
    DEFAULT_CONFIG,
    PATH_PATTERN_HELP,
    ConfigError,
    config_errors,
    config_normalize,
    config_public,
)
from widgets.models import WidgetVersion
from widgets.tests.factories import publish


def proactive(**rules) -> dict:
    return {"behaviour": {"proactive": rules}}


def refused(config: dict) -> dict[str, list[str]]:
    with pytest.raises(ConfigError) as info:
        config_normalize(config)
    return info.value.errors


def test_proactive_rules_are_off_by_default():
    rules = config_normalize(None)["behaviour"]["proactive"]
    assert rules == {
        "enabled": False,
        "show_on": [],
        "hide_on": [],
        "message": "",
        "message_delay_seconds": 3,
        "open_after_seconds": 0,
        "open_on_exit_intent": False,
        "frequency": "session",
        "frequency_days": 7,
    }


@pytest.mark.parametrize(
    "pattern",
    ["/", "/pricing", "/blog/*", "/*/checkout", "/docs/*/intro", "/über/*", "/a%20b", "/shop/:id", "/*"],
)
def test_path_patterns_are_accepted(pattern):
    config = config_normalize(proactive(enabled=True, show_on=[pattern], hide_on=[pattern]))
    assert config["behaviour"]["proactive"]["show_on"] == [pattern]


@pytest.mark.parametrize(
    "pattern",
    [
        "pricing",  # not a path
        "https://shop.example.com/pricing",  # a URL, not a path
        "*.example.com/*",
        "/search?q=*",  # the query is not matched
        "/faq#shipping",
        "/two words",
        "/tab\there",
        "/nul\x00",
        "",
        "/" + "a" * 200,  # 201 characters
    ],
)
def test_bad_path_patterns_are_refused_with_the_line_and_the_rule(pattern):
    errors = refused(proactive(show_on=["/ok", pattern]))
    [(path, messages)] = errors.items()
    assert path == "behaviour.proactive.show_on[1]"
    assert messages[0] in (PATH_PATTERN_HELP, "Must not be empty.", "At most 200 characters.")
    assert refused(proactive(hide_on=[pattern])).keys() == {"behaviour.proactive.hide_on[0]"}


def test_the_pattern_message_says_how_to_write_one():
    [message] = refused(proactive(hide_on=["https://shop.example.com/cart"]))["behaviour.proactive.hide_on[0]"]
    assert message == PATH_PATTERN_HELP
    assert "/pricing" in message and "/blog/*" in message and "no host, ?, #" in message


def test_at_most_twenty_patterns_per_list():
    config_normalize(proactive(show_on=[f"/p{i}" for i in range(20)]))
    assert refused(proactive(show_on=[f"/p{i}" for i in range(21)])) == {
        "behaviour.proactive.show_on": ["At most 20 items."]
    }


@pytest.mark.parametrize(
    ("rules", "path"),
    [
        ({"open_after_seconds": -1}, "open_after_seconds"),
        ({"open_after_seconds": 3601}, "open_after_seconds"),
        ({"message_delay_seconds": 601}, "message_delay_seconds"),
        ({"frequency": "weekly"}, "frequency"),
        ({"frequency_days": 0}, "frequency_days"),
        ({"frequency_days": 366}, "frequency_days"),
        ({"message": "x" * 301}, "message"),
        ({"enabled": "yes"}, "enabled"),
        ({"open_on_exit_intent": 1}, "open_on_exit_intent"),
        ({"show_on": "/pricing"}, "show_on"),
        ({"show_on": [7]}, "show_on[0]"),
        ({"popup_on_scroll": True}, "popup_on_scroll"),
    ],
)
def test_out_of_range_or_unknown_settings_are_refused_with_their_path(rules, path):
    assert f"behaviour.proactive.{path}" in refused(proactive(**rules))


def test_a_config_saved_before_proactive_rules_gets_them_off():
    old = {key: value for key, value in DEFAULT_CONFIG.items() if key != "behaviour"}
    old["behaviour"] = {k: v for k, v in DEFAULT_CONFIG["behaviour"].items() if k != "proactive"}
    assert config_errors(old) == {}
    assert config_normalize(old)["behaviour"]["proactive"] == DEFAULT_CONFIG["behaviour"]["proactive"]
    # A draft (the `base`) without the key and a partial edit merge over the defaults.
    merged = config_normalize(proactive(enabled=True, hide_on=["/checkout/*"]), base=old)
    assert merged["behaviour"]["proactive"]["hide_on"] == ["/checkout/*"]
    assert merged["behaviour"]["proactive"]["frequency"] == "session"


def test_public_config_carries_the_rules_and_fills_them_in_for_old_versions():
    config = config_normalize(proactive(enabled=True, show_on=["/pricing"], message="Need a hand?"))
    assert config_public(config)["behaviour"]["proactive"] == config["behaviour"]["proactive"]
    old = {**config, "behaviour": {k: v for k, v in config["behaviour"].items() if k != "proactive"}}
    assert config_public(old)["behaviour"]["proactive"] == DEFAULT_CONFIG["behaviour"]["proactive"]
    partial = {**config, "behaviour": {**config["behaviour"], "proactive": {"enabled": True}}}
    served = config_public(partial)["behaviour"]["proactive"]
    assert served["enabled"] is True and served["frequency"] == "session" and served["show_on"] == []


@pytest.mark.django_db
def test_a_version_published_before_the_rules_is_served_with_them_off(client, widget_a):
    version = widget_a.published_version
    raw = dict(version.config)
    raw["behaviour"] = {k: v for k, v in raw["behaviour"].items() if k != "proactive"}
    WidgetVersion.objects.filter(pk=version.pk).update(config=raw)
    response = client.get(
        f"/api/widget/{widget_a.license.key}/config?widget={widget_a.public_id}", HTTP_ORIGIN="https://shop.example.com"
    )
    assert response.status_code == 200
    assert response.json()["config"]["behaviour"]["proactive"] == DEFAULT_CONFIG["behaviour"]["proactive"]


@pytest.mark.django_db
def test_published_rules_reach_the_public_config(client, widget_a, owner):
    publish(widget_a, owner, config=proactive(enabled=True, hide_on=["/checkout/*"], open_after_seconds=20))
    response = client.get(
        f"/api/widget/{widget_a.license.key}/config?widget={widget_a.public_id}", HTTP_ORIGIN="https://shop.example.com"
    )
    rules = response.json()["config"]["behaviour"]["proactive"]
    assert rules["enabled"] is True and rules["hide_on"] == ["/checkout/*"] and rules["open_after_seconds"] == 20


@pytest.mark.django_db
def test_the_api_refuses_a_bad_pattern_with_its_line_and_saves_nothing(api, member, widget_a):
    before = widget_a.config
    response = api(member).patch(
        f"/api/v1/widgets/{widget_a.public_id}/",
        {"config": proactive(enabled=True, hide_on=["/ok", "https://shop.example.com/cart"])},
        format="json",
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_config"
    assert error["fields"] == {"config.behaviour.proactive.hide_on[1]": [PATH_PATTERN_HELP]}
    widget_a.refresh_from_db()
    assert widget_a.config == before


@pytest.mark.django_db
def test_the_configurator_has_a_proactive_section(client, owner, widget_a):
    client.force_login(owner)
    page = client.get(f"/app/widgets/{widget_a.public_id}/").content.decode()
    assert 'id="panel-proactive"' in page
    for path in ("enabled", "show_on", "hide_on", "message", "open_after_seconds", "open_on_exit_intent", "frequency"):
        assert f'data-path="behaviour.proactive.{path}"' in page
    assert 'id="proactive-test-url"' in page and 'id="proactive-replay"' in page
