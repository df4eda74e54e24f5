"""Masking end to end: real psql and psycopg through the gateway to a real PostgreSQL.

The families of SECURITY-CASES.md "Masking" (MSK-01..06), the write-back guard, the
session's counts, and failing closed.
"""

from __future__ import annotations

import os
import subprocess

import psycopg
import pytest

from gateway.decision import DecisionPoint
from gateway.tests.postgres.events import results as recorded_results

EMAIL = "dana.secret@example.org"
CARD = "4111111111111111"
SSN = "123-45-6789"
GITHUB = "ghp_" + "Ab3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF3hJ6"
PIN = 918273
PLANTED = (EMAIL, CARD, SSN, GITHUB, str(PIN), "dana.secret")

SPEC = {
    "columns": [
        {"match": "public.users.email", "method": "hash", "entity": "email"},
        {"match": "*.ssn", "method": "redact", "entity": "ssn"},
        {"match": "users.pin", "method": "redact"},
    ],
}


@pytest.fixture(scope="module")
def users_table(private_pg):  # type: ignore[no-untyped-def]
    with private_pg.admin("shop") as conn:
        conn.execute("SET ROLE scram_user")
        conn.execute("DROP TABLE IF EXISTS users")
        conn.execute(
            "CREATE TABLE users (id int PRIMARY KEY, email text, card text, ssn text, notes text,"
            " pin int, profile jsonb)"
        )
        conn.execute(
            "INSERT INTO users VALUES (1, %s, %s, %s, %s, %s, %s), (2, NULL, 'none', NULL, 'plain', NULL, NULL)",
            (
                EMAIL,
                CARD,
                SSN,
                f"deploy log: token {GITHUB} used",
                PIN,
                psycopg.types.json.Jsonb({"contact": EMAIL, "card": CARD}),
            ),
        )
    return "users"


def _masking_policy(spec, connection="shop", group=None, name="pii"):  # type: ignore[no-untyped-def]
    from django.contrib.auth.models import Group

    from gateway.models import Connection
    from policies.models import MaskingBinding, MaskingPolicy

    policy, _ = MaskingPolicy.objects.update_or_create(name=name, defaults={"spec": spec})
    MaskingBinding.objects.create(
        masking_policy=policy,
        connection=Connection.objects.get(name=connection),
        group=Group.objects.get_or_create(name=group)[0] if group else None,
    )
    return policy


@pytest.fixture
def mgw(gateway_factory, users_table):  # type: ignore[no-untyped-def]
    env = gateway_factory()
    _masking_policy(SPEC)
    return env


def _psql(env, sql: str, *args: str) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run(
        ["psql", env.conninfo(), "-XAt", *args, "-c", sql],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PGCONNECT_TIMEOUT": "10"},
    )


def _no_planted(text: str) -> None:
    for secret in PLANTED:
        assert secret not in text, f"{secret!r} leaked"


# --- MSK-01: aliases and expressions -------------------------------------------------------


def test_an_aliased_column_is_masked_by_its_identity(mgw):
    with mgw.connect() as conn:
        (x,) = conn.execute("SELECT email AS x FROM users WHERE id = 1").fetchone()
        (again,) = conn.execute("SELECT u.email AS whatever FROM users u WHERE id = 1").fetchone()
    assert x.startswith("[EMAIL:") and x.endswith("]")
    assert again == x  # hash: stable, so joins and counting still work


def test_an_expression_over_a_masked_column_is_caught_by_content(mgw):
    with mgw.connect() as conn:
        (lowered,) = conn.execute("SELECT lower(email) FROM users WHERE id = 1").fetchone()
        (joined,) = conn.execute("SELECT concat('to: ', email) FROM users WHERE id = 1").fetchone()
    assert lowered.startswith("[EMAIL")
    assert joined.startswith("to: [EMAIL")
    _no_planted(lowered + joined)


def test_psql_sees_masked_values_and_unmasked_clean_ones(mgw):
    out = _psql(mgw, "SELECT id, email, ssn, card, pin FROM users ORDER BY id")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith("1|[EMAIL:")
    assert "|[SSN]|[CARD]|" in lines[0]
    assert lines[1] == "2|||none|"
    _no_planted(out.stdout)


def test_a_timestamp_is_read_unless_it_is_in_the_iso_form(mgw):
    # The fast path leaves an ISO date or time unread (nothing built in can match one);
    # another DateStyle writes the session's time zone abbreviation, any text the session
    # chose: a phone number here, which must still be found in the timestamptz column.
    query = "SELECT '2026-01-01 00:00+00'::timestamptz AS at, '2026-01-02'::date AS day FROM users"
    zone = "SET timezone = '<+442079460>+0'; "
    iso = _psql(mgw, zone + query + " WHERE id = 1")
    sql = _psql(mgw, "SET datestyle = 'SQL'; " + zone + query + " ORDER BY id")
    assert iso.returncode == 0 and sql.returncode == 0, iso.stderr + sql.stderr
    assert iso.stdout.splitlines() == ["SET", "2026-01-01 00:00:00+00|2026-01-02"], iso.stdout
    # Found in a timestamptz, which cannot hold a placeholder: the value becomes NULL.
    assert sql.stdout.splitlines()[-2:] == ["|01/02/2026"] * 2, sql.stdout
    assert "442079460" not in sql.stdout


