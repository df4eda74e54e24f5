"""Masking in the gateway: which masking policy a session gets, and column identities.

``masking_for(connection, groups)`` runs at login (ORM): the connection's binding for one
of the agent's groups, else its default binding, else ``settings.AIRLOCK_MASKING_DEFAULT``.
``CatalogLookup`` resolves the table OIDs of a RowDescription to names on a second
upstream connection, opened the first time a result needs it, so that column rules apply
by a column's identity (which survives ``AS``), never by the name the client sees.

The gateway's policies are compiled by ``engine``: the masking engine's compiled build
(``masking/policy.py`` with ``scanner.py`` and ``placeholders.py``, ``gateway/native.py``)
when it was built from the source in use, else ``masking.policy`` itself. Its classes are
the build's own: code here and in the relay calls their methods and never checks them
with ``isinstance`` against ``masking``'s.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from django.conf import settings

import masking.policy
import masking.scanner
import masking.triggerscan
from gateway import native
from gateway.postgres import protocol as pg
from gateway.postgres.upstream import UpstreamError, UpstreamTarget, connect_upstream
from masking import MaskingPolicy

if TYPE_CHECKING:
    from gateway.models import Connection
    from gateway.postgres.link import Link

log = logging.getLogger("airlock.gateway.masking")

engine = native.load(masking.policy)


def _install_trigger_check() -> None:
    """Put the C build of ``masking.triggerscan`` in front of the engine's RE2 scans, when it
    was built from the sources in use and written for the trigger in use."""
    built = native.load(masking.triggerscan)
    scanner = native.load(masking.scanner)
    if built is masking.triggerscan:
        return  # interpreted: the reference is RE2 itself, nothing to spare
    if getattr(built, "TRIGGER_SOURCE", None) != masking.triggerscan.TRIGGER_SOURCE:
        log.warning("the C trigger check was written for another trigger: RE2 scans alone")
        return
    scanner.use_trigger_check(built.shapes, built.dirty_spans)


_install_trigger_check()


class MaskingUnavailable(Exception):
    """The session's masking policy cannot be determined or compiled (the login is refused)."""


def hash_key() -> bytes:
    return str(settings.AIRLOCK_MASKING_HASH_KEY).encode()


_compiled: dict[tuple[int, int], MaskingPolicy] = {}


def compile_masking(policy_id: int, version: int, spec: dict[str, Any]) -> MaskingPolicy:
    """Compile a stored masking policy, once per version in this process."""
    key = (policy_id, version)
    compiled = _compiled.get(key)
    if compiled is None:
        compiled = engine.compile_policy(spec, hash_key=hash_key())
        if len(_compiled) > 512:
            _compiled.clear()
        _compiled[key] = compiled
    return compiled


_builtin: list[MaskingPolicy] = []


def masking_for(connection: Connection, groups: frozenset[str]) -> MaskingPolicy | None:
    """The masking (with group exemptions applied) for an agent in ``groups`` on ``connection``.

    None when masking is off. Raises ``MaskingUnavailable`` when the agent's groups have
    overrides naming different policies (ambiguous: refuse rather than guess) or the
    policy does not compile.
    """
    bindings = list(connection.masking_bindings.select_related("masking_policy", "group"))
    overrides = {b.masking_policy_id: b for b in bindings if b.group_id and b.group.name in groups}
    if len(overrides) > 1:
        names = sorted(b.masking_policy.name for b in overrides.values())
        raise MaskingUnavailable(
            f"the agent's groups select different masking policies on this connection ({', '.join(names)})"
        )
    chosen = next(iter(overrides.values()), None) or next((b for b in bindings if not b.group_id), None)
    try:
        if chosen is not None:
            policy = chosen.masking_policy
            return compile_masking(policy.pk, policy.version, policy.spec).for_groups(groups)
        if settings.AIRLOCK_MASKING_DEFAULT == "off":
            return None
        if not _builtin:
            _builtin.append(engine.compile_policy({}))
        return _builtin[0].for_groups(groups)
    except Exception as exc:
        raise MaskingUnavailable(f"the masking policy cannot be compiled: {exc}") from None


CATALOG_QUERY = (
    "SELECT c.oid, n.nspname, c.relname, a.attnum, a.attname"
    " FROM pg_catalog.pg_class c"
    " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
    " JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid"
    " WHERE c.oid = ANY('{{{oids}}}'::pg_catalog.oid[]) AND a.attnum > 0"
)


class CatalogLookup:
    """Looks table OIDs up on a connection of its own to the session's target."""

    def __init__(self, target: UpstreamTarget, *, max_message: int, wait_seconds: float) -> None:
        self.target = target
        self.max_message = max_message
        self.wait_seconds = wait_seconds
        self._link: Link | None = None
        self._lock = asyncio.Lock()

    async def resolve(self, oids: frozenset[int]) -> dict[int, tuple[str, dict[int, str]]]:
        """Table OID -> ("schema.table", {column number: column name}); raises on failure."""
        async with self._lock:
            return await asyncio.wait_for(self._resolve(oids), self.wait_seconds)

    async def _resolve(self, oids: frozenset[int]) -> dict[int, tuple[str, dict[int, str]]]:
        link = self._link
        if link is None or link.closed:
            upstream = await connect_upstream(
                self.target,
                {"application_name": "airlock catalog"},
                max_message=self.max_message,
                wait_seconds=self.wait_seconds,
            )
            link = self._link = upstream.link
        # OIDs are integers the server sent: formatted here, never client text.
        link.write(pg.query(CATALOG_QUERY.format(oids=",".join(str(int(o)) for o in sorted(oids)))))
        found: dict[int, tuple[str, dict[int, str]]] = {}
        error = ""
        while True:
            typ, body = await link.read_message()
            if typ == ord("D"):
                oid, schema, table, attnum, column = (
                    v.decode() if v is not None else "" for v in pg.parse_data_row(body)
                )
                entry = found.setdefault(int(oid), (f"{schema}.{table}", {}))
                entry[1][int(attnum)] = column
            elif typ == ord("E"):
                error = pg.parse_fields(body).get("M", "error")
            elif typ == ord("Z"):
                break
        if error:
            raise UpstreamError(f"catalog lookup failed: {error}")
        return found

    def close(self) -> None:
        if self._link is not None:
            if not self._link.closed:
                self._link.write(pg.message(b"X"))
            self._link.close()
            self._link = None
