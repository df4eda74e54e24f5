import dj_database_url
import pytest
from django.core.exceptions import ImproperlyConfigured

from console.envconfig import database_url, env_bool, env_int, env_secret, env_url


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


def _web_settings(database_url: str | None, **extra: str) -> dict:
    """The default database's settings as the console's web process (console.asgi) loads them."""
    import json
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "AIRLOCK_DB_POOL")}
    if database_url:
        env["DATABASE_URL"] = database_url
    env.update(extra)
    code = (
        "import json, os, console.asgi; from django.conf import settings; "
        "db = settings.DATABASES['default']; "
        "print(json.dumps({'max_age': db['CONN_MAX_AGE'], 'pool': db.get('OPTIONS', {}).get('pool'), "
        "'leaked': os.environ.get('AIRLOCK_DB_POOL')}))"
    )
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_web_process_takes_postgresql_connections_from_a_pool(tmp_path):
    # Each request runs in a thread of its own: without a pool, a new connection each time.
    got = _web_settings("postgres://postgres@127.0.0.1:5432/airlock", AIRLOCK_DB_POOL_MAX="7")
    assert got == {"max_age": 0, "pool": {"min_size": 2, "max_size": 7, "timeout": 10}, "leaked": None}
    # Switched off explicitly: persistent connections as elsewhere.
    got = _web_settings("postgres://postgres@127.0.0.1:5432/airlock", AIRLOCK_DB_POOL="0")
    assert got["pool"] is None and got["max_age"] == 60
    # The embedded SQLite database has no pool.
    got = _web_settings(None, AIRLOCK_DATA_DIR=str(tmp_path))
    assert got["pool"] is None


def test_other_processes_keep_persistent_connections():
    from django.conf import settings

    assert "pool" not in settings.DATABASES["default"].get("OPTIONS", {})


@pytest.mark.parametrize(
    "database",
    [
        {"USER": "postgres", "PASSWORD": "", "HOST": "", "PORT": "", "NAME": "airlock"},
        {
            "USER": "air lock",
            "PASSWORD": "p@ss:w/rd%?#",
            "HOST": "db.internal",
            "PORT": 6432,
            "NAME": "rec db",
        },
        {
            "USER": "postgres",
            "PASSWORD": "",
            "HOST": "/var/run/postgresql",
            "PORT": "5433",
            "NAME": "airlock",
        },
        {"USER": "postgres", "PASSWORD": "secret", "HOST": "::1", "PORT": 5432, "NAME": "airlock"},
    ],
)
def test_a_database_url_for_a_child_process_names_the_same_database(database):
    """What ``DATABASE_URL`` parses back to is the database described, password included."""
    parsed = dj_database_url.parse(database_url(database))
    assert parsed["ENGINE"] == "django.db.backends.postgresql"
    assert parsed["USER"] == database["USER"]
    assert parsed["PASSWORD"] == database["PASSWORD"]
    assert parsed["HOST"] == (database["HOST"] or "127.0.0.1")
    assert int(parsed["PORT"]) == int(database["PORT"] or 5432)
    assert parsed["NAME"] == database["NAME"]
