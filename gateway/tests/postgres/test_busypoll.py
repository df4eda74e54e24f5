"""Busy polling after work (gateway/busypoll.py), on real event loops and the real kernel
counters; the gateway command's polling measured on a real process's CPU time."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import uvloop

from conftest import database_url, free_port
from gateway import busypoll
from gateway.postgres import protocol as pg

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def _no_poller_left():
    yield
    busypoll.stop()


def _run(coro_fn, use_uvloop: bool):  # type: ignore[no-untyped-def]
    return (uvloop.run if use_uvloop else asyncio.run)(coro_fn())


def test_contention_is_a_share_of_the_time_spent_waiting_for_a_cpu():
    assert not busypoll.is_contended(1_000_000, 0)
    assert not busypoll.is_contended(1_000_000, int(busypoll.CONTENDED * 1_000_000) - 1)
    assert busypoll.is_contended(1_000_000, int(busypoll.CONTENDED * 1_000_000))
    assert not busypoll.is_contended(0, 5)  # no time passed: nothing to judge
    # The share is a setting (AIRLOCK_GATEWAY_BUSY_POLL_CONTENDED_PERCENT); 100 never stops.
    assert busypoll.is_contended(1_000_000, 300_000, 0.3)
    assert not busypoll.is_contended(1_000_000, 299_999, 0.3)
    assert not busypoll.is_contended(1_000_000, 999_999, 1.0)


def test_the_governors_share_comes_from_start():
    loop = asyncio.new_event_loop()
    try:
        poller = busypoll.start(loop, 100, 40)
        assert poller is not None and poller.contended_share == 0.4
        assert busypoll.start(loop, 100).contended_share == busypoll.CONTENDED  # type: ignore[union-attr]
    finally:
        busypoll.stop()
        loop.close()


def test_the_gateway_and_its_bench_copy_start_from_the_settings(settings):  # type: ignore[no-untyped-def]
    settings.GATEWAY_BUSY_POLL_US = 250
    settings.GATEWAY_BUSY_POLL_CONTENDED_PERCENT = 40
    loop = asyncio.new_event_loop()
    try:
        poller = busypoll.start_configured(loop)
        assert poller is not None and (poller.window, poller.contended_share) == (0.00025, 0.4)
        settings.GATEWAY_BUSY_POLL_US = 0
        assert busypoll.start_configured(loop) is None and busypoll.active is None
    finally:
        busypoll.stop()
        loop.close()


def test_the_run_delay_is_read_from_the_kernel_and_only_grows():
    first = busypoll.run_delay_ns()
    assert first is not None and first >= 0
    end = time.monotonic() + 0.02
    while time.monotonic() < end:
        pass
    second = busypoll.run_delay_ns()
    assert second is not None and second >= first


def test_a_window_must_be_positive():
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(ValueError, match="positive"):
            busypoll.BusyPoll(loop, 0)
        assert busypoll.start(loop, 0) is None
        assert busypoll.active is None
    finally:
        loop.close()


@pytest.mark.parametrize("use_uvloop", [True, False], ids=["uvloop", "asyncio"])
def test_after_work_the_loop_polls_for_the_window_then_sleeps(use_uvloop):
    async def main() -> tuple[int, bool, int, float]:
        poller = busypoll.BusyPoll(asyncio.get_running_loop(), 20_000)  # 20 ms
        poller.poke()
        await asyncio.sleep(0.005)
        during = poller.spins, poller.spinning
        await asyncio.sleep(0.1)
        after = poller.spins
        # Asleep again: an idle loop costs no CPU.
        cpu = time.thread_time()
        await asyncio.sleep(0.2)
        return during[0], during[1] and not poller.spinning, poller.spins - after, time.thread_time() - cpu

    spins_during, stopped, spins_after, idle_cpu = _run(main, use_uvloop)
    assert spins_during > 10  # many loop iterations within 5 ms: it polled, not slept
    assert stopped
    assert spins_after == 0
    assert idle_cpu < 0.02


@pytest.mark.parametrize("use_uvloop", [True, False], ids=["uvloop", "asyncio"])
def test_without_work_the_loop_does_not_poll(use_uvloop):
    async def main() -> tuple[int, float]:
        poller = busypoll.BusyPoll(asyncio.get_running_loop(), 20_000)
        cpu = time.thread_time()
        await asyncio.sleep(0.2)
        return poller.spins, time.thread_time() - cpu

    spins, cpu = _run(main, use_uvloop)
    assert spins == 0
    assert cpu < 0.02


def test_the_window_counts_from_the_end_of_the_work_not_from_its_arrival():
    """Handling a message that takes longer than the window still leaves the whole window
    to wait for the answer."""

    async def main() -> bool:
        loop = asyncio.get_running_loop()
        poller = busypoll.BusyPoll(loop, 50_000)  # 50 ms
        seen: list[bool] = []

        def handle() -> None:
            poller.poke()  # the chunk arrives...
            end = time.monotonic() + 0.1  # ...and takes 100 ms to handle
            while time.monotonic() < end:
                pass
            loop.call_later(0.01, lambda: seen.append(poller.spinning))

        loop.call_soon(handle)
        await asyncio.sleep(0.2)
        return seen == [True]

    assert uvloop.run(main())


def test_a_loop_that_waits_for_its_cpu_stops_polling_until_the_cpu_is_free():
    """Two processes spinning on the loop's CPU: the governor finds the loop waiting for it
    and polling stops; once they are gone, polling resumes."""
    cpu = min(os.sched_getaffinity(0))
    before = os.sched_getaffinity(0)
    hog = f"import os; os.sched_setaffinity(0, {{{cpu}}})\nwhile True:\n    pass\n"
    hogs = [subprocess.Popen([sys.executable, "-c", hog]) for _ in range(2)]

    async def poke_for(poller: busypoll.BusyPoll, seconds: float, until: bool) -> bool:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            poller.poke()
            await asyncio.sleep(0.002)
            if poller.contended is until:
                return True
        return False

    async def main() -> tuple[bool, bool, bool, int]:
        poller = busypoll.BusyPoll(asyncio.get_running_loop(), 200)
        os.sched_setaffinity(0, {cpu})  # this thread: the loop's
        try:
            found = await poke_for(poller, 5.0, until=True)
            await asyncio.sleep(0.005)  # a spin begun before is over
            spins = poller.spins
            for _ in range(10):
                poller.poke()
                await asyncio.sleep(0.001)
            # Still contended (the governor looks every 100 ms): the pokes started no spin.
            idle_while_contended = poller.contended and poller.spins == spins
        finally:
            for proc in hogs:
                proc.kill()
                proc.wait()
            os.sched_setaffinity(0, before)
        spins = poller.spins
        freed = await poke_for(poller, 5.0, until=False)
        await asyncio.sleep(0.01)
        poller.poke()
        await asyncio.sleep(0.001)
        return found, idle_while_contended, freed, poller.spins - spins

    try:
        found, idle_while_contended, freed, spins_after = uvloop.run(main())
    finally:
        for proc in hogs:
            if proc.poll() is None:
                proc.kill()
        os.sched_setaffinity(0, before)
    assert found, "the governor never saw the loop wait for its CPU"
    assert idle_while_contended, "the loop polled while it waited for its CPU"
    assert freed, "polling did not resume once the CPU was free"
    assert spins_after > 0


def test_the_gateways_sockets_keep_its_loop_polling(gw):
    """Reads on the gateway's sockets (``Link.data_received``) start the polling."""
    poller = busypoll.start(gw.thread.loop, 2_000)
    assert poller is not None
    with gw.connect() as conn:
        assert conn.execute("SELECT 1 + 1").fetchone() == (2,)
    assert poller.spins > 0


