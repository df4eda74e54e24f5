"""Approvals latency with Redis: statement held -> card on an open inbox websocket, and
approve -> the held statement's result at the client. p50/p99 over 200 requests.

``python -m bench approvals_bench`` (part of ``make bench``; needs DATABASE_URL on PostgreSQL
and REDIS_URL). Everything runs on this machine on a throwaway database: the console
(daphne) as its own process, a reviewer's inbox websocket (``websockets``) logged in through
the console's login page, and the gateway's side of approvals (``ReviewGate.review``, what a
protocol handler calls for a held statement) in this process, running the approved statement
on a private PostgreSQL when approved.

1. held -> card: from the call of ``review`` (the statement has reached the gateway and
   been decided ``review``) until the card arrives on the open websocket.
2. approve -> result: from sending the reviewer's approve request (HTTP API) until the
   approved statement's result is back in the gateway's hands for the client.
Target: each under 50 ms p99.
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

COUNT = int(os.environ.get("AIRLOCK_BENCH_APPROVALS", "200"))
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


async def _run(base: str, world: dict, target) -> tuple[list[float], list[float]]:  # type: ignore[no-untyped-def]
    import psycopg
    import websockets

    from approvals.gateway import ReviewGate
    from approvals.tests.factories import review_decision, statement_request

    cookie, csrf = await asyncio.to_thread(_login, base, "bench-reviewer", "bench-Pass-1234")
    gate = ReviewGate(agent_id=world["agent"], connection_id=world["connection"], estimate=False)
    to_card: list[float] = []
    to_result: list[float] = []
    ws_url = base.replace("http://", "ws://") + "/ws/approvals/"
    headers = {"Cookie": cookie, "Origin": base}
    upstream = await psycopg.AsyncConnection.connect(target, autocommit=True)
    async with websockets.connect(ws_url, additional_headers=headers) as inbox:
        json.loads(await inbox.recv())  # the count on connect
        for n in range(COUNT):
            arrived: asyncio.Future[float] = asyncio.get_running_loop().create_future()

            async def watch(fut: asyncio.Future[float] = arrived) -> int:
                while True:
                    message = json.loads(await inbox.recv())
                    if message["type"] == "request" and message["section"] == "pending":
                        fut.set_result(time.perf_counter())
                        return int(message["id"])

            watcher = asyncio.create_task(watch())
            held = time.perf_counter()
            review = asyncio.create_task(gate.review(statement_request(params=(str(n),)), review_decision()))
            request_id = await asyncio.wait_for(watcher, 30)
            to_card.append(arrived.result() - held)
            approve = time.perf_counter()
            await asyncio.to_thread(_approve, base, request_id, cookie, csrf)
            result = await asyncio.wait_for(review, 30)
            if result.decision.action.value != "allow":
                raise RuntimeError(f"request {request_id}: {result.decision.message}")
            # The approved statement runs on the target; its result is what the client gets.
            cursor = await upstream.execute("DELETE FROM orders WHERE id = %s", (n,))
            to_result.append(time.perf_counter() - approve)
            await gate.finished(result, ok=True, detail=f"DELETE {cursor.rowcount}")
            # Let the card and count updates of the decision go by before the next round.
            deadline = time.perf_counter() + 5
            while time.perf_counter() < deadline:
                try:
                    message = json.loads(await asyncio.wait_for(inbox.recv(), 0.2))
                except TimeoutError:
                    break
                if message["type"] == "count" and message["pending"] == 0:
                    break
    await upstream.close()
    return to_card, to_result


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
    from approvals.tests.factories import make_world, reviewer
    from gateway.tests.pgserver import running_postgres

    base_name = connection.settings_dict["NAME"]
    connection.settings_dict["TEST"]["NAME"] = f"{base_name}_bench_approvals"
    old = connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    console = None
    try:
        with running_postgres() as target:
            target.execute("CREATE TABLE orders (id int PRIMARY KEY)")
            built = make_world()
            bench_reviewer = reviewer("bench-reviewer")
            bench_reviewer.set_password("bench-Pass-1234")
            bench_reviewer.save()
            world = {"agent": built.agent.pk, "connection": built.connection.pk}
            db = connection.settings_dict
            port = _free_port()
            env = {
                **os.environ,
                "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
            }
            console = subprocess.Popen(
                [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "console.asgi:application"],
                env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    urllib.request.urlopen(base + "/healthz", timeout=1).read()  # noqa: S310
                    break
                except OSError:
                    if console.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("the console did not start") from None
                    time.sleep(0.1)
            dsn = f"host={target.socket_dir} port={target.port} user=postgres dbname=postgres"
            to_card, to_result = asyncio.run(_run(base, world, dsn))
    finally:
        from approvals.gateway import close_db_threads

        close_db_threads()
        if console is not None:
            console.terminate()
            console.wait(timeout=10)
        connection.close()
        connection.creation.destroy_test_db(old, verbosity=0)
    for label, values in (("held -> card on the inbox", to_card), ("approve -> result", to_result)):
        p50, p99 = _percentiles(values)
        print(
            f"approvals: {label:<27} p50 {p50 * 1000:6.1f} ms  p99 {p99 * 1000:6.1f} ms  ({len(values)} requests)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
