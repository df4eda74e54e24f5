"""``manage.py recordings verify``: what it prints and how it exits."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from io import StringIO
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings
from django.core.management import CommandError, call_command

from conftest import database_url
from recordings import keys
from recordings.models import Event, Session
from recordings.tests.factories import record_session, statement_events

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]

ROOT = Path(__file__).resolve().parents[2]


def recorded(count: int = 2) -> Session:
    recorder = asyncio.run(asyncio.wait_for(record_session(statement_events(count)), 30))
    return Session.objects.get(pk=recorder.session_id)


def verify(*args: str) -> tuple[str, CommandError | None]:
    out = StringIO()
    try:
        call_command("recordings", "verify", *args, stdout=out, no_color=True)
    except CommandError as exc:
        return out.getvalue(), exc
    return out.getvalue(), None


def manage(*args: str) -> subprocess.CompletedProcess[str]:
    """The real command line, on the test database."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "AIRLOCK_RECORDING_KEY_FILE": str(settings.RECORDING_SIGNING_KEY_FILE),
    }
    return subprocess.run(
        [sys.executable, "manage.py", "recordings", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_it_reports_every_intact_session_and_exits_zero():
    first, second = recorded(), recorded(1)
    out, error = verify("--all")
    assert error is None
    assert out.splitlines() == [
        f"ok     {first.pk}  8 events, sealed",
        f"ok     {second.pk}  5 events, sealed",
        "2 sessions checked, 0 failed",
    ]


def test_it_names_the_first_broken_event_and_fails():
    intact, broken = recorded(), recorded()
    Event.objects.filter(session=broken, seq=5).update(payload={"text": "SELECT 'nothing to see'"})
    out, error = verify("--all", "--quiet")
    assert error is not None and error.returncode == 1
    assert str(error) == "2 sessions checked, 1 failed"
    assert out.splitlines() == [
        f"FAILED {broken.pk}  event 5: event 5 does not match its hash (changed, inserted or reordered)"
    ]
    out, error = verify(str(intact.pk))
    assert error is None and out.splitlines()[-1] == "1 session checked, 0 failed"


def test_it_counts_an_unknown_session_as_a_failure_and_refuses_a_malformed_id():
    missing = uuid.uuid4()
    out, error = verify(str(missing))
    assert error is not None and out.strip() == f"FAILED {missing}  no such session"
    with pytest.raises(CommandError, match="'nope' is not a session id"):
        call_command("recordings", "verify", "nope")
    with pytest.raises(CommandError, match="name one or more SESSION_IDs, or --all"):
        call_command("recordings", "verify")


def test_offline_verification_with_a_given_public_key(tmp_path):
    session = recorded()
    public = tmp_path / "airlock.pub"
    public.write_text(keys.public_key_pem())
    out, error = verify(str(session.pk), "--public-key", str(public))
    assert error is None, out
    stranger = tmp_path / "stranger.pub"
    stranger.write_bytes(
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    out, error = verify(str(session.pk), "--public-key", str(stranger))
    assert error is not None and "the seal was made by an unknown key" in out


def test_the_command_line_exit_code_follows_the_result():
    session = recorded()
    ok = manage("verify", str(session.pk))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines()[-1] == "1 session checked, 0 failed"
    Event.objects.filter(session=session, seq=3).delete()
    broken = manage("verify", "--all")
    assert broken.returncode == 1
    assert f"FAILED {session.pk}  event 3: event 3 is missing (next stored event is 4)" in broken.stdout
    assert "1 session checked, 1 failed" in broken.stderr


def test_it_prints_the_public_key():
    out = StringIO()
    call_command("recordings", "public-key", stdout=out)
    assert out.getvalue() == keys.public_key_pem()
    assert out.getvalue().startswith("-----BEGIN PUBLIC KEY-----")
