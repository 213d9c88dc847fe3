import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.db import connection

from licenses.crypto import decrypt_json, encrypt_json, secret_hint
from widgets.tests.factories import WidgetFactory


def _raw_secrets(widget_id: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT secrets FROM widgets_widget WHERE id = %s", [widget_id])
        return cursor.fetchone()[0]


def test_round_trip(settings):
    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    token = encrypt_json({"openai_api_key": "sk-test-1234"})
    assert "sk-test" not in token
    assert decrypt_json(token) == {"openai_api_key": "sk-test-1234"}


def test_secret_hint_shows_only_last_four():
    assert secret_hint("sk-abcdefgh1234") == {"set": True, "last4": "1234"}
    assert secret_hint("") == {"set": False, "last4": ""}
    assert secret_hint("short") == {"set": True, "last4": ""}  # too short to show any of it


@pytest.mark.django_db
def test_secrets_are_encrypted_in_the_database():
    widget = WidgetFactory(secrets={"openai_api_key": "sk-live-supersecret-9876"})
    raw = _raw_secrets(widget.pk)
    assert "supersecret" not in raw
    widget.refresh_from_db()
    assert widget.secrets["openai_api_key"] == "sk-live-supersecret-9876"


@pytest.mark.django_db
def test_key_rotation_old_rows_readable_and_reencrypt_moves_them_to_the_new_key(settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEYS = [old]
    widget = WidgetFactory(secrets={"openai_api_key": "sk-rotate-me-0001"})

    settings.FIELD_ENCRYPTION_KEYS = [new, old]  # new key first: encrypts; old still decrypts
    widget.refresh_from_db()
    assert widget.secrets["openai_api_key"] == "sk-rotate-me-0001"

    call_command("reencrypt_secrets")
    settings.FIELD_ENCRYPTION_KEYS = [new]  # the old key is retired
    widget.refresh_from_db()
    assert widget.secrets["openai_api_key"] == "sk-rotate-me-0001"
    assert Fernet(new.encode()).decrypt(_raw_secrets(widget.pk).encode())
