"""Built-in rule packs: policy specs an admin can start from (copy, then edit).

``pack(name)`` returns a fresh copy of one pack's spec; ``combine(*names, default=...)``
puts the rules of several packs into one spec, in the order given (first match wins, so
a pack's deny rules keep their meaning when another pack's allow rules follow).
"""

from __future__ import annotations

import copy
from typing import Any

# Settings an agent may change without leaving its lane: timeouts, formats, names.
HARMLESS_SETTINGS = [
    "application_name",
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "idle_session_timeout",
    "transaction_timeout",
    "timezone",
    "datestyle",
    "intervalstyle",
    "extra_float_digits",
    "client_encoding",
    "client_min_messages",
    "bytea_output",
    "search_path",
    "work_mem",
    "transaction_isolation",
    "transaction_deferrable",
    "transaction_read_only",
    "default_transaction_isolation",
]

_NO_SERVER_FILES = [
    {
        "name": "no-server-file-functions",
        "match": {"functions": ["@server_files"]},
        "action": "deny",
        "message": "reading or writing files on the database server is not allowed",
    },
    {
        "name": "no-server-file-access",
        "match": {"facts": ["server_file_access", "program_execution"]},
        "action": "deny",
        "message": "server files and programs (COPY ... PROGRAM / to a file, LOAD) are not allowed",
    },
]
_NO_ROLE_CHANGES = [
    {
        "name": "no-role-switch",
        "match": {"facts": ["role_change"]},
        "action": "deny",
        "message": "changing the session's role is not allowed",
    },
    {
        "name": "no-privilege-changes",
        "match": {"operations": ["dcl"]},
        "action": "deny",
        "message": "changing roles or privileges is not allowed",
    },
]
_NO_DESTRUCTIVE_DDL = [
    {
        "name": "no-destructive-ddl",
        "match": {"facts": ["destructive"]},
        "action": "deny",
        "message": "DROP, TRUNCATE and other destructive changes are not allowed",
    },
]

PACKS: dict[str, dict[str, Any]] = {
    "read-only-agent": {
        "description": "Reads only: no writes, DDL, procedural code, server files, role or read-only escapes.",
        "default": "deny",
        "on_parse_error": "deny",
        "rules": [
            {
                "name": "no-catalog-secrets",
                "match": {"facts": ["catalog_secrets"]},
                "action": "deny",
                "message": "reading password hashes and other secrets from the catalog is not allowed",
            },
            *_NO_SERVER_FILES,
            {
                "name": "no-backend-control",
                "match": {"functions": ["@backend_control", "@replication", "@backup"]},
                "action": "deny",
                "message": "controlling server processes is not allowed",
            },
            _NO_ROLE_CHANGES[0],
            {
                "name": "stay-read-only",
                "match": {"facts": ["read_only_off"]},
                "action": "deny",
                "message": "leaving read-only mode is not allowed",
            },
            {
                "name": "no-function-call-message",
                "match": {"facts": ["fastpath"]},
                "action": "deny",
                "message": "the FunctionCall protocol message is not allowed",
            },
            {"name": "reads", "match": {"operations": ["read", "transaction"]}, "action": "allow"},
            {
                "name": "harmless-settings",
                "match": {"operations": ["read", "session", "transaction"], "settings": HARMLESS_SETTINGS},
                "action": "allow",
            },
        ],
    },
    "no-destructive-ddl": {
        "description": "No DROP, TRUNCATE, ALTER ... DROP/TYPE or CREATE OR REPLACE.",
        "default": "allow",
        "rules": _NO_DESTRUCTIVE_DDL,
    },
    "no-server-files": {
        "description": "No access to the server's files or programs.",
        "default": "allow",
        "rules": _NO_SERVER_FILES,
    },
    "no-role-changes": {
        "description": "No SET ROLE / SESSION AUTHORIZATION, GRANT, REVOKE or role changes.",
        "default": "allow",
        "rules": _NO_ROLE_CHANGES,
    },
}


def pack(name: str) -> dict[str, Any]:
    """A copy of the built-in pack ``name`` (KeyError names the packs that exist)."""
    try:
        return copy.deepcopy(PACKS[name])
    except KeyError:
        raise KeyError(f"unknown pack {name!r} (known: {', '.join(PACKS)})") from None


def combine(*names: str, default: str = "deny", on_parse_error: str = "deny") -> dict[str, Any]:
    """One spec with the rules of ``names`` in order (a rule in two packs appears once)."""
    rules: list[dict[str, Any]] = []
    seen: set[str] = set()
    for name in names:
        for rule in pack(name)["rules"]:
            if rule["name"] not in seen:
                seen.add(rule["name"])
                rules.append(rule)
    return {"default": default, "on_parse_error": on_parse_error, "rules": rules}
