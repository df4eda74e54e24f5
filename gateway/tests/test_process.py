"""The gateway process's tuning (gateway/process.py)."""

from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

import pytest

from gateway import process

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def restore_process_state():
    threshold, interval = gc.get_threshold(), sys.getswitchinterval()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)
    sys.setswitchinterval(interval)


def test_prepare_freezes_the_start_up_heap_and_raises_the_young_threshold(restore_process_state, settings):
    settings.GATEWAY_GC_THRESHOLD = 12_345
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    _, middle, old = gc.get_threshold()
    process.prepare()
    assert gc.get_freeze_count() > 10_000  # Django and the apps are loaded in this process
    assert gc.get_threshold() == (12_345, middle, old)
    assert sys.getswitchinterval() == pytest.approx(process.SWITCH_INTERVAL)


def test_cycles_are_still_collected_after_prepare(restore_process_state):
    import weakref

    process.prepare(gc_threshold=1_000)

    class Node:
        pass

    a, b = Node(), Node()
    a.other, b.other = b, a  # a reference cycle: only the collector can free it
    gone = weakref.ref(a)
    del a, b
    # Young objects past the threshold (kept alive: the count is of live allocations)
    # start a collection on their own.
    keep = [[] for _ in range(5_000)]
    assert gone() is None
    del keep


def test_the_gateway_command_prepares_its_process():
    """``manage.py gateway`` calls prepare() before serving (checked in a real process
    that stops at the point where it would start listening)."""
    code = (
        "import django, os, sys, gc;"
        "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'console.settings');"
        "os.environ['AIRLOCK_GATEWAY_GC_THRESHOLD'] = '4321';"
        "django.setup();"
        "import gateway.management.commands.gateway as cmd;"
        "cmd.Command._serve = lambda self, addresses, workers=None: print('threshold', gc.get_threshold()[0],"
        " 'frozen', gc.get_freeze_count() > 0, flush=True) or __import__('asyncio').sleep(0);"
        "from django.core.management import call_command;"
        "call_command('gateway', postgres_listen='127.0.0.1:0')"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    assert "threshold 4321 frozen True" in out.stdout
