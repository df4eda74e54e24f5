"""Encryption of target secrets at rest.

Secrets are a JSON object encrypted with Fernet (AES-128-CBC + HMAC-SHA256) under the
keys in ``settings.AIRLOCK_SECRET_KEYS``; the first key encrypts, every key decrypts,
so rotation is: prepend a new key, run ``manage.py rotate_secrets``, drop the old key.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

if TYPE_CHECKING:
    from gateway.models import Connection

SECRET_FIELDS = ("password", "private_key", "token", "ca_cert", "client_cert", "client_key")


class SecretDecryptionError(Exception):
    """The stored secret cannot be decrypted with any configured key."""


def _fernet() -> MultiFernet:
    try:
        return MultiFernet([Fernet(key.encode()) for key in settings.AIRLOCK_SECRET_KEYS])
    except (ValueError, TypeError) as exc:
        raise ImproperlyConfigured(
            "AIRLOCK_SECRET_KEYS: each key must be a url-safe base64 32-byte Fernet key"
        ) from exc


def encrypt_secrets(values: dict[str, str]) -> str:
    clean = {k: v for k, v in values.items() if v}
    if not clean:
        return ""
    return _fernet().encrypt(json.dumps(clean, sort_keys=True).encode()).decode()


def decrypt_secrets(ciphertext: str) -> dict[str, str]:
    if not ciphertext:
        return {}
    try:
        return json.loads(_fernet().decrypt(ciphertext.encode()))
    except InvalidToken:
        raise SecretDecryptionError(
            "stored secret cannot be decrypted with any key in AIRLOCK_SECRET_KEYS"
        ) from None


def rotate_ciphertext(ciphertext: str) -> str:
    """Re-encrypt ``ciphertext`` under the first key (raises SecretDecryptionError)."""
    if not ciphertext:
        return ""
    try:
        return _fernet().rotate(ciphertext.encode()).decode()
    except InvalidToken:
        raise SecretDecryptionError(
            "stored secret cannot be decrypted with any key in AIRLOCK_SECRET_KEYS"
        ) from None


def is_current(ciphertext: str) -> bool:
    """True when ``ciphertext`` is encrypted under the first (encrypting) key."""
    if not ciphertext:
        return True
    try:
        Fernet(settings.AIRLOCK_SECRET_KEYS[0].encode()).decrypt(ciphertext.encode())
    except (InvalidToken, ValueError, TypeError, IndexError):
        return False
    return True


def set_secrets(connection: Connection, values: dict[str, str], *, replace: bool = False) -> None:
    """Set (merge, or replace) the connection's secrets. Empty values remove a field."""
    current = {} if replace else decrypt_secrets(connection.secret_ciphertext)
    for key, value in values.items():
        if key not in SECRET_FIELDS:
            raise ValueError(f"unknown secret field {key!r}")
        if value:
            current[key] = value
        else:
            current.pop(key, None)
    connection.secret_ciphertext = encrypt_secrets(current)


def get_secrets(connection: Connection) -> dict[str, str]:
    return decrypt_secrets(connection.secret_ciphertext)


def secret_field_names(connection: Connection) -> list[str]:
    try:
        return sorted(get_secrets(connection))
    except SecretDecryptionError:
        return ["<undecryptable>"]
