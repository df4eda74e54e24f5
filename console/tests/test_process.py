"""The web process's tuning (console/process.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from console import process

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("argv", "served"),
    [
        (["/srv/venv/bin/daphne", "-b", "127.0.0.1", "console.asgi:application"], True),
        (["/srv/venv/lib/python3.11/site-packages/daphne/__main__.py", "-p", "8000"], True),
        (["/srv/venv/bin/pytest", "-q"], False),
        (["manage.py", "shell"], False),
        ([], False),
    ],
)
def test_it_knows_when_daphne_serves_the_process(argv, served):
    assert process.served_by_daphne(argv) is served


def test_a_process_daphne_does_not_serve_keeps_pythons_defaults():
    import gc

    before = (gc.get_threshold(), sys.getswitchinterval(), gc.get_freeze_count())
    assert process.prepare(["/srv/venv/bin/pytest"]) is False
    assert (gc.get_threshold(), sys.getswitchinterval(), gc.get_freeze_count()) == before


def test_the_application_daphne_loads_prepares_its_process():
    """Loading ``console.asgi`` as daphne does tunes the process (in a real process)."""
    code = (
        "import gc, os, sys;"
        "sys.argv = [os.path.join('venv', 'bin', 'daphne'), 'console.asgi:application'];"
        "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'console.settings');"
        "os.environ['AIRLOCK_CONSOLE_GC_THRESHOLD'] = '4321';"
        "import console.asgi;"
        "print('threshold', gc.get_threshold()[0], 'frozen', gc.get_freeze_count() > 10_000,"
        " 'views', 'approvals.api' in sys.modules, 'interval', sys.getswitchinterval(), flush=True)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    assert "threshold 4321 frozen True views True interval 0.0005" in out.stdout
