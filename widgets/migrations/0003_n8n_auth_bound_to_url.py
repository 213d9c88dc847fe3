"""n8n basic-auth credentials were bound to the webhook's origin (`n8n_basic_auth_origin`); they are
now bound to the exact webhook URL (`n8n_basic_auth_url`, issue 9 finding 1). A stored binding
moves to the live (else the draft) webhook URL when that URL is on the bound origin; otherwise the
credentials could not be sent anywhere before either, and they are dropped."""

from django.db import migrations

from licenses.domains import origin_normalize

NAMES = ("n8n_basic_auth_user", "n8n_basic_auth_password")


def _webhook(config):
    return ((config or {}).get("connection", {}).get("n8n", {}).get("webhook_url") or "").strip()


def forwards(apps, schema_editor):
    Widget = apps.get_model("widgets", "Widget")
    WidgetVersion = apps.get_model("widgets", "WidgetVersion")
    for widget in Widget.objects.exclude(secrets="").iterator():
        secrets = dict(widget.secrets or {})
        if "n8n_basic_auth_origin" not in secrets:
            continue
        origin = secrets.pop("n8n_basic_auth_origin")
        live = WidgetVersion.objects.filter(pk=widget.published_version_id).values_list("config", flat=True).first()
        url = next((u for u in (_webhook(live), _webhook(widget.config)) if u and origin_normalize(u) == origin), "")
        if url:
            secrets["n8n_basic_auth_url"] = url
        else:
            for name in NAMES:
                secrets.pop(name, None)
        Widget.objects.filter(pk=widget.pk).update(secrets=secrets)


class Migration(migrations.Migration):
    dependencies = [("widgets", "0002_voice_heartbeat_lead_claimed_at")]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
