"""Approvals latency with Redis: statement held -> card on an open inbox websocket, and
approve -> the held statement's result at the client. p50/p99 over 200 requests.

``python -m bench approvals_bench`` (part of ``make bench``; needs DATABASE_URL on PostgreSQL
and REDIS_URL). Everything runs on this machine on a throwaway database: a private
PostgreSQL as the target, the gateway (``manage.py gateway``) and the console (daphne) as
their own processes, an agent (psycopg) sending ``DELETE FROM orders WHERE id = $1`` through
the gateway under a policy that sends writes to review, and a reviewer's inbox websocket
(``websockets``) logged in through the console's login page.

1. statement -> card: from the agent sending the statement until its card arrives on the
   open inbox websocket.
2. approve -> result: from the reviewer's approve request (HTTP API) until the statement's
   result (``DELETE 1``) reaches the agent. The clock stops when the result arrives, not
   when the approve request's HTTP answer does (printed apart: it can come later).
Target: each under 50 ms p99.

The machine is shared: the load average is printed before and after, and each request is
paired with a baseline taken in the same run under the same load: ``SELECT 1`` through
the gateway (allowed by the policy, no review) and ``GET /healthz`` on the console.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import time
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any

from console.envconfig import database_url

COUNT = int(os.environ.get("AIRLOCK_BENCH_APPROVALS", "200"))
TARGET_P99 = 0.050  # seconds, for each of the timed paths below (the baselines are not targets)
TARGETED = ("statement -> card on the inbox", "approve -> result at the agent")
ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _percentiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def _login(base: str, username: str, password: str) -> tuple[str, str]:
    """(cookie header, CSRF token) of a session logged in through the login page."""
    jar = CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page = opener.open(base + "/accounts/login/", timeout=10).read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    body = f"csrfmiddlewaretoken={token}&login={username}&password={password}".encode()
    request = urllib.request.Request(  # noqa: S310 (the console started here)
        base + "/accounts/login/", data=body, headers={"Referer": base + "/"}
    )
    opener.open(request, timeout=10).read()
    cookies = {c.name: c.value for c in jar}
    if "sessionid" not in cookies:
        raise RuntimeError("the reviewer could not log in")
    return f"sessionid={cookies['sessionid']}; csrftoken={cookies['csrftoken']}", cookies["csrftoken"]


def _healthz(base: str) -> None:
    urllib.request.urlopen(base + "/healthz", timeout=10).read()  # noqa: S310 (the console started here)


async def _run(base: str, gateway_dsn: str) -> dict[str, list[float]]:
    import psycopg
    import websockets

    cookie, csrf = await asyncio.to_thread(_login, base, "bench-reviewer", "bench-Pass-1234")
    to_card: list[float] = []
    to_result: list[float] = []
    answered: list[float] = []
    seen: set[int] = set()
    select_1: list[float] = []
    healthz: list[float] = []
    ws_url = base.replace("http://", "ws://") + "/ws/approvals/"
    headers = {"Cookie": cookie, "Origin": base}
    agent = await psycopg.AsyncConnection.connect(gateway_dsn, autocommit=True)
    async with websockets.connect(ws_url, additional_headers=headers) as inbox:
        json.loads(await inbox.recv())  # the count on connect
        for n in range(1, COUNT + 1):
            sent = time.perf_counter()
            await agent.execute("SELECT 1")
            select_1.append(time.perf_counter() - sent)
            sent = time.perf_counter()
            await asyncio.to_thread(_healthz, base)
            healthz.append(time.perf_counter() - sent)
            sent = time.perf_counter()
            result_at: list[float] = []
            statement = asyncio.create_task(
                _stamped(agent.execute("DELETE FROM orders WHERE id = %s", (n,)), result_at)
            )
            while True:
                message = json.loads(await asyncio.wait_for(inbox.recv(), 30))
                if message["type"] == "request" and message["section"] == "pending":
                    if int(message["id"]) not in seen:
                        break
            to_card.append(time.perf_counter() - sent)
            seen.add(int(message["id"]))
            approve = time.perf_counter()
            await asyncio.to_thread(_approve, base, int(message["id"]), cookie, csrf)
            answered.append(time.perf_counter() - approve)
            cursor = await asyncio.wait_for(statement, 30)
            # The clock stops when the result reaches the agent, which is often before the
            # approve request's own HTTP answer comes back.
            to_result.append(result_at[0] - approve)
            if cursor.rowcount != 1:
                raise RuntimeError(f"request {message['id']}: {cursor.rowcount} rows deleted")
            # Let this request's updates (its estimate, its decision) go by.
            while True:
                try:
                    message = json.loads(await asyncio.wait_for(inbox.recv(), 0.3))
                except TimeoutError:
                    break
    await agent.close()
    return {
        "statement -> card on the inbox": to_card,
        "approve -> result at the agent": to_result,
        "approve -> its HTTP answer": answered,
        "baseline: SELECT 1 via gateway": select_1,
        "baseline: GET /healthz": healthz,
    }


async def _stamped(awaitable: Any, stamps: list[float]) -> Any:
    """``awaitable``'s result, with the moment it arrived appended to ``stamps``."""
    result = await awaitable
    stamps.append(time.perf_counter())
    return result


