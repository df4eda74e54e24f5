"""Compile the gateway's hot loops with mypyc into the running Python's environment.

Run by ``make venv`` as ``.venv/bin/python scripts/build_native.py``. For each module of
``gateway.native.NATIVE_MODULES`` the source is copied under its compiled name into a
build directory, stamped with the SHA-256 of the source (``SOURCE_SHA256``, which
``gateway.native.load`` compares with the source in use), compiled with mypyc (part of
the pinned mypy) and the extension placed in site-packages. The modules of a group
(``gateway.native.NATIVE_GROUPS``) are compiled in one mypyc run, each copy importing the
others by their compiled names, and stamped with the digest of the group's sources; mypyc
then also makes a shared library for the group, placed beside them.

Modules with a build written in C (``gateway.native.NATIVE_C``) are compiled from that
file with the C compiler, the stamp passed as a define.

Exit status 0 when every module was built, 1 otherwise, with the reason on stderr (no C
compiler or no Python headers, say): the gateway then runs the interpreted modules.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.native import NATIVE_C, NATIVE_C_LIBRARIES, NATIVE_MODULES, group_digest, group_of, source_path  # noqa: E402


def _renamed(text: str, names: dict[str, str]) -> str:
    """``text`` with its ``from <module> import`` lines of the group's modules pointing at
    their compiled names (the only form in which they import each other)."""
    for module, name in names.items():
        text = re.sub(rf"^(\s*)from {re.escape(module)} import ", rf"\1from {name} import ", text, flags=re.M)
    return text


def build(group: tuple[str, ...], target: Path) -> None:
    names = {module: NATIVE_MODULES[module] for module in group}
    with tempfile.TemporaryDirectory(prefix="airlock-native-") as work:
        for module, name in names.items():
            text = _renamed(source_path(module).read_text(encoding="utf-8"), names)
            stamp = (
                f'\n\nimport typing as _typing\n\nSOURCE_SHA256: _typing.Final = "{group_digest(module)}"\n'
            )
            (Path(work) / f"{name}.py").write_text(text + stamp, encoding="utf-8")
        # The project on mypy's path: a module that imports the project's others (the
        # relay) is compiled against their types; they stay Python modules. Modules
        # outside the project are taken as untyped.
        result = subprocess.run(  # noqa: S603 - the pinned mypyc on our own source
            [
                sys.executable,
                "-m",
                "mypyc",
                "--ignore-missing-imports",
                *(f"{name}.py" for name in names.values()),
            ],
            cwd=work,
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "MYPYC_OPT_LEVEL": "3", "MYPYPATH": str(ROOT)},
        )
        built = {name: sorted(Path(work).glob(f"{name}.*.so")) for name in names.values()}
        shared = sorted(Path(work).glob("*__mypyc.*.so"))  # a group's runtime library
        if result.returncode != 0 or not all(built.values()):
            sources = ", ".join(str(source_path(module)) for module in group)
            raise RuntimeError(
                f"mypyc could not compile {sources}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
            )
        for name, paths in built.items():
            for old in target.glob(f"{name}.*.so"):
                old.unlink()
            for path in paths:
                shutil.copy2(path, target / path.name)
        for path in shared:
            shutil.copy2(path, target / path.name)


def compiler() -> list[str]:
    """The C compiler's command (``$CC``, which may carry flags, else ``cc``)."""
    return (os.environ.get("CC") or "cc").split()


# Optimisation and hardening of the builds the gateway runs (``c_command``'s default).
RELEASE_FLAGS = ("-O2", "-fstack-protector-strong", "-D_FORTIFY_SOURCE=2")


def c_command(module: str, output: Path, *, stamp: str, flags: tuple[str, ...] = RELEASE_FLAGS) -> list[str]:
    """The command that compiles ``module``'s C source (``NATIVE_C``) into ``output``, every
    warning on and ``stamp`` as its ``SOURCE_SHA256``; ``flags`` choose optimisation and
    hardening (the sanitized builds of ``gateway/tests/test_native_sanitized.py`` pass theirs)."""
    return [
        *compiler(),
        "-fPIC",
        "-shared",
        "-Wall",
        "-Wextra",
        "-Wno-unused-parameter",
        *flags,
        f"-I{sysconfig.get_paths()['include']}",
        f'-DSOURCE_SHA256="{stamp}"',
        "-o",
        str(output),
        str(ROOT / NATIVE_C[module]),
        *NATIVE_C_LIBRARIES.get(module, ()),
    ]


def build_c(module: str, target: Path) -> None:
    """Compile ``module``'s C build (``NATIVE_C``) into ``target``, stamped by a define."""
    name = NATIVE_MODULES[module]
    source = ROOT / NATIVE_C[module]
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    with tempfile.TemporaryDirectory(prefix="airlock-native-") as work:
        built = Path(work) / f"{name}{suffix}"
        command = c_command(module, built, stamp=group_digest(module))
        result = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
        if result.returncode != 0 or not built.exists():
            raise RuntimeError(
                f"{command[0]} could not compile {source}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
            )
        if result.stderr.strip():
            # Warnings are errors in waiting in code that reads untrusted text.
            raise RuntimeError(f"{command[0]} warned compiling {source}:\n{result.stderr[-3000:]}")
        for old in target.glob(f"{name}.*.so"):
            old.unlink()
        shutil.copy2(built, target / built.name)


def main() -> int:
    if not Path(sysconfig.get_paths()["include"], "Python.h").exists():
        print("build_native: no Python headers (Python.h); the gateway runs interpreted", file=sys.stderr)
        return 1
    if shutil.which(compiler()[0]) is None:
        print("build_native: no C compiler (cc); the gateway runs interpreted", file=sys.stderr)
        return 1
    target = Path(sysconfig.get_paths()["platlib"])
    failed = 0
    for group in dict.fromkeys(group_of(module) for module in NATIVE_MODULES):
        try:
            if group[0] in NATIVE_C:
                build_c(group[0], target)
            else:
                build(group, target)
        except (OSError, RuntimeError) as exc:
            print(f"build_native: {exc}", file=sys.stderr)
            failed += 1
        else:
            for module in group:
                print(f"build_native: {module} compiled as {NATIVE_MODULES[module]}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
