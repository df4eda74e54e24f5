"""The relay of one authenticated PostgreSQL session, sans-I/O.

``Relay.from_client(chunk)`` returns the bytes to send upstream and ``from_server(chunk)``
the bytes to send to the client. In between it frames every client message (each
statement is a decision point), and follows the server's answers just enough to know
which answer belongs to which message: rows and command tags for the recording,
ParseComplete/BindComplete to know what a statement or portal name really refers to,
and ReadyForQuery to know where a batch ends. Server output is relayed in the chunks it
arrived in; only message headers are looked at, and the bodies of the few kinds needed.

How a denied statement is kept from running while the session behaves exactly as
PostgreSQL does after an error: in its place the server is sent a statement that is
certain to fail with a marker (a cast of the marker text to int4), and the server's
error for it is rewritten into SQLSTATE 42501 with the rule's message. In a simple Query
the statements after it are then skipped by the server; in the extended protocol the
rest of the batch up to Sync is, and an open transaction is aborted in both cases.
"""

from __future__ import annotations

import base64
import re
import secrets
import struct
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from gateway.postgres import protocol as pg
from gateway.postgres.copyout import CopyOut, copy_out
from gateway.postgres.protocol import ProtocolError
from gateway.postgres.sqltext import prepared_names_touched, split_statements
from gateway.postgres.values import hex_bytes, mask_param, param_text, text_param
from masking import MaskingError
from policies.sql import (
    UnsupportedStartupOption,
    apply_session_effects,
    forget_prepared,
    remember_prepared,
    startup_statements,
)
from policies.types import Action, Decision, Request

if TYPE_CHECKING:
    from masking import MaskingPolicy, ResultMasker
    from masking.policy import WirePlan

_U32 = struct.Struct("!I")
_U16 = struct.Struct("!H")
# Entries of each per-session cache (descriptions, maskers, recorded texts): a session runs
# a few shapes over and over; one that keeps making new ones starts its cache afresh.
_SESSION_CACHE_ENTRIES = 256
_K = TypeVar("_K")
_V = TypeVar("_V")


def _remember(cache: dict[_K, _V], key: _K, value: _V) -> None:
    """``cache[key] = value``, emptying ``cache`` first when it is full."""
    if len(cache) >= _SESSION_CACHE_ENTRIES:
        cache.clear()
    cache[key] = value


# Without a classification: statements that may rename or drop what the catalog cache knows.
_DDL = re.compile(r"\s*(ALTER|DROP|CREATE|COMMENT|DO|CALL|EXECUTE)\b", re.IGNORECASE)

# FIFO entry kinds: client messages that the server answers, in the order it answers them.
PARSE, BIND, DESCRIBE, EXECUTE, CLOSE, SYNC, QUERY, COPY_END = range(8)
_EFFECTS = (PARSE, BIND, CLOSE)

WRITE_OPERATIONS = frozenset({"write", "ddl", "dcl", "admin", "procedural"})
WRITE_BACK_REFUSED = (
    "this statement would write a masked placeholder (such as [EMAIL]) back into the database; "
    "Airlock refuses it so that masked values never replace real data"
)
MASKING_FAILED = "the result was withheld because Airlock could not mask it"

STARTUP_REVIEW_REFUSED = (
    "this startup setting needs a reviewer's approval, which cannot be asked before the session "
    "exists: connect without it and SET it in the session"
)
FUNCTION_CALL_REFUSED = (
    "the FunctionCall protocol message is not allowed through Airlock (it runs a function with no SQL "
    "text to inspect); call the function in a SELECT instead"
)


class Recorder(Protocol):
    """What the relay records through (``recordings.writer.SessionRecorder``)."""

    def append(self, kind: str, payload: dict[str, Any]) -> None: ...

    def open_statement(self, payload: dict[str, Any]) -> int: ...

    def complete(self, handle: int, result: dict[str, Any]) -> bool: ...


class Decider(Protocol):
    def request(
        self, statement: str, params: tuple[str | None, ...] = (), session: dict[str, Any] | None = None
    ) -> Request: ...

    def decide(self, request: Request) -> Decision: ...


class SessionEnded(Exception):
    """The server or client ended the session in an orderly way (reason in args[0])."""


class _Statement:
    """One decided statement, followed until its result is known."""

    __slots__ = (
        "columns",
        "copy",
        "copy_header",
        "copy_out",
        "copy_probe",
        "decision",
        "fields",
        "handle",
        "masked",
        "masker",
        "portal",
        "rows",
        "sample",
        "started",
        "text",
        "withheld",
    )

    def __init__(self, text: str, decision: Decision, started: float) -> None:
        self.text = text
        self.decision = decision
        self.started = started
        self.rows = 0
        # The recorder's handle of the statement event its result may join (0: none).
        self.handle = 0
        self.columns: list[tuple[str, int]] | None = None
        self.sample: list[list[Any]] = []
        # Masking: the RowDescription fields of a simple Query's result, the portal an
        # Execute runs, the result's masker, the values masked per entity, and why the
        # result is withheld (a masking failure: the agent gets an error, not the rows).
        self.fields: list[tuple[str, int, int, int, int]] | None = None
        self.portal: bytes | None = None
        self.masker: ResultMasker | None = None
        self.masked: dict[str, int] = {}
        self.withheld: str | None = None
        self.copy = False
        # COPY TO STDOUT under masking: what the statement copies (None: not read), whether
        # the probe describing its columns is still answering, and a header line to pass.
        self.copy_out: CopyOut | None = None
        self.copy_probe = False
        self.copy_header = False


# Plain classes rather than named tuples: compiled, they are made without a call through
# Python (a named tuple's ``__new__`` is a Python function), once or twice a statement.


class _PendingStatement:
    """A statement whose events are still to be recorded (``Relay.flush_records``)."""

    __slots__ = ("params", "record", "via")

    def __init__(self, record: _Statement, params: tuple[str | None, ...], via: str) -> None:
        self.record = record
        self.params = params
        self.via = via


class _PendingResult:
    """A statement's result still to be recorded (``Relay.flush_records``)."""

    __slots__ = ("payload", "record")

    def __init__(self, record: _Statement, payload: dict[str, Any]) -> None:
        self.record = record
        self.payload = payload


class _Entry:
    __slots__ = ("batch", "denial", "extra", "index", "kind", "name", "statements", "target", "value")

    def __init__(self, kind: int, batch: int) -> None:
        self.kind = kind
        self.batch = batch
        self.name = b""
        self.value: Any = None
        self.target = 0
        self.statements: list[_Statement] = []
        self.index = 0  # which statement of a Query the server is answering
        self.denial: Decision | None = None
        self.extra: Any = None


def _param_holds_placeholder(masking: MaskingPolicy, value: str) -> bool:
    """Whether a bound value holds a placeholder: in its text, or, shown in hex (binary,
    or bytea), in its bytes."""
    if masking.contains_placeholder(value):
        return True
    if not value.startswith("\\x"):
        return False
    raw = hex_bytes(value)
    return raw is not None and masking.contains_placeholder(raw)


def _small_integer(value: str) -> bool:
    """Whether ``value`` is a non-negative integer below a billion as PostgreSQL prints it
    (no sign, no leading zero): a subset of ``masking.scanner.entity_free_integer``, which
    no built-in detector matches, and the usual bound parameter."""
    return (
        0 < len(value) <= 9 and value.isascii() and value.isdigit() and (value[0] != "0" or len(value) == 1)
    )


class ReviewNeeded:
    """Returned in ``Relay.blocked`` when a statement waits for a reviewer."""

    __slots__ = ("decision", "request")

    def __init__(self, request: Request, decision: Decision) -> None:
        self.request = request
        self.decision = decision


CONFIRM = "confirm"  # ``blocked`` value: waiting for the server to confirm earlier batches


class _Held:
    """The decisions made so far for a client message that is waiting (review)."""

    __slots__ = ("decisions", "override", "records")

    def __init__(self) -> None:
        self.decisions: list[Decision] = []
        self.records: list[_Statement] = []
        self.override: Decision | None = None


