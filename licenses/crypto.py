"""Secrets at rest: MultiFernet over FIELD_ENCRYPTION_KEYS (first key encrypts, all decrypt)."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


@lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    try:
        return MultiFernet([Fernet(key.encode()) for key in keys])
    except (ValueError, TypeError) as exc:
        raise ImproperlyConfigured(f"FIELD_ENCRYPTION_KEYS holds an invalid Fernet key: {exc}")


def fernet() -> MultiFernet:
    return _fernet(tuple(settings.FIELD_ENCRYPTION_KEYS))


def encrypt_str(value: str) -> str:
    return fernet().encrypt(value.encode()).decode()


def decrypt_str(token: str) -> str:
    try:
        return fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise ImproperlyConfigured("A stored secret cannot be decrypted with any key in FIELD_ENCRYPTION_KEYS.")


def rotate_token(token: str) -> str:
    """Re-encrypt with the first key (MultiFernet.rotate keeps the original timestamp)."""
    return fernet().rotate(token.encode()).decode()


def encrypt_json(value: dict[str, Any]) -> str:
    return encrypt_str(json.dumps(value, separators=(",", ":"), sort_keys=True))


def decrypt_json(token: str) -> dict[str, Any]:
    return json.loads(decrypt_str(token)) if token else {}


def secret_hint(value: str | None) -> dict[str, Any]:
    """What an API or form may show of a secret: whether it is set and its last 4 characters."""
    if not value:
        return {"set": False, "last4": ""}
    return {"set": True, "last4": value[-4:] if len(value) >= 8 else ""}
