"""node-postgres through the gateway, unchanged (``gateway/tests/postgres/node_client.js``).

node-postgres (npm ``pg``, a dev dependency installed by ``make venv``) is the client of
many agent tools, the reference MCP PostgreSQL server among them. It sends a query without
values as a simple Query and one with values through the extended protocol (an unnamed
statement, or a named one it prepares once per connection), always with text parameters
and text results, and runs a pool of connections at once.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from gateway.tests.postgres.conftest import DENY_MARKER
from gateway.tests.postgres.test_clients import _client, _masked_people, _statements

NODE_CLIENT = Path(__file__).with_name("node_client.js")


def _node(gw: Any, *scenario: str, ca: Path | None = None, **pg_env: str) -> list[str]:
    node = shutil.which("node")
    assert node is not None, "make test installs Node.js (npm) for the console's front-end packages"
    env = {
        "PGHOST": "127.0.0.1",
        "PGPORT": str(gw.port),
        "PGUSER": "billing-bot",
        "PGPASSWORD": gw.token,
        **pg_env,
    }
    if ca is not None:
        env["AIRLOCK_CA"] = str(ca)
    return _client([node, str(NODE_CLIENT), *scenario], env=env).stdout.splitlines()


def test_node_postgres_runs_simple_extended_and_named_statements(gw):
    lines = _node(gw, "basics")
    assert lines == [
        "user scram_user",
        "items 10",
        "param item 3|4.5",
        "named item 1|item 2|item 3|item 4",
        'typed żółw ✓ 🐢|1099511627776|null|00ff62|{"k":[1,"two"]}',
        'arrays [[1,"item 1"],[2,"item 2"]]',
        "rolled back 0",
        "multi 1|2",
    ]
    named = _statements(gw, "SELECT name FROM items WHERE id = $1")
    # Prepared once, executed four times: each Execute decided and recorded with its value.
    assert [s["params"] for s in named] == [["1"], ["2"], ["3"], ["4"]]
    assert all(s["result"]["rows"] == 1 for s in named)
    inserts = _statements(gw, "INSERT INTO node_seen VALUES ($1, $2)")
    assert [s["params"] for s in inserts] == [["0", "row 0"], ["1", "row 1"], ["2", "row 2"]]
    assert gw.session().verify().ok


def test_node_postgres_pool_runs_connections_at_once(gw):
    assert _node(gw, "pool") == ["pool 20 10"]
    assert len(gw.recorded) == 4  # the pool's four connections, each its own session
    sessions = [gw.session(i) for i in range(4)]
    selects = [
        e.payload["params"]
        for s in sessions
        for e in s.events.filter(kind="statement")
        if e.payload["text"] == "SELECT name FROM items WHERE id = $1"
    ]
    assert sorted(selects) == sorted([str((i % 10) + 1)] for i in range(20))
    assert all(session.verify().ok for session in sessions)


def test_the_mcp_servers_read_only_query_tool_sees_a_denied_statement_and_rolls_back(gw):
    """The reference MCP server wraps the agent's SQL in ``BEGIN TRANSACTION READ ONLY`` and
    ``ROLLBACK``: an allowed read returns its rows, a denied one PostgreSQL's error shape, and
    the ROLLBACK after it works in both cases."""
    assert _node(gw, "mcp", "SELECT id, name FROM items WHERE id <= 2 ORDER BY id") == [
        'rows [{"id":1,"name":"item 1"},{"id":2,"name":"item 2"}]'
    ]
    assert _node(gw, "mcp", f"SELECT '{DENY_MARKER}'") == [
        "error 42501 statements with the test marker are denied"
    ]
    # node-postgres's startup parameter client_encoding is judged as the SET it amounts to.
    for index, query in (
        (0, "SELECT id, name FROM items WHERE id <= 2 ORDER BY id"),
        (1, f"SELECT '{DENY_MARKER}'"),
    ):
        texts = [p["text"] for kind, p in gw.events(index) if kind == "statement"]
        assert texts == ["SET \"client_encoding\" = 'UTF8'", "BEGIN TRANSACTION READ ONLY", query, "ROLLBACK"]


def test_node_postgres_sees_a_denied_statement_as_postgresql_would_show_it(gw):
    assert _node(gw, "denied", DENY_MARKER) == [
        "denied 42501 statements with the test marker are denied",
        "denied with a parameter 42501",
        "denied in transaction 42501",
        "in transaction 25P02",
        "after rollback 10",
    ]


def test_node_postgres_results_and_parameters_are_masked_and_the_write_back_is_refused(
    gateway_factory, private_pg
):
    from gateway.tests.dbdump import database_text

    gw = _masked_people(gateway_factory, private_pg, "node_people", "card 4111111111111111 on file")
    lines = _node(gw, "masked", "node_people")
    assert lines == [
        "row 1 [EMAIL]|null|card [CARD] on file",
        "echo write to [EMAIL]",
        "write-back 42501",
    ]
    with private_pg.admin("shop") as admin:
        assert admin.execute("SELECT notes FROM node_people").fetchone() == ("card 4111111111111111 on file",)
    text = database_text()
    assert "dana.secret" not in text and "4111111111111111" not in text and "918273" not in text


def test_node_postgres_listens_and_connects_over_tls_verifying_the_certificate(gateway_factory, tmp_path):
    from gateway.tls import generate_self_signed, server_certificate_paths, server_context

    gw = gateway_factory(tls_context=server_context())
    assert _node(gw, "notify") == ["notify node_jobs ready ✓"]
    cert, _ = server_certificate_paths()
    # With ``ssl`` set node-postgres requires TLS (an `N` answer is an error) and here
    # verifies the certificate against the CA given.
    assert _node(gw, "query", "SELECT 'over tls'", ca=cert) == ["over tls"]
    # node-postgres's direct TLS (PostgreSQL 17's sslnegotiation=direct, ALPN postgresql).
    assert _node(gw, "query", "SELECT 'over direct tls'", ca=cert, PGSSLNEGOTIATION="direct") == [
        "over direct tls"
    ]
    assert [gw.session(i).client_tls for i in range(1, 3)] == ["TLSv1.3, SSLRequest", "TLSv1.3, direct"]
    other_cert, other_key = tmp_path / "other.pem", tmp_path / "other.key"
    generate_self_signed(other_cert, other_key)
    with pytest.raises(AssertionError, match="self-signed certificate"):
        _node(gw, "query", "SELECT 'over tls'", ca=other_cert)
