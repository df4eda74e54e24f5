"""The embedded default (SQLite, no DATABASE_URL) records and verifies sessions too."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

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
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env |= {"AIRLOCK_DATA_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "console.settings"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=100
        )

    migrated = run("manage.py", "migrate", "--noinput", "-v", "0")
    assert migrated.returncode == 0, migrated.stderr
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
