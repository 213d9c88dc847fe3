from django.core.management.base import BaseCommand

from licenses.services import secrets_reencrypt


class Command(BaseCommand):
    help = "Re-encrypt every stored secret with the first key of FIELD_ENCRYPTION_KEYS (after adding a key)."

    def handle(self, *args, **options):
        count = secrets_reencrypt()
        self.stdout.write(self.style.SUCCESS(f"Re-encrypted secrets of {count} row(s)."))
