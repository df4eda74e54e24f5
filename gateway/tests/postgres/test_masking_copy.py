"""COPY ... TO STDOUT under column rules, end to end: psql (``COPY`` and ``\\copy``) and
psycopg's copy API through the gateway to a real PostgreSQL, text and CSV.

Each COPY's output is checked two ways: PostgreSQL itself reads it back (``COPY ... FROM
STDIN`` on a direct connection), which proves the format stayed valid, and what it reads
must equal what a SELECT through the gateway shows (the same masking, value for value).
Values hold tabs, newlines, carriage returns, backslashes, quotes, commas and semicolons.
"""

from __future__ import annotations

import os
import subprocess

import psycopg
import pytest

from gateway.tests.postgres.events import results as recorded_results
from gateway.tests.postgres.test_masking import _masking_policy

EMAIL = "tab\tand\\back@example.org"
SSN = "123-45-6789"
TOKEN = "ghp_" + "Ab3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF3hJ6"
NICK = 'Zoë "the\nquote", back\\slash;\r\tend'
PLANTED = ("back@example.org", SSN, TOKEN, "Zo", "918273")
SPEC = {
    "columns": [
        {"match": "public.people.email", "method": "hash", "entity": "email"},
        {"match": "people.ssn", "method": "redact", "entity": "ssn"},
        {"match": "people.nick", "method": "partial"},
        {"match": "people.pin", "method": "redact"},
    ],
}
COLUMNS = "id, email, ssn, nick, note, pin"


@pytest.fixture(scope="module")
def people(private_pg):  # type: ignore[no-untyped-def]
    with private_pg.admin("shop") as conn:
        conn.execute("SET ROLE scram_user")
        conn.execute("DROP TABLE IF EXISTS people")
        conn.execute(
            "CREATE TABLE people (id int PRIMARY KEY, email text, ssn text, nick text, note text, pin int)"
        )
        conn.execute(
            "INSERT INTO people VALUES (1, %s, %s, %s, %s, 918273), (2, NULL, NULL, 'x', %s, NULL),"
            " (3, 'plain', '000-00-0000', NULL, NULL, 5)",
            (EMAIL, SSN, NICK, f'rotated\t{TOKEN}\nthen \\ "done", ok;', 'only "quotes", a\ttab\nand \\'),
        )
    return "people"


@pytest.fixture
def cgw(gateway_factory, people):  # type: ignore[no-untyped-def]
    env = gateway_factory()
    _masking_policy(SPEC)
    return env


def _no_planted(text: str) -> None:
    for secret in PLANTED:
        assert secret not in text, f"{secret!r} leaked"


def _selected(env) -> list[tuple]:  # type: ignore[no-untyped-def]
    """The rows as a SELECT through the gateway shows them, every value as text."""
    with env.connect() as conn:
        rows = conn.execute(f"SELECT {COLUMNS} FROM people ORDER BY id").fetchall()
    return [tuple(None if v is None else str(v) for v in row) for row in rows]


def _read_back(private_pg, data: bytes, options: str, ncols: int = 6) -> list[tuple]:  # type: ignore[no-untyped-def]
    """PostgreSQL's own reading of COPY output (direct, not through the gateway)."""
    names = ", ".join(f"c{i} text" for i in range(ncols))
    with private_pg.admin("shop") as conn:
        conn.execute(f"CREATE TEMP TABLE back ({names})")
        with conn.cursor().copy(f"COPY back FROM STDIN {options}") as copy:
            copy.write(data)
        return conn.execute("SELECT * FROM back ORDER BY c0::int").fetchall()


@pytest.mark.parametrize(
    ("statement", "options"),
    [
        ("COPY people TO STDOUT", ""),
        ("COPY people TO STDOUT (FORMAT csv)", "(FORMAT csv)"),
        ("COPY people TO STDOUT WITH CSV HEADER", "(FORMAT csv, HEADER true)"),
        ("COPY people TO STDOUT (FORMAT csv, DELIMITER ';', QUOTE '''', ESCAPE '\\')",
         "(FORMAT csv, DELIMITER ';', QUOTE '''', ESCAPE '\\')"),
        ("COPY people TO STDOUT (DELIMITER ',', NULL 'nil')", "(DELIMITER ',', NULL 'nil')"),
        (f"COPY (SELECT {COLUMNS} FROM people WHERE id > 0) TO STDOUT", ""),
        (f"COPY people ({COLUMNS}) TO STDOUT (FORMAT csv, FORCE_QUOTE *)", "(FORMAT csv)"),
    ],
)  # fmt: skip
def test_psycopg_copy_is_masked_like_select_and_stays_valid(cgw, private_pg, statement, options):
    with cgw.connect() as conn:
        with conn.cursor().copy(statement) as copy:
            data = b"".join(bytes(chunk) for chunk in copy)
        # The session goes on, and the probe left nothing behind.
        assert conn.execute("SELECT 1").fetchone() == (1,)
    _no_planted(data.decode())
    assert _read_back(private_pg, data, options) == _selected(cgw)


