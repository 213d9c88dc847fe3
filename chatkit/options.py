"""What a ChatKit page mounts: `chatkit_options(config)` is the ONE mapping from a widget config to ChatKit's
JS options (DESIGN rule 1) — the iframe page and the configurator preview embed its JSON; nothing of the config
is copied into JavaScript — plus the mode, the model and what keeps a widget from answering."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from widgets.models import Widget
from widgets.selectors import openai_api_key

AGENT_BUILDER_SHUTDOWN = "2026-11-30"


def chatkit_options(config: dict[str, Any]) -> dict[str, Any]:
    """ChatKit `setOptions` values (everything but `api`) from a normalised widget config.

    Names follow openai/chatkit-js `ChatKitOptions` / `ThemeOption` / `StartScreenOption` /
    `ComposerOption` / `HistoryOption`. ChatKit knows only light and dark: "auto" is sent as light
    and `chatkit_color_scheme_auto(config)` tells the page to follow prefers-color-scheme.
    """
    look = config["appearance"]["chatkit"]
    behaviour = config["behaviour"]
    options: dict[str, Any] = {
        "theme": {
            "colorScheme": "dark" if look["color_scheme"] == "dark" else "light",
            "color": {
                "grayscale": {
                    "hue": look["grayscale_hue"],
                    "tint": look["grayscale_tint"],
                    "shade": look["grayscale_shade"],
                },
                "accent": {"primary": look["accent_color"], "level": look["accent_level"]},
            },
            "radius": look["radius"],
            "density": look["density"],
            "typography": {"baseSize": look["base_font_size"]},
        },
        "header": {"enabled": True},
        "history": {"enabled": bool(behaviour["history"])},
        "startScreen": {
            "greeting": behaviour["greeting"],
            "prompts": [{"label": prompt, "prompt": prompt} for prompt in behaviour["starter_prompts"]],
        },
        "composer": {
            "placeholder": behaviour["placeholder"],
            # Off until an attachment store exists: our ChatKit server refuses attachments.
            "attachments": {"enabled": False},
        },
    }
    if behaviour["locale"]:
        options["locale"] = behaviour["locale"]
    if behaviour["disclaimer"]:
        options["disclaimer"] = {"text": behaviour["disclaimer"]}
    return options


def chatkit_color_scheme_auto(config: dict[str, Any]) -> bool:
    return config["appearance"]["chatkit"]["color_scheme"] == "auto"


def chatkit_mode(config: dict[str, Any]) -> str:
    return config["connection"]["chatkit"]["mode"]


NOT_SET_UP = "This chat isn't set up for this site yet: the site owner needs to connect it."


def chatkit_setup_problem(*, widget: Widget, config: dict[str, Any], member: bool = False) -> str:
    """Why this ChatKit widget cannot answer ("" when it can): in the agency's own words for a member (the
    configurator preview), without the setup's details for the site's visitors."""
    if chatkit_mode(config) == "hosted":
        return (
            f"This chat ran on an OpenAI Agent Builder workflow, which OpenAI shut down on "
            f"{AGENT_BUILDER_SHUTDOWN}. The site owner needs to switch it to the Switchboard ChatKit server."
        )
    if not openai_api_key(secrets=widget.secrets):
        if not member:
            return NOT_SET_UP
        return "This chat is not connected yet: its ChatKit connection needs an OpenAI API key."
    return ""


def chatkit_model(config: dict[str, Any]) -> str:
    return config["connection"]["chatkit"].get("model") or settings.CHATKIT_DEFAULT_MODEL
