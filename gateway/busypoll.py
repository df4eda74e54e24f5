"""Busy polling: after work, the event loop keeps polling its sockets for a short while
before it sleeps.

A statement through the gateway is a chain of hops: the client's message wakes the
gateway, the gateway's write wakes the database, the database's answer wakes the gateway
again, and its write wakes the client. Each time the event loop has nothing left to do it
sleeps in ``epoll_wait``, and its CPU goes idle. On virtual machines an idle CPU halts,
and waking a halted CPU (an interrupt between CPUs, an exit to the hypervisor and back)
costs tens of microseconds: on the 2-CPU machine of docs/performance.md, more than the
gateway's own work on a statement. The answer the loop waits for usually comes within
that time (the database's to a short query, the client's next statement).

So after the last piece of work the loop polls its sockets without sleeping for up to
``GATEWAY_BUSY_POLL_US`` microseconds (a callback that re-schedules itself keeps uvloop
polling with a zero timeout) and sleeps only when nothing arrived by then. Each spin gives
the CPU away to any other runnable process (``sched_yield``). An idle gateway does not
spin: spinning starts with a socket read.

Polling only pays while CPUs are to spare. When the machine is busy, a CPU that never
looks idle no longer takes the work of the others (the kernel places woken processes on
idle CPUs), and the whole machine slows down. So a governor looks, every
``GOVERN_SECONDS`` while there is work, at how long the loop's thread waited for a CPU
(``/proc/thread-self/schedstat``): at ``CONTENDED`` of the time or more, the loop sleeps
at once until the next look finds the CPUs free again. Measured on 2 CPUs
(docs/performance.md): one pgbench client, the loop waited 3-5% of the time; eight, 25%.

The price is CPU time: up to the window's length per hop when the answer is slow, shown
in the process's CPU usage. ``0`` turns it off (a host whose CPU time is billed or shared
with other busy services, a laptop on battery). Linux's ``net.core.busy_read`` is the
same idea in the kernel; it needs a network driver's receive queue, which loopback and
most virtual NICs do not have, and a host setting.
"""

from __future__ import annotations

import asyncio
import os
import time

# The governor: how often it looks, and the share of the time the loop's thread waited for
# a CPU at which polling stops until the next look.
GOVERN_SECONDS = 0.1
CONTENDED = 0.15
SCHEDSTAT = "/proc/thread-self/schedstat"

# The poller of this process's event loop while the gateway serves (None: not polling),
# poked through ``poke()`` by ``gateway.postgres.link.Link.data_received`` on every chunk.
active: BusyPoll | None = None


class BusyPoll:
    """Keeps ``loop`` polling for ``window_us`` microseconds after its last work.

    ``poke()`` says work arrived. The window counts from the first moment the loop ran out
    of work after the last poke, not from the poke: the time a statement takes to handle is
    not taken from the wait for its answer.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, window_us: int, contended_share: float = CONTENDED
    ) -> None:
        if window_us <= 0:
            raise ValueError("the busy-poll window must be positive")
        self.window = window_us / 1_000_000
        self.contended_share = contended_share
        self.spinning = False
        self.spins = 0  # loop iterations spent polling (for tests and diagnostics)
        self.contended = False  # the governor's last finding: the loop sleeps at once
        self._loop = loop
        self._poked = False
        self._idle_since = 0.0
        self._closed = False
        self._busy = False  # work since the governor's last look
        self._governing = False
        self._last: tuple[int, int] | None = None  # (wall ns, run delay ns) at the last look

    def poke(self) -> None:
        """Work arrived: keep polling once it is done."""
        self._busy = True
        if not self._governing and not self._closed:
            self._governing = True
            self._last = None
            self._loop.call_soon(self._govern)
        if self.contended:
            return
        self._poked = True
        if not self.spinning and not self._closed:
            self.spinning = True
            self._loop.call_soon(self._spin)

    def _govern(self) -> None:
        """Look at the loop's wait for a CPU since the last look; runs while there is work."""
        if self._closed or not self._busy:
            self._governing = False  # idle: no timer left running
            self.contended = False
            return
        self._busy = False
        delay = run_delay_ns()
        now = time.monotonic_ns()
        if delay is not None:
            if self._last is not None:
                self.contended = is_contended(
                    now - self._last[0], delay - self._last[1], self.contended_share
                )
            self._last = (now, delay)
        self._loop.call_later(GOVERN_SECONDS, self._govern)

    def _spin(self) -> None:
        now = time.monotonic()
        if self._poked:
            # The first spin after work: the loop has just run out of it.
            self._poked = False
            self._idle_since = now
        elif now - self._idle_since >= self.window or self._closed:
            self.spinning = False
            return
        self.spins += 1
        os.sched_yield()
        self._loop.call_soon(self._spin)

    def close(self) -> None:
        """Stop polling (the loop sleeps again at its next idle moment)."""
        self._closed = True


def poke() -> None:
    """Work arrived on a socket: this process's poller, if it has one, polls once it is
    done (``BusyPoll.poke``). Called by every protocol's reads."""
    if active is not None:
        active.poke()


def is_contended(wall_ns: int, waited_ns: int, share: float = CONTENDED) -> bool:
    """Whether a thread that waited ``waited_ns`` for a CPU over ``wall_ns`` (``share`` of
    the time or more) shares its CPUs with too much other work for polling to pay."""
    return wall_ns > 0 and waited_ns >= share * wall_ns


def run_delay_ns() -> int | None:
    """Nanoseconds this thread has waited for a CPU since it started (its run queue delay),
    or None where the kernel does not say."""
    try:
        with open(SCHEDSTAT, "rb") as stat:
            return int(stat.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None


def start(
    loop: asyncio.AbstractEventLoop, window_us: int, contended_percent: int = round(CONTENDED * 100)
) -> BusyPoll | None:
    """Make ``loop`` this process's busy-polling loop (``window_us`` 0: no polling), whose
    governor stops polling while the loop waits for a CPU ``contended_percent`` of the
    time or more (100: never)."""
    global active
    stop()
    if window_us > 0:
        active = BusyPoll(loop, window_us, contended_percent / 100)
    return active


def start_configured(loop: asyncio.AbstractEventLoop) -> BusyPoll | None:
    """``start`` with the window and governor share of the settings
    (``AIRLOCK_GATEWAY_BUSY_POLL_US``, ``AIRLOCK_GATEWAY_BUSY_POLL_CONTENDED_PERCENT``)."""
    from django.conf import settings

    return start(loop, int(settings.GATEWAY_BUSY_POLL_US), int(settings.GATEWAY_BUSY_POLL_CONTENDED_PERCENT))


def stop() -> None:
    global active
    if active is not None:
        active.close()
        active = None
