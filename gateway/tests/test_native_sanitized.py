"""The C builds (``gateway.native.NATIVE_C``) under AddressSanitizer and UndefinedBehaviorSanitizer.

The C functions read untrusted text: a statement an agent sent, the JSON of an event. A
read past the end of a buffer or undefined arithmetic would not always change an answer
(so the differential tests beside each module could pass), yet it could crash the
gateway and every session on it. Here each C source is compiled with
``-fsanitize=address,undefined`` (no recovery) and driven in a Python of its own over edge
cases and seeded random input, its answers compared with the Python reference, with
``PYTHONMALLOC=malloc`` so that every object is an allocation of its own, which the
sanitizer fences. Any report ends that Python with an error and fails the test.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from types import ModuleType

import pytest

from gateway import native

DRIVER = r"""
import importlib.util
import random
import sys

from policies import textscan
from recordings import jsonscan


def load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ts = load("_airlock_textscan", sys.argv[1])
js = load("_airlock_jsonscan", sys.argv[2])
assert ts.SOURCE_SHA256 == js.SOURCE_SHA256 == "sanitized"
rng = random.Random(20261205)
UNICODE = list("'0123456789._&-/*\\\"$ eExXuU,;()=\n") + [
    "\u00e9", "\u03a9", "\u0663", "\uff11", "\u00b2", "\u0301", "\u200b", "\x00", "\U0001f600", "\ud800",
    "\u017f", "\u212a", "\u0130",
]
ASCII = list("'0123456789._&-/*\\\"$ eExXcCuUtTpPrRaAdDlLoOyYzZ,;()=\n\x00")
WORDS = [("execute",), ("prepare", "deallocate", "discard"), ("copy",), ("",), (), ("\u00e9",), ("quiz", "zap")]
checked = 0
for alphabet in (UNICODE, ASCII):
    for n in list(range(40)) * 150 + [1000, 20000]:
        text = "".join(rng.choice(alphabet) for _ in range(n))
        assert ts.simple_key(text) == textscan.simple_key(text), text
        for words in WORDS:
            assert ts.ascii_lacks(text, words) is textscan.ascii_lacks(text, words), (text, words)
        checked += 1
NEEDLES = [b"e", b"+", b"\\", b"u", b"0", b"-", b".", b"x", b"\x00"]
for n in list(range(64)) * 150 + [4096, 65536]:
    data = b"".join(rng.choice(NEEDLES) for _ in range(n))
    want = jsonscan.altered_by_jsonb(data)
    assert js.altered_by_jsonb(data) is want, data
    assert js.altered_by_jsonb(bytearray(data)) is want, data
    view = memoryview(data)
    for cut in (1, 2, 5):  # views ending inside a larger buffer
        js.altered_by_jsonb(view[:-cut] if n >= cut else view)
    checked += 1
from gateway.postgres import datarows, wirerows

wr = load("_airlock_wirerows", sys.argv[3])
assert wr.SOURCE_SHA256 == "sanitized"


def outcome(function, *args):
    try:
        return ("ok", function(*args))
    except (ValueError, TypeError) as exc:
        return (type(exc).__name__,)


PIECES = [None, b"", b"a", b"\x00", b"\xff", b"@x.io", "\u00e9".encode(), b"\xed\xa0\x80", b"x" * 300,
          b"2026-12-05 17:52:33.512345+05:30 BC", b"17:52:33", b"infinity"]
