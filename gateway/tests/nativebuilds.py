"""What the tests of a C build (``gateway.native.NATIVE_C``) share: the build in use, and
the check that an edit to its C source makes it stale."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

from gateway import native


def built_or_fail(pure: ModuleType) -> ModuleType:
    """The C build of ``pure``; under ``AIRLOCK_NATIVE=require`` (``make test``) a missing or
    stale build fails the test rather than skipping it."""
    module = native.built(pure)
    if module is None:
        if os.environ.get("AIRLOCK_NATIVE") == "require":
            pytest.fail(f"AIRLOCK_NATIVE=require but the C build of {pure.__name__} is missing or stale")
        pytest.skip(f"the C build of {pure.__name__} is not built (make venv)")
    return module


def check_an_edited_c_source_makes_the_build_stale(
    pure: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    module = pure.__name__
    source = native.ROOT / native.NATIVE_C[module]
    digest = native.group_digest(module)
    edited = tmp_path / source.name
    edited.write_bytes(source.read_bytes() + b"\n/* edited */\n")
    monkeypatch.setitem(native.NATIVE_C, module, str(edited))
    assert native.group_digest(module) != digest

    class Built:
        SOURCE_SHA256 = digest  # built from the sources before the edit

    monkeypatch.setitem(sys.modules, native.NATIVE_MODULES[module], Built)  # type: ignore[arg-type]
    monkeypatch.setenv("AIRLOCK_NATIVE", "auto")
    assert native.load(pure) is pure
    monkeypatch.setenv("AIRLOCK_NATIVE", "require")
    with pytest.raises(ImportError, match=source.name):
        native.load(pure)
