"""Compile the gateway's hot loops with mypyc into the running Python's environment.

Run by ``make venv`` as ``.venv/bin/python scripts/build_native.py``. For each module of
``gateway.native.NATIVE_MODULES`` the source is copied under its compiled name into a
build directory, stamped with the SHA-256 of the source (``SOURCE_SHA256``, which
``gateway.native.load`` compares with the source in use), compiled with mypyc (part of
the pinned mypy) and the extension placed in site-packages.

Exit status 0 when every module was built, 1 otherwise, with the reason on stderr (no C
compiler or no Python headers, say): the gateway then runs the interpreted modules.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.native import NATIVE_MODULES  # noqa: E402 - after the path is set


def build(module: str, name: str, target: Path) -> None:
    source = ROOT / (module.replace(".", "/") + ".py")
    text = source.read_bytes()
    digest = hashlib.sha256(text).hexdigest()
    with tempfile.TemporaryDirectory(prefix="airlock-native-") as work:
        copy = Path(work) / f"{name}.py"
        copy.write_bytes(
            text + f'\n\nimport typing as _typing\n\nSOURCE_SHA256: _typing.Final = "{digest}"\n'.encode()
        )
        # The project on mypy's path: a module that imports the project's others (the
        # relay) is compiled against their types; they stay Python modules. Modules
        # outside the project are taken as untyped.
        result = subprocess.run(  # noqa: S603 - the pinned mypyc on our own source
            [sys.executable, "-m", "mypyc", "--ignore-missing-imports", copy.name],
            cwd=work,
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "MYPYC_OPT_LEVEL": "3", "MYPYPATH": str(ROOT)},
        )
        built = sorted(Path(work).glob(f"{name}.*.so"))
        if result.returncode != 0 or not built:
            raise RuntimeError(
                f"mypyc could not compile {source}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
            )
        for old in target.glob(f"{name}.*.so"):
            old.unlink()
        for path in built:
            shutil.copy2(path, target / path.name)


def main() -> int:
    if not Path(sysconfig.get_paths()["include"], "Python.h").exists():
        print("build_native: no Python headers (Python.h); the gateway runs interpreted", file=sys.stderr)
        return 1
    if shutil.which(os.environ.get("CC", "cc")) is None:
        print("build_native: no C compiler (cc); the gateway runs interpreted", file=sys.stderr)
        return 1
    target = Path(sysconfig.get_paths()["platlib"])
    failed = 0
    for module, name in NATIVE_MODULES.items():
        try:
            build(module, name, target)
        except (OSError, RuntimeError) as exc:
            print(f"build_native: {exc}", file=sys.stderr)
            failed += 1
        else:
            print(f"build_native: {module} compiled as {name}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