def _approve(base: str, request_id: int, cookie: str, csrf: str) -> None:
    request = urllib.request.Request(  # noqa: S310 (the console started here)
        f"{base}/api/approvals/{request_id}/approve/",
        data=b"{}",
        headers={
            "Cookie": cookie,
            "X-CSRFToken": csrf,
            "Content-Type": "application/json",
            "Referer": base + "/",
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        if response.status != 200:
            raise RuntimeError(f"approve answered {response.status}")


def _prepare(pg_port: int, password: str, save_policy: Any, make_reviewer: Any) -> str:
    """The agent and its token, the reviewer, and the connection "bench" whose policy holds
    writes for the dba reviewers."""
    from gateway.actions import do_create_connection
    from identity.actions import do_create_agent, do_create_group, do_issue_token

    do_create_group(None, "agents")
    agent = do_create_agent("bench", "bench-bot", groups=["agents"])
    bench_reviewer = make_reviewer("bench-reviewer")
    bench_reviewer.set_password("bench-Pass-1234")
    bench_reviewer.save()
    make_reviewer("bench-second")  # so that the approvals are not all one person's
    policy = save_policy(
        "bench",
        "bench-writes",
        {
            "default": "allow",
            "rules": [{"name": "writes", "match": {"operations": ["write"]}, "action": "review",
                       "reviewers": ["dba"], "timeout": "5m"}],
        },
    )  # fmt: skip
    do_create_connection(
        None, name="bench", kind="postgres", host="127.0.0.1", port=pg_port, database="bench",
        username="scram_user", options={"sslmode": "disable"}, groups=["agents"], policy=policy,
        secret_values={"password": password},
    )  # fmt: skip
    return str(do_issue_token("bench", agent).raw)


def _log_file(name: str) -> Any:
    """Where a child's log goes: ``$AIRLOCK_BENCH_LOGS/<name>.log`` when that is set."""
    folder = os.environ.get("AIRLOCK_BENCH_LOGS")
    if not folder:
        return subprocess.DEVNULL
    Path(folder).mkdir(parents=True, exist_ok=True)
    return (Path(folder) / f"{name}.log").open("w")


def _wait_port(port: int, proc: subprocess.Popen[str], timeout: float = 30) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on port {port}") from None
            time.sleep(0.1)


def _wait_http(url: str, proc: subprocess.Popen[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).read()  # noqa: S310 (the console started here)
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{url} does not answer") from None
            time.sleep(0.1)


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")
    os.environ.setdefault("AIRLOCK_LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from django.conf import settings
    from django.db import connection

    if connection.vendor != "postgresql" or not settings.REDIS_URL:
        print("approvals benchmark: set DATABASE_URL (PostgreSQL) and REDIS_URL", file=sys.stderr)
        return 2
    from approvals.tests.factories import reviewer
    from gateway.tests.postgres.pgserver import ROLES, start_private_postgres
    from policies.actions import do_save_policy

    base_name = connection.settings_dict["NAME"]
    connection.settings_dict["TEST"]["NAME"] = f"{base_name}_bench_approvals"
    old = connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    target = start_private_postgres(_free_port())
    procs: list[subprocess.Popen[str]] = []
    try:
        with target.admin() as admin:
            admin.execute("CREATE DATABASE bench OWNER scram_user")
        with target.admin("bench") as admin:
            admin.execute("CREATE TABLE orders (id int PRIMARY KEY)")
            admin.execute(f"INSERT INTO orders SELECT generate_series(1, {COUNT})")
            admin.execute("GRANT ALL ON orders TO scram_user")
            admin.execute("ANALYZE orders")
        token = _prepare(target.port, ROLES["scram_user"][0], do_save_policy, reviewer)
        env = {
            **os.environ,
            "DATABASE_URL": database_url(connection.settings_dict),
        }
        gw_port, port = _free_port(), _free_port()
        procs.append(
            subprocess.Popen(
                [sys.executable, "manage.py", "gateway", "--postgres-listen", f"127.0.0.1:{gw_port}"],
                env=env,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=_log_file("gateway"),
                text=True,
            )  # fmt: skip
        )
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "daphne",
                    "-b",
                    "127.0.0.1",
                    "-p",
                    str(port),
                    "console.asgi:application",
                ],
                env=env,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=_log_file("console"),
                text=True,
            )  # fmt: skip
        )
        base = f"http://127.0.0.1:{port}"
        _wait_http(base + "/healthz", procs[1])
        _wait_port(gw_port, procs[0])
        dsn = f"host=127.0.0.1 port={gw_port} dbname=bench user=bench-bot password={token} sslmode=disable"
        print("load average before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
        results = asyncio.run(_run(base, dsn))
        print("load average after:  {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    finally:
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        target.stop()
        connection.close()
        connection.creation.destroy_test_db(old, verbosity=0)
    for label, values in results.items():
        p50, p99 = _percentiles(values)
        print(
            f"approvals: {label:<31} p50 {p50 * 1000:6.1f} ms  p99 {p99 * 1000:6.1f} ms  ({len(values)} requests)"
        )
    met = all(_percentiles(results[label])[1] < TARGET_P99 for label in TARGETED)
    print(
        f"target (statement -> card and approve -> result under {TARGET_P99 * 1000:.0f} ms p99):",
        "met" if met else "NOT met",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
