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
import secrets
import struct
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from gateway.postgres import protocol as pg
from gateway.postgres.protocol import ProtocolError
from gateway.postgres.sqltext import split_statements, touches_prepared_statements
from gateway.postgres.values import param_text
from policies.sql import apply_session_effects, forget_prepared, remember_prepared
from policies.types import Action, Decision, Request

_U32 = struct.Struct("!I")

# FIFO entry kinds: client messages that the server answers, in the order it answers them.
PARSE, BIND, DESCRIBE, EXECUTE, CLOSE, SYNC, QUERY, COPY_END = range(8)
_EFFECTS = (PARSE, BIND, CLOSE)

FUNCTION_CALL_REFUSED = (
    "the FunctionCall protocol message is not allowed through Airlock (it runs a function with no SQL "
    "text to inspect); call the function in a SELECT instead"
)


class Recorder(Protocol):
    def append(self, kind: str, payload: dict[str, Any]) -> None: ...


class Decider(Protocol):
    def request(
        self, statement: str, params: tuple[str | None, ...] = (), session: dict[str, Any] | None = None
    ) -> Request: ...

    def decide(self, request: Request) -> Decision: ...


class SessionEnded(Exception):
    """The server or client ended the session in an orderly way (reason in args[0])."""


class _Statement:
    """One decided statement, followed until its result is known."""

    __slots__ = ("columns", "decision", "rows", "sample", "started", "text")

    def __init__(self, text: str, decision: Decision, started: float) -> None:
        self.text = text
        self.decision = decision
        self.started = started
        self.rows = 0
        self.columns: list[tuple[str, int]] | None = None
        self.sample: list[list[Any]] = []


