"""The recording writer's jobs in a process of their own (what ``manage.py gateway`` uses).

Why: the gateway relays every session on one event loop, in one Python interpreter. The
writer's jobs (chain each event with SHA-256, build the COPY, run the transaction through
Django) are Python too, and on threads of the gateway's process they hold the same GIL as
the loop: under load the loop and the writer threads took turns, and the process could not
use more than one CPU between them (docs/performance.md). Here the jobs run on the same
writer threads (``recordings.writer._WriterThreads``) in a child process, and the loop only
pickles each batch (once per batch, not per event) onto a socket.

The channel: a ``socketpair`` made by the gateway and inherited by the child alone; frames
of a 4-byte length and a pickle. Pickle is safe here because both ends are this program and
nothing else holds the socket. The parent side is driven by the event loop itself
(``add_reader``/``add_writer``, no helper thread). Jobs are named from a fixed list
(``recordings.writer._JOB_NAMES``), never pickled functions.

Failures: when the child ends (killed, crashed, out of memory), every job in flight fails
with ``WriterProcessLost``; the recorder treats that as any failed write (it may have
committed: the next attempt reads where the chain really ends) and retries within
``RECORDING_PERSIST_TIMEOUT``, and the next job starts a new child. A job that fails in the
child comes back as ``WriterJobFailed`` carrying the first line of the error (never the
payload: ``writer._describe``). Strict mode's guarantee is the recorder's and does not
change: an event not persisted within the bound ends its session.

The child ignores SIGINT and SIGTERM (a terminal's Ctrl-C or a service manager's stop
reaches the whole process group): it ends when the gateway closes its end of the socket,
after the jobs it holds are done, so a stopping gateway's last batches and seals are
written.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import threading
from typing import Any

log = logging.getLogger("airlock.recordings")

_HEAD = struct.Struct("!I")
MAX_FRAME = 1 << 30  # a batch is at most BATCH_ROWS events of at most a few MB each


class WriterProcessLost(Exception):
    """The writer process ended while a job was in flight (the job may have committed)."""


class WriterJobFailed(Exception):
    """A job raised in the writer process; the message is its first line (``_describe``)."""


def _frame(obj: Any) -> bytes:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEAD.pack(len(data)) + data


class WriterProcess:
    """The gateway's end: one child process, used from one event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        from django.conf import settings
        from django.db import connection

        self.loop = loop
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        # What the child needs of this process's settings beyond its environment: the
        # database a test runner renamed, the key a test configured.
        overrides = {
            "db_name": connection.settings_dict["NAME"],
            "key_file": str(settings.RECORDING_SIGNING_KEY_FILE),
            "threads": int(getattr(settings, "RECORDING_WRITER_THREADS", 8)),
        }
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "console.settings"),
        }
        try:
            self.proc = subprocess.Popen(  # noqa: S603 - this interpreter, this module
                [
                    sys.executable,
                    "-m",
                    "recordings.writer_process",
                    str(theirs.fileno()),
                    json.dumps(overrides),
                ],
                pass_fds=[theirs.fileno()],
                env=env,
                cwd=str(settings.BASE_DIR),
            )
        finally:
            theirs.close()
        ours.setblocking(False)
        self._sock: socket.socket | None = ours
        self._out = bytearray()
        self._in = bytearray()
        self._futures: dict[int, asyncio.Future[Any]] = {}
        self._next = 0
        self.closed = False
        self._stopping = False
        loop.add_reader(ours.fileno(), self._readable)
        log.info("recording writer process %d started", self.proc.pid)

    def submit(self, name: str, *args: Any) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = self.loop.create_future()
        if self.closed or self._sock is None:
            future.set_exception(WriterProcessLost("the recording writer process has ended"))
            return future
        self._next += 1
        job = self._next
        try:
            frame = _frame((job, name, args))
        except Exception as exc:  # a payload that cannot travel: a programming error
            future.set_exception(exc)
            return future
        self._futures[job] = future
        pending = bool(self._out)
        self._out += frame
        if not pending:
            self._writable()
        return future

    def _writable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            sent = sock.send(self._out)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._lost(f"the recording writer process cannot be reached: {exc.strerror or exc}")
            return
        del self._out[:sent]
        if self._out:
            self.loop.add_writer(sock.fileno(), self._writable)
        else:
            self.loop.remove_writer(sock.fileno())

    def _readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            data = sock.recv(1 << 16)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(f"the recording writer process cannot be reached: {exc.strerror or exc}")
            return
        if not data:
            self._lost("the recording writer process ended")
            return
        buf = self._in
        buf += data
        pos = 0
        while len(buf) - pos >= 4:
            size = _HEAD.unpack_from(buf, pos)[0]
            if len(buf) - pos - 4 < size:
                break
            try:
                # The child this process started, over a socket no one else holds (docstring).
                job, ok, value = pickle.loads(bytes(buf[pos + 4 : pos + 4 + size]))  # noqa: S301
            except Exception as exc:
                self._lost(f"the recording writer process sent an unreadable answer: {type(exc).__name__}")
                return
            pos += 4 + size
            future = self._futures.pop(job, None)
            if future is None or future.done():
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(WriterJobFailed(value))
        del buf[:pos]

    def _lost(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        if self._futures:
            log.error("%s with %d recording writes in flight; they are retried", reason, len(self._futures))
        elif not self._stopping:
            log.warning("%s", reason)
        self._detach()
        futures, self._futures = self._futures, {}
        for future in futures.values():
            if not future.done():
                future.set_exception(WriterProcessLost(reason))
        if self._stopping:
            return  # stop() waits for it
        if self.proc.poll() is None:
            self.proc.kill()
        # Reaped off the loop: the kill takes effect at once, the wait may not.
        threading.Thread(target=self.proc.wait, name="recording-writer-reaper", daemon=True).start()

    def _detach(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        with contextlib.suppress(Exception):
            self.loop.remove_reader(sock.fileno())
            self.loop.remove_writer(sock.fileno())
        sock.close()

    def stop(self, timeout: float) -> None:
        """Let the child finish the jobs it holds and end (callable from any thread)."""
        self._stopping = True
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.error("recording writer process %d did not end within %gs: killed", self.proc.pid, timeout)
            self.proc.kill()
            self.proc.wait()


# --- the child -------------------------------------------------------------------------


def _child(fd: int, overrides: dict[str, Any]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.db import connections

    connections.settings["default"]["NAME"] = overrides["db_name"]
    settings.RECORDING_SIGNING_KEY_FILE = overrides["key_file"]
    from recordings import writer

    jobs = {name: fn for fn, name in writer._JOB_NAMES.items()}
    pool = writer._WriterThreads(overrides["threads"])
    sock = socket.socket(fileno=fd)
    send_lock = threading.Lock()

    def send(job: int, ok: bool, value: Any) -> None:
        try:
            frame = _frame((job, ok, value))
        except Exception as error:  # a result that cannot travel
            frame = _frame((job, False, writer._describe(error)))
        with send_lock, contextlib.suppress(OSError):
            sock.sendall(frame)

    def reply(job: int, future: Any) -> None:
        exc = future.exception()
        if exc is None:
            send(job, True, future.result())
        else:
            send(job, False, writer._describe(exc))

    reader = sock.makefile("rb")
    try:
        while True:
            head = reader.read(4)
            if len(head) < 4:
                break
            size = _HEAD.unpack(head)[0]
            if size > MAX_FRAME:
                break
            body = reader.read(size)
            if len(body) < size:
                break
            job, name, args = pickle.loads(body)  # noqa: S301 - from the gateway that started us
            fn = jobs.get(name)
            if fn is None:
                send(job, False, f"ValueError: unknown recording job {name!r}")
                continue
            future = pool.submit(fn, *args)
            future.add_done_callback(functools.partial(reply, job))
    finally:
        # The gateway closed its end (stopping) or went away: finish what was handed over.
        pool.shutdown(timeout=float(settings.RECORDING_PERSIST_TIMEOUT) * 3)


if __name__ == "__main__":
    _child(int(sys.argv[1]), json.loads(sys.argv[2]))
