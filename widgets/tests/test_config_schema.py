import pytest
from django.db import IntegrityError, transaction

from widgets.config_schema import DEFAULT_CONFIG, ConfigError, config_errors, config_normalize, config_public
from widgets.models import Widget
from widgets.tests.factories import WidgetFactory


def test_defaults_are_valid_and_complete():
    assert config_errors(DEFAULT_CONFIG) == {}
    assert config_normalize(None) == DEFAULT_CONFIG


def test_partial_config_merges_over_defaults():
    config = config_normalize({"appearance": {"chatkit": {"accent_level": 3}}})
    assert config["appearance"]["chatkit"]["accent_level"] == 3
    assert config["appearance"]["chatkit"]["radius"] == DEFAULT_CONFIG["appearance"]["chatkit"]["radius"]


@pytest.mark.parametrize(
    "config,path",
    [
        ({"appearance": {"chatkit": {"grayscale_hue": 361}}}, "appearance.chatkit.grayscale_hue"),
        ({"appearance": {"chatkit": {"grayscale_tint": 10}}}, "appearance.chatkit.grayscale_tint"),
        ({"appearance": {"chatkit": {"grayscale_shade": -5}}}, "appearance.chatkit.grayscale_shade"),
        ({"appearance": {"chatkit": {"accent_level": 4}}}, "appearance.chatkit.accent_level"),
        ({"appearance": {"chatkit": {"accent_color": "red"}}}, "appearance.chatkit.accent_color"),
        ({"appearance": {"chatkit": {"radius": "circle"}}}, "appearance.chatkit.radius"),
        ({"appearance": {"chatkit": {"density": "cozy"}}}, "appearance.chatkit.density"),
        ({"appearance": {"chatkit": {"base_font_size": 13}}}, "appearance.chatkit.base_font_size"),
        ({"appearance": {"chatkit": {"color_scheme": "sepia"}}}, "appearance.chatkit.color_scheme"),
        ({"connection": {"provider": "botpress"}}, "connection.provider"),
        ({"connection": {"n8n": {"webhook_url": "javascript:alert(1)"}}}, "connection.n8n.webhook_url"),
        ({"connection": {"chatkit": {"workflow_id": "not-a-workflow"}}}, "connection.chatkit.workflow_id"),
        ({"voice": {"voice": "robot"}}, "voice.voice"),
        ({"voice": {"turn_detection": {"threshold": 1.5}}}, "voice.turn_detection.threshold"),
        ({"behaviour": {"starter_prompts": ["a"] * 7}}, "behaviour.starter_prompts"),
        ({"behaviour": {"starter_prompts": [""]}}, "behaviour.starter_prompts[0]"),
        ({"surprise": 1}, "surprise"),
        ({"appearance": {"n8n": {"sparkles": True}}}, "appearance.n8n.sparkles"),
        ({"embed": {"width": "wide"}}, "embed.width"),
    ],
)
def test_invalid_values_are_rejected_with_the_field_path(config, path):
    with pytest.raises(ConfigError) as exc:
        config_normalize(config)
    assert path in exc.value.errors, exc.value.errors


def test_non_object_config_is_rejected():
    with pytest.raises(ConfigError):
        config_normalize(["not", "an", "object"])


def test_public_config_has_no_secrets_or_server_side_settings():
    config = config_normalize(
        {
            "connection": {
                "provider": "chatkit",
                "n8n": {"webhook_url": "https://n8n.internal/webhook/abc"},
                "chatkit": {"workflow_id": "wf_secret123", "instructions": "INTERNAL PROMPT"},
            },
            "voice": {"instructions": "VOICE PROMPT", "business_facts": "FACTS"},
        }
    )
    public = config_public(config)
    text = str(public)
    for hidden in ("n8n.internal", "wf_secret123", "INTERNAL PROMPT", "VOICE PROMPT", "FACTS"):
        assert hidden not in text
    assert public["provider"] == "chatkit"
    assert public["appearance"] == config["appearance"]["chatkit"]


@pytest.mark.django_db
def test_database_refuses_widget_type_that_contradicts_the_provider():
    widget = WidgetFactory(provider="chatkit")
    assert widget.widget_type == "chatkit"
    with pytest.raises(IntegrityError), transaction.atomic():
        Widget.objects.filter(pk=widget.pk).update(widget_type="n8n")


@pytest.mark.parametrize("bad", ["Chat\u202eevil", "Help\u2066desk\u2069", "Ch\u200bat", "Two\nlines"])
def test_display_texts_refuse_bidi_zero_width_and_control_characters(bad):
    """The shared display-name rule of licenses.api (as for brand names) on the widget's own titles."""
    for config, path in (
        ({"appearance": {"n8n": {"title": bad}}}, "appearance.n8n.title"),
        ({"appearance": {"n8n": {"subtitle": bad}}}, "appearance.n8n.subtitle"),
        ({"behaviour": {"strings": {"open_chat": bad}}}, "behaviour.strings.open_chat"),
    ):
        with pytest.raises(ConfigError) as exc:
            config_normalize(config)
        assert "bidirectional" in exc.value.errors[path][0], path
    emoji = "Team \U0001f468\u200d\U0001f4bb"
    assert config_normalize({"appearance": {"n8n": {"title": emoji}}})["appearance"]["n8n"]["title"] == emoji
