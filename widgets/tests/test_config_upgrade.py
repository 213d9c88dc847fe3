"""One tool list for every agent channel: configs saved with `voice.tools` move to `tools.enabled`, and
models OpenAI shuts down give way to the platform default (the data migration and config_upgrade)."""

from __future__ import annotations

import importlib

import pytest

from realtime.session_config import session_config
from widgets.config_schema import ConfigError, config_normalize, config_upgrade
from widgets.models import Widget
from widgets.tools import tools_enabled

LEGACY = {"voice": {"enabled": True, "tools": {"search_knowledge": True, "search_products": False, "log_lead": True}}}


def test_legacy_voice_tools_are_moved_not_dropped():
    config = config_normalize(LEGACY)

    assert "tools" not in config["voice"]
    assert config["tools"]["enabled"]["log_lead"] is True
    assert config["tools"]["enabled"]["search_products"] is False
    assert [t.name for t in tools_enabled(config)] == ["search_knowledge", "log_lead"]
    assert config_upgrade(LEGACY) is not LEGACY and "tools" in LEGACY["voice"]  # the input is not mutated


def test_voice_session_reads_the_shared_list_even_from_a_raw_legacy_config():
    session = session_config(config=LEGACY)
    assert [t["name"] for t in session["tools"]] == ["search_knowledge", "log_lead"]


def test_unknown_setting_under_voice_is_still_refused():
    with pytest.raises(ConfigError) as refused:
        config_normalize({"voice": {"tool": {}}})
    assert "voice.tool" in refused.value.errors


@pytest.mark.parametrize(
    ("path", "value"), [("connection.chatkit.model", "gpt-4.1-mini"), ("voice.model", "gpt-realtime")]
)
def test_only_models_from_the_settings_lists_are_accepted(path, value):
    section, *rest = path.split(".")
    config: dict = {}
    node = config.setdefault(section, {})
    for part in rest[:-1]:
        node = node.setdefault(part, {})
    node[rest[-1]] = value
    with pytest.raises(ConfigError) as refused:
        config_normalize(config)
    assert path in refused.value.errors
    assert "gpt-6-luna" in str(refused.value.errors) or "gpt-realtime-1.5" in str(refused.value.errors)


def test_data_migration_moves_tools_and_retires_dead_models(db, widget_a):
    migration = importlib.import_module("widgets.migrations.0004_tools_enabled_current_models")
    raw = {
        **widget_a.config,
        "voice": {**widget_a.config["voice"], "model": "gpt-realtime", "tools": {"log_lead": True}},
        "connection": {
            **widget_a.config["connection"],
            "chatkit": {**widget_a.config["connection"]["chatkit"], "model": "gpt-4.1-mini"},
        },
    }
    raw["tools"] = {k: v for k, v in raw["tools"].items() if k != "enabled"}
    Widget.objects.filter(pk=widget_a.pk).update(config=raw)

    from django.apps import apps

    migration.forwards(apps, None)
    config = Widget.objects.get(pk=widget_a.pk).config

    assert config["tools"]["enabled"] == {"log_lead": True}
    assert "tools" not in config["voice"]
    assert config["voice"]["model"] == "" and config["connection"]["chatkit"]["model"] == ""
    assert config_normalize(config)["tools"]["enabled"]["log_lead"] is True
