"""Where a gateway process's CPU goes per transaction, part by part (Linux ``perf``).

py-spy sees Python frames only, and the relay, the DataRow loops and the masking engine
run compiled (mypyc: ``gateway.native``), so their time shows up under whichever Python
frame called them; the kernel's share (socket writes waking the other side, reads, the
event loop's waits) is not seen at all. ``perf record --call-graph dwarf`` sees both: each
sample's stack names the compiled functions (``CPyDef_Relay___from_client``...) and the
system calls under them. Each sample is put in the first part (``PARTS``) whose frame is on
its stack, and the counts become microseconds of CPU per transaction.

Used by ``bench.pgbench`` with ``AIRLOCK_BENCH_PERF=1`` (the profiled target's first run
of each case; ``AIRLOCK_BENCH_PROFILE_TARGET`` picks the target), or by hand::

    python -m bench.perfsplit PID SECONDS TRANSACTIONS   # transactions run meanwhile

Needs ``perf`` (Debian: ``linux-perf``) and permission to trace the process (root here).
The parts are named for the compiled build: with ``AIRLOCK_NATIVE=off`` most samples land
in "other" (use py-spy there).
"""

from __future__ import annotations

import collections
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

RATE = 1000  # samples per second: one sample is a millisecond of CPU
# (label, frame): a sample belongs to the first part whose frame is on its stack.
PARTS: tuple[tuple[str, str], ...] = (
    ("recording, after the write (statement and result events)", "CPyDef_Relay___flush_records"),
    ("client messages (policy decision, bookkeeping)", "CPyDef_Relay___from_client"),
    ("server messages: masking DataRows", "CPyDef_Relay____mask_data_rows"),
    ("server messages: the rest", "CPyDef_Relay___from_server"),
    ("socket writes (kernel: wakes the reader)", "ksys_write"),
    ("socket reads (kernel)", "ksys_read"),
    ("waiting for sockets (epoll, scheduling)", "do_epoll_wait"),
    ("recording writer process hand-off", "WriterProcess"),
)
# Parts whose samples are also shown by what they called, two frames down.
DETAILED = (
    "CPyDef_Relay____on_query",
    "CPyDef_Relay____on_bind",
    "CPyDef_Relay____on_execute",
    "CPyDef_Relay___flush_records",
    "CPyDef_Relay____mask_for_record",
    "CPyDef_Relay____mask_data_rows",
    "CPyDef_Relay___from_server",
    "CPyDef__airlock_masking_policy___ResultMasker____mask_rows",
    "CPyDef__airlock_masking_policy___ResultMasker___mask_columns",
)
# Call machinery skipped when naming what a part called.
_PLUMBING = frozenset(
    {
        "PyObject_VectorcallMethod", "_PyObject_VectorcallTstate", "PyObject_Vectorcall", "method_vectorcall",
        "_PyObject_Call", "method_vectorcall_FASTCALL_KEYWORDS", "method_vectorcall_FASTCALL_KEYWORDS_METHOD",
        "_PyEval_EvalFrame", "_PyEval_Vector", "_PyFunction_Vectorcall", "cfunction_vectorcall_FASTCALL_KEYWORDS",
        "cfunction_call", "_PyObject_MakeTpCall", "vectorcall_method", "PyObject_Call", "_PyEval_EvalFrameDefault",
        "CPyPy__airlock_masking_policy___wrapper_fail_closed_obj_____call__",
        "CPyDef__airlock_masking_policy___wrapper_fail_closed_obj_____call__",
    }
)  # fmt: skip


def start(pid: int, data: Path) -> subprocess.Popen[bytes]:
    """Start sampling ``pid`` (all its threads) into ``data``; ``stop`` ends it."""
    perf = shutil.which("perf")
    if perf is None:
        raise RuntimeError("perf is not installed (Debian: apt-get install linux-perf)")
    command = [
        perf,
        "record",
        "-q",
        "-F",
        str(RATE),
        "--call-graph",
        "dwarf,16384",
        "-p",
        str(pid),
        "-o",
        str(data),
    ]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def stop(recorder: subprocess.Popen[bytes]) -> None:
    recorder.send_signal(signal.SIGINT)
    _, err = recorder.communicate(timeout=120)
    if recorder.returncode not in (0, -signal.SIGINT):
        raise RuntimeError(f"perf record failed: {err.decode(errors='replace')[-500:]}")


