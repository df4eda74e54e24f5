"""Compiled builds of the gateway's hot loops, used only when built from the source in use.

``scripts/build_native.py`` (run by ``make venv``) compiles a few pure-Python modules with
mypyc into the venv under names of their own (``NATIVE_MODULES``) and stamps each with the
SHA-256 of the source it was built from. ``load(pure_module)`` returns the compiled module
when it exists and its stamp matches the source file of ``pure_module`` as it is now, and
``pure_module`` otherwise: an edited source is never shadowed by a stale build, and a
machine without a C compiler runs the same code interpreted.

Modules of a group (``NATIVE_GROUPS``: the masking engine's three) are compiled together,
each one's imports of the others pointing at their compiled names, so that the calls
between them are native calls; each is stamped with the digest of the whole group's
sources, so an edit to any of them makes every one of them stale.

A few modules have a build written in C instead (``NATIVE_C``: the decision path's text
scans, ``policies/_textscan.c``; the recording's check of its canonical JSON,
``recordings/_jsonscan.c``, and its writer's chain and COPY text,
``recordings/_chainrows.c``; a small result masked where it lies,
``gateway/postgres/_wirerows.c``; the masking trigger's check of one text,
``masking/_triggerscan.c``): the Python module is the reference, a test compares the
two on generated and adversarial input, and the stamp is the digest of the Python source
followed by the C source, so an edit to either makes the build stale.

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

ROOT = Path(__file__).resolve().parent.parent

# Source module -> the name of its compiled build.
NATIVE_MODULES = {
    "gateway.postgres.datarows": "_airlock_datarows",
    "gateway.postgres.wirerows": "_airlock_wirerows",
    "gateway.postgres.relay": "_airlock_relay",
    "masking.placeholders": "_airlock_masking_placeholders",
    "masking.scanner": "_airlock_masking_scanner",
    "masking.policy": "_airlock_masking_policy",
    "masking.triggerscan": "_airlock_triggerscan",
    "policies.textscan": "_airlock_textscan",
    "recordings.jsonscan": "_airlock_jsonscan",
    "recordings.chainrows": "_airlock_chainrows",
}

# Modules whose build is written in C rather than compiled from their Python source: the
# module -> its C source. The Python module is the reference the C must match (each has a
# test comparing the two); the stamp covers both files.
NATIVE_C = {
    "gateway.postgres.wirerows": "gateway/postgres/_wirerows.c",
    "masking.triggerscan": "masking/_triggerscan.c",
    "policies.textscan": "policies/_textscan.c",
    "recordings.jsonscan": "recordings/_jsonscan.c",
    "recordings.chainrows": "recordings/_chainrows.c",
}

# Libraries a C build links with, beyond Python's: libcrypto for SHA-256 (the library
# Python's own ``hashlib`` is built on, so no other runtime dependency).
NATIVE_C_LIBRARIES: dict[str, tuple[str, ...]] = {"recordings.chainrows": ("-lcrypto",)}

# Modules compiled together, in dependency order; every other module is a group of its own.
NATIVE_GROUPS: tuple[tuple[str, ...], ...] = (("masking.placeholders", "masking.scanner", "masking.policy"),)


def group_of(module: str) -> tuple[str, ...]:
    """The modules compiled together with ``module`` (itself included)."""
    return next((group for group in NATIVE_GROUPS if module in group), (module,))


def source_path(module: str) -> Path:
    return ROOT / (module.replace(".", "/") + ".py")


def source_digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def group_digest(module: str) -> str:
    """The stamp of ``module``'s build: the SHA-256 of its group's sources, in order (for a
    module of its own, ``source_digest`` of its file), then of its C source if it has one."""
    digest = hashlib.sha256()
    for member in group_of(module):
        digest.update(source_path(member).read_bytes())
    if module in NATIVE_C:
        digest.update((ROOT / NATIVE_C[module]).read_bytes())
    return digest.hexdigest()


def _find(pure: ModuleType) -> tuple[ModuleType | None, str]:
    """(the compiled build of ``pure`` if it was built from the sources in use, why not)."""
    name = NATIVE_MODULES[pure.__name__]
    try:
        native = importlib.import_module(name)
    except ImportError as exc:
        return None, f"not built ({exc}); run `make venv` (it needs a C compiler)"
    if getattr(native, "SOURCE_SHA256", None) == group_digest(pure.__name__):
        return native, ""
    sources = ", ".join(m.replace(".", "/") + ".py" for m in group_of(pure.__name__))
    if pure.__name__ in NATIVE_C:
        sources += f", {NATIVE_C[pure.__name__]}"
    return None, f"{name} was built from another version of {sources}; run `make venv` to rebuild it"


def built(pure: ModuleType) -> ModuleType | None:
    """The compiled build of ``pure`` if it was built from the sources in use, whatever
    ``AIRLOCK_NATIVE`` says (for tests comparing the two)."""
    return _find(pure)[0]


def load(pure: ModuleType) -> ModuleType:
    """The compiled build of ``pure`` when it is usable, else ``pure`` itself."""
    mode = os.environ.get("AIRLOCK_NATIVE", "auto").strip().lower() or "auto"
    if mode not in ("auto", "off", "require"):
        raise ImportError(f"AIRLOCK_NATIVE: expected auto, off or require, got {mode!r}")
    if mode == "off":
        return pure
    native, problem = _find(pure)
    if native is not None:
        return native
    if mode == "require":
        raise ImportError(
            f"the compiled build of {pure.__name__} is required (AIRLOCK_NATIVE=require): {problem}"
        )
    log.warning("using the interpreted %s: %s", pure.__name__, problem)
    return pure
