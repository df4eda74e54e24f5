"""``manage.py airlock`` as `make run` starts it: the embedded default, real child processes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(180)


def _embedded_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env.update(
        AIRLOCK_DATA_DIR=str(data_dir),
        AIRLOCK_HTTP_LISTEN=f"127.0.0.1:{free_port()}",
        AIRLOCK_POSTGRES_LISTEN=f"127.0.0.1:{free_port()}",
        AIRLOCK_SSH_LISTEN=f"127.0.0.1:{free_port()}",
        AIRLOCK_KUBERNETES_LISTEN=f"127.0.0.1:{free_port()}",
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("airlock-data")
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=_embedded_env(path),
        check=True,
        timeout=120,
    )
    return path


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_for(condition, what: str, timeout: float = 60.0, proc=None, log=None):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(
                f"airlock exited ({proc.returncode}) while waiting for {what}:\n{log.read_text()}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}:\n{log.read_text() if log else ''}")
        time.sleep(0.1)


def _get(url: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310
            return response.status, response.read(), response.headers.get("Content-Type", "")
    except OSError:
        return 0, b"", ""


class Running:
    def __init__(self, data_dir: Path, tmp_path: Path) -> None:
        self.env = _embedded_env(data_dir)
        self.base = "http://" + self.env["AIRLOCK_HTTP_LISTEN"]
        self.log = tmp_path / "airlock.log"
        self.handle = self.log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "airlock", "--stop-timeout", "30"],
            cwd=ROOT,
            env=self.env,
            stdout=self.handle,
            stderr=subprocess.STDOUT,
        )

    def wait_until_up(self) -> dict[str, int]:
        _wait_for(lambda: _get(self.base + "/healthz")[0] == 200, "/healthz", proc=self.proc, log=self.log)
        _wait_for(
            lambda: "Airlock is running." in self.log.read_text(), "the banner", proc=self.proc, log=self.log
        )
        return {
            name: int(pid) for name, pid in re.findall(r"started (\w+) \(pid (\d+)\)", self.log.read_text())
        }

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.handle.close()


@pytest.fixture
def airlock(data_dir, tmp_path):
    running = Running(data_dir, tmp_path)
    yield running
    running.close()


def test_it_serves_the_console_and_static_files_and_stops_every_child_on_sigterm(airlock):
    children = airlock.wait_until_up()
    assert {"web", "worker"} <= set(children)
    assert set(children) <= {"web", "gateway", "worker"}
    assert f"Console:  {airlock.base}/" in airlock.log.read_text()
    status, body, content_type = _get(airlock.base + "/static/css/airlock.css")
    assert (status, content_type.split(";")[0]) == (200, "text/css")
    assert b".topbar" in body
    status, body, _ = _get(airlock.base + "/accounts/login/")
    assert status == 200 and b'name="password"' in body
    # Everything the supervisor started, and what those started (Celery's pool).
    _wait_for(
        lambda: len(_descendants(airlock.proc.pid)) > len(children), "the worker's pool", log=airlock.log
    )
    everyone = _descendants(airlock.proc.pid)

    airlock.proc.send_signal(signal.SIGTERM)
    assert airlock.proc.wait(timeout=60) == 0
    _wait_for(
        lambda: not any(_alive(pid) for pid in everyone),
        "every child to be gone",
        timeout=10,
        log=airlock.log,
    )
    assert "SIGTERM received, stopping" in airlock.log.read_text()
    assert _get(airlock.base + "/healthz")[0] == 0


def test_when_one_child_dies_it_stops_the_others_and_exits_non_zero_naming_it(airlock):
    children = airlock.wait_until_up()
    everyone = _descendants(airlock.proc.pid)
    os.kill(children["worker"], signal.SIGKILL)
    assert airlock.proc.wait(timeout=60) == 1
    assert "worker exited with status -9; stopping the others" in airlock.log.read_text()
    _wait_for(
        lambda: not any(_alive(pid) for pid in everyone),
        "every child to be gone",
        timeout=10,
        log=airlock.log,
    )


def test_a_bad_listen_address_is_refused_naming_the_variable(data_dir):
    env = _embedded_env(data_dir)
    env["AIRLOCK_HTTP_LISTEN"] = "localhost"
    result = subprocess.run(
        [sys.executable, "manage.py", "airlock"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "AIRLOCK_HTTP_LISTEN: expected host:port, got 'localhost'" in result.stderr
