"""Masking of what the server says during connection startup (before its first
ReadyForQuery): ParameterStatus values and NoticeResponse/ErrorResponse text.

Real psql and psycopg through the gateway to the private PostgreSQL. PostgreSQL 15 has no
login event triggers, so the startup notice comes from a role setting whose value is
invalid at login: ``ALTER ROLE ... SET default_text_search_config`` with a configuration
that does not exist makes the server send ``WARNING: invalid value for parameter
"default_text_search_config": "..."`` during startup, quoting the value.
"""

from __future__ import annotations

import os
import subprocess

import psycopg
import pytest

from gateway.tests.postgres.test_masking import _masking_policy

pytestmark = [pytest.mark.timeout(120)]

EMAIL = "dana.startup@example.org"


@pytest.fixture
def masked_gw(gateway_factory):  # type: ignore[no-untyped-def]
    env = gateway_factory()
    _masking_policy({})
    return env


@pytest.fixture
def login_warning(private_pg):  # type: ignore[no-untyped-def]
    """The connection's role gets a setting that makes every login warn, quoting EMAIL."""
    with private_pg.admin() as conn:
        conn.execute(
            f"ALTER ROLE scram_user IN DATABASE shop SET default_text_search_config = 'public.\"{EMAIL}\"'"
        )
    try:
        yield
    finally:
        with private_pg.admin() as conn:
            conn.execute("ALTER ROLE scram_user IN DATABASE shop RESET default_text_search_config")


def _recorded_text(env) -> str:  # type: ignore[no-untyped-def]
    session = env.session()
    events = " ".join(str(payload) for _, payload in env.events())
    return f"{session.application_name} {events}"


def test_an_application_name_echoed_in_parameter_status_is_masked(masked_gw):
    with masked_gw.connect(application_name=f"agent of {EMAIL}") as conn:
        shown = conn.info.parameter_status("application_name")
        conn.execute("SELECT 1")
    assert shown == "agent of [EMAIL]"
    recorded = _recorded_text(masked_gw)
    assert "agent of [EMAIL]" in recorded
    assert EMAIL not in recorded


def test_a_startup_warning_quoting_a_value_is_masked_for_psql_and_the_recording(masked_gw, login_warning):
    out = subprocess.run(
        ["psql", masked_gw.conninfo(), "-XAt", "-c", "SELECT 42"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PGCONNECT_TIMEOUT": "10"},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "42"
    assert 'invalid value for parameter "default_text_search_config"' in out.stderr
    assert "[EMAIL]" in out.stderr
    assert EMAIL not in out.stderr
    recorded = _recorded_text(masked_gw)
    assert "default_text_search_config" in recorded and "[EMAIL]" in recorded
    assert EMAIL not in recorded


def test_the_startup_warning_reaches_the_agent_unmasked_when_masking_is_off(
    gateway_factory, login_warning, settings
):
    """The same warning without masking: proves the test above exercises the startup path."""
    settings.AIRLOCK_MASKING_DEFAULT = "off"
    env = gateway_factory()
    out = subprocess.run(
        ["psql", env.conninfo(), "-XAt", "-c", "SELECT 1"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PGCONNECT_TIMEOUT": "10"},
    )
    assert EMAIL in out.stderr


def test_an_error_refusing_the_upstream_connection_is_masked(masked_gw, make_connection):
    make_connection("ghost", database=EMAIL)
    _masking_policy({}, connection="ghost", name="ghost-pii")
    with pytest.raises(psycopg.OperationalError) as info:
        masked_gw.connect(dbname="ghost")
    assert "does not exist" in str(info.value) and "[EMAIL]" in str(info.value)
    assert EMAIL not in str(info.value)
    recorded = _recorded_text(masked_gw)
    assert "[EMAIL]" in recorded and EMAIL not in recorded


def test_a_parameter_status_during_the_session_is_masked_too(masked_gw):
    with masked_gw.connect() as conn:
        conn.execute(f"SET application_name = 'now {EMAIL}'")
        shown = conn.info.parameter_status("application_name")
        (value,) = conn.execute("SELECT 1").fetchone()
    assert shown == "now [EMAIL]" and value == 1
    assert EMAIL not in _recorded_text(masked_gw)
