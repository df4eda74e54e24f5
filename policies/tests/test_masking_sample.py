""" "Run a sample query" on the masking policy page, against the machine's real PostgreSQL.

Planted secrets must never appear in the response, the logs or the console's database.
"""

from __future__ import annotations

import io
import logging
import uuid

import psycopg
import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from gateway.actions import do_create_connection
from policies import masking_actions

pytestmark = [pytest.mark.django_db, pytest.mark.timeout(120)]

CARD = "4111111111111111"
EMAIL = "planted.secret@example.com"
TOKEN = "ghp_" + "Zq9" * 12
SECRETS = (CARD, EMAIL, TOKEN, "planted.secret")


@pytest.fixture
def target(db):  # type: ignore[no-untyped-def]
    """A throwaway database on the machine's PostgreSQL with a customers table of secrets."""
    name = f"maskui_sample_{uuid.uuid4().hex[:8]}"
    with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")  # type: ignore[arg-type]
    try:
        with psycopg.connect(
            f"host=127.0.0.1 port=5432 user=postgres dbname={name}", autocommit=True
        ) as conn:
            conn.execute("CREATE TABLE customers (id int, email text, card text, note text, score int)")
            conn.execute(
                "INSERT INTO customers VALUES (1, %s, %s, %s, 7), (2, 'nobody', 'none', 'clean', 3)",
                (EMAIL, CARD, f"token {TOKEN} in a note"),
            )
        connection = do_create_connection(
            None,
            name="sample",
            kind="postgres",
            host="127.0.0.1",
            port=5432,
            database=name,
            username="postgres",
            options={"sslmode": "disable"},
            secret_values={"password": "unused-trust-auth"},
        )
        yield connection, name
    finally:
        with psycopg.connect(
            "host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True
        ) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")  # type: ignore[arg-type]


@pytest.fixture
def admin_client(alice) -> Client:  # type: ignore[no-untyped-def]
    client = Client()
    client.force_login(alice)
    return client


def _sample(client: Client, policy, query: str, connection: str = "sample") -> tuple[int, str]:  # type: ignore[no-untyped-def]
    response = client.post(
        reverse("policies:masking_sample", kwargs={"pk": policy.pk}),
        {"connection": connection, "query": query},
    )
    return response.status_code, response.content.decode()


def _assert_nowhere(body: str, caplog) -> None:  # type: ignore[no-untyped-def]
    dump = io.StringIO()
    call_command("dumpdata", stdout=dump)
    for secret in SECRETS:
        assert secret not in body
        assert secret not in caplog.text
        assert secret not in dump.getvalue()


def test_the_sample_is_masked_by_column_rules_and_content_with_reasons(admin_client, target, caplog):
    caplog.set_level(logging.DEBUG)
    policy = masking_actions.do_save_masking_policy(
        None,
        "pii",
        {
            "entities": {"github_token": "redact", "card": "partial"},
            "columns": [{"match": "public.customers.email", "method": "redact", "entity": "email"}],
        },
    )
    status, body = _sample(
        admin_client, policy, "SELECT id, email AS contact, card, note FROM customers ORDER BY id"
    )
    assert status == 200, body
    assert "[EMAIL]" in body  # by the column rule, through the alias
    assert "column rule public.customers.email (redact)" in body
    assert "[CARD:****1111]" in body and "content: [CARD:****1111]" in body
    assert "token [GITHUB_TOKEN] in a note" in body
    assert "public.customers.email" in body  # the column identity is shown
    _assert_nowhere(body, caplog)


def test_each_run_is_audited_with_the_query_masked(admin_client, target, alice, caplog):
    from audit.models import AuditRecord

    policy = masking_actions.do_save_masking_policy(None, "pii", {})
    status, body = _sample(admin_client, policy, f"SELECT id FROM customers WHERE email = '{EMAIL}'")
    assert status == 200, body
    audit = AuditRecord.objects.get(action="masking_policy.sample_query")
    assert audit.actor_user == alice
    assert audit.detail["query"] == "SELECT id FROM customers WHERE email = '[EMAIL]'"
    assert audit.detail["connection"] == "sample" and audit.detail["rows"] == 1
    _assert_nowhere(body.replace(EMAIL, ""), caplog)  # the page echoes the admin's own query


def test_an_expression_is_masked_by_content_and_a_masked_integer_becomes_null(admin_client, target, caplog):
    policy = masking_actions.do_save_masking_policy(
        None, "pii", {"columns": [{"match": "customers.score", "method": "redact"}]}
    )
    status, body = _sample(admin_client, policy, "SELECT lower(email) AS e, score FROM customers ORDER BY id")
    assert status == 200, body
    assert "[EMAIL]" in body and "content: [EMAIL]" in body
    assert body.count(">NULL<") == 2  # score is an int: masked to NULL in both rows
    assert "column rule customers.score (redact)" in body
    _assert_nowhere(body, caplog)


def test_the_query_runs_read_only_and_a_server_error_echoing_a_value_is_masked(admin_client, target, caplog):
    connection, name = target
    policy = masking_actions.do_save_masking_policy(None, "pii", {})
    status, body = _sample(admin_client, policy, "DELETE FROM customers")
    assert status == 400
    assert "read-only transaction" in body
    status, body = _sample(admin_client, policy, "SELECT card::int FROM customers WHERE id = 1")
    assert status == 400
    assert "out of range" in body and "[CARD]" in body
    status, body = _sample(admin_client, policy, "SELECT 1; DELETE FROM customers")
    assert status == 400
    with psycopg.connect(f"host=127.0.0.1 port=5432 user=postgres dbname={name}") as conn:
        assert conn.execute("SELECT count(*) FROM customers").fetchone() == (2,)
    _assert_nowhere(body, caplog)


def test_a_long_query_is_stopped_by_the_statement_timeout(admin_client, target, settings):
    from policies import masking_sample

    policy = masking_actions.do_save_masking_policy(None, "pii", {})
    original = masking_sample.STATEMENT_TIMEOUT_MS
    masking_sample.STATEMENT_TIMEOUT_MS = 200
    try:
        status, body = _sample(admin_client, policy, "SELECT pg_sleep(5)")
    finally:
        masking_sample.STATEMENT_TIMEOUT_MS = original
    assert status == 400
    assert "statement timeout" in body


def test_only_the_first_rows_are_read(admin_client, target):
    policy = masking_actions.do_save_masking_policy(None, "pii", {})
    status, body = _sample(admin_client, policy, "SELECT g FROM generate_series(1, 500) g")
    assert status == 200
    assert "Only the first 50 rows are shown" in body
    assert ">50<" in body and ">51<" not in body


def test_an_unknown_connection_is_refused(admin_client, db):
    policy = masking_actions.do_save_masking_policy(None, "pii", {})
    status, body = _sample(admin_client, policy, "SELECT 1", connection="nope")
    assert status == 400
    assert "no PostgreSQL connection named" in body


def test_a_notice_quoting_a_value_is_neither_shown_nor_printed(admin_client, target, caplog, capfd):
    policy = masking_actions.do_save_masking_policy(None, "pii", {})
    status, body = _sample(
        admin_client,
        policy,
        "DO $$BEGIN RAISE NOTICE 'card %', (SELECT card FROM customers WHERE id = 1); END$$",
    )
    assert status == 400 and "returned no rows" in body
    out, err = capfd.readouterr()
    for secret in SECRETS:
        assert secret not in out and secret not in err
    _assert_nowhere(body, caplog)
