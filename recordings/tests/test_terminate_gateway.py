"""End to end: psql through the real PostgreSQL gateway, terminated from the console's action."""

from __future__ import annotations

import subprocess

import pytest

from audit.models import AuditRecord
from conftest import database_url
from gateway.tests.postgres.conftest import (  # noqa: F401 - fixtures
    billing_bot,
    gateway_factory,
    gw,
    make_connection,
    private_pg,
    wait_until,
)
from recordings import actions
from recordings.models import Event, Session, TerminationRequest

pytestmark = [pytest.mark.timeout(90)]


def test_a_session_terminated_from_the_console_tells_psql_who_and_why_and_records_it(gw, alice):  # noqa: F811
    psql = subprocess.Popen(
        [
            "psql",
            gw.conninfo(application_name="psql"),
            "-XAt",
            "-c",
            "SELECT 42",
            "-c",
            "SELECT pg_sleep(20)",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: len(gw.recorded) == 1, what="the session to open")
        session_id = gw.recorded[0].session_id
        wait_until(
            # Startup settings are recorded as statements too: wait for this one by its text.
            lambda: Event.objects.filter(
                session_id=session_id, kind="statement", payload__text="SELECT pg_sleep(20)"
            ).exists(),
            what="psql's second statement to be recorded",
        )
        session = Session.objects.get(pk=session_id)
        assert session.status == "live"
        actions.do_terminate_session(alice, session, "runaway query")
        out, err = psql.communicate(timeout=30)
    finally:
        if psql.poll() is None:
            psql.kill()
            psql.communicate()
    assert psql.returncode != 0
    assert out.strip() == "42"
    assert "terminating connection: terminated by alice: runaway query" in err

    session = gw.session(0)
    assert (session.status, session.end_reason) == ("terminated", "terminated by alice: runaway query")
    assert session.verify().ok
    kinds = [(e.kind, e.payload.get("code")) for e in session.events.order_by("seq")]
    assert ("error", "57P01") in kinds
    assert kinds[-1] == ("session_end", None)
    assert AuditRecord.objects.filter(
        action="session.terminate", target_id=str(session_id), actor="alice"
    ).exists()


# The console's side, as `manage.py airlock` runs it without Redis: a process of its own
# with its own in-memory channel layer, so its message cannot reach the gateway.
CONSOLE_TERMINATES = """
import sys
import django
django.setup()
from django.conf import settings
assert settings.CHANNEL_LAYERS["default"]["BACKEND"] == "channels.layers.InMemoryChannelLayer"
from identity.models import User
from recordings import actions
from recordings.models import Session
actions.do_terminate_session(
    User.objects.get(username="alice"), Session.objects.get(pk=sys.argv[1]), "runaway query"
)
"""


def _console_env() -> dict[str, str]:
    import os

    from django.conf import settings

    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("postgresql"):
        env["DATABASE_URL"] = database_url()
    return env


def test_with_in_memory_channel_layers_the_gateway_finds_the_request_in_the_database(
    gateway_factory,  # noqa: F811
    alice,
    settings,
):
    import sys
    from pathlib import Path

    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    settings.RECORDING_TERMINATE_POLL_SECONDS = 1.0
    gateway = gateway_factory()
    psql = subprocess.Popen(
        ["psql", gateway.conninfo(application_name="psql"), "-XAt", "-c", "SELECT pg_sleep(60)"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: len(gateway.recorded) == 1, what="the session to open")
        session_id = gateway.recorded[0].session_id
        wait_until(
            lambda: Event.objects.filter(
                session_id=session_id, kind="statement", payload__text="SELECT pg_sleep(60)"
            ).exists(),
            what="the statement to be recorded",
        )
        console = subprocess.run(
            [sys.executable, "-c", CONSOLE_TERMINATES, str(session_id)],
            cwd=Path(__file__).resolve().parents[2],
            env=_console_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert console.returncode == 0, console.stderr
        # pg_sleep(60) would outlast this wait: psql ends because the gateway closed it.
        _, err = psql.communicate(timeout=30)
    finally:
        if psql.poll() is None:
            psql.kill()
            psql.communicate()
    assert psql.returncode != 0
    assert "terminating connection: terminated by alice: runaway query" in err
    session = gateway.session(0)
    assert (session.status, session.end_reason) == ("terminated", "terminated by alice: runaway query")
    assert session.verify().ok
    assert ("error", "57P01") in [(e.kind, e.payload.get("code")) for e in session.events.order_by("seq")]
    request = TerminationRequest.objects.get(session_id=session_id)
    assert (request.requested_by, request.reason) == ("alice", "runaway query")
