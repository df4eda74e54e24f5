"""Replay and sessions-page speed, through daphne and the real Chromium.

    .venv/bin/python -m bench replay_bench      (DATABASE_URL: a PostgreSQL database)

Uses a throwaway database. Reports, for sessions of 1,000 and 100,000 events recorded
through the writer: time to first screen (navigation until the first page of events is on
screen and the player can play) and to the whole timeline (every event fetched and
rendered), the median of three loads in Chromium. Then, with 100,000 sessions in the
database: the sessions page (HTML through daphne, median of five) unfiltered, filtered,
searched, and deep in the pages.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from console.envconfig import database_url as url_of

ROOT = Path(__file__).resolve().parent.parent


def _statement(n: int) -> list[tuple[str, dict[str, Any]]]:
    return [
        (
            "statement",
            {"text": f"SELECT id, total, status FROM invoices WHERE customer_id = {n}", "params": []},
        ),
        (
            "decision",
            {"action": "allow", "rule": "reads", "policy": "default", "policy_version": 3, "message": ""},
        ),
        (
            "result",
            {
                "rows": 3,
                "command_tag": "SELECT 3",
                "columns": ["id", "total", "status"],
                "first_rows": [[str(n * 10 + k), f"{k}9.99", "paid"] for k in range(3)],
                "duration_ms": 0.4,
            },
        ),
    ]


async def _record(events: int) -> str:
    from recordings.writer import SessionRecorder

    recorder = await SessionRecorder.start(
        protocol="postgres", agent_name="bench-bot", connection_name="shop"
    )
    for n in range((events - 2) // 3):
        for kind, payload in _statement(n):
            recorder.append(kind, payload)
        if n % 2000 == 0:
            await asyncio.sleep(0)
    await recorder.close(reason="bench")
    return str(recorder.session_id)


SESSIONS_SQL = """
INSERT INTO recordings_session (
    id, protocol, agent_name, on_behalf_of_name, connection_name, client_address, application_name,
    status, started_at, ended_at, end_reason, event_count, statement_count, denied_count, review_count,
    error_count, masked_count, dropped_events, last_hash, seal, signing_key_id, legal_hold, search_vector)
SELECT gen_random_uuid(), CASE WHEN n %% 10 = 0 THEN 'ssh' ELSE 'postgres' END,
       'agent-' || (n %% 50), CASE WHEN n %% 3 = 0 THEN 'person-' || (n %% 200) ELSE '' END,
       'conn-' || (n %% 20), '10.0.0.1:5000', 'psql',
       CASE WHEN n %% 1000 = 0 THEN 'live' WHEN n %% 97 = 0 THEN 'terminated' ELSE 'ended' END,
       now() - make_interval(mins => n), now() - make_interval(mins => n) + interval '5 minutes', 'bench',
       30, 10, (n %% 50 = 0)::int, (n %% 40 = 0)::int, (n %% 30 = 0)::int, (n %% 25 = 0)::int * 3, 0,
       '', '', '', false,
       strip(to_tsvector('simple', 'select id total from invoices orders customers where customer_id ' ||
             n || ' table_' || (n %% 5000) || CASE WHEN n %% 10000 = 7 THEN ' pg_read_file' ELSE '' END))
