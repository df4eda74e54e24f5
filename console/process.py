"""Process-wide settings of the console's web process (daphne), applied by
``console.asgi`` once the application is loaded.

The gateway's tuning (``gateway.process.prepare``), for the same reasons:

* The web process runs Python on several threads at once: daphne's reactor (every request
  and websocket frame), the thread of synchronous views, the approvals database threads
  that render each open inbox's cards, the channel layer's publisher. With the default 5 ms
  GIL switch interval the reactor, woken by an approve request, could wait that long for
  the GIL behind a card being rendered, and again at each step.
* Everything loaded at start-up (Django, the apps, templates; about 120,000 objects) is
  frozen: a full collection walked all of it (60 ms on the development machine), a pause
  taken by whichever request or inbox event happened to allocate at that moment.
* A higher young-generation threshold (``CONSOLE_GC_THRESHOLD``): each request or event
  allocates thousands of short-lived objects (querysets, model rows, template nodes).

Only when daphne serves the application: a test process or a management command that
imports ``console.asgi`` keeps Python's defaults.
"""

from __future__ import annotations

import sys
from pathlib import Path


def served_by_daphne(argv: list[str] | None = None) -> bool:
    """This process is ``daphne`` or ``python -m daphne`` (how the console is served)."""
    args = sys.argv if argv is None else argv
    if not args:
        return False
    return "daphne" in Path(args[0]).parts[-2:]


def prepare(argv: list[str] | None = None) -> bool:
    """Tune this process if daphne serves it (see the module docstring); whether it did."""
    if not served_by_daphne(argv):
        return False
    from importlib import import_module

    from django.conf import settings

    from gateway import process

    # Every view module is loaded now (Django would on the first request): frozen with the rest.
    import_module(settings.ROOT_URLCONF)
    process.prepare(gc_threshold=int(settings.CONSOLE_GC_THRESHOLD))
    return True