# --- MSK-02: values echoed in errors ------------------------------------------------------------


def test_a_value_echoed_in_an_error_message_is_masked(mgw):
    with mgw.connect() as conn, pytest.raises(psycopg.errors.NumericValueOutOfRange) as info:
        conn.execute("SELECT card::int FROM users WHERE id = 1")
    assert "[CARD]" in str(info.value)
    _no_planted(str(info.value))


def test_psql_shows_the_masked_error(mgw):
    out = _psql(mgw, "SELECT ssn::date FROM users WHERE id = 1")
    assert out.returncode != 0
    assert "ERROR" in out.stderr
    _no_planted(out.stderr)


def test_a_notice_raised_with_a_value_is_masked(mgw):
    notices: list[str] = []
    with mgw.connect() as conn:
        conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        conn.execute(
            "DO $$DECLARE v text; BEGIN SELECT notes INTO v FROM users WHERE id = 1;"
            " RAISE NOTICE 'found %', v; END$$"
        )
    assert notices and "[GITHUB_TOKEN]" in notices[0]
    _no_planted(" ".join(notices))


# --- MSK-03: binary results ---------------------------------------------------------------------


def test_binary_results_mask_text_in_place_and_null_other_types(mgw):
    with mgw.connect() as conn:
        cur = conn.cursor(binary=True)
        row = cur.execute(
            "SELECT email, ssn, pin, card, notes, profile, id FROM users WHERE id = 1"
        ).fetchone()
    email, ssn, pin, card, notes, profile, ident = row
    assert email.startswith("[EMAIL:")
    assert ssn == "[SSN]"
    assert pin is None  # an int4 cannot hold a placeholder: NULL, never the value
    assert card == "[CARD]"
    assert "[GITHUB_TOKEN]" in notes
    assert profile == {"contact": "[EMAIL]", "card": "[CARD]"}
    assert ident == 1
    _no_planted(repr(row))


def test_prepared_statements_with_binary_parameters_are_masked(mgw):
    with mgw.connect() as conn:
        for _ in range(3):  # psycopg prepares the statement after a few runs
            row = conn.execute(
                "SELECT email, pin FROM users WHERE id = %s", (1,), binary=True, prepare=True
            ).fetchone()
            assert row[0].startswith("[EMAIL:") and row[1] is None


# --- MSK-04: secrets in free text ---------------------------------------------------------------


def test_an_api_key_in_free_text_is_masked(mgw):
    with mgw.connect() as conn:
        (notes,) = conn.execute("SELECT notes FROM users WHERE id = 1").fetchone()
        (log_line,) = conn.execute("SELECT 'auth with ' || %s::text", (GITHUB,)).fetchone()
    assert notes == "deploy log: token [GITHUB_TOKEN] used"
    assert log_line == "auth with [GITHUB_TOKEN]"


def test_secrets_in_text_that_is_not_ascii_among_clean_rows_are_masked(mgw):
    # A page of rows masked where it lies: the C trigger check picks the dirty values of
    # the joined text, and hands a value that is not all ASCII to the detectors whole.
    with mgw.connect() as conn:
        rows = conn.execute(
            "SELECT v FROM (VALUES ('plain'), ('caf\u00e9: write to ann@example.com'), ('\u00dcn\u00efcode only'),"
            " (%s), ('x'), (NULL)) t(v)",
            ("na\u00efve key " + GITHUB,),
        ).fetchall()
    assert rows == [
        ("plain",),
        ("caf\u00e9: write to [EMAIL]",),
        ("\u00dcn\u00efcode only",),
        ("na\u00efve key [GITHUB_TOKEN]",),
        ("x",),
        (None,),
    ]


# --- MSK-05: copying out -----------------------------------------------------------------------


def test_copy_to_stdout_is_masked_by_content(gateway_factory, users_table):
    env = gateway_factory()
    _masking_policy({})  # content detection only
    out = _psql(env, "COPY users TO STDOUT")
    assert out.returncode == 0, out.stderr
    assert "[EMAIL]" in out.stdout and "[CARD]" in out.stdout and "[GITHUB_TOKEN]" in out.stdout
    assert "2\t\\N\tnone\t\\N\tplain\t\\N\t\\N\n" in out.stdout  # the clean row is untouched
    for secret in (EMAIL, CARD, SSN, GITHUB):
        assert secret not in out.stdout


def test_copy_to_stdout_applies_column_rules(mgw):
    # COPY output has no RowDescription: the gateway describes the copied columns first
    # (test_masking_copy.py has the formats and the edge cases).
    with mgw.connect() as conn:
        with conn.cursor().copy("COPY users (id, email, ssn, card, pin) TO STDOUT") as copy:
            rows = list(copy.rows())
        # The session goes on.
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert rows[0][1].startswith("[EMAIL:") and rows[0][2:] == ("[SSN]", "[CARD]", None)
    assert rows[1] == ("2", None, None, "none", None)
    _no_planted(repr(rows))