class Relay:
    """Message-level state of one relayed session.

    >>> relay = Relay(decider, recorder, max_message=1 << 20, result_rows=20)  # doctest: +SKIP
    >>> upstream.write(relay.from_client(chunk))                                # doctest: +SKIP
    >>> client.write(relay.from_server(chunk))                                  # doctest: +SKIP

    When ``blocked`` is set after ``from_client``, the caller stops reading from the
    client: for ``CONFIRM`` it calls ``resume()`` once ``can_resume()`` (checked after
    server data); for a ``ReviewNeeded`` it calls ``resume_review(final_decision)``.
    """

    def __init__(
        self,
        decider: Decider,
        recorder: Recorder,
        *,
        max_message: int,
        result_rows: int,
        session_state: dict[str, Any] | None = None,
        clock: Callable[[], float] = time.perf_counter,
        masking: MaskingPolicy | None = None,
    ) -> None:
        self.decider = decider
        self.recorder = recorder
        self.max_message = max_message
        self.result_rows = result_rows
        self.clock = clock
        self.nonce = secrets.token_hex(8)
        self._marker = f"airlock_denied_{self.nonce}"
        self._marker_bytes = self._marker.encode()
        # Shared with the policy engine through Request.session.
        self.state: dict[str, Any] = session_state if session_state is not None else {}
        self.state.setdefault("transaction", "idle")
        # Statement and portal names as the server has confirmed them, and as they will be
        # once the messages in flight succeed (what decisions are made on).
        self._stmts: dict[bytes, tuple[str, tuple[int, ...]]] = {}
        self._portals: dict[bytes, tuple[str, tuple[str | None, ...]]] = {}
        self.statements: dict[bytes, str] = {}
        self._types: dict[bytes, tuple[int, ...]] = {}
        self.portals: dict[bytes, tuple[str, tuple[str | None, ...]]] = {}
        self._fifo: deque[_Entry] = deque()
        self._effects: deque[_Entry] = deque()
        self._batch = 0
        self._ignore_syncs = False
        self.defer_records = False
        self._later: list[Any] = []
        # The server skips what the client sends between an extended-protocol error and
        # the next Sync (docs 55.2.3); True while it does and that Sync has not come yet.
        self._discarding = False
        self._cbuf = bytearray()
        self._cneed = 0
        self._sbuf = bytearray()
        self._sneed = 0
        self._skip = 0
        self._last_columns: list[tuple[str, int]] | None = None
        self._held: _Held | None = None
        self.blocked: str | ReviewNeeded | None = None
        self.ended: str | None = None
        self.parameters: dict[str, str] = {}
        # Masking (None: off). Column identities come from a catalog of table OIDs that
        # the session fills on request: ``needs_catalog`` holds the OIDs to look up while
        # server output waits; ``supply_catalog`` answers.
        self.masking = masking
        self.uses_identity = masking is not None and masking.uses_column_identity
        self.catalog: dict[int, tuple[str, dict[int, str]]] = {}
        self._unresolved: set[int] = set()
        self.needs_catalog: frozenset[int] | None = None
        self._maskers: dict[Any, ResultMasker] = {}
        # A prepared statement's text as recorded (masked), by its text: each Execute of it
        # records the same text, which is masked once (``_mask_for_record``).
        self._recorded_texts: dict[str, str] = {}
        # The masker of a parsed description (``_row_fields`` hands out the same list for
        # the same RowDescription): (id, formats) -> (that list, kept alive, its masker).
        self._described: dict[tuple[int, Any], tuple[list[tuple[str, int, int, int, int]], ResultMasker]] = {}
        self._row_fields_seen: dict[bytes, list[tuple[str, int, int, int, int]]] = {}
        self._stmt_fields: dict[bytes, list[tuple[str, int, int, int, int]] | None] = {}
        self._portal_fields: dict[bytes, list[tuple[str, int, int, int, int]] | None] = {}
        self._portal_formats: dict[bytes, tuple[int, ...]] = {}
        # The statement each portal was bound from, with that statement's confirmed
        # definition then (``_described_portal``).
        self._portal_source: dict[bytes, tuple[bytes, Any]] = {}
        self._startup_effects: list[tuple[str, ...]] = []
        # Told when a statement's outcome is known: (its decision, succeeded, command tag or
        # "ERROR <SQLSTATE>"). The approvals machinery reports the run of an approved one.
        self.on_statement_done: Callable[[Decision, bool, str], None] | None = None

    # --- before the first message --------------------------------------------------------

    def judge_startup(self, parameters: dict[str, str]) -> Decision | None:
        """Decide on the startup packet's settings as the ``SET`` statements they amount to.

        A startup parameter sets a run-time setting before any statement is sent (SQL-10),
        so each is judged like the ``SET`` it amounts to (``policies.sql.startup_statements``)
        and recorded. Returns the first decision that is not an allow (the login must be
        refused: there is no session yet to hold a review in), or None.
        """
        try:
            statements = startup_statements(parameters)
        except UnsupportedStartupOption as exc:
            return Decision(action=Action.DENY, rule=None, message=str(exc))
        scratch: dict[str, Any] = {}
        for text in statements:
            decision = self.decider.decide(self.decider.request(text, (), scratch))
            if decision.action is Action.REVIEW:
                decision = Decision(
                    action=Action.DENY,
                    rule=decision.rule,
                    message=STARTUP_REVIEW_REFUSED,
                    policy=decision.policy,
                    policy_version=decision.policy_version,
                )
            self._record_statement(text, (), decision, "startup")
            if decision.action is not Action.ALLOW:
                return decision
            self._startup_effects.extend(decision.session_effects)
        return None

    def seed_search_path(self, schemas: tuple[str, ...] | None) -> None:
        """Start the engine's ``search_path`` from the server's own (``current_schemas``).

        The server's path already holds what the startup packet set; the judged startup
        effects are added as well (the engine's path only grows). ``None``: the server was
        not asked, the engine starts from its default. An empty path (no schema of it
        exists) becomes "any schema": unqualified names are then never taken for known ones.
        """
        if schemas is not None:
            self.state["search_path"] = tuple(schemas) or ("*",)
        apply_session_effects(self.state, self._startup_effects)

    # --- client -> server ----------------------------------------------------------------

    def from_client(self, data: bytes) -> bytes:
        if self._later:
            self.flush_records()
        if self._cbuf or self.blocked is not None:
            self._cbuf += data
            if self.blocked is not None or len(self._cbuf) < self._cneed:
                return b""
            data = bytes(self._cbuf)
            self._cbuf.clear()
        return self._client_messages(data)

    def busy(self) -> bool:
        """True while the server owes answers or a statement waits (the session is not idle)."""
        return bool(self._fifo) or self.blocked is not None

    def buffered_client_bytes(self) -> int:
        return len(self._cbuf)

    def client_at_message_boundary(self) -> bool:
        """False while part of a large server message has been passed to the client and the
        rest has not: nothing else may be written to the client until it has."""
        return self._skip == 0

    def can_resume(self) -> bool:
        return self.blocked == CONFIRM and not self._earlier_effects_pending()

    def resume(self) -> bytes:
        """Continue with buffered client messages after a CONFIRM hold."""
        self.blocked = None
        data = bytes(self._cbuf)
        self._cbuf.clear()
        return self._client_messages(data)

    def resume_review(self, decision: Decision) -> bytes:
        """Continue after a review with the final decision for the held statement."""
        if self._held is None or not isinstance(self.blocked, ReviewNeeded):
            raise RuntimeError("no statement is waiting for a review")
        self._held.override = decision
        self.blocked = None
        data = bytes(self._cbuf)
        self._cbuf.clear()
        return self._client_messages(data)

    def _client_messages(self, data: bytes) -> bytes:
        out: list[bytes] = []
        run = 0
        pos = 0
        n = len(data)
        unpack = _U32.unpack_from
        self._cneed = 0
        while n - pos >= 5:
            typ = data[pos]
            length = unpack(data, pos + 1)[0]
            if length < 4:
                raise ProtocolError(f"invalid message length {length}")
            if length > self.max_message:
                raise pg.MessageTooLarge(f"message of {length} bytes exceeds the limit of {self.max_message}")
            end = pos + 1 + length
            if end > n:
                self._cneed = end - pos
                break
            if typ == pg.MSG_COPY_DATA:
                pos = end
                continue
            try:
                replacement = self._client_message(typ, data[pos + 5 : end])
            except (struct.error, IndexError, ValueError) as exc:
                raise ProtocolError(f"malformed {chr(typ)!r} message: {exc}") from None
            if isinstance(replacement, _Hold):
                break
            if replacement is not None:
                out.append(data[run:pos])
                out.append(replacement)
                run = end
            pos = end
        if pos < n:
            self._cbuf += data[pos:]
        if run == 0 and pos == n:
            return data
        out.append(data[run:pos])
        return b"".join(out)

    def _client_message(self, typ: int, body: bytes) -> bytes | _Hold | None:
        if self._discarding:
            return self._while_discarding(typ, body)
        if typ == pg.MSG_BIND:
            self._on_bind(body)
            return None
        if typ == pg.MSG_EXECUTE:
            return self._on_execute(body)
        if typ == pg.MSG_SYNC:
            if not self._ignore_syncs:
                self._push(SYNC)
            self._batch += 1
            return None
        if typ == pg.MSG_QUERY:
            return self._on_query(body)
        if typ == pg.MSG_PARSE:
            name, raw, types = pg.parse_parse(body)
            text = _decode(raw)
            entry = self._push(PARSE)
            entry.name = name
            entry.value = (text, types)
            self._effects.append(entry)
            # Inside a batch the newest definition wins: if the server refuses this Parse
            # (name taken), it skips the rest of the batch, so nothing runs on it anyway.
            self.statements[name] = text
            self._types[name] = types
            remember_prepared(self.state, name.decode("utf-8", "replace"), text)
            return None
        if typ == pg.MSG_DESCRIBE:
            kind, name = pg.parse_name_after_kind(body)
            entry = self._push(DESCRIBE)
            entry.target = kind
            entry.name = name
            return None
        if typ == pg.MSG_CLOSE:
            kind, name = pg.parse_name_after_kind(body)
            entry = self._push(CLOSE)
            entry.name = name
            entry.target = kind
            self._effects.append(entry)
            self._apply_close(self.statements, self.portals, kind, name)
            if kind == ord("S"):
                self._types.pop(name, None)
                forget_prepared(self.state, name.decode("utf-8", "replace"))
            return None
        if typ == pg.MSG_FLUSH:
            return None
        if typ in (pg.MSG_COPY_DONE, pg.MSG_COPY_FAIL):
            self._on_copy_end()
            return None
        if typ == pg.MSG_TERMINATE:
            self.ended = "client disconnected"
            return None
        if typ == pg.MSG_FUNCTION_CALL:
            return self._on_function_call(body)
        raise ProtocolError(f"invalid frontend message type {chr(typ)!r}")

    def _while_discarding(self, typ: int, body: bytes) -> bytes | _Hold | None:
        """A message sent after the server's error in an extended-protocol batch, before the
        Sync that ends the batch: the server reads and discards it unanswered (docs 55.2.3),
        so nothing is expected of it and it defines nothing. Sync and Terminate end the
        skipping there as here, and CopyDone/CopyFail keep the copy's Sync bookkeeping. What
        would run if the server did not skip it is replaced by the marker statement, which
        fails: a mistaken belief that the server skips never lets a statement through
        undecided, it puts the session out of step (a protocol error that ends it)."""
        if typ in (pg.MSG_SYNC, pg.MSG_TERMINATE):
            self._discarding = False
            return self._client_message(typ, body)
        if typ in (pg.MSG_COPY_DONE, pg.MSG_COPY_FAIL):
            self._on_copy_end()
            return None
        if typ == pg.MSG_EXECUTE:
            return pg.parse_message(self._marker_bytes, self._marker_sql().encode())
        if typ in (pg.MSG_QUERY, pg.MSG_FUNCTION_CALL):
            return pg.query(self._marker_sql())
        if typ in (pg.MSG_PARSE, pg.MSG_BIND, pg.MSG_DESCRIBE, pg.MSG_CLOSE, pg.MSG_FLUSH):
            return None
        raise ProtocolError(f"invalid frontend message type {chr(typ)!r}")

    def _on_copy_end(self) -> None:
        if self._ignore_syncs:
            self._ignore_syncs = False
        else:
            self._push(COPY_END)

    def _push(self, kind: int) -> _Entry:
        entry = _Entry(kind, self._batch)
        self._fifo.append(entry)
        return entry

    def _earlier_effects_pending(self) -> bool:
        # Decisions are made on the names as they will be once the messages in flight
        # succeed. Inside one batch that is safe (a failure skips the rest of the batch);
        # across batches it is not (a failed Parse in batch 1 leaves the old statement in
        # place for batch 2), so a decision waits for earlier batches to be confirmed.
        return bool(self._effects) and self._effects[0].batch < self._batch

    def _on_query(self, body: bytes) -> bytes | _Hold | None:
        if not body or body[-1] != 0:
            raise ProtocolError("Query text is not NUL-terminated")
        if self._held is None and self._earlier_effects_pending():
            self.blocked = CONFIRM
            return _HOLD
        text = _decode(body[:-1])
        spans = split_statements(text)
        held = self._held or _Held()
        replacement: bytes | None = None
        for index in range(len(held.decisions), len(spans)):
            start, end = spans[index]
            statement = text[start:end]
            request = self.decider.request(statement, (), self.state)
            decision = self._guard_write_back(held.override or self.decider.decide(request), statement, ())
            held.override = None
            if decision.action is Action.REVIEW:
                self._held = held
                self.blocked = ReviewNeeded(request, decision)
                return _HOLD
            held.decisions.append(decision)
            held.records.append(self._record_statement(statement, (), decision, "simple"))
            if decision.action is not Action.ALLOW:
                # PostgreSQL stops a simple Query at its first error: what followed the
                # denied statement would never run, so it is not sent.
                replacement = pg.query(text[:start] + self._marker_sql())
                break
            self._after_allowed(statement, decision)
        self._held = None
        entry = self._push(QUERY)
        entry.statements = held.records
        if replacement is not None:
            entry.denial = held.decisions[-1]
        elif self.masking is not None:
            replacement = self._copy_probes(text, spans, held.records)
        self._batch += 1
        return replacement

    def _copy_probes(
        self, text: str, spans: list[tuple[int, int]], records: list[_Statement]
    ) -> bytes | None:
        """Under column rules, each ``COPY ... TO STDOUT`` of a Query is preceded, in the
        same Query, by a probe whose RowDescription identifies the copied columns (COPY
        output has none). The probe's messages never reach the client. None: no change."""
        pieces: list[str] = []
        last = 0
        # (Indexed: ``zip(..., strict=False)`` is a call with a keyword, the slow kind.)
        for index in range(min(len(records), len(spans))):
            record = records[index]
            start, end = spans[index]
            # The statement as the client sent it (the record's text is masked for the record).
            found = copy_out(text[start:end])
            record.copy_out = found
            if found is None or not self.uses_identity or found.probe is None or found.format is None:
                continue
            record.copy_probe = True
            pieces.append(text[last:start])
            pieces.append(found.probe + ";\n")
            last = start
        if not pieces:
            return None
        pieces.append(text[last:])
        return pg.query("".join(pieces))

    def _on_function_call(self, body: bytes) -> bytes:
        oid = _U32.unpack_from(body, 0)[0] if len(body) >= 4 else 0
        decision = Decision(action=Action.DENY, rule="function-call-message", message=FUNCTION_CALL_REFUSED)
        record = self._record_statement(
            f"<FunctionCall message, function oid {oid}>", (), decision, "function"
        )
        entry = self._push(QUERY)
        entry.statements = [record]
        entry.denial = decision
        self._batch += 1
        return pg.query(self._marker_sql())

    def _on_bind(self, body: bytes) -> None:
        result_formats: tuple[int, ...] = ()
        if self.masking is not None:
            portal, statement, values, formats, result_formats = pg.parse_bind_all(body)
        else:
            portal, statement, values, formats = pg.parse_bind(body)
        text = self.statements.get(statement)
        if text is None:
            # A statement prepared with SQL PREPARE (or one that does not exist): the
            # policy judges it as the EXECUTE it amounts to.
            text = "EXECUTE " + _quote_ident(statement.decode("utf-8", "replace"))
        if 1 not in formats:
            params = tuple([text_param(v) for v in values])  # every value in the text format
        else:
            types = self._types.get(statement, ())
            params = tuple(
                param_text(v, f == 1, types[i] if i < len(types) else 0)
                for i, (v, f) in enumerate(zip(values, formats, strict=True))
            )
        entry = self._push(BIND)
        entry.name = portal
        entry.value = (text, params)
        if self.masking is not None:
            entry.extra = (statement, result_formats)
        self._effects.append(entry)
        self.portals[portal] = (text, params)
        return None

    def _on_execute(self, body: bytes) -> bytes | _Hold | None:
        portal, max_rows = pg.parse_execute(body)
        if self._held is None and self._earlier_effects_pending():
            self.blocked = CONFIRM
            return _HOLD
        bound = self.portals.get(portal)
        if bound is None:
            # Not a portal we saw bound: a cursor opened with SQL DECLARE, which
            # Execute fetches from.
            statement = "FETCH FORWARD " + (str(max_rows) if max_rows > 0 else "ALL")
            statement += " FROM " + _quote_ident(portal.decode("utf-8", "replace"))
            params: tuple[str | None, ...] = ()
        else:
            statement, params = bound
        held = self._held or _Held()
        request = self.decider.request(statement, params, self.state)
        decision = self._guard_write_back(held.override or self.decider.decide(request), statement, params)
        if decision.action is Action.REVIEW:
            self._held = held
            self.blocked = ReviewNeeded(request, decision)
            return _HOLD
        self._held = None
        record = self._record_statement(statement, params, decision, "extended")
        record.portal = portal
        entry = self._push(EXECUTE)
        entry.name = portal
        entry.statements = [record]
        if decision.action is not Action.ALLOW:
            entry.denial = decision
            # A named Parse that fails leaves every existing statement alone, unlike an
            # unnamed one, which would drop the client's unnamed statement first.
            return pg.parse_message(self._marker_bytes, self._marker_sql().encode())
        self._after_allowed(statement, decision)
        return None

    def _guard_write_back(
        self, decision: Decision, statement: str, params: tuple[str | None, ...]
    ) -> Decision:
        """Deny a statement that would write a masked placeholder back into the database."""
        masking = self.masking
        if masking is None or decision.action is Action.DENY:
            return decision
        operations = decision.classification.get("operations")
        # A statement that writes nothing cannot write a placeholder back (the usual
        # read: its text and parameters are not looked at). Without a classification (no
        # policy engine) the statement may write: fail closed.
        if operations is not None and not WRITE_OPERATIONS.intersection(operations):
            return decision
        try:
            found = masking.contains_placeholder(statement) or any(
                p is not None and _param_holds_placeholder(masking, p) for p in params
            )
        except MaskingError:
            found = True  # cannot tell: treat as holding one
        if not found:
            return decision
        return Decision(
            action=Action.DENY,
            rule="masking-write-back",
            message=WRITE_BACK_REFUSED,
            policy=decision.policy,
            policy_version=decision.policy_version,
            classification=decision.classification,
        )

    def _after_allowed(self, statement: str, decision: Decision) -> None:
        operations = decision.classification.get("operations")
        if self.catalog and ("ddl" in operations if operations is not None else _DDL.match(statement)):
            # A table or column renamed or dropped: look identities up afresh.
            self.catalog.clear()
            self._maskers.clear()
            self._described.clear()
        if decision.session_effects:
            # Applied when the statement is sent rather than when it succeeds: the
            # engine's session state only ever grows, so this errs on the strict side.
            apply_session_effects(self.state, decision.session_effects)
        names = prepared_names_touched(statement)
        if names is None:
            self._forget_statement_names()
        else:
            for name in names:
                raw = name.encode()
                self.statements.pop(raw, None)
                self._types.pop(raw, None)
                self._stmts.pop(raw, None)

    def _marker_sql(self) -> str:
        return f"SELECT '{self._marker}'::pg_catalog.int4"

    def _forget_statement_names(self) -> None:
        # SQL PREPARE/DEALLOCATE/DISCARD share the namespace of protocol statements:
        # what we knew about the names may no longer hold.
        self.statements.clear()
        self._types.clear()
        self._stmts.clear()

    # --- recording ----------------------------------------------------------------------
    #
    # With ``defer_records`` (the session sets it) events are queued in order and handed to
    # the recorder by ``flush_records``, which the session calls after writing what the
    # relay returned: a statement's recording (masking its text and parameters, building
    # and snapshotting the events) then runs while the server works on the statement, not
    # before the statement goes out. Until its events are flushed a statement's ``text``
    # is the raw text; everything that records it runs after a flush (``from_client``
    # and ``from_server`` flush first).

    def _record(self, kind: str, payload: dict[str, Any]) -> None:
        if self.defer_records:
            self._later.append((kind, payload))
        else:
            self.recorder.append(kind, payload)

    def flush_records(self) -> None:
        """Hand the queued events to the recorder, in order."""
        later = self._later
        if not later:
            return
        self._later = []
        append = self.recorder.append
        for item in later:
            if type(item) is _PendingStatement:
                self._statement_events(item.record, item.params, item.via)
            elif type(item) is _PendingResult:
                self._result_event(item.record, item.payload)
            else:
                append(*item)

    def _record_statement(
        self, text: str, params: tuple[str | None, ...], decision: Decision, via: str
    ) -> _Statement:
        record = _Statement(text, decision, self.clock())
        if self.defer_records:
            self._later.append(_PendingStatement(record, params, via))
        else:
            self._statement_events(record, params, via)
        return record

    def _statement_events(self, record: _Statement, params: tuple[str | None, ...], via: str) -> None:
        decision = record.decision
        shown_text, shown_params = self._mask_for_record(record.text, params, via == "extended")
        record.text = shown_text
        payload: dict[str, Any] = {
            "text": shown_text,
            "params": shown_params,
            "protocol": via,
            "action": decision.action.value,
            "rule": decision.rule,
            # Which policy version decided (an open session follows new versions).
            "policy": decision.policy,
            "policy_version": decision.policy_version,
        }
        if decision.observed:
            # Observe rules that matched: what they would have done, enforced nothing.
            payload["observed"] = list(decision.observed)
        if decision.action is Action.ALLOW:
            # Its result usually joins it: one event (``SessionRecorder.open_statement``).
            record.handle = self.recorder.open_statement(payload)
            return
        append = self.recorder.append
        append("statement", payload)
        append(
            "decision",
            {
                "action": str(decision.action),
                "rule": decision.rule,
                "policy": decision.policy,
                "policy_version": decision.policy_version,
                "message": decision.message,
                "statement": shown_text,
            },
        )

    def _mask_for_record(
        self, text: str, params: tuple[str | None, ...], prepared: bool
    ) -> tuple[str, list[str | None]]:
        masking = self.masking
        if masking is None:
            return text, list(params)
        try:
            if prepared:
                # The session's masking never changes, so neither does a text's masked form.
                cached = self._recorded_texts.get(text)
                if cached is None:
                    cached = masking.mask_text(text)[0]
                    _remember(self._recorded_texts, text, cached)
                shown = cached
            else:
                shown = masking.mask_text(text)[0]  # a Query's text is new each time
            # Without entities of the policy's own a small integer holds nothing to mask
            # (what ``Scanner.mask_into`` finds first, without the calls down to it).
            plain = not masking.has_custom
            return shown, [
                p if p is None or (plain and _small_integer(p)) else mask_param(p, self._mask_str)
                for p in params
            ]
        except MaskingError:
            return "<statement withheld: it could not be masked>", ["<withheld>" for _ in params]

    def _mask_str(self, text: str) -> str:
        """``text`` masked by the session's masking (which the caller knows is on)."""
        assert self.masking is not None  # noqa: S101
        return self.masking.mask_text(text)[0]

    def _mask_text(self, text: str) -> str:
        """Free text headed for the agent or the recording, masked (withheld if that fails)."""
        masking = self.masking
        if masking is None or not text:
            return text
        try:
            return masking.mask_text(text)[0]
        except MaskingError:
            return "<withheld: it could not be masked>"

    @staticmethod
    def _apply_close(
        stmts: dict[bytes, Any],
        portals: dict[bytes, tuple[str, tuple[str | None, ...]]],
        kind: int,
        name: bytes,
    ) -> None:
        if kind == ord("S"):
            stmts.pop(name, None)
        else:
            portals.pop(name, None)

    def _described_types(self, name: bytes, types: tuple[int, ...]) -> None:
        """The server's parameter types for statement ``name``, from its description.

        A client that leaves the types to the server (asyncpg) describes the statement,
        then sends binary values for the types the server named: without them here, its
        values would be judged and recorded as hex, out of reach of the write-back guard
        and the recording's masking. They apply to the statement as the server knows it
        (the description answers the definition confirmed before it); the client's view
        takes them unless a Parse or Close of that name is still on its way to the server.
        """
        confirmed = self._stmts.get(name)
        if confirmed is None:
            return
        self._stmts[name] = (confirmed[0], types)
        for entry in self._effects:
            if entry.name == name and (
                entry.kind == PARSE or (entry.kind == CLOSE and entry.target == ord("S"))
            ):
                return
        self._types[name] = types

    def _store_description(
        self, target: int, name: bytes, fields: list[tuple[str, int, int, int, int]]
    ) -> None:
        """The columns a Describe of statement or portal ``name`` answered (masking's)."""
        if target != ord("P"):
            self._stmt_fields[name] = fields
            return
        self._portal_fields[name] = fields
        self._described_portal(name, fields)

    def _described_portal(self, portal: bytes, fields: list[tuple[str, int, int, int, int]]) -> None:
        """A portal's description also describes the statement it was bound from.

        pgjdbc, once a statement is used often enough, parses it as a named statement and
        describes the portal of its first run, not the statement; later runs bind and
        execute with no description at all. Their results are masked by the columns the
        first run's description gave, as long as the statement is still the definition
        that portal was bound from (a redefinition's ParseComplete drops what was known).
        """
        source = self._portal_source.get(portal)
        if source is None or source[1] is None:
            return
        statement, definition = source
        if self._stmts.get(statement) is definition and statement not in self._stmt_fields:
            self._stmt_fields[statement] = fields

    def _rebuild_tentative(self) -> None:
        self.statements = {name: text for name, (text, _) in self._stmts.items()}
        self._types = {name: types for name, (_, types) in self._stmts.items()}
        self.portals = dict(self._portals)
        for entry in self._effects:
            if entry.kind == PARSE:
                self.statements[entry.name], self._types[entry.name] = entry.value
            elif entry.kind == BIND:
                self.portals[entry.name] = entry.value
            else:
                self._apply_close(self.statements, self.portals, entry.target, entry.name)

    # --- server -> client ----------------------------------------------------------------

    def _waiting_for_catalog(self) -> bool:
        # A method, not the test inline: mypy keeps ``needs_catalog`` narrowed to None
        # across the calls that set it, and the compiled relay checks what mypy believes.
        return self.needs_catalog is not None

    def from_server(self, data: bytes) -> bytes:
        if self._later:
            self.flush_records()
        if self.needs_catalog is not None:
            # Output waits while column identities are looked up.
            self._sbuf += data
            return b""
        if self._skip:
            # The rest of a large DataRow/CopyData passes through unread.
            if len(data) <= self._skip:
                self._skip -= len(data)
                return data
            head = data[: self._skip]
            data = data[self._skip :]
            self._skip = 0
            return head + self.from_server(data)
        if self._sbuf:
            self._sbuf += data
            if len(self._sbuf) < self._sneed:
                return b""
            data = bytes(self._sbuf)
            self._sbuf.clear()
        out: list[bytes] = []
        run = 0
        pos = 0
        n = len(data)
        unpack = _U32.unpack_from
        while n - pos >= 5:
            typ = data[pos]
            length = unpack(data, pos + 1)[0]
            if length < 4:
                raise ProtocolError(f"server sent an invalid message length {length}")
            end = pos + 1 + length
            if self.masking is not None and typ in (68, 100, 84):
                # Masking reads every row (and COPY line) whole before any of it goes on.
                if end > n:
                    if length > self.max_message:
                        raise pg.MessageTooLarge(f"server message of {length} bytes exceeds the limit")
                    break
                if typ == 84 and self.uses_identity and self._needs_lookup(data[pos + 5 : end]):
                    break
                if typ != 84:
                    try:
                        stop, replacement = (
                            self._mask_data_rows(data, pos, n) if typ == 68 else self._mask_copy(data, pos, n)
                        )
                    except (struct.error, IndexError, ValueError) as exc:
                        raise ProtocolError(
                            f"malformed {chr(typ)!r} message from the server: {exc}"
                        ) from None
                    if replacement is not None:
                        out.append(data[run:pos])
                        out.append(replacement)
                        run = stop
                    pos = stop
                    continue
            if typ == 68:  # 'D' DataRow: the bulk of any result
                record = _current(self._fifo[0] if self._fifo else None)
                if record is not None:
                    if len(record.sample) < self.result_rows:
                        if end > n:
                            if length <= _SAMPLE_LIMIT:
                                break  # wait for the whole row to record it
                            record.sample.append(["<row too large to record>"])
                        else:
                            record.sample.append(self._sample_row(data[pos + 5 : end], record))
                    record.rows += 1
                if end > n:
                    self._skip = end - n
                    pos = n
                    break
                pos = end
                continue
            if typ == 100:  # 'd' CopyData
                if end > n:
                    self._skip = end - n
                    pos = n
                    break
                pos = end
                continue
            if end > n:
                if length > self.max_message:
                    raise pg.MessageTooLarge(f"server message of {length} bytes exceeds the limit")
                break
            try:
                replacement = self._server_message(typ, data, pos + 5, end)
            except (struct.error, IndexError, ValueError) as exc:
                raise ProtocolError(f"malformed {chr(typ)!r} message from the server: {exc}") from None
            if replacement is not None:
                out.append(data[run:pos])
                out.append(replacement)
                run = end
            pos = end
        if pos < n:
            self._sbuf += data[pos:]
            self._sneed = 5 if n - pos < 5 else 1 + unpack(data, pos + 1)[0]
            if self._waiting_for_catalog():
                self._sneed = 0
        if run == 0 and pos == n:
            return data
        out.append(data[run:pos])
        return b"".join(out)

    # --- masking ---------------------------------------------------------------------------

    def _row_fields(self, body: bytes) -> list[tuple[str, int, int, int, int]]:
        """The fields of a RowDescription, parsed once per distinct description (a session
        runs the same few queries over and over)."""
        fields = self._row_fields_seen.get(body)
        if fields is None:
            fields = pg.parse_row_fields(body)
            _remember(self._row_fields_seen, body, fields)
        return fields

    def _needs_lookup(self, body: bytes) -> bool:
        """Whether a RowDescription names tables whose identity is not known yet (if so,
        output stops here until ``supply_catalog``)."""
        missing = {
            table
            for _, table, _, _, _ in self._row_fields(body)
            if table and table not in self.catalog and table not in self._unresolved
        }
        if not missing:
            return False
        self.needs_catalog = frozenset(missing)
        return True

    def supply_catalog(self, found: dict[int, tuple[str, dict[int, str]]] | None) -> None:
        """Answer ``needs_catalog``: table OID -> (schema.table, {column number: name}); None
        when the lookup failed (results over those tables are then withheld). Then call
        ``from_server(b"")`` to go on."""
        wanted = self.needs_catalog or frozenset()
        self.needs_catalog = None
        if found is None:
            self._unresolved |= wanted
            return
        self.catalog.update(found)
        for table in wanted.difference(found):
            # Not a table any more (dropped): its columns have no identity.
            self.catalog[table] = ("", {})

    def _identities(
        self, fields: list[tuple[str, int, int, int, int]]
    ) -> list[tuple[str, str] | None] | None:
        """Column identities of a result; None when one cannot be resolved (fail closed)."""
        if not self.uses_identity:
            return [None] * len(fields)
        identities: list[tuple[str, str] | None] = []
        for _, table, attnum, _, _ in fields:
            if not table:
                identities.append(None)
                continue
            entry = self.catalog.get(table)
            if entry is None:
                return None
            name, columns = entry
            column = columns.get(attnum) if name else None
            identities.append((name, column) if column is not None else None)
        return identities

    def _build_masker(
        self,
        record: _Statement,
        fields: list[tuple[str, int, int, int, int]] | None,
        formats: tuple[int, ...] | None,
        ncols: int | None = None,
    ) -> None:
        masking = self.masking
        if masking is None or record.masker is not None or record.withheld:
            return
        known = None if fields is None else (id(fields), formats)
        described = None if known is None else self._described.get(known)
        if described is not None and described[0] is fields:
            # The same description again (a session repeats its queries): nothing to look up.
            record.masker = described[1]
            return
        if fields is None:
            # A portal of a statement the client never described (SQL PREPARE, then Bind by
            # name): without column rules, content detection needs only the values, as
            # long as every column is in text format; anything else is withheld.
            if ncols is None or self.uses_identity or any(formats or ()):
                record.withheld = "the result's columns were not described"
                return
            fields = [("", 0, 0, 0, 0)] * ncols
        identities = self._identities(fields)
        if identities is None:
            record.withheld = "the result's columns could not be identified"
            return
        types = tuple(f[3] for f in fields)
        fmts = tuple(f[4] for f in fields) if formats is None else formats
        key = (tuple(identities), types, fmts)
        masker = self._maskers.get(key)
        if masker is None:
            try:
                masker = masking.result_masker(identities, type_oids=types, formats=fmts)
            except MaskingError:
                record.withheld = "the result could not be masked"
                return
            _remember(self._maskers, key, masker)
        if known is not None and fields is not None:
            _remember(self._described, known, (fields, masker))
        record.masker = masker

    def _record_for_rows(self) -> tuple[_Statement | None, _Entry | None]:
        entry = self._fifo[0] if self._fifo else None
        return _current(entry), entry

    def _mask_data_rows(self, data: bytes, pos: int, n: int) -> tuple[int, bytes | None]:
        """Mask the run of whole DataRows starting at ``pos``: (where the run ends, the
        bytes to send instead, or None when nothing changed)."""
        record, entry = self._record_for_rows()
        if record is None or entry is None:
            raise ProtocolError("data rows out of step with the client's messages")
        if entry.kind == EXECUTE and record.masker is None and not record.withheld:
            portal = record.portal or b""
            # The first row's number of values (the caller saw its header whole).
            ncols = _U16.unpack_from(data, pos + 5)[0] if n - pos >= 7 else None
            self._build_masker(
                record, self._portal_fields.get(portal), self._portal_formats.get(portal, ()), ncols
            )
        elif record.masker is None and not record.withheld:
            self._build_masker(record, record.fields, None)
        masker = record.masker
        if masker is not None and masker.wire_plan is not None:
            done = self._mask_wire(record, masker, masker.wire_plan, data, pos, n)
            if done is not None:
                return done
        rows, bounds = pg.parse_data_rows(data, pos, n)
        pos = bounds[-1]
        record.rows += len(rows)
        if masker is None:
            return pos, b""  # withheld: no row goes on
        if masker.passes_through and set(map(len, rows)) == {masker.width}:
            # Nothing in this shape can be masked (an int4 column under content detection):
            # the rows go on as they came.
            if len(record.sample) < self.result_rows:
                record.sample.extend(self._sample_rows(rows[: self.result_rows - len(record.sample)], record))
            return pos, None
        try:
            masked, counts = masker.mask_rows(rows)
        except MaskingError:
            record.withheld = "the result could not be masked"
            return pos, b""
        if len(record.sample) < self.result_rows:
            record.sample.extend(self._sample_rows(masked[: self.result_rows - len(record.sample)], record))
        if not counts:
            return pos, None
        self._add_counts(record, counts)
        # Runs of rows that masking left alone go on as they came; the others are encoded.
        parts: list[bytes] = []
        pending: list[tuple[Any, ...]] = []  # changed rows, encoded together
        run = 0  # where the current run of unchanged rows starts
        for index, (original, new) in enumerate(zip(rows, masked, strict=True)):
            if tuple(original) == new:
                continue
            if run < index:
                if pending:
                    parts.append(pg.data_rows(pending))
                    pending = []
                parts.append(data[bounds[run] : bounds[index]])
            pending.append(new)
            run = index + 1
        if pending:
            parts.append(pg.data_rows(pending))
        if run < len(rows):
            parts.append(data[bounds[run] : bounds[-1]])
        return pos, b"".join(parts)

    def _mask_wire(
        self, record: _Statement, masker: ResultMasker, plan: WirePlan, data: bytes, pos: int, n: int
    ) -> tuple[int, bytes | None] | None:
        """``_mask_data_rows`` on the fast path (``gateway.postgres.wirerows``): the rows
        read, masked and written where they lie, without an object per value; None when the
        run or the result needs the general path (which then does all of it)."""
        want = self.result_rows - len(record.sample)
        if want > 0:
            columns = record.columns or self._last_columns
            if columns is None or len(columns) != masker.width or any(c[1] for c in columns):
                return None  # the sample records these values in other forms
        scanned = pg.scan_rows(data, pos, n, masker.width, plan.fetch, plan.scan, plan.quiet)
        if scanned is None:
            return None
        stop, count, fetched, joined, nulls, looked = scanned
        try:
            masked = masker.mask_columns(fetched, joined, nulls, count, looked)
        except MaskingError:
            record.rows += count
            record.withheld = "the result could not be masked"
            return stop, b""
        if masked is None:
            return None
        values, changes, counts = masked
        out, sample = pg.write_rows(data, pos, stop, masker.width, values, changes, max(want, 0))
        record.rows += count
        if want > 0:
            if sample is None:  # a value that is not UTF-8: recorded as the general path records it
                rows = (
                    pg.parse_data_rows(data, pos, stop)[0]
                    if out is None
                    else pg.parse_data_rows(out, 0, len(out))[0]
                )
                sample = self._sample_rows(rows[:want], record)
            record.sample.extend(sample)
        self._add_counts(record, counts)
        return stop, out

    def _mask_copy(self, data: bytes, pos: int, n: int) -> tuple[int, bytes | None]:
        """The run of whole CopyData rows of COPY TO STDOUT starting at ``pos``: field by
        field through the result's masker, as one batch, when the COPY's format is known;
        else each line masked as free text. (where the run ends, the bytes to send instead
        or None when nothing changed)"""
        unpack = _U32.unpack_from
        end = pos + 1 + unpack(data, pos + 1)[0]
        record, _ = self._record_for_rows()
        if record is None or record.withheld or self.masking is None:
            return end, b""
        found = record.copy_out
        masker = record.masker
        if masker is None or found is None or found.format is None:
            line = data[pos + 5 : end]
            try:
                masked, counts = self.masking.mask_text(line)
            except MaskingError:
                record.withheld = "the copied data could not be masked"
                return end, b""
            if not counts:
                return end, None
            self._add_counts(record, counts)
            return end, pg.message(b"d", masked)
        if record.copy_header:
            record.copy_header = False  # the column names: no data
            return end, None
        fmt = found.format
        lines: list[bytes] = []
        while n - pos >= 5 and data[pos] == 100:
            end = pos + 1 + unpack(data, pos + 1)[0]
            if end > n:
                break
            lines.append(data[pos + 5 : end])
            pos = end
        try:
            split = [fmt.split(line) for line in lines]
            rows = [values for _, values in split]
            if any(len(values) != masker.width for values in rows):
                raise MaskingError("a copied row does not have one field per column")
            masked_rows, counts = masker.mask_rows(rows)
        except (MaskingError, ValueError):
            record.withheld = "the copied data could not be masked"
            return pos, b""
        if not counts:
            return pos, None
        self._add_counts(record, counts)
        parts: list[bytes] = []
        for line, (raws, values), new_values in zip(lines, split, masked_rows, strict=True):
            changed = False
            for index, (old, new) in enumerate(zip(values, new_values, strict=True)):
                if new is not old:
                    raws[index] = fmt.encode(new)  # type: ignore[arg-type]
                    changed = True
            parts.append(
                pg.message(b"d", fmt.join(raws)) if changed else b"d" + _U32.pack(len(line) + 4) + line
            )
        return pos, b"".join(parts)

    @staticmethod
    def _add_counts(record: _Statement, counts: dict[str, int]) -> None:
        for entity, count in counts.items():
            record.masked[entity] = record.masked.get(entity, 0) + count

    def _on_copy_out(self, body: bytes) -> bytes | None:
        record, _ = self._record_for_rows()
        if record is None or self.masking is None:
            return None
        record.copy = True
        if body[:1] != b"\x00":
            record.withheld = "binary COPY output cannot be masked; use the text or CSV format"
            return b""
        ncols = _U16.unpack_from(body, 1)[0]
        found = record.copy_out
        if found is None:
            found = record.copy_out = copy_out(record.text)
        if self.uses_identity:
            # The probe that ran before the COPY built the masker from its columns.
            simple_only = (
                "under column rules, COPY TO STDOUT is masked only when sent as a simple Query "
                "(psql, psycopg's copy()); use SELECT"
            )
            if found is None or found.format is None or found.probe is None:
                record.withheld = (found.problem if found is not None else "") or simple_only
            elif record.withheld:
                pass  # the probe's result could not be masked
            elif record.masker is None:
                record.withheld = simple_only  # no probe ran (the extended protocol)
            elif record.masker.width != ncols:
                record.withheld = (
                    "the copied columns could not be matched to the table's; list the columns "
                    "(COPY t (a, b) TO STDOUT) or use COPY (SELECT ...) TO STDOUT"
                )
        elif found is not None and found.format is not None and record.masker is None:
            # Content detection only: every field is text, masked in place (as a line was).
            try:
                record.masker = self.masking.result_masker([None] * ncols)
            except MaskingError:
                record.withheld = "the copied data could not be masked"
        if record.withheld:
            record.masker = None
            return b""
        record.copy_header = found is not None and found.format is not None and found.format.header
        return None

    def startup_messages(self, parameters: list[tuple[str, str]], notices: list[bytes]) -> bytes:
        """The server's ParameterStatus and NoticeResponse messages of the connection's
        startup (before its first ReadyForQuery), masked like those of the session and
        failing closed the same way: ``application_name`` or a role's setting can echo a
        value, and a login-time notice can quote one."""
        out: list[bytes] = []
        for name, value in parameters:
            shown = self._parameter_value(name, value)
            self.parameters[name] = shown
            out.append(pg.parameter_status(name, shown))
        for notice in notices:
            fields, masked = self._masked_fields(b"N", notice[5:])
            self._record(
                "notice",
                {
                    "severity": fields.get("V", ""),
                    "code": fields.get("C", ""),
                    "message": fields.get("M", ""),
                    "startup": True,
                },
            )
            out.append(notice if masked is None else masked)
        return b"".join(out)

    def _parameter_value(self, name: str, value: str) -> str:
        # client_encoding is read by the gateway itself (and is never data).
        return value if name == "client_encoding" else self._mask_text(value)

    def mask_server_text(self, text: str) -> str:
        """Free text from the server headed for the agent, the recording or the log
        (an error refusing the connection), masked; withheld if that fails."""
        return self._mask_text(text)

    def _masked_fields(self, typ: bytes, body: bytes) -> tuple[dict[str, str], bytes | None]:
        """An ErrorResponse or NoticeResponse with its text fields masked (MSK-02: a value
        echoed in an error message): its fields for the recording, and the message to send
        instead (None when nothing changed)."""
        masking = self.masking
        raw = pg.parse_field_list(body)
        changed = False
        out: list[tuple[int, bytes]] = []
        for code, value in raw:
            if masking is not None and code not in _PLAIN_FIELDS and value:
                try:
                    masked, counts = masking.mask_text(value)
                except MaskingError:
                    masked, counts = b"<withheld: it could not be masked>", {"error": 1}
                if counts:
                    changed = True
                    value = masked
            out.append((code, value))
        fields = {chr(code): value.decode("utf-8", "replace") for code, value in out}
        return fields, pg.field_list_message(typ, out) if changed else None

    def _front(self) -> _Entry | None:
        fifo = self._fifo
        while fifo and fifo[0].kind == COPY_END:
            fifo.popleft()
        return fifo[0] if fifo else None

    def _pop(self) -> _Entry:
        entry = self._fifo.popleft()
        if entry.kind in _EFFECTS:
            # Effects leave the queue in the order they entered it.
            self._effects.popleft()
        return entry

    def _server_message(self, typ: int, data: bytes, start: int, end: int) -> bytes | None:
        if typ == 67 or typ == 73:  # 'C' CommandComplete, 'I' EmptyQueryResponse
            front = self._front()
            if front is None:
                return None
            tag = data[start : end - 1].decode("utf-8", "replace") if typ == 67 else ""
            record: _Statement | None = None
            if front.kind == QUERY:
                if front.index < len(front.statements):
                    record = front.statements[front.index]
                    if record.copy_probe:
                        record.copy_probe = False  # the probe's "SELECT 0": the COPY is next
                        return b""
                    self._record_result(record, tag)
                front.index += 1
            elif front.kind == EXECUTE:
                record = front.statements[0]
                self._record_result(record, tag)
                self._pop()
            return self._withheld_error(record)
        if typ == 90:  # 'Z' ReadyForQuery
            self._on_ready(data[start : start + 1])
            return None
        if typ == 49:  # '1' ParseComplete
            entry = self._expect(PARSE)
            self._stmts[entry.name] = entry.value
            self._stmt_fields.pop(entry.name, None)
            return None
        if typ == 50:  # '2' BindComplete
            entry = self._expect(BIND)
            self._portals[entry.name] = entry.value
            if entry.extra is not None:
                statement, formats = entry.extra
                self._portal_fields[entry.name] = self._stmt_fields.get(statement)
                self._portal_formats[entry.name] = formats
                self._portal_source[entry.name] = (statement, self._stmts.get(statement))
            return None
        if typ == 84:  # 'T' RowDescription
            front = self._front()
            if self.masking is not None:
                # One parse (cached per distinct description) serves masking and recording.
                fields = self._row_fields(data[start:end])
                columns = [(f[0], f[4]) for f in fields] if self.result_rows else None
            else:
                fields = None
                columns = pg.parse_row_description(data[start:end]) if self.result_rows else None
            if front is not None and front.kind == DESCRIBE:
                self._last_columns = columns
                if fields is not None:
                    # A statement's description has no formats yet; the Bind gives them.
                    self._store_description(front.target, front.name, fields)
                self._pop()
            elif front is not None and front.kind == QUERY and front.index < len(front.statements):
                record = front.statements[front.index]
                record.columns = columns
                if fields is not None:
                    record.fields = fields
                    self._build_masker(record, fields, None)
                    if record.withheld or record.copy_probe:
                        # The error comes in place of the command tag; a COPY probe's
                        # description is the gateway's, not the client's.
                        return b""
            return None
        if typ == 116:  # 't' ParameterDescription, before the statement's 'T' or 'n'
            front = self._front()
            if front is not None and front.kind == DESCRIBE and front.target == ord("S"):
                self._described_types(front.name, pg.parse_parameter_description(data[start:end]))
            return None
        if typ == 110:  # 'n' NoData
            entry = self._expect(DESCRIBE)
            if self.masking is not None:
                self._store_description(entry.target, entry.name, [])
            return None
        if typ == 115:  # 's' PortalSuspended
            entry = self._expect(EXECUTE)
            self._record_result(entry.statements[0], "", suspended=True)
            return self._withheld_error(entry.statements[0])
        if typ == 72:  # 'H' CopyOutResponse
            return self._on_copy_out(data[start:end])
        if typ == 99:  # 'c' CopyDone (COPY TO STDOUT)
            record, _ = self._record_for_rows()
            return b"" if record is not None and record.withheld else None
        if typ == 51:  # '3' CloseComplete
            entry = self._expect(CLOSE)
            self._apply_close(self._stmts, self._portals, entry.target, entry.name)
            return None
        if typ == 69:  # 'E' ErrorResponse
            return self._on_error(data[start:end])
        if typ == 78:  # 'N' NoticeResponse
            notice_fields, notice = self._masked_fields(b"N", data[start:end])
            self._record(
                "notice",
                {
                    "severity": notice_fields.get("V", ""),
                    "code": notice_fields.get("C", ""),
                    "message": notice_fields.get("M", ""),
                },
            )
            return notice
        if typ == 65:  # 'A' NotificationResponse
            body = data[start:end]
            channel, pos = pg.read_cstring(body, 4)
            payload, _ = pg.read_cstring(body, pos)
            shown = self._mask_text(_decode(payload))
            self._record(
                "notice",
                {"notification": True, "channel": _decode(channel), "payload": shown},
            )
            if shown != _decode(payload):
                return pg.message(b"A", body[:4] + pg.cstring(channel) + pg.cstring(shown))
            return None
        if typ == 83:  # 'S' ParameterStatus
            body = data[start:end]
            name, pos = pg.read_cstring(body, 0)
            value, _ = pg.read_cstring(body, pos)
            shown = self._parameter_value(_decode(name), _decode(value))
            self.parameters[_decode(name)] = shown
            if shown != _decode(value):
                return pg.parameter_status(_decode(name), shown)
            if name == b"client_encoding":
                from gateway.postgres.startup import is_unsafe_encoding

                if is_unsafe_encoding(_decode(value)):
                    self.ended = f"client_encoding changed to {_decode(value)}, which the gateway cannot read"
                    return pg.error_response(
                        "0A000",
                        f'client_encoding "{_decode(value)}" is not supported through Airlock',
                        severity="FATAL",
                    )
            return None
        if typ == 71:  # 'G' CopyInResponse
            self._on_copy_in()
            return None
        if typ == 75:  # 'K' BackendKeyData: the upstream's key never reaches the client
            return b""
        return None

    def _expect(self, kind: int) -> _Entry:
        front = self._front()
        if front is None or front.kind != kind:
            raise ProtocolError(f"server answer out of step with the client's messages (wanted {kind})")
        return self._pop()

    def _on_ready(self, status: bytes) -> None:
        front = self._front()
        if front is None or front.kind not in (SYNC, QUERY):
            raise ProtocolError("ReadyForQuery out of step with the client's messages")
        self._pop()
        self.state["transaction"] = {b"I": "idle", b"T": "in", b"E": "failed"}.get(status, "idle")
        # A lookup that failed is tried again for the next statement.
        self._unresolved.clear()
        if status == b"I":
            # Portals live until the end of their transaction (docs 55.2.3).
            self._portals.clear()
            if self._effects:
                self._rebuild_tentative()
            elif self.portals:
                self.portals = {}

    def _on_copy_in(self) -> None:
        # The server ignores Sync and Flush during copy-in (docs 55.2.6): Syncs the client
        # sent before its CopyDone/CopyFail will not be answered.
        fifo = self._fifo
        kept: deque[_Entry] = deque()
        found_end = False
        first = True
        for entry in fifo:
            if first:
                kept.append(entry)
                first = False
                continue
            if not found_end and entry.kind == SYNC:
                continue
            if not found_end and entry.kind == COPY_END:
                found_end = True
                continue
            kept.append(entry)
        self._fifo = kept
        if not found_end:
            self._ignore_syncs = True

    def _on_error(self, body: bytes) -> bytes | None:
        fields, replacement = self._masked_fields(b"E", body)
        front = self._front()
        statement: _Statement | None = None
        denial: Decision | None = None
        if front is None or front.kind == SYNC:
            pass  # an error at commit time (Sync) or outside any request
        elif front.kind == QUERY:
            if front.index < len(front.statements):
                statement = front.statements[front.index]
            denial = front.denial
            front.index = len(front.statements)
        else:
            failed = self._pop()
            if failed.kind == EXECUTE:
                statement = failed.statements[0]
                denial = failed.denial
            # Docs 55.2.3: after an error the server discards messages until Sync.
            while self._fifo and self._fifo[0].kind != SYNC:
                self._pop()
            # No Sync sent yet: what the client sends until it is gets discarded too.
            self._discarding = not self._fifo
            self._rebuild_tentative()
        if denial is not None and self._marker_bytes in body:
            message = denial.message or f'statement denied by Airlock rule "{denial.rule}"'
            detail = f'rule "{denial.rule}"' if denial.rule else ""
            if denial.policy:
                detail += f" of policy {denial.policy}"
                if denial.policy_version is not None:
                    detail += f" version {denial.policy_version}"
            replacement = pg.error_response("42501", message, detail=detail.strip())
            fields = {"C": "42501", "M": message, "V": "ERROR"}
        self._record(
            "error",
            {
                "code": fields.get("C", ""),
                "message": fields.get("M", ""),
                "severity": fields.get("V", fields.get("S", "")),
                "statement": statement.text if statement is not None else None,
            },
        )
        if statement is not None and self.on_statement_done is not None:
            # Only the SQLSTATE: an error's message can quote the data (MSK-02).
            self.on_statement_done(statement.decision, False, f"ERROR {fields.get('C', '')}")
        if fields.get("V") in ("FATAL", "PANIC"):
            self.ended = "server ended the session: " + fields.get("M", "")
        return replacement

    def _record_result(self, record: _Statement, tag: str, *, suspended: bool = False) -> None:
        rows = pg.command_rows(tag) if tag else None
        payload: dict[str, Any] = {
            "command_tag": tag,
            "rows": rows if rows is not None else record.rows,
            # To the microsecond (integer arithmetic: round(x, 3) formats decimals).
            "duration_ms": int((self.clock() - record.started) * 1_000_000) / 1000,
        }
        if suspended:
            payload["suspended"] = True
        if record.masked:
            payload["masked"] = sum(record.masked.values())
            payload["masked_entities"] = dict(sorted(record.masked.items()))
            record.masked = {}
        if record.withheld:
            payload["withheld"] = record.withheld
        if record.sample:
            columns = record.columns or self._last_columns
            payload["columns"] = [c[0] for c in columns] if columns else []
            payload["first_rows"] = record.sample
            record.sample = []
        if self.defer_records:
            self._later.append(_PendingResult(record, payload))
        else:
            self._result_event(record, payload)
        record.rows = 0
        if self.on_statement_done is not None and not suspended:
            self.on_statement_done(record.decision, True, tag)

    def _result_event(self, record: _Statement, payload: dict[str, Any]) -> None:
        """The result joins its statement's event if that is still open, else is an event
        of its own that names the statement."""
        handle = record.handle
        if handle:
            record.handle = 0
            if self.recorder.complete(handle, payload):
                return
        payload["statement"] = record.text
        self.recorder.append("result", payload)

    def _withheld_error(self, record: _Statement | None) -> bytes | None:
        if record is None or not record.withheld:
            return None
        reason = record.withheld
        record.withheld = None
        record.masker = None
        self._record(
            "error",
            {
                "code": "XX000",
                "message": f"{MASKING_FAILED}: {reason}",
                "severity": "ERROR",
                "statement": record.text,
            },
        )
        return pg.error_response("XX000", f"{MASKING_FAILED}: {reason}")

    def _sample_values(self, values: Sequence[Any], record: _Statement) -> list[Any]:
        columns = record.columns or self._last_columns
        if columns is not None and len(columns) == len(values) and not any(c[1] for c in columns):
            # Every column in the text format (the usual case): one pass, in C where it can.
            try:
                texts = pg.decode_rows((values,))
            except TypeError:  # str values
                texts = None
            if texts is not None:
                return texts[0]
        row: list[Any] = []
        for i, value in enumerate(values):
            if value is None or isinstance(value, str):
                row.append(value)
                continue
            if not (columns is not None and i < len(columns) and columns[i][1] == 1):
                try:
                    row.append(value.decode())
                    continue
                except UnicodeDecodeError:
                    pass
            row.append({"base64": base64.b64encode(value).decode()})
        return row

    def _sample_row(self, body: bytes, record: _Statement) -> list[Any]:
        try:
            values = pg.parse_data_row(body)
        except ValueError as exc:
            raise ProtocolError(f"malformed 'D' message from the server: {exc}") from None
        return self._sample_values(values, record)

    def _sample_rows(self, rows: Sequence[Sequence[Any]], record: _Statement) -> list[list[Any]]:
        """``_sample_values`` of each row, the columns' formats looked at once."""
        columns = record.columns or self._last_columns
        if columns is None or any(c[1] for c in columns):
            return [self._sample_values(row, record) for row in rows]
        width = len(columns)
        if rows and set(map(len, rows)) == {width}:
            # The usual rows, every value bytes of UTF-8 text or NULL: decoded in one call.
            try:
                texts = pg.decode_rows(rows)
            except TypeError:  # str values (masked ones keep their type; rows are bytes)
                texts = None
            if texts is not None:
                return texts  # type: ignore[return-value]
        sample = []
        for row in rows:
            if len(row) == width:
                try:
                    sample.append([v if v is None or isinstance(v, str) else v.decode() for v in row])
                    continue
                except UnicodeDecodeError:
                    pass
            sample.append(self._sample_values(row, record))
        return sample


class _Hold:
    """Returned by a message handler that must wait (the message stays buffered)."""


_HOLD = _Hold()
# ErrorResponse/NoticeResponse fields that are never data: severity, code, positions, source.
_PLAIN_FIELDS = frozenset(b"SVCPpFLR")
# A DataRow larger than this is not kept whole just to record it.
_SAMPLE_LIMIT = 1 << 20


def _current(entry: _Entry | None) -> _Statement | None:
    if entry is None:
        return None
    if entry.kind == EXECUTE:
        return entry.statements[0]
    if entry.kind == QUERY and entry.index < len(entry.statements):
        return entry.statements[entry.index]
    return None


def _decode(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw.decode("utf-8", "replace")


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
