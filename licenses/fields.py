from __future__ import annotations

from typing import Any

from django.db import models

from licenses.crypto import decrypt_json, encrypt_json


class EncryptedJSONField(models.TextField):
    """A dict of secrets stored as one Fernet token; decrypted only in Python, never in SQL."""

    description = "Encrypted JSON object"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("blank", True)
        kwargs.setdefault("default", dict)
        kwargs.setdefault("editable", False)
        super().__init__(*args, **kwargs)

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> dict:
        return decrypt_json(value) if value else {}

    def to_python(self, value: Any) -> dict:
        if isinstance(value, dict):
            return value
        return decrypt_json(value) if value else {}

    def get_prep_value(self, value: Any) -> str:
        if not value:
            return ""
        if isinstance(value, str):
            return value
        return encrypt_json(value)

    def value_to_string(self, obj: Any) -> str:
        # Never serialise the plain secret (dumpdata, admin history): keep the ciphertext.
        return self.get_prep_value(self.value_from_object(obj))
