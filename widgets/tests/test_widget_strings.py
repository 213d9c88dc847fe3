"""The widget's UI texts: one catalog per locale, resolved into the public config, overridable."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings

from widgets.config_schema import ConfigError, config_normalize, config_public
from widgets.tests.conftest import publish
from widgets.widget_strings import LOCALES, STRING_KEYS, STRINGS, strings_locale


def test_every_locale_has_every_text():
    assert set(LOCALES) <= set(STRINGS)
    for locale in LOCALES:
        assert set(STRINGS[locale]) == set(STRING_KEYS), locale
        assert all(text.strip() for text in STRINGS[locale].values()), locale
        assert "{field}" in STRINGS[locale]["fill_in"]


@pytest.mark.parametrize(
    "locale,catalog",
    [
        ("", "en"),
        ("en-US", "en"),
        ("de", "de"),
        ("de-AT", "de"),
        ("fr-CA", "fr"),
        ("es", "es"),
        ("nl-BE", "nl"),
        ("pt-BR", "en"),
    ],
)
def test_locale_falls_back_by_language_then_to_english(locale, catalog):
    assert strings_locale(locale) == catalog
    config = config_normalize({"behaviour": {"locale": locale}})
    assert config_public(config)["strings"] == STRINGS[catalog]


def test_each_text_can_be_overridden_and_empty_means_the_locale():
    config = config_normalize({"behaviour": {"locale": "fr", "strings": {"send": "  Go  ", "retry": ""}}})
    strings = config_public(config)["strings"]
    assert strings["send"] == "Go" and strings["retry"] == STRINGS["fr"]["retry"]
    assert strings["placeholder"] == STRINGS["fr"]["placeholder"]  # the untouched English default is not a choice


def test_a_customised_placeholder_wins_in_every_locale():
    config = config_normalize({"behaviour": {"locale": "nl", "placeholder": "Vraag het ons"}})
    assert config_public(config)["strings"]["placeholder"] == "Vraag het ons"


def test_unknown_text_keys_are_refused_with_their_path():
    with pytest.raises(ConfigError) as info:
        config_normalize({"behaviour": {"strings": {"launch_rockets": "x"}}})
    assert "behaviour.strings.launch_rockets" in info.value.errors


def test_the_bundle_ships_no_ui_texts():
    """Texts travel in the public config: a locale or wording fix needs no bundle release."""
    source = (Path(settings.BASE_DIR) / "static" / "widget" / "widget.js").read_text()
    assert "strings" in source and len(source) > 10_000  # the bundle reads its texts from the config
    for key in ("placeholder", "queued", "form_thanks", "get_quote", "out_of_stock", "start_call", "retry"):
        assert STRINGS["en"][key] not in source, key


@pytest.mark.django_db
def test_public_config_endpoint_serves_the_resolved_texts(client, widget_a, owner):
    publish(widget_a, owner, config={"behaviour": {"locale": "es", "strings": {"open_chat": "¡Hola!"}}})
    response = client.get(f"/api/widget/{widget_a.license.key}/config", HTTP_ORIGIN="https://shop.example.com")
    assert response.status_code == 200
    strings = response.json()["config"]["strings"]
    assert strings["open_chat"] == "¡Hola!" and strings["send"] == STRINGS["es"]["send"]