FROM generate_series(1, %s) AS n
"""


def _median(fn: Any, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _console(database_url: str) -> tuple[subprocess.Popen[bytes], str]:
    from conftest import free_port

    port = free_port()
    env = dict(os.environ, DATABASE_URL=database_url)
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "console.asgi:application"],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(base + "/healthz", timeout=1).read()  # noqa: S310 - our own server
            return proc, base
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                log.seek(0)
                raise RuntimeError("console did not start: " + log.read().decode()[-2000:]) from None
            time.sleep(0.1)


def _cookie() -> str:
    from django.conf import settings
    from django.contrib.auth.models import Group
    from django.test import Client

    from identity.models import User

    carol = User.objects.create_user("bench-carol")
    carol.groups.add(Group.objects.get_or_create(name=settings.AIRLOCK_ROLE_GROUPS["auditor"])[0])
    client = Client()
    client.force_login(carol)
    return client.cookies["sessionid"].value


def _browser_figures(base: str, cookie: str, sessions: dict[int, str]) -> dict[int, tuple[float, float]]:
    from playwright.sync_api import sync_playwright

    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    figures = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"]
        )
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.add_cookies([{"name": "sessionid", "value": cookie, "url": base}])
        page = context.new_page()
        page.set_default_timeout(300_000)
        # Warm up daphne and the database caches once, as a console that has been running.
        page.goto(f"{base}/recordings/{next(iter(sessions.values()))}/")
        page.wait_for_selector('#player[data-loaded="all"]', state="attached")
        for events, session_id in sessions.items():
            firsts, wholes = [], []
            for _ in range(3):
                started = time.perf_counter()
                page.goto(f"{base}/recordings/{session_id}/")
                page.wait_for_selector('#player[data-state="paused"]')
                firsts.append(time.perf_counter() - started)
                page.wait_for_selector('#player[data-loaded="all"]', state="attached")
                wholes.append(time.perf_counter() - started)
                rendered = page.locator("#timeline li").count()
                if rendered != events:
                    raise RuntimeError(f"{rendered} of {events} events rendered")
            figures[events] = (statistics.median(firsts), statistics.median(wholes))
        browser.close()
    return figures


def _page_figures(base: str, cookie: str) -> dict[str, float]:
    import re

    import requests

    http = requests.Session()
    http.cookies.set("sessionid", cookie)

    def get(params: dict[str, str]) -> str:
        response = http.get(f"{base}/recordings/", params=params, timeout=60)
        response.raise_for_status()
        return response.text

    now = datetime.now(UTC)
    cursor = ""
    for _ in range(20):  # 20 pages in: 1,000 sessions deep
        found = re.search(r'after=([^"&]+)">older', get({"after": cursor} if cursor else {}))
        assert found
        cursor = requests.utils.unquote(found.group(1))
    cases = {
        "first page, no filter": {},
        "one agent": {"agent": "agent-7"},
        "had denials": {"had_denials": "on"},
        "agent + connection + errors": {"agent": "agent-10", "connection": "conn-10", "had_errors": "on"},
        "started in a 1-day window": {
            "started_after": (now - timedelta(days=10)).strftime("%Y-%m-%dT%H:%M"),
            "started_before": (now - timedelta(days=9)).strftime("%Y-%m-%dT%H:%M"),
        },
        "search, common word": {"q": "invoices"},
        "search, rare word": {"q": "pg_read_file"},
        "search, prefix": {"q": "table_42"},
        "page 21 (keyset)": {"after": cursor},
    }
    figures = {}
    for name, params in cases.items():
        get(params)  # warm
        figures[name] = _median(lambda params=params: get(params), 5)
    return figures


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.db import connection

    from recordings.writer import shutdown_writer

    if connection.vendor != "postgresql":
        print("replay benchmark: set DATABASE_URL to a PostgreSQL database", file=sys.stderr)
        return 2
    base_name = connection.settings_dict["NAME"]
    connection.settings_dict["TEST"]["NAME"] = f"{base_name}_bench_replay"
    old = connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    database_url = url_of(connection.settings_dict)
    proc = None
    try:
        started = time.perf_counter()
        sessions = {n: asyncio.run(_record(n)) for n in (1_001, 100_001)}
        recorded = time.perf_counter() - started
        with connection.cursor() as cursor:
            cursor.execute(SESSIONS_SQL, [100_000])
            cursor.execute("ANALYZE recordings_session")
        cookie = _cookie()
        shutdown_writer()
        connection.close()
        proc, base = _console(database_url)
        browser = _browser_figures(base, cookie, sessions)
        pages = _page_figures(base, cookie)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        shutdown_writer()
        connection.close()
        connection.creation.destroy_test_db(old, verbosity=0)
    print(f"replay: recorded 101,002 events through the writer in {recorded:.1f} s")
    for events, (first, whole) in browser.items():
        print(
            f"replay: {events:>7,} events  first screen {first * 1000:7.0f} ms   whole timeline {whole * 1000:8.0f} ms"
        )
    for name, seconds in pages.items():
        print(f"sessions page (100,000 sessions), {name:<28} {seconds * 1000:7.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
