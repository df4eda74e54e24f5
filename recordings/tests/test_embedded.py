"""The embedded default (SQLite, no DATABASE_URL) records and verifies sessions too."""

from __future__ import annotations

import pytest

from recordings.tests.embedded import embedded

RECORD = """
import asyncio, django
django.setup()
from recordings.tests.factories import record_session, statement_events
from recordings.writer import shutdown_writer
recorder = asyncio.run(asyncio.wait_for(record_session(statement_events(700)), 60))
shutdown_writer()
print(recorder.session_id)
"""


@pytest.mark.timeout(120)
def test_the_embedded_sqlite_default_records_and_verifies(tmp_path):
    run = embedded(tmp_path)
    recorded = run("-c", RECORD)
    assert recorded.returncode == 0, recorded.stderr
    session_id = recorded.stdout.strip()
    verified = run("manage.py", "recordings", "verify", "--all")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.splitlines() == [
        f"ok     {session_id}  2102 events, sealed",
        "1 session checked, 0 failed",
    ]
    assert (tmp_path / "airlock.sqlite3").exists() and (tmp_path / "recording-signing-key.pem").exists()
