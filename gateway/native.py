"""Compiled builds of the gateway's hot loops, used only when built from the source in use.

``scripts/build_native.py`` (run by ``make venv``) compiles a few pure-Python modules with
mypyc into the venv under names of their own (``NATIVE_MODULES``) and stamps each with the
SHA-256 of the source it was built from. ``load(pure_module)`` returns the compiled module
when it exists and its stamp matches the source file of ``pure_module`` as it is now, and
``pure_module`` otherwise: an edited source is never shadowed by a stale build, and a
machine without a C compiler runs the same code interpreted.

``AIRLOCK_NATIVE``: ``auto`` (default) as above; ``off`` always the interpreted modules;
``require`` raises ``ImportError`` when a compiled module is missing or stale (the test
suite runs so, so that it proves the compiled code).
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
from pathlib import Path
from types import ModuleType

log = logging.getLogger("airlock.gateway.native")

# Source module -> the name of its compiled build.
NATIVE_MODULES = {
    "gateway.postgres.datarows": "_airlock_datarows",
    "gateway.postgres.relay": "_airlock_relay",
}


def source_digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load(pure: ModuleType) -> ModuleType:
    """The compiled build of ``pure`` when it is usable, else ``pure`` itself."""
    mode = os.environ.get("AIRLOCK_NATIVE", "auto").strip().lower() or "auto"
    if mode not in ("auto", "off", "require"):
        raise ImportError(f"AIRLOCK_NATIVE: expected auto, off or require, got {mode!r}")
    if mode == "off":
        return pure
    name = NATIVE_MODULES[pure.__name__]
    problem = ""
    try:
        native = importlib.import_module(name)
    except ImportError as exc:
        problem = f"not built ({exc}); run `make venv` (it needs a C compiler)"
    else:
        assert pure.__file__ is not None  # noqa: S101 - a source module has a file
        if getattr(native, "SOURCE_SHA256", None) == source_digest(pure.__file__):
            return native
        problem = f"{name} was built from another version of {pure.__file__}; run `make venv` to rebuild it"
    if mode == "require":
        raise ImportError(
            f"the compiled build of {pure.__name__} is required (AIRLOCK_NATIVE=require): {problem}"
        )
    log.warning("using the interpreted %s: %s", pure.__name__, problem)
    return pure
