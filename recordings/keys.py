"""The Ed25519 key that seals recordings, held by the gateway's host.

``settings.RECORDING_SIGNING_KEY_FILE`` names a PEM (PKCS#8) Ed25519 private key. When it
is the embedded default (``DATA_DIR/recording-signing-key.pem``) and missing, a key is
generated there, mode 0600, on first use. A key file named explicitly must exist: a typo
must not silently start a new key.

Sessions store the key id (``chain.key_id``, a fingerprint of the public key), so old
recordings stay verifiable after a rotation: list the old public keys (PEM files) in
``settings.RECORDING_VERIFY_KEY_FILES``.
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from recordings.chain import key_id

DEFAULT_KEY_NAME = "recording-signing-key.pem"

_lock = threading.Lock()
_cache: dict[str, Ed25519PrivateKey] = {}


def _default_path() -> Path:
    return Path(settings.DATA_DIR) / DEFAULT_KEY_NAME


def _configured_path() -> Path:
    return Path(settings.RECORDING_SIGNING_KEY_FILE).expanduser().resolve()


def _generate(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # Written beside the target with 0600 and linked into place, so that two processes
    # starting at once never see a half-written key and never overwrite each other's.
    fd, tmp = tempfile.mkstemp(prefix=".recording-key-", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
    finally:
        os.unlink(tmp)


def _load(path: Path) -> Ed25519PrivateKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImproperlyConfigured(
            f"AIRLOCK_RECORDING_KEY_FILE: cannot read {str(path)!r}: {exc.strerror}"
        ) from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        key = None
    if not isinstance(key, Ed25519PrivateKey):
        raise ImproperlyConfigured(
            f"AIRLOCK_RECORDING_KEY_FILE: {str(path)!r} is not an unencrypted PEM Ed25519 private key"
        )
    return key


def signing_key() -> Ed25519PrivateKey:
    """The private key that seals recordings made by this process (loaded once)."""
    path = _configured_path()
    with _lock:
        key = _cache.get(str(path))
        if key is None:
            if not path.exists() and path == _default_path().resolve():
                _generate(path)
            key = _load(path)
            _cache[str(path)] = key
        return key


def signing_key_id() -> str:
    return key_id(signing_key().public_key())


def public_key_pem() -> str:
    """The public half of the signing key, PEM (SubjectPublicKeyInfo), for offline checks."""
    return (
        signing_key()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def load_public_key(data: bytes, *, source: str = "public key") -> Ed25519PublicKey:
    """Parse a PEM Ed25519 public key (or a private key, whose public half is taken)."""
    key: object
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        try:
            key = serialization.load_pem_private_key(data, password=None).public_key()
        except (ValueError, TypeError):
            key = None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{source} is not a PEM Ed25519 key")
    return key


def verification_keys() -> dict[str, Ed25519PublicKey]:
    """Public keys that may have sealed a recording here, by key id."""
    keys = {}
    for name in getattr(settings, "RECORDING_VERIFY_KEY_FILES", []):
        path = Path(name).expanduser()
        try:
            public = load_public_key(path.read_bytes(), source=str(path))
        except OSError as exc:
            raise ImproperlyConfigured(
                f"AIRLOCK_RECORDING_VERIFY_KEY_FILES: cannot read {str(path)!r}: {exc.strerror}"
            ) from None
        except ValueError as exc:
            raise ImproperlyConfigured(f"AIRLOCK_RECORDING_VERIFY_KEY_FILES: {exc}") from None
        keys[key_id(public)] = public
    current = signing_key().public_key()
    keys[key_id(current)] = current
    return keys


def forget_cached_keys() -> None:
    """Drop loaded keys (tests that switch key files; a key rotation without restart)."""
    with _lock:
        _cache.clear()
