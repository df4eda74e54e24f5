"""Every row of every table of the test database, as text: for "nothing changed" and
"this value is nowhere" checks that cannot miss a table someone adds later."""

from __future__ import annotations

from django.db import connection


def dump_database() -> dict[str, list[str]]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY 1")
        tables = [row[0] for row in cursor.fetchall()]
        snapshot = {}
        for table in tables:
            cursor.execute(f'SELECT t::text FROM "{table}" AS t ORDER BY 1')
            snapshot[table] = [row[0] for row in cursor.fetchall()]
    return snapshot


def database_text() -> str:
    return "\n".join(f"{table}: {row}" for table, rows in dump_database().items() for row in rows)
