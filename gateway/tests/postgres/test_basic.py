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


def test_wrong_token(gw):
    try:
        gw.connect(password="alk_wrong").close()
    except psycopg.OperationalError as exc:
        assert "28P01" in str(exc) or "password authentication failed" in str(exc)
    else:
        raise AssertionError("connected with a wrong token")
