"""PostgreSQL statement classification with the real PostgreSQL grammar (pglast).

``classify(sql, session)`` parses a (possibly multi-statement) string and describes each
statement: its operations, the tables it reads and writes (schema-qualified), every function
and operator it calls anywhere in the tree, the settings it changes, and facts such as
``no_where`` or ``catalog_secrets``. It is pure: no I/O, no settings, no database.

Session state (``Request.session``, a dict the gateway keeps per client session). The
engine reads two keys and the gateway updates them with ``apply_session_effects`` (after a
statement ran) and ``remember_prepared`` / ``forget_prepared`` (protocol-level Parse/Close):

``prepared``: ``{name: [sql, ...]}``
    The text of every statement prepared under ``name`` that may still be live: a
    ``PREPARE name AS ...`` statement or the query of a protocol-level Parse. ``EXECUTE
    name`` is judged as the strictest of them; an unknown name cannot be judged (the
    policy's ``on_parse_error`` applies). Several texts are kept because a PREPARE that
    failed on the server (name already taken) must not replace what really runs.
``search_path``: ``(schema, ...)``
    Every schema an unqualified table name may resolve to (default ``("public",)``). Changes
    are added, never removed: a ``SET`` inside a transaction that rolls back, or ``SET
    LOCAL``, must not leave the engine believing a narrower path than the server's.

Limits (documented in docs/policies.md): what views, triggers, rules, column defaults,
casts, type I/O and functions called in attribute notation (``t.f``) do is not visible in
the statement text; procedural code (DO, functions) is opaque and classified as such.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from functools import lru_cache
from typing import Any, TypeVar

import orjson
from pglast import ast as pg_ast
from pglast import parser as pg_parser

from gateway import native
from policies import pgquery, textscan
from policies.classification import Classification, SessionEffect, StatementInfo
from policies.functions import FUNCTION_SETS, KNOWN_FUNCTIONS, KNOWN_OPERATORS, SET_FACTS, function_operation
from policies.pg_catalog_data import CATALOG_RELATIONS

Json = dict[str, Any]

DEFAULT_SEARCH_PATH: tuple[str, ...] = ("public",)
_EXECUTE = re.compile("execute", re.IGNORECASE)
_EXECUTE_WORDS = ("execute",)

# The text scans of the decision path (``policies.textscan``): its C build when it was built
# from the sources in use (``gateway.native``), else the module itself.
_scan = native.load(textscan)
_ascii_lacks: Callable[[str, tuple[str, ...]], bool] = _scan.ascii_lacks


def mentions(text: str, pattern: re.Pattern[str], words: tuple[str, ...]) -> bool:
    """Whether ``pattern`` matches in ``text``, for a case-insensitive ``pattern`` that
    matches only where one of ``words`` (lower-case ASCII) is written, in any case.

    ASCII text holding none of the words in any case is answered without the regular
    expression (``textscan.ascii_lacks``: a case-insensitive search costs 0.4-0.8 us on a
    short statement, the check a tenth of that); other text, where Unicode case rules
    apply (``ı`` matches ``i``, ``ſ`` matches ``s``), is always searched.
    """
    if _ascii_lacks(text, words):
        return False
    return pattern.search(text) is not None


MAX_PREPARED_TEXTS = 8  # per name; beyond this the name is treated as unknown
MAX_CACHED_TEXT = 16_384  # longer texts (bulk INSERTs...) are rarely repeated: not cached

SECRET_CATALOGS = frozenset(
    {
        "pg_catalog.pg_authid",
        "pg_catalog.pg_shadow",
        "pg_catalog.pg_user_mapping",
        "pg_catalog.pg_user_mappings",
        "pg_catalog.pg_subscription",
        "pg_catalog.pg_statistic",
        "pg_catalog.pg_statistic_ext_data",
        "pg_catalog.pg_largeobject",
        "pg_catalog.pg_hba_file_rules",
        "pg_catalog.pg_ident_file_mappings",
        "pg_catalog.pg_file_settings",
        "information_schema.user_mapping_options",
        "information_schema._pg_user_mappings",
    }
)

ROLE_SETTINGS = frozenset({"role", "session_authorization"})
READ_ONLY_SETTINGS = frozenset({"default_transaction_read_only", "transaction_read_only"})
# Server settings that name a program to run or a library to load.
PROGRAM_SETTINGS = frozenset(
    {
        "archive_command",
        "archive_library",
        "restore_command",
        "archive_cleanup_command",
        "recovery_end_command",
        "ssl_passphrase_command",
        "shared_preload_libraries",
        "session_preload_libraries",
        "local_preload_libraries",
        "dynamic_library_path",
        "jit_provider",
    }
)

# Operations each statement node adds (anywhere in the tree). Every statement node of the
# grammar must be listed: tests check it, so a pglast upgrade that adds one fails loudly.
_O = frozenset
STATEMENT_OPERATIONS: dict[str, frozenset[str]] = {
    # read
    "SelectStmt": _O(),  # handled: read unless a bare VALUES list
    "VariableShowStmt": _O({"read"}),
    "FetchStmt": _O({"read"}),
    "ClosePortalStmt": _O({"read"}),
    "DeclareCursorStmt": _O(),
    "ExplainStmt": _O({"read"}),
    # write
    "InsertStmt": _O({"write"}),
    "UpdateStmt": _O({"write"}),
    "DeleteStmt": _O({"write"}),
    "MergeStmt": _O({"write"}),
    "TruncateStmt": _O({"write"}),
    "RefreshMatViewStmt": _O({"write"}),
    "CopyStmt": _O(),  # handled
    # ddl
    "CreateStmt": _O({"ddl"}),
    "CreateTableAsStmt": _O({"ddl", "write"}),
    "AlterTableStmt": _O({"ddl"}),
    "IndexStmt": _O({"ddl"}),
    "ViewStmt": _O({"ddl"}),
    "CreateSeqStmt": _O({"ddl"}),
    "AlterSeqStmt": _O({"ddl"}),
    "RenameStmt": _O({"ddl"}),
    "AlterObjectSchemaStmt": _O({"ddl"}),
    "AlterObjectDependsStmt": _O({"ddl"}),
    "CommentStmt": _O({"ddl"}),
    "DefineStmt": _O({"ddl"}),
    "CompositeTypeStmt": _O({"ddl"}),
    "CreateEnumStmt": _O({"ddl"}),
    "CreateRangeStmt": _O({"ddl"}),
    "AlterEnumStmt": _O({"ddl"}),
    "CreateDomainStmt": _O({"ddl"}),
    "AlterDomainStmt": _O({"ddl"}),
    "AlterTypeStmt": _O({"ddl"}),
    "AlterCollationStmt": _O({"ddl"}),
    "CreateCastStmt": _O({"ddl"}),
    "CreateConversionStmt": _O({"ddl"}),
    "CreateOpClassStmt": _O({"ddl"}),
    "CreateOpFamilyStmt": _O({"ddl"}),
    "AlterOpFamilyStmt": _O({"ddl"}),
    "AlterOperatorStmt": _O({"ddl"}),
    "CreateStatsStmt": _O({"ddl"}),
    "AlterStatsStmt": _O({"ddl"}),
    "CreateTransformStmt": _O({"ddl"}),
    "AlterTSConfigurationStmt": _O({"ddl"}),
    "AlterTSDictionaryStmt": _O({"ddl"}),
    "CreateSchemaStmt": _O({"ddl"}),
    "CreateTrigStmt": _O({"ddl"}),
    "RuleStmt": _O({"ddl"}),
    "DropStmt": _O({"ddl"}),
    "CreateForeignTableStmt": _O({"ddl"}),
    "ImportForeignSchemaStmt": _O({"ddl"}),
    "ReplicaIdentityStmt": _O({"ddl"}),
    "AlterFunctionStmt": _O({"ddl"}),
    "CreateFunctionStmt": _O({"ddl", "procedural"}),
    # dcl
    "GrantStmt": _O({"dcl"}),
    "GrantRoleStmt": _O({"dcl"}),
    "CreateRoleStmt": _O({"dcl"}),
    "AlterRoleStmt": _O({"dcl"}),
    "AlterRoleSetStmt": _O({"dcl"}),
    "DropRoleStmt": _O({"dcl"}),
    "AlterDefaultPrivilegesStmt": _O({"dcl"}),
    "ReassignOwnedStmt": _O({"dcl"}),
    "DropOwnedStmt": _O({"dcl"}),
    "AlterOwnerStmt": _O({"dcl"}),
    "CreatePolicyStmt": _O({"dcl"}),
    "AlterPolicyStmt": _O({"dcl"}),
    "SecLabelStmt": _O({"dcl"}),
    "CreateUserMappingStmt": _O({"dcl"}),
    "AlterUserMappingStmt": _O({"dcl"}),
    "DropUserMappingStmt": _O({"dcl"}),
    # admin
    "AlterSystemStmt": _O({"admin"}),
    "VacuumStmt": _O({"admin"}),
    "ClusterStmt": _O({"admin"}),
    "ReindexStmt": _O({"admin"}),
    "CheckPointStmt": _O({"admin"}),
    "LoadStmt": _O({"admin"}),
    "CreatedbStmt": _O({"admin", "ddl"}),
    "AlterDatabaseStmt": _O({"admin", "ddl"}),
    "AlterDatabaseSetStmt": _O({"admin", "ddl"}),
    "AlterDatabaseRefreshCollStmt": _O({"admin", "ddl"}),
    "DropdbStmt": _O({"admin", "ddl"}),
    "CreateTableSpaceStmt": _O({"admin", "ddl"}),
    "DropTableSpaceStmt": _O({"admin", "ddl"}),
    "AlterTableSpaceOptionsStmt": _O({"admin", "ddl"}),
    "AlterTableMoveAllStmt": _O({"admin", "ddl"}),
    "CreateExtensionStmt": _O({"admin", "ddl"}),
    "AlterExtensionStmt": _O({"admin", "ddl"}),
    "AlterExtensionContentsStmt": _O({"admin", "ddl"}),
    "CreatePLangStmt": _O({"admin", "ddl", "procedural"}),
    "CreateEventTrigStmt": _O({"admin", "ddl", "procedural"}),
    "AlterEventTrigStmt": _O({"admin", "ddl"}),
    "CreateFdwStmt": _O({"admin", "ddl"}),
    "AlterFdwStmt": _O({"admin", "ddl"}),
    "CreateForeignServerStmt": _O({"admin", "ddl"}),
    "AlterForeignServerStmt": _O({"admin", "ddl"}),
    "CreatePublicationStmt": _O({"admin", "ddl"}),
    "AlterPublicationStmt": _O({"admin", "ddl"}),
    "CreateSubscriptionStmt": _O({"admin", "ddl"}),
    "AlterSubscriptionStmt": _O({"admin", "ddl"}),
    "DropSubscriptionStmt": _O({"admin", "ddl"}),
    "CreateAmStmt": _O({"admin", "ddl"}),
    # procedural
    "DoStmt": _O({"procedural"}),
    "CallStmt": _O({"procedural"}),
    "PLAssignStmt": _O({"procedural"}),
    "ReturnStmt": _O({"procedural"}),
    # transaction
    "TransactionStmt": _O({"transaction"}),
    "ConstraintsSetStmt": _O({"transaction"}),
    # session
    "VariableSetStmt": _O(),  # handled
    "DiscardStmt": _O({"session"}),
    # utility
    "ListenStmt": _O({"utility"}),
    "UnlistenStmt": _O({"utility"}),
    "NotifyStmt": _O({"utility"}),
    "LockStmt": _O({"utility"}),
    "DeallocateStmt": _O({"utility"}),
    "PrepareStmt": _O(),  # judged as its body
    "ExecuteStmt": _O(),  # judged as the body it executes
}
# Not statements of their own (parts of others): never at the top of a parse.
INTERNAL_NODES = frozenset({"RawStmt", "SetOperationStmt"})

_DESTRUCTIVE_STATEMENTS = frozenset(
    {
        "DropStmt",
        "TruncateStmt",
        "DropRoleStmt",
        "DropOwnedStmt",
        "DropdbStmt",
        "DropTableSpaceStmt",
        "DropSubscriptionStmt",
        "DropUserMappingStmt",
    }
)
_DESTRUCTIVE_ALTER_TABLE = frozenset(
    {
        "AT_DropColumn",
        "AT_DropConstraint",
        "AT_AlterColumnType",
        "AT_DetachPartition",
        "AT_DetachPartitionFinalize",
        "AT_DropInherit",
        "AT_DropOf",
        "AT_DropExpression",
        "AT_DropIdentity",
    }
)
_DCL_ALTER_TABLE = frozenset(
    {
        "AT_ChangeOwner",
        "AT_EnableRowSecurity",
        "AT_DisableRowSecurity",
        "AT_ForceRowSecurity",
        "AT_NoForceRowSecurity",
    }
)
_RELATION_OBJECTS = frozenset(
    {
        "OBJECT_TABLE",
        "OBJECT_VIEW",
        "OBJECT_MATVIEW",
        "OBJECT_INDEX",
        "OBJECT_SEQUENCE",
        "OBJECT_FOREIGN_TABLE",
    }
)
# Fields holding the relation a DDL/DCL/admin statement changes (recorded as written).
_TARGET_FIELDS: dict[str, tuple[str, ...]] = {
    "CreateStmt": ("relation",),
    "AlterTableStmt": ("relation",),
    "IndexStmt": ("relation",),
    "ViewStmt": ("view",),
    "CreateSeqStmt": ("sequence",),
    "AlterSeqStmt": ("sequence",),
    "RenameStmt": ("relation",),
    "AlterObjectSchemaStmt": ("relation",),
    "AlterObjectDependsStmt": ("relation",),
    "AlterOwnerStmt": ("relation",),
    "RefreshMatViewStmt": ("relation",),
    "ClusterStmt": ("relation",),
    "ReindexStmt": ("relation",),
    "TruncateStmt": ("relations",),
    "CreateTrigStmt": ("relation",),
    "RuleStmt": ("relation",),
    "CreatePolicyStmt": ("table",),
    "AlterPolicyStmt": ("table",),
    "CreateStatsStmt": ("relations",),
    "CommentStmt": (),
}
# Statements whose expressions define something for later instead of running now: what
# they contain is recorded (tables, functions) but adds no operation or statement fact.
_DEFINING = frozenset(
    name
    for name, ops in STATEMENT_OPERATIONS.items()
    if ops & {"ddl", "dcl", "admin"} and name not in {"CreateTableAsStmt", "CreateSchemaStmt"}
)


def _inline_fields() -> dict[str, dict[str, str]]:
    """Typed (unwrapped) struct fields per node, from pglast's own node definitions.

    In the parse tree's JSON a ``Node *`` field holds ``{"Type": {...}}`` while a field of a
    concrete struct type (``RangeVar *relation``) holds the struct's fields directly.
    """
    generic = {"Node", "List", "char", "Bitmapset", "Expr"}
    result: dict[str, dict[str, str]] = {}
    for name in dir(pg_ast):
        slots = getattr(getattr(pg_ast, name), "__slots__", None)
        if not isinstance(slots, dict):
            continue
        fields = {}
        for field_name, info in slots.items():
            c_type = getattr(info, "c_type", "")
            if c_type.endswith("*") and c_type[:-1] not in generic:
                fields[field_name] = c_type[:-1]
        if fields:
            result[name] = fields
    return result


_INLINE = _inline_fields()
_NODE_NAMES = frozenset(name for name in dir(pg_ast) if name[:1].isupper())
# Nodes that hold only names and constants (no relation, function or statement can be
# inside them, and no handler reads them): the walk does not descend into them.
_LEAVES = frozenset(
    {"A_Const", "A_Star", "BitString", "Boolean", "ColumnRef", "Float", "Integer", "ParamRef", "String"}
)


class ClassificationError(Exception):
    """The text cannot be parsed or judged (the policy's ``on_parse_error`` applies)."""


# --- session state -------------------------------------------------------------------


def session_search_path(session: Mapping[str, Any] | None) -> tuple[str, ...]:
    if not session:
        return DEFAULT_SEARCH_PATH
    path = session.get("search_path")
    if not path:
        return DEFAULT_SEARCH_PATH
    return tuple(path)


def remember_prepared(session: MutableMapping[str, Any], name: str, sql: str) -> None:
    """Record a statement prepared under ``name`` (SQL ``PREPARE`` or a protocol Parse).

    The unnamed statement ("") is replaced by each Parse; a named one keeps every text seen
    until it is deallocated (see the module docstring).
    """
    prepared: dict[str, list[str]] = session.setdefault("prepared", {})
    if name == "":
        prepared[name] = [sql]
        return
    texts = prepared.setdefault(name, [])
    if sql not in texts:
        texts.append(sql)


def forget_prepared(session: MutableMapping[str, Any], name: str | None = None) -> None:
    """Drop ``name`` (``DEALLOCATE name``, a protocol Close), or every name when None."""
    prepared = session.get("prepared")
    if not prepared:
        return
    if name is None:
        prepared.clear()
    else:
        prepared.pop(name, None)


def apply_session_effects(session: MutableMapping[str, Any], effects: Iterable[SessionEffect]) -> None:
    """Apply what statements that ran did to the session (``Decision.session_effects``)."""
    for effect in effects:
        kind = effect[0]
        if kind == "prepare":
            remember_prepared(session, effect[1], effect[2])
        elif kind == "deallocate":
            forget_prepared(session, effect[1])
        elif kind == "deallocate_all":
            forget_prepared(session)
        elif kind == "search_path":
            path = list(session_search_path(session))
            path.extend(schema for schema in effect[1:] if schema not in path)
            session["search_path"] = tuple(path)


def session_key(sql: str, session: Mapping[str, Any] | None) -> tuple[Any, ...]:
    """Everything in ``session`` the classification of ``sql`` depends on (a cache key).

    EXECUTE is judged as the statement it runs, so a text that can hold an EXECUTE (the
    keyword cannot be split or escaped) depends on what is prepared.
    """
    path = session_search_path(session)
    if not mentions(sql, _EXECUTE, _EXECUTE_WORDS):
        return (path,)
    return (path, prepared_key(session))


def prepared_key(session: Mapping[str, Any] | None) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The prepared statements of ``session`` as a hashable value (for cache keys)."""
    prepared = (session or {}).get("prepared") or {}
    return tuple(sorted((name, tuple(texts)) for name, texts in prepared.items()))


# --- startup packet -------------------------------------------------------------------

_NOT_SETTINGS = frozenset({"user", "database", "options", "replication"})


class UnsupportedStartupOption(ValueError):
    pass


def _split_options(options: str) -> list[str]:
    """Split libpq's ``options`` like the server does (whitespace, backslash escapes)."""
    words: list[str] = []
    current: list[str] = []
    escaped = False
    for char in options:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char.isspace():
            if current:
                words.append("".join(current))
                current = []
        else:
            current.append(char)
    if current:
        words.append("".join(current))
    return words


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def startup_statements(parameters: Mapping[str, str]) -> list[str]:
    """The ``SET`` statements equivalent to a startup packet's settings.

    Every startup parameter other than user/database (and every ``-c name=value`` or
    ``--name=value`` in ``options``) sets a run-time parameter, exactly like ``SET``: the
    gateway judges these statements like any other (SQL-10). Other postmaster switches in
    ``options`` and ``replication`` raise ``UnsupportedStartupOption``.
    """
    statements: list[str] = []
    for key, value in parameters.items():
        if key.startswith("_pq_."):
            continue  # protocol extensions, not settings
        if key == "replication":
            raise UnsupportedStartupOption("replication connections are not supported")
        if key not in _NOT_SETTINGS:
            statements.append(f"SET {_quote_ident(key.lower())} = {_quote_literal(value)}")
    words = _split_options(parameters.get("options", ""))
    index = 0
    while index < len(words):
        word = words[index]
        if word == "-c" and index + 1 < len(words):
            setting, index = words[index + 1], index + 2
        elif word.startswith("-c") and len(word) > 2:
            setting, index = word[2:], index + 1
        elif word.startswith("--") and len(word) > 2:
            setting, index = word[2:], index + 1
        else:
            raise UnsupportedStartupOption(f"unsupported startup option {word!r}")
        name, sep, value = setting.partition("=")
        if not sep or not name:
            raise UnsupportedStartupOption(f"startup option {setting!r} is not name=value")
        statements.append(f"SET {_quote_ident(name.replace('-', '_').lower())} = {_quote_literal(value)}")
    return statements


# --- parsing --------------------------------------------------------------------------


def _split_identifier_list(value: str) -> tuple[str, ...]:
    """Split a list setting's text like PostgreSQL's SplitIdentifierString."""
    result: list[str] = []
    for match in re.finditer(r'\s*("(?:[^"]|"")*"|[^,]*)\s*(?:,|$)', value):
        item = match.group(1).strip()
        if not item:
            continue
        if item.startswith('"') and item.endswith('"') and len(item) >= 2:
            result.append(item[1:-1].replace('""', '"'))
        else:
            result.append(item.lower())
    return tuple(result)


def _const_string(node: Any) -> str | None:
    """The text of a string (or number/boolean) constant, through casts; else None."""
    while isinstance(node, dict):
        if "TypeCast" in node:
            node = node["TypeCast"].get("arg")
            continue
        const = node.get("A_Const")
        if const is None:
            return None
        if "sval" in const:
            return str(const["sval"].get("sval", ""))
        if "ival" in const:
            return str(const["ival"].get("ival", 0))
        if "fval" in const:
            return str(const["fval"].get("fval", ""))
        if "boolval" in const:
            return "on" if const["boolval"].get("boolval") else "off"
        return None
    return None


_FALSE_WORDS = frozenset({"off", "false", "no", "0", "f", "n", "of"})
_TRUE_WORDS = frozenset({"on", "true", "yes", "1", "t", "y"})


def _is_on(value: str | None) -> bool:
    return value is not None and value.strip().lower() in _TRUE_WORDS


def _names(items: list[Any]) -> list[str]:
    return [str(item["String"].get("sval", "")) for item in items if "String" in item]


class _Walker:
    """One walk over one statement's parse tree (JSON form)."""

    def __init__(self, path: tuple[str, ...], prepared: Mapping[str, list[str]], text: str) -> None:
        self.path = path
        self.catalog_first = "pg_catalog" not in path or path[0] == "pg_catalog"
        self.prepared = prepared
        self.text = text
        self.ops: set[str] = set()
        self.read: set[str] = set()
        self.written: set[str] = set()
        self.functions: set[str] = set()
        self.unknown: set[str] = set()
        self.settings: set[str] = set()
        self.facts: set[str] = set()
        self.effects: list[SessionEffect] = []
        self.error: str | None = None
        self.scopes: list[frozenset[str]] = []
        self.cte_depth = 0
        self.inert = 0  # > 0: inside a definition or a plan-only EXPLAIN
        # Set when the classification read a constant's value (a setting's value, an
        # EXPLAIN option): then it is not shared with statements of the same shape.
        self.read_literal = False

    # -- generic traversal ------------------------------------------------------------

    def node(self, wrapped: Any) -> None:
        if not isinstance(wrapped, dict):
            return
        for typ, body in wrapped.items():
            if isinstance(body, dict) and typ in _NODE_NAMES:
                self.visit(typ, body)
            else:
                # An untyped struct: walk its fields.
                self.children("", wrapped)
                return

    def visit(self, typ: str, body: Json) -> None:
        if typ in _LEAVES:
            return
        handler = _HANDLERS.get(typ)
        if handler is not None:
            handler(self, body)
            return
        ops = STATEMENT_OPERATIONS.get(typ)
        if ops is None:
            self.children(typ, body)
            return
        self.statement(typ, body, ops)

    def children(self, typ: str, body: Json, skip: tuple[str, ...] = ()) -> None:
        inline = _INLINE.get(typ, {})
        for key, value in body.items():
            if key in skip:
                continue
            if isinstance(value, dict):
                inline_type = inline.get(key)
                if inline_type is not None:
                    self.visit(inline_type, value)
                else:
                    self.node(value)
            elif isinstance(value, list):
                for item in value:
                    if isinstance(item, dict):
                        self.node(item)

    # -- recording --------------------------------------------------------------------

    def op(self, *ops: str) -> None:
        if not self.inert:
            self.ops.update(ops)

    def fact(self, fact: str) -> None:
        if not self.inert:
            self.facts.add(fact)

    def qualify(self, schema: str | None, name: str) -> tuple[str, ...]:
        if schema is not None:
            return (f"{schema}.{name}",)
        if name in CATALOG_RELATIONS:
            if self.catalog_first:
                return (f"pg_catalog.{name}",)
            before = self.path[: self.path.index("pg_catalog")]
            return (*(f"{s}.{name}" for s in before), f"pg_catalog.{name}")
        # An empty result would hide the table: an unknown schema ("*") is the safe answer.
        return tuple(f"{s}.{name}" for s in self.path if s != "pg_catalog") or (f"*.{name}",)

    def const(self, node: Any) -> str | None:
        """The value of a constant (``_const_string``), noting that a literal was read."""
        self.read_literal = True
        return _const_string(node)

    def explain_flag(self, arg: Json) -> bool:
        self.read_literal = True
        return _explain_flag(arg)

    def is_cte(self, name: str) -> bool:
        return any(name in scope for scope in self.scopes)

    def relation(self, body: Json, written: bool) -> None:
        name = body.get("relname")
        if not isinstance(name, str):
            return
        schema = body.get("schemaname")
        if schema is None and not written and self.is_cte(name):
            return
        names = self.qualify(schema, name)
        if written and not self.inert:
            self.written.update(names)
        else:
            self.read.update(names)
        if not SECRET_CATALOGS.isdisjoint(names):
            self.facts.add("catalog_secrets")

    def relation_names(self, names: list[str], written: bool) -> None:
        """A relation given as a dotted name list (DROP TABLE a.b)."""
        if not names:
            return
        parts = names[-2:]
        body: Json = {"relname": parts[-1]}
        if len(parts) == 2:
            body["schemaname"] = parts[0]
        self.relation(body, written)

    def targets(self, typ: str, body: Json) -> tuple[str, ...]:
        fields = _TARGET_FIELDS.get(typ, ())
        for field_name in fields:
            value = body.get(field_name)
            if isinstance(value, dict):
                if "RangeVar" in value:
                    self.relation(value["RangeVar"], written=True)
                else:
                    self.relation(value, written=True)
            elif isinstance(value, list):
                for item in value:
                    if isinstance(item, dict) and "RangeVar" in item:
                        self.relation(item["RangeVar"], written=True)
        return fields

    def function(self, parts: list[str], executed: bool = True) -> None:
        if len(parts) > 2:
            parts = parts[-2:]  # database.schema.name: the database must be the current one
        if len(parts) == 2 and parts[0] == "pg_catalog":
            name = parts[1]
            known = name in KNOWN_FUNCTIONS
        elif len(parts) == 2:
            name = f"{parts[0]}.{parts[1]}"
            known = False
        else:
            name = parts[0]
            # pg_catalog is searched first unless the path names it later.
            known = self.catalog_first and name in KNOWN_FUNCTIONS
        self.functions.add(name)
        if not known:
            self.unknown.add(name)
            return
        for set_name, fact in SET_FACTS.items():
            if name in FUNCTION_SETS[set_name]:
                self.facts.add(fact)
        operation = function_operation(name)
        if operation is not None and executed:
            self.op(operation)

    def operator(self, parts: list[str]) -> None:
        if not parts:
            return
        symbol = parts[-1]
        if len(parts) == 1:
            known = self.catalog_first and symbol in KNOWN_OPERATORS
        else:
            known = parts[-2] == "pg_catalog" and symbol in KNOWN_OPERATORS
        if not known:
            self.unknown.add("operator(" + ".".join(parts) + ")")

    # -- statements -------------------------------------------------------------------

    def statement(self, typ: str, body: Json, ops: frozenset[str]) -> None:
        self.op(*ops)
        if typ in _DESTRUCTIVE_STATEMENTS or body.get("replace"):
            self.fact("destructive")
        skip = self.targets(typ, body)
        if typ in _DEFINING:
            self.inert += 1
            self.children(typ, body, skip)
            self.inert -= 1
        else:
            self.children(typ, body, skip)

    def enter_with(self, body: Json) -> bool:
        clause = body.get("withClause")
        if not clause:
            return False
        ctes = [c["CommonTableExpr"] for c in clause.get("ctes", []) if "CommonTableExpr" in c]
        names = [str(c.get("ctename", "")) for c in ctes]
        recursive = bool(clause.get("recursive"))
        for index, cte in enumerate(ctes):
            self.scopes.append(frozenset(names if recursive else names[:index]))
            self.cte_depth += 1
            self.node(cte.get("ctequery"))
            self.cte_depth -= 1
            self.scopes.pop()
        self.scopes.append(frozenset(names))
        return True

    def write_target(self, body: Json) -> None:
        relation = body.get("relation")
        if isinstance(relation, dict):
            self.relation(relation, written=True)
        if self.cte_depth:
            self.fact("cte_write")

    def touches_target(self, where: Any, relation: Any) -> bool:
        """Whether a condition mentions a column that may belong to the target table."""
        names = set()
        if isinstance(relation, dict):
            names.add(relation.get("relname"))
            alias = relation.get("alias")
            if isinstance(alias, dict):
                names.add(alias.get("aliasname"))
        found = False

        def search(value: Any) -> None:
            nonlocal found
            if found:
                return
            if isinstance(value, dict):
                ref = value.get("ColumnRef")
                if isinstance(ref, dict):
                    fields = ref.get("fields", [])
                    if len(fields) == 1 or (
                        len(fields) >= 2 and fields[-2].get("String", {}).get("sval") in names
                    ):
                        found = True
                        return
                if "CurrentOfExpr" in value:
                    found = True
                    return
                for item in value.values():
                    search(item)
            elif isinstance(value, list):
                for item in value:
                    search(item)

        search(where)
        return found


def _h_select(w: _Walker, body: Json) -> None:
    scoped = w.enter_with(body)
    values_only = "valuesLists" in body and "targetList" not in body and "fromClause" not in body
    if not values_only and body.get("op", "SETOP_NONE") == "SETOP_NONE":
        w.op("read")
    into = body.get("intoClause")
    if isinstance(into, dict):
        w.op("ddl", "write")
        rel = into.get("rel")
        if isinstance(rel, dict):
            w.relation(rel, written=True)
    if body.get("lockingClause"):
        # PostgreSQL refuses SELECT ... FOR UPDATE/SHARE in a read-only transaction: it
        # writes row locks and blocks other writers.
        w.op("write")
        w.fact("locking")
    w.children("SelectStmt", body, ("withClause", "intoClause", "lockingClause"))
    if scoped:
        w.scopes.pop()


def _h_insert(w: _Walker, body: Json) -> None:
    scoped = w.enter_with(body)
    w.op("write")
    w.write_target(body)
    w.children("InsertStmt", body, ("withClause", "relation"))
    if scoped:
        w.scopes.pop()


def _h_update_delete(typ: str) -> Callable[[_Walker, Json], None]:
    others = "fromClause" if typ == "UpdateStmt" else "usingClause"

    def handler(w: _Walker, body: Json) -> None:
        scoped = w.enter_with(body)
        w.op("write")
        w.write_target(body)
        if body.get(others):
            w.op("read")
        if not w.touches_target(body.get("whereClause"), body.get("relation")):
            w.fact("no_where")
        w.children(typ, body, ("withClause", "relation"))
        if scoped:
            w.scopes.pop()

    return handler


def _h_merge(w: _Walker, body: Json) -> None:
    scoped = w.enter_with(body)
    w.op("write", "read")
    w.write_target(body)
    clauses = [c.get("MergeWhenClause", {}) for c in body.get("mergeWhenClauses", [])]
    changing = [c for c in clauses if c.get("commandType") in ("CMD_UPDATE", "CMD_DELETE")]
    if changing and not w.touches_target(body.get("joinCondition"), body.get("relation")):
        w.fact("no_where")
    for clause in changing:
        if clause.get("matchKind") == "MERGE_WHEN_NOT_MATCHED_BY_SOURCE" and not clause.get("condition"):
            w.fact("no_where")
    w.children("MergeStmt", body, ("withClause", "relation"))
    if scoped:
        w.scopes.pop()


def _h_create_table_as(w: _Walker, body: Json) -> None:
    into = body.get("into")
    if isinstance(into, dict) and isinstance(into.get("rel"), dict):
        w.relation(into["rel"], written=True)
    w.statement(
        "CreateTableAsStmt",
        {k: v for k, v in body.items() if k != "into"},
        STATEMENT_OPERATIONS["CreateTableAsStmt"],
    )


def _h_truncate(w: _Walker, body: Json) -> None:
    w.fact("no_where")
    w.statement("TruncateStmt", body, STATEMENT_OPERATIONS["TruncateStmt"])


def _h_rangevar(w: _Walker, body: Json) -> None:
    w.relation(body, written=False)


def _h_funccall(w: _Walker, body: Json) -> None:
    parts = _names(body.get("funcname", []))
    w.function(parts, executed=not w.inert)
    name = parts[-1] if parts else ""
    if name == "set_config" and (len(parts) == 1 or parts[-2] == "pg_catalog"):
        args = body.get("args", [])
        setting = w.const(args[0]) if args else None
        value = w.const(args[1]) if len(args) > 1 else None
        _setting_changed(w, setting.lower() if setting is not None else None, value, now=not w.inert)
    w.children("FuncCall", body, ("funcname",))


def _h_a_expr(w: _Walker, body: Json) -> None:
    if body.get("kind") in (
        "AEXPR_OP",
        "AEXPR_OP_ANY",
        "AEXPR_OP_ALL",
        "AEXPR_DISTINCT",
        "AEXPR_NOT_DISTINCT",
        "AEXPR_NULLIF",
        "AEXPR_IN",
        "AEXPR_LIKE",
        "AEXPR_ILIKE",
        "AEXPR_SIMILAR",
    ):
        w.operator(_names(body.get("name", [])))
    w.children("A_Expr", body, ("name",))


def _h_sublink(w: _Walker, body: Json) -> None:
    if body.get("operName"):
        w.operator(_names(body["operName"]))
    w.children("SubLink", body, ("operName",))


def _h_sortby(w: _Walker, body: Json) -> None:
    if body.get("useOp"):
        w.operator(_names(body["useOp"]))
    w.children("SortBy", body, ("useOp",))


def _h_locking(w: _Walker, body: Json) -> None:
    # lockedRels name FROM items (often aliases), not new tables.
    return


def _setting_changed(w: _Walker, name: str | None, value: str | None, now: bool, reset: bool = False) -> None:
    """A run-time setting changes (``name`` None: a name computed at run time)."""
    if now and not w.inert:
        w.settings.add(name if name is not None else "*")
    if name is None:
        w.facts.update(("role_change", "read_only_off"))
        if now and not w.inert:
            w.effects.append(("search_path", "*"))
        return
    if name in ROLE_SETTINGS and not reset and (value is None or value.lower() != "none"):
        w.facts.add("role_change")
    if name in READ_ONLY_SETTINGS and (reset or not _is_on(value)):
        w.facts.add("read_only_off")
    if name in PROGRAM_SETTINGS:
        w.facts.add("program_execution")
    if name == "search_path" and now and not w.inert and not reset:
        schemas = _split_identifier_list(value) if value is not None else ("*",)
        if schemas:
            w.effects.append(("search_path", *schemas))


def _variable_set(w: _Walker, body: Json, now: bool) -> None:
    kind = body.get("kind")
    name = str(body.get("name", "")).lower()
    args = body.get("args", [])
    if kind == "VAR_RESET_ALL":
        if now:
            w.settings.add("*")
        w.facts.add("read_only_off")
        return
    if kind == "VAR_SET_MULTI":
        for arg in args:
            elem = arg.get("DefElem")
            if isinstance(elem, dict):
                _setting_changed(w, str(elem.get("defname", "")), w.const(elem.get("arg")), now)
        return
    reset = kind in ("VAR_RESET", "VAR_SET_DEFAULT", "VAR_SET_CURRENT")
    if name == "search_path" and kind == "VAR_SET_VALUE":
        schemas = [s for s in (w.const(a) for a in args) if s is not None]
        if now:
            w.settings.add(name)
            w.effects.append(("search_path", *schemas) if schemas else ("search_path", "*"))
        return
    value = w.const(args[0]) if len(args) == 1 else None
    _setting_changed(w, name, value, now, reset=reset)


def _h_variable_set(w: _Walker, body: Json) -> None:
    w.op("transaction" if str(body.get("name", "")).startswith("TRANSACTION") else "session")
    # Inside a definition (CREATE FUNCTION ... SET x = y) the setting applies later.
    _variable_set(w, body, now=not w.inert)


def _h_deferred_set(typ: str) -> Callable[[_Walker, Json], None]:
    """ALTER SYSTEM / ROLE / DATABASE ... SET: takes effect in later sessions."""

    def handler(w: _Walker, body: Json) -> None:
        setstmt = body.get("setstmt")
        if isinstance(setstmt, dict):
            _variable_set(w, setstmt, now=False)
        if typ == "AlterSystemStmt":
            w.facts.add("server_file_access")  # it writes postgresql.auto.conf
        w.statement(typ, {k: v for k, v in body.items() if k != "setstmt"}, STATEMENT_OPERATIONS[typ])

    return handler


def _h_transaction(w: _Walker, body: Json) -> None:
    w.op("transaction")
    for option in body.get("options", []):
        elem = option.get("DefElem", {})
        name = str(elem.get("defname", ""))
        _setting_changed(w, name, w.const(elem.get("arg")), now=True)


def _h_discard(w: _Walker, body: Json) -> None:
    w.op("session")
    if body.get("target") == "DISCARD_ALL":
        w.settings.add("*")
        w.facts.add("read_only_off")
        w.effects.append(("deallocate_all",))


def _h_copy(w: _Walker, body: Json) -> None:
    is_from = bool(body.get("is_from"))
    relation = body.get("relation")
    if isinstance(relation, dict):
        w.relation(relation, written=is_from)
    w.op("write" if is_from else "read")
    if body.get("filename") is not None:
        w.op("admin")
        w.facts.add("program_execution" if body.get("is_program") else "server_file_access")
    w.children("CopyStmt", body, ("relation",))


def _h_explain(w: _Walker, body: Json) -> None:
    analyze = False
    for option in body.get("options", []):
        elem = option.get("DefElem", {})
        if elem.get("defname") == "analyze":
            arg = elem.get("arg")
            # EXPLAIN (ANALYZE) with no value, or any value but a clear false, runs it.
            analyze = arg is None or w.explain_flag(arg)
    w.op("read")
    if analyze:
        w.fact("explain_analyze")
        w.node(body.get("query"))
    else:
        # Planning does not run the statement: record what it names, nothing it does.
        w.inert += 1
        w.node(body.get("query"))
        w.inert -= 1


def _explain_flag(arg: Json) -> bool:
    if "Boolean" in arg:
        return bool(arg["Boolean"].get("boolval"))
    if "String" in arg:
        return str(arg["String"].get("sval", "")).lower() not in _FALSE_WORDS
    if "Integer" in arg:
        return bool(arg["Integer"].get("ival"))
    return True


def _h_prepare(w: _Walker, body: Json) -> None:
    name = str(body.get("name", ""))
    w.node(body.get("query"))
    if not w.inert:
        w.effects.append(("prepare", name, w.text))


def _h_execute(w: _Walker, body: Json) -> None:
    name = str(body.get("name", ""))
    texts = w.prepared.get(name)
    if not texts:
        w.error = f"prepared statement {name!r} is not known to the gateway"
    elif len(texts) > MAX_PREPARED_TEXTS:
        w.error = f"prepared statement {name!r} was prepared too many times to judge"
    else:
        for text in texts:
            _merge_prepared(w, name, text)
    w.children("ExecuteStmt", body, ("name",))


def _merge_prepared(w: _Walker, name: str, text: str) -> None:
    try:
        result = _classify_cached(text, w.path)
    except ClassificationError as exc:
        w.error = f"prepared statement {name!r} cannot be judged: {exc}"
        return
    for info in result.statements:
        if info.error:
            w.error = info.error
        if not w.inert:
            w.ops.update(info.known_operations)
            w.written.update(info.tables_written)
            w.facts.update(info.facts)
            w.settings.update(info.settings)
        else:
            w.read.update(info.tables_written)
            w.facts.update(info.facts & {"catalog_secrets", "server_file_access", "role_change"})
        w.read.update(info.tables_read)
        w.functions.update(info.functions)
        w.unknown.update(info.unknown_functions)


def _h_deallocate(w: _Walker, body: Json) -> None:
    w.op("utility")
    name = body.get("name")
    if body.get("isall") or name is None:
        w.effects.append(("deallocate_all",))
    else:
        w.effects.append(("deallocate", str(name)))


def _h_drop(w: _Walker, body: Json) -> None:
    if body.get("removeType") in _RELATION_OBJECTS:
        for item in body.get("objects", []):
            if "List" in item:
                w.relation_names(_names(item["List"].get("items", [])), written=True)
    w.statement(
        "DropStmt", {k: v for k, v in body.items() if k != "objects"}, STATEMENT_OPERATIONS["DropStmt"]
    )


def _h_grant(w: _Walker, body: Json) -> None:
    if (
        body.get("objtype") in _RELATION_OBJECTS
        and body.get("targtype", "ACL_TARGET_OBJECT") == "ACL_TARGET_OBJECT"
    ):
        for item in body.get("objects", []):
            if isinstance(item, dict) and "RangeVar" in item:
                w.relation(item["RangeVar"], written=True)
    w.statement(
        "GrantStmt", {k: v for k, v in body.items() if k != "objects"}, STATEMENT_OPERATIONS["GrantStmt"]
    )


def _h_object_statement(typ: str) -> Callable[[_Walker, Json], None]:
    """COMMENT ON / SECURITY LABEL ON: the object is a dotted name."""

    def handler(w: _Walker, body: Json) -> None:
        target = body.get("object")
        if body.get("objtype") in _RELATION_OBJECTS and isinstance(target, dict) and "List" in target:
            w.relation_names(_names(target["List"].get("items", [])), written=True)
        w.statement(typ, body, STATEMENT_OPERATIONS[typ])

    return handler


def _h_alter_table(w: _Walker, body: Json) -> None:
    for cmd in body.get("cmds", []):
        subtype = cmd.get("AlterTableCmd", {}).get("subtype")
        if subtype in _DESTRUCTIVE_ALTER_TABLE:
            w.fact("destructive")
        if subtype in _DCL_ALTER_TABLE:
            w.op("dcl")
    w.statement("AlterTableStmt", body, STATEMENT_OPERATIONS["AlterTableStmt"])


def _h_vacuum(w: _Walker, body: Json) -> None:
    for rel in body.get("rels", []):
        relation = rel.get("VacuumRelation", {}).get("relation")
        if isinstance(relation, dict):
            w.relation(relation, written=True)
    w.statement(
        "VacuumStmt", {k: v for k, v in body.items() if k != "rels"}, STATEMENT_OPERATIONS["VacuumStmt"]
    )


def _h_lock(w: _Walker, body: Json) -> None:
    w.fact("locking")
    w.op("utility")
    w.children("LockStmt", body)


def _h_load(w: _Walker, body: Json) -> None:
    # LOAD runs a shared library's initialisation code from the server's file system.
    w.facts.update(("server_file_access", "program_execution"))
    w.statement("LoadStmt", body, STATEMENT_OPERATIONS["LoadStmt"])


def _h_tablespace(w: _Walker, body: Json) -> None:
    w.facts.add("server_file_access")  # LOCATION is a server directory
    w.statement("CreateTableSpaceStmt", body, STATEMENT_OPERATIONS["CreateTableSpaceStmt"])


def _h_do(w: _Walker, body: Json) -> None:
    w.op("procedural")


def _h_create_function(w: _Walker, body: Json) -> None:
    # The body is opaque (or, for SQL-standard bodies, runs later): record what it names.
    w.statement("CreateFunctionStmt", body, STATEMENT_OPERATIONS["CreateFunctionStmt"])


_HANDLERS: dict[str, Callable[[_Walker, Json], None]] = {
    "SelectStmt": _h_select,
    "InsertStmt": _h_insert,
    "UpdateStmt": _h_update_delete("UpdateStmt"),
    "DeleteStmt": _h_update_delete("DeleteStmt"),
    "MergeStmt": _h_merge,
    "TruncateStmt": _h_truncate,
    "CreateTableAsStmt": _h_create_table_as,
    "RangeVar": _h_rangevar,
    "FuncCall": _h_funccall,
    "A_Expr": _h_a_expr,
    "SubLink": _h_sublink,
    "SortBy": _h_sortby,
    "LockingClause": _h_locking,
    "VariableSetStmt": _h_variable_set,
    "AlterSystemStmt": _h_deferred_set("AlterSystemStmt"),
    "AlterRoleSetStmt": _h_deferred_set("AlterRoleSetStmt"),
    "AlterDatabaseSetStmt": _h_deferred_set("AlterDatabaseSetStmt"),
    "TransactionStmt": _h_transaction,
    "DiscardStmt": _h_discard,
    "CopyStmt": _h_copy,
    "ExplainStmt": _h_explain,
    "PrepareStmt": _h_prepare,
    "ExecuteStmt": _h_execute,
    "DeallocateStmt": _h_deallocate,
    "DropStmt": _h_drop,
    "GrantStmt": _h_grant,
    "AlterTableStmt": _h_alter_table,
    "CommentStmt": _h_object_statement("CommentStmt"),
    "SecLabelStmt": _h_object_statement("SecLabelStmt"),
    "VacuumStmt": _h_vacuum,
    "LockStmt": _h_lock,
    "LoadStmt": _h_load,
    "CreateTableSpaceStmt": _h_tablespace,
    "DoStmt": _h_do,
    "CreateFunctionStmt": _h_create_function,
}


# --- the classifier -------------------------------------------------------------------


def _statement_texts(sql: str, stmts: list[Json]) -> list[str]:
    data = sql.encode("utf-8")
    texts = []
    for item in stmts:
        start = int(item.get("stmt_location", 0))
        length = int(item.get("stmt_len", 0))
        chunk = data[start : start + length] if length else data[start:]
        texts.append(chunk.decode("utf-8", errors="replace").strip().rstrip(";").strip())
    return texts


def _load_tree(raw: str) -> Any:
    try:
        return orjson.loads(raw)  # about four times faster than json.loads here
    except orjson.JSONDecodeError:  # an integer beyond 64 bits
        return json.loads(raw)


def _parse(sql: str) -> list[Json]:
    try:
        tree = _load_tree(pgquery.parse_json(sql))
    except pg_parser.ParseError as exc:
        raise ClassificationError(str(exc)) from None
    except RecursionError:
        raise ClassificationError("statement is nested too deeply") from None
    stmts: list[Json] = tree.get("stmts", [])
    return stmts


def _classify(
    sql: str,
    path: tuple[str, ...],
    prepared: Mapping[str, list[str]],
    shape_of: list[_Shape | None] | None = None,
) -> Classification:
    """Classify ``sql``; with ``shape_of`` (an empty list), also append what statements of
    the same shape can reuse (``_Shape``), or None when they cannot."""
    stmts = _parse(sql)
    texts = _statement_texts(sql, stmts)
    overlay: dict[str, list[str]] | None = None
    statements = []
    literal_read = False
    for item, text in zip(stmts, texts, strict=True):
        wrapped = item.get("stmt", {})
        typ = next(iter(wrapped), "")
        walker = _Walker(path, overlay if overlay is not None else prepared, text)
        if typ not in STATEMENT_OPERATIONS:
            walker.error = f"statements of type {typ or 'unknown'} are not supported"
        else:
            try:
                walker.visit(typ, wrapped[typ])
            except RecursionError:
                walker.error = "statement is nested too deeply"
        info = _finish(walker, typ, text)
        literal_read = literal_read or walker.read_literal
        statements.append(info)
        # Later statements of the same string see what earlier ones prepared or set.
        for effect in info.effects:
            if effect[0] in ("prepare", "deallocate", "deallocate_all"):
                if overlay is None:
                    overlay = {name: list(texts) for name, texts in prepared.items()}
                apply_session_effects({"prepared": overlay}, [effect])
            elif effect[0] == "search_path":
                path = (*path, *(s for s in effect[1:] if s not in path))
    if shape_of is not None:
        shape_of.append(_shape(sql, stmts, statements, literal_read))
    return Classification(statements=tuple(statements), normalizer=normalize)


# --- classifications shared by statements of the same shape ------------------------------
#
# Agents and pgbench alike send the same statement with new literals each time (simple
# protocol: ``... WHERE aid = 412345``). The classification does not depend on the
# literals (the walk never looks inside constants) except where it reads a value (a
# setting's value, an EXPLAIN option: ``_Walker.const``). Statements are therefore keyed by
# PostgreSQL's own normalization (pg_query's: every constant replaced by ``$n``, everything
# else kept as written, comments included), and a one-statement string whose
# classification read no literal is classified once per shape; later ones only get their
# own text. The key is the normalized text itself (not a hash of it): statements share a
# classification only when they are identical but for their constants.


# The fields of StatementInfo in the order ``_Shape.classification`` passes them (built
# positionally: dataclasses.replace costs more than the rest of a shape hit).
SHAPE_FIELDS = (
    "text", "statement", "operations", "known_operations", "tables_read", "tables_written",
    "functions", "unknown_functions", "settings", "facts", "effects", "error",
)  # fmt: skip


class _Shape:
    """A single statement's classification, for every string of the same shape."""

    __slots__ = ("info", "start", "tail")

    def __init__(self, info: StatementInfo, start: int, tail: int) -> None:
        self.info = info
        # Bytes before and after the statement in the string: the same in every string of
        # the shape (a constant is always inside the statement).
        self.start = start
        self.tail = tail

    def text_of(self, sql: str) -> str:
        """The statement's text in ``sql``, a string of this shape."""
        if sql.isascii():  # the offsets are in UTF-8 bytes: here, characters
            chunk = sql[self.start : len(sql) - self.tail]
        else:
            data = sql.encode("utf-8")
            chunk = data[self.start : len(data) - self.tail].decode("utf-8", errors="replace")
        return chunk.strip().rstrip(";").strip()

    def classification(self, sql: str, normalizer: Callable[[str], str] | None = None) -> Classification:
        text = self.text_of(sql)
        info = self.info
        return Classification(
            statements=(
                StatementInfo(
                    text,
                    info.statement,
                    info.operations,
                    info.known_operations,
                    info.tables_read,
                    info.tables_written,
                    info.functions,
                    info.unknown_functions,
                    info.settings,
                    info.facts,
                    info.effects,
                    info.error,
                ),
            ),
            normalizer=normalizer or normalize,
            shape=self,
        )


def _shape(sql: str, stmts: list[Json], statements: list[StatementInfo], literal_read: bool) -> _Shape | None:
    if literal_read or len(statements) != 1 or len(stmts) != 1:
        return None
    info = statements[0]
    if info.error is not None or info.effects:
        return None
    start = int(stmts[0].get("stmt_location", 0))
    length = int(stmts[0].get("stmt_len", 0))
    size = len(sql.encode("utf-8"))
    return _Shape(info, start, size - (start + length) if length else 0)


MAX_SHAPES = 4096
# First in, first out; an OrderedDict for the reason ``CompiledPolicy._cache`` is one.
_shapes: OrderedDict[tuple[str, tuple[str, ...]], _Shape | None] = OrderedDict()

_K = TypeVar("_K")
_V = TypeVar("_V")


def bounded_put(cache: OrderedDict[_K, _V], key: _K, value: _V, size: int) -> None:
    """``cache[key] = value``, first evicting the oldest entry when ``cache`` holds ``size``
    (the shape and decision caches: first in, first out, shared between threads)."""
    if len(cache) >= size:
        try:
            cache.popitem(last=False)
        except KeyError:  # another thread emptied it first
            pass
    cache[key] = value


# --- shapes found without the parser ------------------------------------------------------
#
# Finding a statement's shape with ``pgquery.normalize`` is a parse: about 3 µs alone, and
# 10-20 µs on a busy gateway, where PostgreSQL's grammar tables are no longer in the CPU's
# cache when the next statement comes. Most statements agents send are simple enough to
# find their constants with a regular expression: no comments, quoted identifiers, dollar
# quotes, escapes or prefixed strings; constants that are plain integers or plain
# single-quoted strings. Such a text's "simple key" is the text with those constants
# replaced by $1, $2... An entry maps a simple key to a shape only once one text with
# that key proved that the simple key is exactly PostgreSQL's normalization of it (the
# same spans replaced, nothing else): texts with the same simple key then differ only in
# the values of constants that PostgreSQL's lexer reads as the same kinds of tokens, so
# they have the same parse tree but for constant values, i.e. the same PostgreSQL shape.
# A text the regular expressions cannot vouch for takes the parser's path as before.
#
# The same entry holds the shape's deparsed template, when it exists: the deparser's
# output for the normalized text, with $n where each constant goes. PostgreSQL's
# deparser prints an integer constant as its value and a string without quotes or
# backslashes between single quotes, so a statement's normalized text (what ``regex``
# rules see) is the template with its own constants put in; this too is checked against
# the deparser on the text that made the entry, and without a template each statement is
# deparsed as before.
#
# The key itself is ``policies.textscan.simple_key``; the gateway runs its C build
# (``policies/_textscan.c``, the same function, 2.3 -> 0.33 us for pgbench's statement)
# when it was built from the sources in use.

_simple_key: Callable[[str], tuple[tuple[str, ...], str, list[str]] | None] = _scan.simple_key
_PLACEHOLDER = re.compile(r"\$(\d+)")


class _Simple:
    """A simple key's shape and the deparsed template of its normalized text."""

    __slots__ = ("shape", "parts", "slots", "_after")

    def __init__(self, shape: _Shape, template: str | None) -> None:
        self.shape = shape
        self.parts: tuple[str, ...] | None = None
        self.slots: tuple[int, ...] = ()
        # Each constant's slot with the template's text after it (``render``'s loop).
        self._after: tuple[tuple[int, str], ...] = ()
        if template is not None:
            pieces = _PLACEHOLDER.split(template)
            self.parts = tuple(pieces[0::2])
            self.slots = tuple(int(n) - 1 for n in pieces[1::2])
            self._after = tuple(zip(self.slots, self.parts[1:], strict=True))

    def render(self, constants: list[str]) -> str | None:
        """The normalized text of the statement with these constants (None: no template)."""
        if self.parts is None:
            return None
        out = [self.parts[0]]
        for slot, part in self._after:
            out.append(_deparsed_constant(constants[slot]))
            out.append(part)
        return "".join(out)


def _deparsed_constant(token: str) -> str:
    if token[0] == "'":
        return token
    if len(token) < 10 and (token[0] != "0" or len(token) == 1):
        return token  # an int4 written as the deparser prints it: no leading zero
    return str(int(token)) if textscan.is_int4(token) else token


def _with_placeholders(skeleton: tuple[str, ...]) -> str:
    out = [skeleton[0]]
    for number, part in enumerate(skeleton[1:], start=1):
        out.append(f"${number}")
        out.append(part)
    return "".join(out)


class _Rendered:
    """The normalizer of a statement classified by its simple key: the shape's template
    with the statement's constants, or the deparser when there is no template."""

    __slots__ = ("constants", "simple")

    def __init__(self, simple: _Simple, constants: list[str]) -> None:
        self.simple = simple
        self.constants = constants

    def __call__(self, text: str) -> str:
        rendered = self.simple.render(self.constants)
        return rendered if rendered is not None else normalize(text)


_simple_shapes: OrderedDict[tuple[tuple[str, ...], str, tuple[str, ...]], _Simple] = OrderedDict()


def _remember_simple(
    sql: str,
    simple: tuple[tuple[str, ...], str, list[str]] | None,
    normalized: str,
    path: tuple[str, ...],
    shape: _Shape,
) -> None:
    if simple is None or _with_placeholders(simple[0]) != normalized:
        return
    try:
        template: str | None = pgquery.deparse(normalized)
    except Exception:  # $n where the grammar wants something else: no template
        template = None
    entry = _Simple(shape, template)
    if entry.render(simple[2]) != normalize(sql):
        entry = _Simple(shape, None)
    bounded_put(_simple_shapes, (simple[0], simple[1], path), entry, MAX_SHAPES)


SimpleKey = tuple[tuple[str, ...], str, list[str]]


def shape_key(sql: str) -> SimpleKey | None:
    """``sql``'s simple key (the text around its constants, their kinds, the constants)
    when ``sql`` holds constants and may be decided by its shape alone; None for a text
    without a simple key or without constants, a long text, or one that may hold an EXECUTE
    (judged as the statement it runs, so by the session's prepared statements).
    ``gateway.decision`` keeps a session's allowed shapes by this key."""
    simple = _decided_by_shape(sql)
    return simple if simple is not None and simple[1] else None


def _decided_by_shape(sql: str) -> SimpleKey | None:
    """``sql``'s simple key, unless ``sql`` is too long to cache or may hold an EXECUTE
    (whose decision depends on the session's prepared statements, not on the shape)."""
    if len(sql) > MAX_CACHED_TEXT or mentions(sql, _EXECUTE, _EXECUTE_WORDS):
        return None
    return _simple_key(sql)


def proven_shape_text(skeleton: tuple[str, ...], kinds: str, session: Mapping[str, Any] | None) -> str | None:
    """The normalized text of the shape of the statements whose simple key is ``skeleton``
    and ``kinds`` (their constants as ``$1``, ``$2``...), once a statement with that key
    proved that the key is PostgreSQL's normalization of it under ``session``'s search path
    (``_remember_simple``): every statement with the key then has that shape. None while it
    is not proven."""
    if (skeleton, kinds, session_search_path(session)) not in _simple_shapes:
        return None
    return _with_placeholders(skeleton).strip().rstrip(";").strip()


def rendered_by_key(key: SimpleKey, session: Mapping[str, Any] | None) -> str | None:
    """The normalized text of the statement with simple key ``key`` (what ``regex`` rules
    read), from its proven shape's deparsed template and its own constants; None when the
    shape is not proven or has no template (the text is then had only by a parse)."""
    entry = _simple_shapes.get((key[0], key[1], session_search_path(session)))
    return None if entry is None else entry.render(key[2])


def _classify_by_shape(sql: str, path: tuple[str, ...]) -> Classification:
    simple = _simple_key(sql)
    if simple is not None:
        entry = _simple_shapes.get((simple[0], simple[1], path))
        if entry is not None:
            return entry.shape.classification(sql, _Rendered(entry, simple[2]))
    try:
        normalized = pgquery.normalize(sql)
    except Exception:  # does not parse (the classification says why), or cannot be normalized
        return _classify_cached(sql, path)
    key = (normalized, path)
    shape = _shapes.get(key, _UNSEEN)
    if isinstance(shape, _Shape):
        _remember_simple(sql, simple, normalized, path, shape)
        return shape.classification(sql)
    if shape is None:  # this shape's classification reads literals: by exact text only
        return _classify_cached(sql, path)
    found: list[_Shape | None] = []
    classification = _classify(sql, path, {}, found)
    shape = found[0] if found else None
    bounded_put(_shapes, key, shape, MAX_SHAPES)
    if shape is not None:
        _remember_simple(sql, simple, normalized, path, shape)
        return Classification(statements=classification.statements, normalizer=normalize, shape=shape)
    return classification


_UNSEEN: Any = object()


def simple_shape(
    sql: str, session: Mapping[str, Any] | None
) -> tuple[_Shape, str, Callable[[str], str]] | None:
    """``sql``'s shape when its simple key is known already (see above): the shape, the
    statement's text and its normalizer, what ``classify`` would give as the
    classification's ``shape``, its statement's ``text`` and ``normalized``, without
    building the classification; None when ``classify`` has to be asked.

    For the engine's decision per shape (``CompiledPolicy.evaluate``): a statement of a
    known shape with new constants (pgbench's, an agent's ``WHERE id = 42``) costs a key
    and two lookups.
    """
    simple = _decided_by_shape(sql)
    if simple is None:
        return None
    entry = _simple_shapes.get((simple[0], simple[1], session_search_path(session)))
    if entry is None:
        return None
    shape = entry.shape
    return shape, shape.text_of(sql), _Rendered(entry, simple[2])


def _finish(w: _Walker, typ: str, text: str) -> StatementInfo:
    if not w.ops and typ in ("SelectStmt",):
        w.ops.add("read")  # a bare VALUES list
    known_ops = frozenset(w.ops)
    ops = known_ops | {"procedural"} if w.unknown else known_ops
    facts = w.facts | {"unknown_function"} if w.unknown else w.facts
    return StatementInfo(
        text=text,
        statement=typ,
        operations=frozenset(ops),
        known_operations=known_ops,
        tables_read=frozenset(w.read - w.written),
        tables_written=frozenset(w.written),
        functions=frozenset(w.functions),
        unknown_functions=frozenset(w.unknown),
        settings=frozenset(w.settings),
        facts=frozenset(facts),
        effects=tuple(w.effects),
        error=w.error,
    )


@lru_cache(maxsize=4096)
def _classify_cached(sql: str, path: tuple[str, ...]) -> Classification:
    return _classify(sql, path, {})


def classify(sql: str, session: Mapping[str, Any] | None = None) -> Classification:
    """Classify every statement of ``sql`` given the session state (see module docstring).

    A string that does not parse gives a ``Classification`` with ``error`` set; it never
    raises for bad input.
    """
    path = session_search_path(session)
    try:
        if not mentions(sql, _EXECUTE, _EXECUTE_WORDS):
            if len(sql) > MAX_CACHED_TEXT:
                return _classify(sql, path, {})
            return _classify_by_shape(sql, path)
        prepared = (session or {}).get("prepared") or {}
        return _classify(sql, path, prepared)
    except ClassificationError as exc:
        return Classification(error=str(exc))


def classify_function_call(function: str) -> Classification:
    """The protocol's FunctionCall message: a function called with no SQL text.

    ``function`` is the function's name as the gateway resolved it (``schema.name`` or a
    built-in's name), or ``oid:<n>`` when it could not: an unknown function is opaque code.
    """
    walker = _Walker(DEFAULT_SEARCH_PATH, {}, function)
    parts = function.split(".") if not function.startswith("oid:") else [function]
    walker.function(parts)
    walker.facts.add("fastpath")
    if not walker.ops:
        walker.ops.add("read")
    return Classification(statements=(_finish(walker, "FunctionCall", function),))


@lru_cache(maxsize=4096)
def normalize(text: str) -> str:
    """One statement in canonical form: no comments, one space, keywords upper case,
    identifiers unquoted where quoting changes nothing (PostgreSQL's own deparser)."""
    try:
        return pgquery.deparse(text)
    except Exception:  # any deparser failure falls back to the plain text
        return " ".join(text.split())
