"""The events table's indexes: what every recorded event pays for at insertion."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("recordings", "0007_search_words_per_batch")]
AFTER = [("recordings", "0008_event_session_index_in_the_unique_one")]


def _indexes() -> dict[str, tuple[list[str], bool]]:
    with connection.cursor() as cursor:
        found = connection.introspection.get_constraints(cursor, "recordings_event")
    return {
        name: (info["columns"], bool(info["unique"]))
        for name, info in found.items()
        if info["index"] or info["unique"] or info["primary_key"]
    }


@pytest.mark.django_db
def test_an_event_is_indexed_by_its_id_and_by_session_and_seq_only():
    indexes = _indexes()
    # The unique (session, seq) index serves every lookup by session; the partial index
    # on approval events (who decided) holds only those.
    assert sorted(columns for columns, _ in indexes.values() if columns[:1] == ["session_id"]) == [
        ["session_id", "seq"]
    ]
    assert ["id"] in [columns for columns, _ in indexes.values()]


@pytest.mark.django_db
def test_events_by_session_are_read_through_the_unique_index():
    if connection.vendor != "postgresql":
        pytest.skip("the plan is PostgreSQL's")
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(
            "EXPLAIN SELECT * FROM recordings_event WHERE session_id = '6f1c2a4e-0b7d-4c55-9a39-1d2e3f405162' ORDER BY seq"
        )
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "event_seq_unique" in plan, plan


@pytest.mark.django_db(transaction=True)
def test_migration_0008_drops_the_session_index_and_puts_it_back_on_the_way_back():
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    try:
        assert [
            columns for columns, unique in _indexes().values() if columns == ["session_id"] and not unique
        ]
        executor = MigrationExecutor(connection)
        executor.migrate(AFTER)
        assert not [columns for columns, _ in _indexes().values() if columns == ["session_id"]]
        executor = MigrationExecutor(connection)
        executor.migrate(BEFORE)
        assert [
            columns for columns, unique in _indexes().values() if columns == ["session_id"] and not unique
        ]
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
