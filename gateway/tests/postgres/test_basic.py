import psycopg


def test_psycopg_runs_a_query_through_the_gateway(gw):
    with gw.connect() as conn:
        assert conn.execute("SELECT 1 + 1").fetchone() == (2,)
        assert conn.execute("SELECT current_user").fetchone() == ("scram_user",)


def test_psql_runs_a_query(gw):
    import os
    import subprocess

    out = subprocess.run(
        ["psql", gw.conninfo(), "-XAtc", "SELECT name FROM items WHERE id = 3"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PGCONNECT_TIMEOUT": "10"},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "item 3"
    # The statement and its result are one recorded event, which verifies.
    events = gw.events()
    # psql's application_name is judged as the SET it amounts to (its own statement event).
    assert [kind for kind, _ in events] == ["session_start", "statement", "statement", "session_end"]
    assert events[1][1]["text"] == "SET \"application_name\" = 'psql'"
    statement = events[2][1]
    assert statement["text"] == "SELECT name FROM items WHERE id = 3"
    result = statement["result"]
    assert (result["command_tag"], result["rows"], result["first_rows"]) == ("SELECT 1", 1, [["item 3"]])
    assert result["duration_ms"] >= 0 and "statement" not in result
    assert gw.session().verify().ok


def test_wrong_token(gw):
    try:
        gw.connect(password="alk_wrong").close()
    except psycopg.OperationalError as exc:
        assert "28P01" in str(exc) or "password authentication failed" in str(exc)
    else:
        raise AssertionError("connected with a wrong token")
