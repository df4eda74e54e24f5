"""End to end: psql through the real PostgreSQL gateway, terminated from the console's action."""

from __future__ import annotations

import subprocess

import pytest

from audit.models import AuditRecord
from gateway.tests.postgres.conftest import (  # noqa: F401 - fixtures
    billing_bot,
    gateway_factory,
    gw,
    make_connection,
    private_pg,
    wait_until,
)
from recordings import actions
from recordings.models import Event, Session

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
