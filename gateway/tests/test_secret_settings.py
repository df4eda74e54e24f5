"""AIRLOCK_SECRET_KEYS as the settings read it (each case in a fresh process)."""

import os
import subprocess
import sys

from cryptography.fernet import Fernet


def _check(tmp_path, *args, **env):  # type: ignore[no-untyped-def]
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AIRLOCK_SECRET_KEYS")}
    environ.update(env, AIRLOCK_DATA_DIR=str(tmp_path))
    code = "import django; django.setup(); from django.conf import settings; print(','.join(settings.AIRLOCK_SECRET_KEYS))"
    if args:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            env=environ,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    environ["DJANGO_SETTINGS_MODULE"] = "console.settings"
    return subprocess.run(
        [sys.executable, "-c", code], env=environ, capture_output=True, text=True, timeout=60, check=False
    )


def test_a_malformed_key_stops_start_up_naming_the_variable_but_not_the_key(tmp_path):
    good = Fernet.generate_key().decode()
    result = _check(tmp_path, "check", AIRLOCK_SECRET_KEYS=f"{good},Not-A-Real-Key-7777")
    assert result.returncode != 0
    assert "AIRLOCK_SECRET_KEYS: key #2 is not a Fernet key" in result.stderr
    assert "Not-A-Real-Key-7777" not in result.stderr


def test_keys_are_read_from_a_file_in_order(tmp_path):
    first, second = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    path = tmp_path / "keys"
    path.write_text(f"{first},\n {second}\n")
    result = _check(tmp_path, AIRLOCK_SECRET_KEYS_FILE=str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{first},{second}"


def test_without_keys_a_generated_key_is_kept_in_the_data_directory(tmp_path):
    first = _check(tmp_path)
    second = _check(tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    assert (tmp_path / "secret-encryption-key").stat().st_mode & 0o777 == 0o600


def test_the_deployment_check_warns_when_keys_are_not_configured(tmp_path):
    result = _check(tmp_path, "check", "--deploy")
    assert "airlock.W001" in result.stderr + result.stdout
    configured = _check(tmp_path, "check", "--deploy", AIRLOCK_SECRET_KEYS=Fernet.generate_key().decode())
    assert "airlock.W001" not in configured.stderr + configured.stdout
