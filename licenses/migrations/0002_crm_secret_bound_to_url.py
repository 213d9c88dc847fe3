"""The CRM signing secret is bound to the URL it was saved with (issue 9 finding 1): bind each stored
secret to the agency's current CRM webhook URL."""

from django.db import migrations


def forwards(apps, schema_editor):
    Agency = apps.get_model("licenses", "Agency")
    for agency in Agency.objects.exclude(secrets="").iterator():
        secrets = dict(agency.secrets or {})
        if secrets.get("crm_webhook_secret") and "crm_webhook_secret_url" not in secrets:
            secrets["crm_webhook_secret_url"] = (agency.crm_webhook_url or "").strip()
            Agency.objects.filter(pk=agency.pk).update(secrets=secrets)


class Migration(migrations.Migration):
    dependencies = [("licenses", "0001_initial")]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