class _Entry:
    __slots__ = ("batch", "denial", "index", "kind", "name", "statements", "target", "value")

    def __init__(self, kind: int, batch: int) -> None:
        self.kind = kind
        self.batch = batch
        self.name = b""
        self.value: Any = None
        self.target = 0
        self.statements: list[_Statement] = []
        self.index = 0  # which statement of a Query the server is answering
        self.denial: Decision | None = None


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
        # Told when a statement's outcome is known: (its decision, succeeded, command tag or
        # "ERROR <SQLSTATE>"). The approvals machinery reports the run of an approved one.
        self.on_statement_done: Callable[[Decision, bool, str], None] | None = None

    # --- client -> server ----------------------------------------------------------------

    def from_client(self, data: bytes) -> bytes:
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
            pg.parse_name_after_kind(body)
            self._push(DESCRIBE)
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
            if self._ignore_syncs:
                self._ignore_syncs = False
            else:
                self._push(COPY_END)
            return None
        if typ == pg.MSG_TERMINATE:
            self.ended = "client disconnected"
            return None
        if typ == pg.MSG_FUNCTION_CALL:
            return self._on_function_call(body)
        raise ProtocolError(f"invalid frontend message type {chr(typ)!r}")

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
            decision = held.override or self.decider.decide(request)
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
        self._batch += 1
        return replacement

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
        portal, statement, values, formats = pg.parse_bind(body)
        text = self.statements.get(statement)
        if text is None:
            # A statement prepared with SQL PREPARE (or one that does not exist): the
            # policy judges it as the EXECUTE it amounts to.
            text = "EXECUTE " + _quote_ident(statement.decode("utf-8", "replace"))
        types = self._types.get(statement, ())
        params = tuple(
            param_text(v, f == 1, types[i] if i < len(types) else 0)
            for i, (v, f) in enumerate(zip(values, formats, strict=True))
        )
        entry = self._push(BIND)
        entry.name = portal
        entry.value = (text, params)
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
        decision = held.override or self.decider.decide(request)
        if decision.action is Action.REVIEW:
            self._held = held
            self.blocked = ReviewNeeded(request, decision)
            return _HOLD
        self._held = None
        record = self._record_statement(statement, params, decision, "extended")
        entry = self._push(EXECUTE)
        entry.statements = [record]
        if decision.action is not Action.ALLOW:
            entry.denial = decision
            # A named Parse that fails leaves every existing statement alone, unlike an
            # unnamed one, which would drop the client's unnamed statement first.
            return pg.parse_message(self._marker_bytes, self._marker_sql().encode())
        self._after_allowed(statement, decision)
        return None

    def _after_allowed(self, statement: str, decision: Decision) -> None:
        if decision.session_effects:
            # Applied when the statement is sent rather than when it succeeds: the
            # engine's session state only ever grows, so this errs on the strict side.
            apply_session_effects(self.state, decision.session_effects)
        if touches_prepared_statements(statement):
            self._forget_statement_names()

    def _marker_sql(self) -> str:
        return f"SELECT '{self._marker}'::pg_catalog.int4"

    def _forget_statement_names(self) -> None:
        # SQL PREPARE/DEALLOCATE/DISCARD share the namespace of protocol statements:
        # what we knew about the names may no longer hold.
        self.statements.clear()
        self._types.clear()
        self._stmts.clear()

    def _record_statement(
        self, text: str, params: tuple[str | None, ...], decision: Decision, via: str
    ) -> _Statement:
        payload: dict[str, Any] = {
            "text": text,
            "params": list(params),
            "protocol": via,
            "action": decision.action.value,
            "rule": decision.rule,
        }
        self.recorder.append("statement", payload)
        if decision.action is not Action.ALLOW:
            self.recorder.append(
                "decision",
                {
                    "action": str(decision.action),
                    "rule": decision.rule,
                    "policy": decision.policy,
                    "policy_version": decision.policy_version,
                    "message": decision.message,
                    "statement": text,
                },
            )
        return _Statement(text, decision, self.clock())

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

    def from_server(self, data: bytes) -> bytes:
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
        if run == 0 and pos == n:
            return data
        out.append(data[run:pos])
        return b"".join(out)

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
            if front.kind == QUERY:
                if front.index < len(front.statements):
                    self._record_result(front.statements[front.index], tag)
                front.index += 1
            elif front.kind == EXECUTE:
                self._record_result(front.statements[0], tag)
                self._pop()
            return None
        if typ == 90:  # 'Z' ReadyForQuery
            self._on_ready(data[start : start + 1])
            return None
        if typ == 49:  # '1' ParseComplete
            entry = self._expect(PARSE)
            self._stmts[entry.name] = entry.value
            return None
        if typ == 50:  # '2' BindComplete
            entry = self._expect(BIND)
            self._portals[entry.name] = entry.value
            return None
        if typ == 84:  # 'T' RowDescription
            front = self._front()
            columns = pg.parse_row_description(data[start:end]) if self.result_rows else None
            if front is not None and front.kind == DESCRIBE:
                self._last_columns = columns
                self._pop()
            elif front is not None and front.kind == QUERY and front.index < len(front.statements):
                front.statements[front.index].columns = columns
            return None
        if typ == 110:  # 'n' NoData
            self._expect(DESCRIBE)
            return None
        if typ == 115:  # 's' PortalSuspended
            entry = self._expect(EXECUTE)
            self._record_result(entry.statements[0], "", suspended=True)
            return None
        if typ == 51:  # '3' CloseComplete
            entry = self._expect(CLOSE)
            self._apply_close(self._stmts, self._portals, entry.target, entry.name)
            return None
        if typ == 69:  # 'E' ErrorResponse
            return self._on_error(data[start:end])
        if typ == 78:  # 'N' NoticeResponse
            fields = pg.parse_fields(data[start:end])
            self.recorder.append(
                "notice",
                {
                    "severity": fields.get("V", ""),
                    "code": fields.get("C", ""),
                    "message": fields.get("M", ""),
                },
            )
            return None
        if typ == 65:  # 'A' NotificationResponse
            body = data[start:end]
            channel, pos = pg.read_cstring(body, 4)
            payload, _ = pg.read_cstring(body, pos)
            self.recorder.append(
                "notice",
                {"notification": True, "channel": _decode(channel), "payload": _decode(payload)},
            )
            return None
        if typ == 83:  # 'S' ParameterStatus
            body = data[start:end]
            name, pos = pg.read_cstring(body, 0)
            value, _ = pg.read_cstring(body, pos)
            self.parameters[_decode(name)] = _decode(value)
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
        fields = pg.parse_fields(body)
        front = self._front()
        replacement: bytes | None = None
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
            self._rebuild_tentative()
        if denial is not None and self._marker_bytes in body:
            message = denial.message or f'statement denied by Airlock rule "{denial.rule}"'
            detail = f'rule "{denial.rule}"' if denial.rule else ""
            if denial.policy:
                detail += f" of policy {denial.policy}"
            replacement = pg.error_response("42501", message, detail=detail.strip())
            fields = {"C": "42501", "M": message, "V": "ERROR"}
        self.recorder.append(
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
            "statement": record.text,
            "command_tag": tag,
            "rows": rows if rows is not None else record.rows,
            "duration_ms": round((self.clock() - record.started) * 1000, 3),
        }
        if suspended:
            payload["suspended"] = True
        if record.sample:
            columns = record.columns or self._last_columns
            payload["columns"] = [c[0] for c in columns] if columns else []
            payload["first_rows"] = record.sample
            record.sample = []
        self.recorder.append("result", payload)
        record.rows = 0
        if self.on_statement_done is not None and not suspended:
            self.on_statement_done(record.decision, True, tag)

    def _sample_row(self, body: bytes, record: _Statement) -> list[Any]:
        columns = record.columns or self._last_columns
        values = pg.parse_data_row(body)
        row: list[Any] = []
        for i, value in enumerate(values):
            if value is None:
                row.append(None)
                continue
            binary = columns is not None and i < len(columns) and columns[i][1] == 1
            if not binary:
                try:
                    row.append(value.decode())
                    continue
                except UnicodeDecodeError:
                    pass
            row.append({"base64": base64.b64encode(value).decode()})
        return row


class _Hold:
    """Returned by a message handler that must wait (the message stays buffered)."""


_HOLD = _Hold()
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
