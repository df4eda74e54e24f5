"""The recording signing key: generated once for the embedded default, loaded otherwise."""

from __future__ import annotations

import stat

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.exceptions import ImproperlyConfigured

from recordings import chain, keys


@pytest.fixture
def key_dir(settings, tmp_path):  # type: ignore[no-untyped-def]
    settings.DATA_DIR = tmp_path
    settings.RECORDING_SIGNING_KEY_FILE = str(tmp_path / keys.DEFAULT_KEY_NAME)
    settings.RECORDING_VERIFY_KEY_FILES = []
    keys.forget_cached_keys()
    yield tmp_path
    keys.forget_cached_keys()


def _pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def test_the_default_key_is_generated_once_with_owner_only_permissions(key_dir):
    key_id = keys.signing_key_id()
    path = key_dir / keys.DEFAULT_KEY_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    keys.forget_cached_keys()
    assert keys.signing_key_id() == key_id
    assert [p.name for p in key_dir.iterdir()] == [keys.DEFAULT_KEY_NAME]


def test_an_explicit_key_file_that_is_missing_is_a_configuration_error(key_dir, settings):
    settings.RECORDING_SIGNING_KEY_FILE = str(key_dir / "typo.pem")
    with pytest.raises(ImproperlyConfigured, match="AIRLOCK_RECORDING_KEY_FILE: cannot read .*typo.pem"):
        keys.signing_key()
    assert not (key_dir / "typo.pem").exists()


def test_a_key_file_that_is_not_an_ed25519_key_is_refused_without_quoting_it(key_dir, settings):
    bad = key_dir / "bad.pem"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n")
    settings.RECORDING_SIGNING_KEY_FILE = str(bad)
    with pytest.raises(ImproperlyConfigured, match="is not an unencrypted PEM Ed25519 private key") as info:
        keys.signing_key()
    assert "c2VjcmV0" not in str(info.value)


def test_a_configured_key_is_used_and_its_public_half_exported(key_dir, settings):
    key = Ed25519PrivateKey.generate()
    path = key_dir / "gateway.pem"
    path.write_bytes(_pem(key))
    settings.RECORDING_SIGNING_KEY_FILE = str(path)
    assert keys.signing_key_id() == chain.key_id(key.public_key())
    exported = keys.load_public_key(keys.public_key_pem().encode())
    assert chain.key_id(exported) == chain.key_id(key.public_key())
    assert "PRIVATE" not in keys.public_key_pem()


def test_old_public_keys_listed_in_settings_still_verify(key_dir, settings):
    old = Ed25519PrivateKey.generate()
    old_pub = key_dir / "old.pub.pem"
    old_pub.write_bytes(
        old.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    settings.RECORDING_VERIFY_KEY_FILES = [str(old_pub)]
    known = keys.verification_keys()
    assert set(known) == {chain.key_id(old.public_key()), keys.signing_key_id()}


def test_an_unreadable_verify_key_file_is_a_configuration_error(key_dir, settings):
    settings.RECORDING_VERIFY_KEY_FILES = [str(key_dir / "gone.pem")]
    with pytest.raises(ImproperlyConfigured, match="AIRLOCK_RECORDING_VERIFY_KEY_FILES: cannot read"):
        keys.verification_keys()
