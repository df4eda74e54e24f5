"""Running the project on the embedded default (SQLite, no Redis) in a child process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

Run = Callable[..., subprocess.CompletedProcess[str]]


def embedded(data_dir: Path) -> Run:
    """A migrated embedded installation in ``data_dir``; returns ``run(*args)``, which runs
    this interpreter with ``args`` (``"manage.py", ...`` or ``"-c", SCRIPT``) against it."""
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env |= {"AIRLOCK_DATA_DIR": str(data_dir), "DJANGO_SETTINGS_MODULE": "console.settings"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=100
        )

    migrated = run("manage.py", "migrate", "--noinput", "-v", "0")
    assert migrated.returncode == 0, migrated.stderr
    return run


def script_result(run: Run, script: str) -> Any:
    """Run ``script`` (``-c``) with ``run`` and return the JSON its last line prints."""
    done = run("-c", script)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])
