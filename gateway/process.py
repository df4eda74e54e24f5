"""Process-wide settings of a gateway process, applied once its code is loaded.

``manage.py gateway`` (and the bench's diagnostic copies of it) call ``prepare()`` before
serving:

* The GIL switch interval is shortened: the recording writer's threads run Python too, and
  with the default 5 ms the event loop, woken by a socket, could wait that long for the GIL
  on every statement.
* Everything loaded at start-up (Django, the apps, pglast, compiled policies...) is moved
  out of the garbage collector's generations (``gc.freeze``): it lives as long as the
  process, and a full collection no longer walks it.
* The young generation's threshold is raised (``GATEWAY_GC_THRESHOLD``). Statements
  allocate thousands of short-lived objects each; with Python's default (700) the
  collector ran about once per statement, and together with the full collections that the
  decision caches' turnover triggered it took about a third of the process's CPU time
  under pgbench (docs/performance.md). Objects freed by reference counting never reach the
  collector, so the higher threshold does not keep memory longer; only reference cycles
  wait a little longer to be found.
"""

from __future__ import annotations

import gc
import sys

SWITCH_INTERVAL = 0.0005


def prepare(gc_threshold: int | None = None) -> None:
    """Tune this process for serving (see the module docstring); call after start-up."""
    from django.conf import settings

    sys.setswitchinterval(SWITCH_INTERVAL)
    threshold = gc_threshold if gc_threshold is not None else int(settings.GATEWAY_GC_THRESHOLD)
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(threshold, middle, old)
