"""Tools get one enable list for voice and ChatKit (`tools.enabled`, was `voice.tools`), and models
that OpenAI shuts down (gpt-4.1-mini 2027-01-14, gpt-realtime 2027-01-20) give way to the platform
defaults: a model outside settings.CHATKIT_MODELS / REALTIME_PRICES becomes "" (the default)."""

from django.conf import settings
from django.db import migrations


def upgrade(config):
    if not isinstance(config, dict):
        return config, False
    changed = False
    voice = config.get("voice")
    if isinstance(voice, dict) and "tools" in voice:
        legacy = voice.pop("tools")
        tools = config.get("tools") if isinstance(config.get("tools"), dict) else {}
        enabled = tools.get("enabled") if isinstance(tools.get("enabled"), dict) else {}
        if isinstance(legacy, dict):
            enabled = {**enabled, **legacy}
        config["tools"] = {**tools, "enabled": enabled}
        changed = True
    chatkit = (config.get("connection") or {}).get("chatkit")
    if isinstance(chatkit, dict) and chatkit.get("model") and chatkit["model"] not in settings.CHATKIT_MODELS:
        chatkit["model"] = ""
        changed = True
    if isinstance(voice, dict) and voice.get("model") and voice["model"] not in settings.REALTIME_PRICES:
        voice["model"] = ""
        changed = True
    return config, changed


def forwards(apps, schema_editor):
    for name in ("Widget", "WidgetVersion"):
        model = apps.get_model("widgets", name)
        for row in model.objects.only("pk", "config").iterator():
            config, changed = upgrade(row.config)
            if changed:
                model.objects.filter(pk=row.pk).update(config=config)


class Migration(migrations.Migration):
    dependencies = [("widgets", "0003_n8n_auth_bound_to_url")]
    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