def measured(
    run: Callable[[], tuple[float, list[int]]], pid: int | None, data: Path, title: str
) -> tuple[float, list[int]]:
    """``run()`` (a pgbench run: TPS and each transaction's latency); with ``pid``, that
    process is sampled meanwhile and its CPU per transaction printed part by part."""
    if pid is None:
        return run()
    recorder = start(pid, data)
    try:
        result = run()
    finally:
        stop(recorder)
    report(data, len(result[1]), title=title)
    return result


def stacks(data: Path) -> Iterator[list[str]]:
    """Each sample's stack, innermost frame first, as function names."""
    out = subprocess.run(
        ["perf", "script", "-i", str(data), "-F", "ip,sym"], capture_output=True, text=True, check=True
    ).stdout
    stack: list[str] = []
    for line in out.splitlines():
        fields = line.split()
        if not fields:
            if stack:
                yield stack
            stack = []
        elif len(fields) >= 2:
            stack.append(fields[1].split("+", 1)[0])
    if stack:
        yield stack


def split(
    samples: list[list[str]],
) -> tuple[collections.Counter[str], collections.Counter[str], dict[str, collections.Counter[str]]]:
    """(samples per part; the samples of no part, by the function sampled; and for each
    ``DETAILED`` frame, its samples by what it called)."""
    parts: collections.Counter[str] = collections.Counter()
    others: collections.Counter[str] = collections.Counter()
    detail: dict[str, collections.Counter[str]] = {frame: collections.Counter() for frame in DETAILED}
    for stack in samples:
        on = set(stack)
        part = next((label for label, frame in PARTS if frame in on), None)
        if part is None:
            part = "other"
            others[stack[0]] += 1
        parts[part] += 1
        for frame in DETAILED:
            if frame in on:
                below = [f for f in reversed(stack[: stack.index(frame)]) if f not in _PLUMBING][:2]
                detail[frame][" > ".join(below) or "(itself)"] += 1
    return parts, others, detail


def report(data: Path, transactions: int, *, title: str = "") -> None:
    """Print CPU per transaction by part (and the detailed parts' biggest callees)."""
    samples = list(stacks(data))
    per = 1e6 / RATE / max(transactions, 1)  # microseconds of CPU per sample, per transaction
    parts, others, detail = split(samples)
    print(
        f"{title or 'CPU'} by part: {len(samples) * per:.1f} us per transaction over {transactions} "
        f"({len(samples)} samples at {RATE}/s, perf)"
    )
    for label, count in parts.most_common():
        print(f"  {count * per:7.1f} us  {label}")
    if others:
        print("  other, by the function sampled (_PyEval_EvalFrameDefault: interpreted Python):")
        for function, count in others.most_common(6):
            print(f"    {count * per:7.1f} us  {function[:110]}")
    for frame in DETAILED:
        if not detail[frame]:
            continue
        print(f"  {frame.removeprefix('CPyDef_')} calls, largest:")
        for callee, count in detail[frame].most_common(6):
            print(f"    {count * per:7.1f} us  {callee[:110]}")


def main() -> int:
    if len(sys.argv) != 4:
        print("usage: python -m bench.perfsplit PID SECONDS TRANSACTIONS", file=sys.stderr)
        return 2
    pid, seconds, transactions = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
    with tempfile.TemporaryDirectory(prefix="airlock-perf-") as tmp:
        data = Path(tmp) / "perf.data"
        recorder = start(pid, data)
        try:
            recorder.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            stop(recorder)
        report(data, transactions)
    return 0


if __name__ == "__main__":
    sys.exit(main())
