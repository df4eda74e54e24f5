"""What a statement does, as the engine sees it: the protocol-neutral classification.

Each protocol has a classifier that turns a request's text into ``StatementInfo`` values
(``policies.sql`` for PostgreSQL). Rules match on these fields, never on raw text, except
the ``regex`` match key, which sees ``normalized``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

OPERATIONS = (
    "read",  # SELECT, VALUES, TABLE, SHOW, FETCH, COPY TO STDOUT, EXPLAIN (no ANALYZE)
    "write",  # INSERT, UPDATE, DELETE, MERGE, TRUNCATE, COPY FROM STDIN, SELECT FOR UPDATE, nextval()
    "ddl",  # CREATE, ALTER, DROP, COMMENT of schema objects
    "dcl",  # GRANT, REVOKE, roles, ownership, row-level security, user mappings
    "admin",  # server-wide: ALTER SYSTEM, VACUUM, databases, tablespaces, extensions, backend control
    "procedural",  # DO, CALL, CREATE FUNCTION, unknown functions: code the engine cannot see into
    "transaction",  # BEGIN, COMMIT, ROLLBACK, SAVEPOINT, SET TRANSACTION
    "session",  # SET, RESET, SET ROLE, DISCARD, set_config()
    "utility",  # LISTEN, NOTIFY, LOCK, DEALLOCATE, advisory locks
)

FACTS = (
    "no_where",  # UPDATE/DELETE/MERGE that can reach every row; TRUNCATE
    "catalog_secrets",  # touches pg_authid, pg_shadow, pg_user_mapping(s), pg_subscription...
    "server_file_access",  # COPY to/from a server file, file functions, LOAD, tablespaces
    "program_execution",  # COPY TO/FROM PROGRAM, LOAD, ALTER SYSTEM of a command setting
    "explain_analyze",  # EXPLAIN ANALYZE: the statement explained runs
    "role_change",  # SET ROLE, SET SESSION AUTHORIZATION, set_config('role'...), ALTER ROLE ... SET role
    "read_only_off",  # anything that can turn read-only mode off
    "unknown_function",  # a function or operator the engine does not know (user code)
    "locking",  # SELECT ... FOR UPDATE/SHARE, LOCK TABLE
    "destructive",  # DROP, TRUNCATE, ALTER ... DROP/TYPE, CREATE OR REPLACE
    "cte_write",  # a write inside a WITH clause
    "fastpath",  # the protocol's FunctionCall message (no SQL text)
)

# Session effects (see ``policies.sql.apply_session_effects``): plain tuples so that they
# are hashable and JSON-friendly: ("prepare", name, sql), ("deallocate", name),
# ("deallocate_all",), ("search_path", schema, ...).
SessionEffect = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class StatementInfo:
    """One statement, classified."""

    text: str
    statement: str  # the parse node ("SelectStmt", "DeleteStmt"...) or the protocol's kind
    operations: frozenset[str] = frozenset()
    # ``operations`` minus what unknown functions added: the engine recomputes operations
    # when a policy trusts some of those functions.
    known_operations: frozenset[str] = frozenset()
    tables_read: frozenset[str] = frozenset()
    tables_written: frozenset[str] = frozenset()
    functions: frozenset[str] = frozenset()
    unknown_functions: frozenset[str] = frozenset()
    settings: frozenset[str] = frozenset()
    facts: frozenset[str] = frozenset()
    effects: tuple[SessionEffect, ...] = ()
    # Set when the statement parsed but cannot be judged (e.g. EXECUTE of a prepared
    # statement the engine never saw): the policy's ``on_parse_error`` applies.
    error: str | None = None

    @property
    def tables(self) -> frozenset[str]:
        return self.tables_read | self.tables_written

    def as_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "statement": self.statement,
            "operations": sorted(self.operations),
            "tables_read": sorted(self.tables_read),
            "tables_written": sorted(self.tables_written),
            "functions": sorted(self.functions),
            "unknown_functions": sorted(self.unknown_functions),
            "settings": sorted(self.settings),
            "facts": sorted(self.facts),
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class Classification:
    """Every statement of one request, in order; ``error`` when the text does not parse."""

    statements: tuple[StatementInfo, ...] = ()
    error: str | None = None
    normalizer: Any = field(default=None, compare=False, repr=False)
    # Set by a classifier when every string of the same shape (the same statement with
    # other constants) has this classification but for ``text``: a hashable token naming
    # that shape (``policies.sql._Shape``). The engine then decides once per shape and
    # regex outcome (``CompiledPolicy.evaluate``).
    shape: Any = field(default=None, compare=False, repr=False)

    def normalized(self, index: int) -> str:
        """The normalized text of statement ``index`` (what ``regex`` rules see)."""
        text = self.statements[index].text
        if self.normalizer is None:
            return " ".join(text.split())
        result: str = self.normalizer(text)
        return result


def plain_statement(text: str, statement: str) -> StatementInfo:
    """A statement of a protocol without a classifier: only its text is known."""
    return StatementInfo(text=text, statement=statement)