for n in range(6000):
    width = rng.randrange(0, 5)
    rows = [[rng.choice(PIECES) for _ in range(width)] for _ in range(rng.randrange(0, 5))]
    data = bytearray(datarows.data_rows(rows))
    if rng.random() < 0.5 and data:
        for _ in range(rng.randrange(1, 3)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    if rng.random() < 0.3:
        del data[rng.randrange(len(data) + 1) :]
    data = bytes(data) + bytes(rng.randrange(256) for _ in range(rng.randrange(0, 4)))
    cache = {hash(v): b"[H]" for v in PIECES if v is not None and rng.random() < 0.7}
    fetch = tuple(
        rng.choice([rng.randrange(-1, width + 1), (rng.randrange(-1, width + 1), cache)])
        for _ in range(rng.randrange(0, 3))
    )
    scan = tuple(rng.randrange(-1, width + 1) for _ in range(rng.randrange(0, 3)))
    quiet = tuple(rng.randrange(-1, width + 1) for _ in range(rng.randrange(0, 3)))
    want = outcome(wirerows.scan_rows, data, 0, len(data), width, fetch, scan, quiet)
    assert outcome(wr.scan_rows, data, 0, len(data), width, fetch, scan, quiet) == want, data
    view = memoryview(data)
    for cut in (1, 2, 7):  # views ending inside a larger buffer
        if len(data) >= cut:
            outcome(wr.scan_rows, view[:-cut], 0, len(data) - cut, width, fetch, scan, quiet)
    stop = want[1][0] if want[0] == "ok" and want[1] is not None else rng.randrange(len(data) + 1)
    count = want[1][1] if want[0] == "ok" and want[1] is not None else rng.randrange(3)
    columns = [
        rng.choice([None, b"[X]", [rng.choice(PIECES) for _ in range(count)], (b"[P:", b"[P]", rng.randrange(-1, 9), rng.randrange(-1, 9))])
        for _ in range(width)
    ]
    changes = [
        (rng.randrange(-1, width + 1), rng.randrange(-1, count + 1), rng.choice(PIECES))
        for _ in range(rng.randrange(0, 4))
    ]
    args = (data, 0, stop, width, columns, changes, rng.randrange(-1, 6))
    assert outcome(wr.write_rows, *args) == outcome(wirerows.write_rows, *args), args
    if stop:
        outcome(wr.write_rows, view[:stop], 0, stop, width, columns, changes, 3)
    checked += 1
ISO_PIECES = [b"0", b"9", b"-", b"+", b":", b".", b" ", b" BC", b"B", b"infinity", b"2026-12-05", b"17:52:33", b"\xff"]
for n in range(20000):
    value = b"".join(rng.choice(ISO_PIECES) for _ in range(rng.randrange(0, 10)))
    for cut in (value, value[: rng.randrange(len(value) + 1)]):
        assert wr.iso_datetime(cut) is wirerows.iso_datetime(cut), cut
        wr.iso_datetime(memoryview(cut)[1:] if cut else cut)
    checked += 1
from masking import triggerscan

tg = load("_airlock_triggerscan", sys.argv[4])
assert tg.SOURCE_SHA256 == "sanitized"
SHAPES = [b"@", b"://", b"::", b":ab:1:ffff:", b"1.2.3.4", b"+44 20 7946", b"(212)", b"4111 1111 1111 1111",
          b"555-201-3344", b"123-45-6789", b"020 7946 018", b"GB82", b"-----BEGIN", b"eyJ", b"AKIA", b"AIza",
          b"KEY", b"Pwd", b"bearer", b"authorization", b"ghp_", b"github_pat_", b"glpat-", b"xoxb-", b"xapp-",
          b"sk_live_", b"whsec_"]
PIECES_T = [b"0", b"1", b"9", b" ", b"-", b".", b":", b"+", b"(", b")", b"a", b"Z", b"_", b"\xff"] + SHAPES
for n in range(20000):
    data = b"".join(rng.choice(PIECES_T) for _ in range(rng.randrange(0, 12)))
    for cut in (data, data[: rng.randrange(len(data) + 1)], data[rng.randrange(len(data) + 1) :]):
        assert tg.may_trigger(cut) is triggerscan.may_trigger(cut), cut
        assert tg.shapes(cut) == triggerscan.shapes(cut), cut
    joined = b"\x00".join(rng.choice(PIECES_T + [b"", b"\x00"]) for _ in range(rng.randrange(0, 8)))
    assert tg.dirty_spans(joined) == triggerscan.dirty_spans(joined), joined
    checked += 1
from recordings import chainrows

cr = load("_airlock_chainrows", sys.argv[5])
assert cr.SOURCE_SHA256 == "sanitized"
PAYLOADS_C = [b"{}", b'{"text":"a\\\\b"}', b"\\" * 70, "{\"\u00e9\":1}".encode(), b"x" * 5000, b""]
KINDS_C = ["statement", "result", "Statement", "", "k" * 21, "\u00e9", "output_"]
WALLS_C = [1796000000.0, 1796000000.9999995, 0.0, 253402300798.0, 253402300799.0, -1.0, float("nan")]
OFFSETS_C = [0.0, -0.0, 12.5, 1e16, 1e-05, float("inf"), 123456.789, 3]
for n in range(3000):
    items = []
    for _ in range(rng.randrange(0, 6)):
        item = (0.0, rng.choice(WALLS_C) + rng.choice([0.0, rng.random()]), rng.choice(OFFSETS_C),
                rng.choice(KINDS_C), b"", rng.choice(PAYLOADS_C + [None]), None)
        items.append(item if rng.random() < 0.95 else item[: rng.randrange(7)])
    prev = rng.choice(["0" * 64, "ab" * 32, "", "\u00fc" * 3])
    seq = rng.choice([0, 1, 2**62 - 3, -1, 2**70])
    assert cr.chain_copy("6d9f3c4e-2b1a-4c5d-8e7f-0a1b2c3d4e5f", prev, seq, items) == chainrows.chain_copy(
        "6d9f3c4e-2b1a-4c5d-8e7f-0a1b2c3d4e5f", prev, seq, items
    ), items
    checked += 1
for bad in (b"x", 5, None):
    for call in (lambda: ts.simple_key(bad), lambda: ts.ascii_lacks(bad, ("x",)), lambda: js.altered_by_jsonb("x")):
        try:
            call()
        except TypeError:
            pass
print("checked", checked)
"""


def _runtime(compiler: list[str], library: str) -> str | None:
    found = subprocess.run(
        [*compiler, f"-print-file-name={library}"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return found if found and os.path.isabs(found) and os.path.exists(found) else None


def _build_script() -> ModuleType:
    """``scripts/build_native.py``, whose compile command the sanitized builds share."""
    spec = importlib.util.spec_from_file_location("build_native", native.ROOT / "scripts" / "build_native.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SANITIZED_FLAGS = (
    "-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-Werror",
)  # fmt: skip


def _sanitized_builds(tmp: Path) -> tuple[list[str], dict[str, Path]]:
    script = _build_script()
    compiler = script.compiler()
    if shutil.which(compiler[0]) is None:
        pytest.fail("no C compiler: the C builds cannot be checked (make venv installs gcc)")
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    builds = {}
    for module in native.NATIVE_C:
        name = native.NATIVE_MODULES[module]
        out = tmp / f"{name}{suffix}"
        command = script.c_command(module, out, stamp="sanitized", flags=SANITIZED_FLAGS)
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr
        builds[name] = out
    return compiler, builds


def test_the_c_builds_hold_under_address_and_undefined_behaviour_sanitizers(tmp_path: Path) -> None:
    assert set(native.NATIVE_MODULES[m] for m in native.NATIVE_C) == {
        "_airlock_textscan",
        "_airlock_jsonscan",
        "_airlock_wirerows",
        "_airlock_triggerscan",
        "_airlock_chainrows",
    }
    compiler, builds = _sanitized_builds(tmp_path)
    asan = _runtime(compiler, "libasan.so")
    if asan is None:
        pytest.fail(
            f"{compiler[0]} has no AddressSanitizer runtime (libasan.so): install the compiler's full package"
        )
    env = {
        **os.environ,
        "LD_PRELOAD": asan,
        "PYTHONMALLOC": "malloc",
        "ASAN_OPTIONS": "detect_leaks=0:halt_on_error=1:abort_on_error=0",
        "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1",
        "PYTHONPATH": str(native.ROOT),
        "AIRLOCK_NATIVE": "off",
    }
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            DRIVER,
            str(builds["_airlock_textscan"]),
            str(builds["_airlock_jsonscan"]),
            str(builds["_airlock_wirerows"]),
            str(builds["_airlock_triggerscan"]),
            str(builds["_airlock_chainrows"]),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-6000:]
    assert "ERROR: AddressSanitizer" not in result.stderr and "runtime error" not in result.stderr, (
        result.stderr
    )
    assert result.stdout.startswith("checked "), result.stdout
    assert int(result.stdout.split()[1]) > 59_000
