import pytest
from django.core.exceptions import ImproperlyConfigured

from console.envconfig import env_bool, env_int, env_secret, env_url


def test_a_bad_boolean_names_the_variable(monkeypatch):
    monkeypatch.setenv("AIRLOCK_X", "maybe")
    with pytest.raises(ImproperlyConfigured, match="AIRLOCK_X"):
        env_bool("AIRLOCK_X")


def test_a_bad_integer_names_the_variable(monkeypatch):
    monkeypatch.setenv("AIRLOCK_N", "ten")
    with pytest.raises(ImproperlyConfigured, match="AIRLOCK_N: expected an integer"):
        env_int("AIRLOCK_N", 1)


def test_a_database_url_with_a_wrong_scheme_names_the_variable(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "mysql://db/x")
    with pytest.raises(ImproperlyConfigured, match="DATABASE_URL: scheme"):
        env_url("DATABASE_URL", ("postgres", "postgresql"))


def test_a_redis_url_with_a_bad_port_names_the_variable(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://localhost:notaport/0")
    with pytest.raises(ImproperlyConfigured, match="REDIS_URL"):
        env_url("REDIS_URL", ("redis",))


def test_secrets_are_read_from_a_file(monkeypatch, tmp_path):
    path = tmp_path / "key"
    path.write_text("s3cret\n")
    monkeypatch.setenv("AIRLOCK_K_FILE", str(path))
    assert env_secret("AIRLOCK_K") == "s3cret"


def test_the_settings_module_refuses_a_bad_database_url():
    import os
    import subprocess
    import sys

    env = dict(os.environ, DATABASE_URL="oracle://x/y")
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    assert "DATABASE_URL: scheme must be one of" in result.stderr
