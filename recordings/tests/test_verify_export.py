"""Offline verification of exports: ``python -m recordings.verify_export`` and ``manage.py``."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from django.core.management import CommandError, call_command

from recordings.tests.factories import recorded, statement_events
from recordings.views import jsonl_chunks

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


@pytest.fixture
def exported(tmp_path) -> tuple[Path, Path]:  # type: ignore[no-untyped-def]
    session = recorded(statement_events(2))
    path = tmp_path / "session.jsonl"
    path.write_bytes(b"".join(jsonl_chunks(session)))
    out = io.StringIO()
    call_command("recordings", "public-key", stdout=out)
    key = tmp_path / "airlock.pem"
    key.write_text(out.getvalue())
    return path, key


def offline(*args: str) -> subprocess.CompletedProcess[str]:
    # No settings, no database: what an auditor has on their own machine.
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("DJANGO", "DATABASE", "REDIS", "AIRLOCK"))
    }
    return subprocess.run(
        [sys.executable, "-m", "recordings.verify_export", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_the_standalone_verifier_passes_an_intact_export_and_names_the_changed_event(exported):
    path, key = exported
    ok = offline(str(path), "--public-key", str(key))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.endswith(": 8 events, chain intact, seal valid\n") and ok.stdout.startswith("ok ")

    lines = path.read_bytes().splitlines()
    event = orjson.loads(lines[3])
    event["payload"]["text"] = "SELECT * FROM invoices"
    path.write_bytes(b"\n".join([*lines[:3], orjson.dumps(event), *lines[4:]]) + b"\n")
    failed = offline(str(path), "--public-key", str(key))
    assert failed.returncode == 1
    assert "FAILED" in failed.stdout and "event 3: event 3 does not match its hash" in failed.stdout


def test_the_verifier_needs_only_its_own_files(exported, tmp_path):
    """The files docs/recordings.md names, copied alone beside the export: no Django, no
    ``gateway`` package (the canonical JSON check then runs its Python reference)."""
    path, key = exported
    alone = tmp_path / "alone" / "recordings"
    alone.mkdir(parents=True)
    for name in ("__init__.py", "chain.py", "jsonscan.py", "export.py", "verify_export.py"):
        (alone / name).write_bytes((ROOT / "recordings" / name).read_bytes())
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO", "DATABASE", "REDIS", "AIRLOCK", "PYTHONPATH"))
    }
    ok = subprocess.run(
        [sys.executable, "-m", "recordings.verify_export", str(path), "--public-key", str(key)],
        cwd=alone.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("ok ") and ok.stdout.endswith(": 8 events, chain intact, seal valid\n")
    assert ok.stderr == ""


def test_the_standalone_verifier_refuses_a_file_that_is_not_a_key(exported):
    path, _ = exported
    bad = offline(str(path), "--public-key", str(path))
    assert bad.returncode == 2 and "is not a PEM Ed25519 public key" in bad.stderr


def test_manage_py_verify_export_runs_the_same_check(exported):
    path, key = exported
    out = io.StringIO()
    call_command("recordings", "verify-export", str(path), "--public-key", str(key), stdout=out)
    assert "chain intact, seal valid" in out.getvalue()
    path.write_bytes(b"\n".join(path.read_bytes().splitlines()[:-2]) + b"\n")  # cut short
    with pytest.raises(CommandError, match="ends without its seal line"):
        call_command("recordings", "verify-export", str(path), "--public-key", str(key))