def _process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _gateway_cpu_for_pokes(window_us: int) -> tuple[float, float]:
    """(CPU seconds of a real ``manage.py gateway`` over ten reads 50 ms apart, over the
    second of quiet after them)."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "AIRLOCK_GATEWAY_BUSY_POLL_US": str(window_us),
        # The governor off: on a machine busy with other work it would (rightly) stop the
        # polling this test measures. The governor has tests of its own above.
        "AIRLOCK_GATEWAY_BUSY_POLL_CONTENDED_PERCENT": "100",
    }
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "gateway", "--postgres-listen", f"127.0.0.1:{port}"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == f"postgres gateway listening on 127.0.0.1:{port}\n"
        time.sleep(0.5)
        start = _process_cpu_seconds(proc.pid)
        for _ in range(10):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
                client.sendall(struct.pack("!ii", 8, pg.SSL_REQUEST_CODE))
                assert client.recv(1) in (b"S", b"N")
            time.sleep(0.05)
        busy = _process_cpu_seconds(proc.pid) - start
        time.sleep(0.2)  # past the window
        start = _process_cpu_seconds(proc.pid)
        time.sleep(1.0)
        quiet = _process_cpu_seconds(proc.pid) - start
        return busy, quiet
    finally:
        proc.kill()
        proc.wait(10)


@pytest.mark.timeout(120)
def test_the_gateway_command_polls_after_reads_and_not_when_idle(transactional_db):
    # A 100 ms window: ten reads 50 ms apart keep the process polling throughout, about
    # 0.5 s of CPU (0.2 even where other work takes most of the CPUs).
    busy, quiet = _gateway_cpu_for_pokes(100_000)
    assert busy >= 0.2, f"{busy:.2f} s of CPU: the gateway slept after its reads"
    assert quiet < 0.1, f"{quiet:.2f} s of CPU in a second without work"
    # Turned off, the same reads cost next to nothing.
    busy_off, _ = _gateway_cpu_for_pokes(0)
    assert busy_off < 0.1