def test_binary_copy_out_is_withheld(gateway_factory, users_table):
    env = gateway_factory()
    _masking_policy({})
    with env.connect() as conn, pytest.raises(psycopg.errors.InternalError_):
        with conn.cursor().copy("COPY users TO STDOUT (FORMAT binary)") as copy:
            _no_planted(b"".join(bytes(chunk) for chunk in copy).decode("latin-1"))


# --- write-back guard ----------------------------------------------------------------------------


def _engine_point(connection, agent, groups):  # type: ignore[no-untyped-def]
    from policies.engine import compile_policy

    policy = compile_policy("open", 1, {"default": "allow", "on_parse_error": "deny", "rules": []})
    return DecisionPoint(
        protocol="postgres", connection=connection.name, agent=agent, groups=groups, policy=policy
    )


def test_writing_a_placeholder_back_is_denied_in_text_and_parameters(gateway_factory, users_table):
    env = gateway_factory(decision_point_factory=_engine_point)
    _masking_policy(SPEC)
    with env.connect(autocommit=True) as conn:
        (masked,) = conn.execute("SELECT email FROM users WHERE id = 1").fetchone()
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as info:
            conn.execute(f"UPDATE users SET email = '{masked}' WHERE id = 1")
        assert "placeholder" in str(info.value)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE users SET notes = %s WHERE id = 2", ("see [CARD]",))
        # Reading with a placeholder in the text is not a write.
        assert conn.execute("SELECT count(*) FROM users WHERE notes = '[CARD]'").fetchone() == (0,)
    with env.pg.admin("shop") as admin:
        assert admin.execute("SELECT email, notes FROM users WHERE id IN (1, 2) ORDER BY id").fetchall() == [
            (EMAIL, f"deploy log: token {GITHUB} used"),
            (None, "plain"),
        ]


# --- MSK-06 and counts: the recording --------------------------------------------------------------


def test_the_database_holds_no_planted_secret_after_a_session(mgw):
    from gateway.tests.dbdump import database_text

    with mgw.connect() as conn:
        conn.execute("SELECT * FROM users").fetchall()
        conn.execute("SELECT * FROM users", binary=True).fetchall()
        conn.execute("SELECT email AS a, lower(email), notes FROM users").fetchall()
        conn.execute("SELECT %s::text AS p", (CARD,)).fetchall()
        conn.execute(f"SELECT '{EMAIL}' AS literal").fetchall()
        with pytest.raises(psycopg.errors.NumericValueOutOfRange):
            conn.execute("SELECT card::int FROM users WHERE id = 1")
    session = mgw.session()
    assert session.masked_count > 0
    results = [p for p in recorded_results(mgw.events()) if p.get("masked")]
    assert results and all(isinstance(p["masked_entities"], dict) for p in results)
    first = next(p for p in results if p["statement"].startswith("SELECT * FROM users"))
    # email: the column rule and the jsonb profile; card: the column and the profile by content.
    assert first["masked_entities"] == {"email": 2, "ssn": 1, "masked": 1, "card": 2, "github_token": 1}
    text = database_text()
    assert "[EMAIL" in text  # the recording is there, masked
    _no_planted(text)


# --- failing closed --------------------------------------------------------------------------------


def test_a_result_whose_columns_cannot_be_identified_is_withheld(mgw):
    # The role may hold one connection only: the gateway's catalog lookup is refused, so
    # the column rules cannot be applied and the rows must not go out.
    with mgw.pg.admin() as admin:
        admin.execute("ALTER ROLE scram_user CONNECTION LIMIT 1")
    try:
        with mgw.connect() as conn:
            with pytest.raises(psycopg.errors.InternalError_) as info:
                conn.execute("SELECT email, notes FROM users").fetchall()
            assert "withheld" in str(info.value)
            _no_planted(str(info.value))
            assert conn.execute("SELECT 2").fetchone() == (2,)
    finally:
        with mgw.pg.admin() as admin:
            admin.execute("ALTER ROLE scram_user CONNECTION LIMIT -1")


def test_group_override_and_masking_off_by_setting(gateway_factory, users_table, settings):
    env = gateway_factory()
    _masking_policy(SPEC)
    _masking_policy({"entities": {}}, group="agents", name="none-for-agents")
    with env.connect() as conn:
        assert conn.execute("SELECT email FROM users WHERE id = 1").fetchone() == (EMAIL,)


def test_an_agent_whose_groups_pick_two_policies_is_refused(gateway_factory, users_table):
    from identity.models import Agent

    env = gateway_factory()
    _masking_policy(SPEC, group="agents")
    _masking_policy({}, group="fraud", name="other")
    from django.contrib.auth.models import Group

    Agent.objects.get(name="billing-bot").groups.add(Group.objects.get(name="fraud"))
    with pytest.raises(psycopg.OperationalError) as info:
        env.connect().close()
    assert "masking" in str(info.value)
