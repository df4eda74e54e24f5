"""Run a sample query on a connection and show it masked (the masking policy page).

The query runs as the connection's stored user in a ``READ ONLY`` transaction with a
``statement_timeout``, one statement only (psycopg's extended protocol refuses several),
and at most ``SAMPLE_ROWS`` rows are read. The rows go through the same code as the
gateway's: the column identities come from the RowDescription (table OID and column
number, resolved with the gateway's ``CATALOG_QUERY`` in the same transaction), the types
and the text format too, and ``ResultMasker.mask_rows`` masks them. Only the masked
values leave this module: the raw ones are never rendered, logged or stored, and the
server's error messages are masked too (``invalid input syntax for type integer:
"4111..."`` echoes a value).
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django import forms

from gateway import secrets
from gateway.masking_runtime import CATALOG_QUERY
from masking import MaskingError, MaskingPolicy
from masking.placeholders import placeholder_pattern

log = logging.getLogger("airlock.policies.masking_sample")

SAMPLE_ROWS = 50
STATEMENT_TIMEOUT_MS = 5000
CONNECT_TIMEOUT_S = 10


class SampleForm(forms.Form):
    connection = forms.CharField(max_length=100)
    query = forms.CharField(
        max_length=10_000, widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false"})
    )
    group = forms.CharField(required=False, max_length=150)


@dataclass
class Cell:
    text: str | None  # masked
    reasons: list[str] = field(default_factory=list)


@dataclass
class SampleResult:
    errors: list[str] = field(default_factory=list)
    columns: list[dict[str, Any]] = field(default_factory=list)
    rows: list[list[Cell]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    truncated: bool = False


def _connect_params(connection: Any, values: dict[str, str], tmp: str) -> dict[str, Any]:
    sslmode = connection.options.get("sslmode", "prefer")
    params: dict[str, Any] = {
        "host": connection.host,
        "port": connection.effective_port(),
        "dbname": connection.database or connection.username or "postgres",
        "user": connection.username or None,
        "password": values.get("password") or None,
        "sslmode": sslmode,
        "connect_timeout": CONNECT_TIMEOUT_S,
        "application_name": "airlock masking sample",
        "passfile": str(Path(tmp) / "no-passfile"),
    }
    for key, name, filename in (("ca_cert", "sslrootcert", "ca.pem"),):
        if values.get(key):
            path = Path(tmp) / filename
            path.write_text(values[key])
            params[name] = str(path)
    if values.get("client_cert") and values.get("client_key"):
        for key, name, filename in (
            ("client_cert", "sslcert", "client.pem"),
            ("client_key", "sslkey", "client.key"),
        ):
            path = Path(tmp) / filename
            path.write_text(values[key])
            path.chmod(0o600)
            params[name] = str(path)
    return params


def _masked_message(masking: MaskingPolicy, text: str) -> str:
    try:
        return masking.mask_text(" ".join(text.split()))[0]
    except MaskingError:
        return "(the server's message could not be masked, so it is not shown)"


def run_sample(masking: MaskingPolicy, connection: Any, query: str) -> SampleResult:
    """Run ``query`` read-only on ``connection`` and mask the result with ``masking``."""
    import psycopg

    result = SampleResult()
    try:
        values = secrets.get_secrets(connection)
    except secrets.SecretDecryptionError as exc:
        result.errors.append(f"connection {connection.name}: {exc}")
        return result
    with tempfile.TemporaryDirectory(prefix="airlock-sample-") as tmp:
        try:
            with psycopg.connect(**_connect_params(connection, values, tmp), autocommit=True) as conn:
                conn.execute("BEGIN TRANSACTION READ ONLY")
                conn.execute(f"SET LOCAL statement_timeout = {int(STATEMENT_TIMEOUT_MS)}")
                # A snapshot now, so that the query cannot switch the transaction to read-write.
                conn.execute("SELECT 1")
                cursor = conn.cursor()
                cursor.execute(query)  # type: ignore[arg-type]  # the admin's own query, by design
                pgresult = cursor.pgresult
                if pgresult is None or cursor.description is None:
                    result.errors.append("The statement returned no rows to show (use a SELECT).")
                    conn.execute("ROLLBACK")
                    return result
                nfields = pgresult.nfields
                count = min(pgresult.ntuples, SAMPLE_ROWS)
                result.truncated = pgresult.ntuples > SAMPLE_ROWS
                raw = [tuple(pgresult.get_value(r, c) for c in range(nfields)) for r in range(count)]
                tables = [pgresult.ftable(c) for c in range(nfields)]
                numbers = [pgresult.ftablecol(c) for c in range(nfields)]
                types = [pgresult.ftype(c) for c in range(nfields)]
                names = [(pgresult.fname(c) or b"?").decode("utf-8", "replace") for c in range(nfields)]
                found: dict[int, tuple[str, dict[int, str]]] = {}
                oids = sorted({t for t in tables if t})
                if oids and masking.uses_column_identity:
                    catalog = CATALOG_QUERY.format(oids=",".join(str(int(o)) for o in oids))
                    for oid, schema, table, attnum, column in conn.execute(catalog):  # type: ignore[arg-type]
                        found.setdefault(int(oid), (f"{schema}.{table}", {}))[1][int(attnum)] = column
                conn.execute("ROLLBACK")
        except psycopg.Error as exc:
            message = str(exc).strip() or type(exc).__name__
            result.errors.append(f"The query failed: {_masked_message(masking, message)}")
            return result
    identities: list[tuple[str | None, str | None] | None] = []
    for oid, number in zip(tables, numbers, strict=True):
        entry = found.get(oid) if oid else None
        identities.append((entry[0], entry[1].get(number)) if entry and number in entry[1] else None)
    try:
        masker = masking.result_masker(identities, type_oids=types, formats=[0] * nfields)
        masked_rows, counts = masker.mask_rows(raw)
    except MaskingError:
        result.errors.append("The result could not be masked, so the gateway would withhold it.")
        return result
    result.counts = counts
    rules = [masking.column_rule(identity) for identity in identities]
    placeholders = _placeholders(masking)
    for index, name in enumerate(names):
        identity = identities[index]
        rule = rules[index]
        result.columns.append(
            {
                "name": _masked_message(masking, name),
                "identity": ".".join(p for p in identity if p) if identity else "",
                "rule": f"column rule {rule.glob.text}: {rule.render.method.value} as {rule.entity}"
                if rule is not None
                else "",
            }
        )
    for original, masked in zip(raw, masked_rows, strict=True):
        cells = []
        for index, (before, after) in enumerate(zip(original, masked, strict=True)):
            text = (
                None
                if after is None
                else (after.decode("utf-8", "replace") if isinstance(after, bytes) else after)
            )
            reasons: list[str] = []
            if before != after:
                rule = rules[index]
                if rule is not None:
                    reasons.append(f"column rule {rule.glob.text} ({rule.render.method.value})")
                else:
                    labels = [m.group(0) for m in placeholders.finditer(text or "")]
                    reasons.extend(f"content: {label}" for label in labels)
                    if text is None:
                        reasons.append("masked to NULL (not a text type)")
            cells.append(Cell(text, reasons))
        result.rows.append(cells)
    return result


def _placeholders(masking: MaskingPolicy) -> Any:
    import re

    return re.compile(placeholder_pattern(masking.labels))