def test_the_masked_values_are_the_policys(cgw):
    with cgw.connect() as conn:
        with conn.cursor().copy("COPY people TO STDOUT") as copy:
            rows = list(copy.rows())
    first = rows[0]
    assert first[1].startswith("[EMAIL:") and first[2] == "[SSN]"
    assert first[3] == "[MASKED:****hend]" and first[5] is None  # an int holds no placeholder
    assert "[GITHUB_TOKEN]" in first[4] and '"done", ok;' in first[4]  # content, in place
    assert rows[2][2] == "[SSN]" and rows[2][3] is None  # NULL stays NULL
    assert rows[1][3] == "[MASKED]"  # too short to keep four


def _psql(env, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run(
        ["psql", env.conninfo(), "-X", "-v", "ON_ERROR_STOP=1", *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=60,
        env={**os.environ, "PGCONNECT_TIMEOUT": "10"},
    )


@pytest.mark.parametrize(
    ("command", "options"),
    [
        ("COPY people TO STDOUT", ""),
        ("\\copy people to stdout", ""),
        ("\\copy people to stdout with (format csv, header)", "(FORMAT csv, HEADER true)"),
        (f"\\copy (select {COLUMNS} from people) to stdout csv", "(FORMAT csv)"),
    ],
)
def test_psql_copy_is_masked_like_select_and_stays_valid(cgw, private_pg, command, options):
    out = _psql(cgw, "-c", command) if command.startswith("COPY") else _psql(cgw, stdin=command + "\n")
    assert out.returncode == 0, out.stderr
    _no_planted(out.stdout)
    assert _read_back(private_pg, out.stdout.encode(), options) == _selected(cgw)


def test_a_copy_in_a_transaction_and_after_set_search_path_resolves_like_the_session(cgw, private_pg):
    with private_pg.admin("shop") as conn:
        conn.execute("SET ROLE scram_user")
        conn.execute("CREATE SCHEMA IF NOT EXISTS other")
        conn.execute("DROP TABLE IF EXISTS other.people")
        conn.execute("CREATE TABLE other.people (id int, email text)")
        conn.execute("INSERT INTO other.people VALUES (7, 'nobody@example.org')")
    with cgw.connect() as conn:
        conn.execute("SET search_path TO other")
        with conn.cursor().copy("COPY people TO STDOUT") as copy:
            rows = list(copy.rows())
    # other.people has no column rule (public.people.email has): content detection only.
    assert rows == [("7", "[EMAIL]")]


def test_a_failing_copy_reports_the_error_and_the_session_goes_on(cgw):
    with cgw.connect() as conn:
        with pytest.raises(psycopg.errors.UndefinedTable):
            with conn.cursor().copy("COPY nosuch TO STDOUT") as copy:
                list(copy)
        conn.rollback()
        assert conn.execute("SELECT 2").fetchone() == (2,)


def test_binary_copy_of_a_masked_column_is_refused_with_a_clear_error(cgw):
    with cgw.connect() as conn:
        with pytest.raises(psycopg.errors.InternalError_) as info:
            with conn.cursor().copy("COPY people TO STDOUT (FORMAT binary)") as copy:
                _no_planted(b"".join(bytes(chunk) for chunk in copy).decode("latin-1"))
        assert "binary COPY output cannot be masked" in str(info.value)
        conn.rollback()
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_copy_of_a_data_modifying_query_is_withheld_not_run_twice(cgw, private_pg):
    with cgw.connect(autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InternalError_) as info:
            with conn.cursor().copy(
                "COPY (WITH d AS (UPDATE people SET pin = pin + 1 WHERE id = 3 RETURNING id, pin)"
                " SELECT * FROM d) TO STDOUT"
            ) as copy:
                list(copy)
        assert "data-modifying" in str(info.value)
    with private_pg.admin("shop") as conn:
        conn.execute("SET ROLE scram_user")
        # Withheld, not undone: the COPY ran once (its rows never reached the client).
        assert conn.execute("SELECT pin FROM people WHERE id = 3").fetchone() == (6,)
        conn.execute("UPDATE people SET pin = 5 WHERE id = 3")


def test_the_recording_counts_what_a_copy_masked(cgw):
    out = _psql(cgw, "-c", "COPY people (id, ssn) TO STDOUT")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["1\t[SSN]", "2\t\\N", "3\t[SSN]"]
    results = recorded_results(cgw.events())
    copied = [r for r in results if r["statement"].startswith("COPY")]
    assert copied[-1]["masked_entities"] == {"ssn": 2}
    assert not any("probe" in r["statement"] or "LIMIT 0" in r["statement"] for r in results)


@pytest.mark.parametrize("options", ["", "(FORMAT csv)"])
def test_without_column_rules_each_field_is_masked_by_content(gateway_factory, people, private_pg, options):
    env = gateway_factory()
    _masking_policy({}, name="content-only")
    with env.connect() as conn:
        with conn.cursor().copy(f"COPY people TO STDOUT {options}") as copy:
            data = b"".join(bytes(chunk) for chunk in copy)
    assert "[GITHUB_TOKEN]" in data.decode() and "[EMAIL]" in data.decode() and "[SSN]" in data.decode()
    assert TOKEN not in data.decode() and SSN not in data.decode()
    assert _read_back(private_pg, data, options) == _selected(env)
