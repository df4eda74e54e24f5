"""Run Airlock's processes (web, gateway, worker) as children of one process.

This is the all-in-one of ``make run``: each child runs in its own process group, so a
Ctrl-C reaches only the supervisor, which then stops every child (and whatever the child
started, such as Celery's pool) in order. If one child dies, the others are stopped and
the supervisor exits non-zero naming it.

Usage::

    supervisor = Supervisor([Child("web", ["daphne", ...]), Child("worker", ["celery", ...])])
    exit_code = supervisor.run(ready=lambda: healthz_answers(), on_ready=print_banner)
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str] | None = None
    cwd: str | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError(f"{self.name} has not been started")
        return self.proc.pid


class Supervisor:
    def __init__(
        self,
        children: list[Child],
        *,
        stop_timeout: float = 20.0,
        start_timeout: float = 90.0,
        out: TextIO = sys.stdout,
        err: TextIO = sys.stderr,
    ) -> None:
        self.children = children
        self.stop_timeout = stop_timeout
        self.start_timeout = start_timeout
        self.out = out
        self.err = err
        self._stop_signal: int | None = None
        self._signals_seen = 0

    # --- signals ------------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: object) -> None:
        if signum in STOP_SIGNALS:
            self._stop_signal = signum
            self._signals_seen += 1

    def _install_signals(self) -> tuple[int, int]:
        # The wakeup fd turns a signal into a readable byte, so the loop below can wait in
        # select() without missing a signal that arrives just before it starts waiting.
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        os.set_blocking(write_fd, False)
        signal.set_wakeup_fd(write_fd)
        for signum in (*STOP_SIGNALS, signal.SIGCHLD):
            signal.signal(signum, self._on_signal)
        return read_fd, write_fd

    def _wait(self, read_fd: int, timeout: float) -> None:
        readable, _, _ = select.select([read_fd], [], [], timeout)
        if readable:
            try:
                while os.read(read_fd, 512):
                    pass
            except BlockingIOError:
                pass

    # --- children -----------------------------------------------------------------------
    def _start(self, child: Child) -> None:
        child.proc = subprocess.Popen(  # noqa: S603 - argv built by the caller from fixed parts
            child.argv, env=child.env, cwd=child.cwd, start_new_session=True
        )
        self.out.write(f"airlock: started {child.name} (pid {child.pid})\n")
        self.out.flush()

    def _dead_child(self) -> tuple[Child, int] | None:
        for child in self.children:
            if child.proc is not None and (code := child.proc.poll()) is not None:
                return child, code
        return None

    def _signal_children(self, signum: int) -> None:
        for child in self.children:
            if child.proc is not None and child.proc.poll() is None:
                child.proc.send_signal(signum)

    def _kill_groups(self) -> None:
        for child in self.children:
            if child.proc is None:
                continue
            try:
                os.killpg(child.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def stop(self, read_fd: int | None = None) -> None:
        """SIGTERM every child, wait, then SIGKILL what is left of their process groups.

        Only the child itself gets SIGTERM: it stops its own helpers (Celery its pool) in
        order; the SIGKILL afterwards catches anything they left behind.
        """
        self._signal_children(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        signals_before = self._signals_seen
        while time.monotonic() < deadline:
            if all(c.proc is None or c.proc.poll() is not None for c in self.children):
                break
            if self._signals_seen > signals_before:
                # A second Ctrl-C: stop waiting.
                break
            if read_fd is not None:
                self._wait(read_fd, 0.2)
            else:
                time.sleep(0.2)
        # Whatever is left, the children themselves or processes they started, goes now.
        self._kill_groups()
        for child in self.children:
            if child.proc is not None:
                child.proc.wait()

    def run(
        self,
        ready: Callable[[], bool] | None = None,
        on_ready: Callable[[], None] | None = None,
    ) -> int:
        read_fd, write_fd = self._install_signals()
        try:
            try:
                for child in self.children:
                    self._start(child)
            except BaseException:
                self.stop(read_fd)
                raise
            started = time.monotonic()
            is_ready = ready is None
            if is_ready and on_ready:
                on_ready()
            while True:
                if self._stop_signal is not None:
                    name = signal.Signals(self._stop_signal).name
                    self.out.write(f"airlock: {name} received, stopping\n")
                    self.out.flush()
                    self.stop(read_fd)
                    return 0
                dead = self._dead_child()
                if dead is not None:
                    child, code = dead
                    self.err.write(f"airlock: {child.name} exited with status {code}; stopping the others\n")
                    self.err.flush()
                    self.stop(read_fd)
                    return 1
                if not is_ready and ready is not None:
                    if ready():
                        is_ready = True
                        if on_ready:
                            on_ready()
                    elif time.monotonic() - started > self.start_timeout:
                        self.err.write(f"airlock: not ready after {self.start_timeout:.0f} s; stopping\n")
                        self.stop(read_fd)
                        return 1
                self._wait(read_fd, 0.2 if not is_ready else 5.0)
        finally:
            signal.set_wakeup_fd(-1)
            for signum in (*STOP_SIGNALS, signal.SIGCHLD):
                signal.signal(signum, signal.SIG_DFL)
            os.close(read_fd)
            os.close(write_fd)
