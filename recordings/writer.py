"""The session recorder every protocol writes through.

``append`` costs one JSON encoding and a deque append: no database round trip, no await.
Each recorder has a flusher task that hands queued events, in batches, to writer threads
(started as needed, at most ``WRITER_THREADS``, each with its own database connection),
which chain them (seq, SHA-256 hash), insert them with one COPY (PostgreSQL; multi-row
INSERTs elsewhere) and update the session's counters (and, on PostgreSQL, add the batch's
search words: ``recordings.search``) in the same transaction. After each committed batch the
recorder announces the new last seq on the channel layer (``recordings.live``), from its
event loop, without waiting for it. A batch is written ``RECORDING_FLUSH_SECONDS`` after its
oldest event was appended, or at once when ``FLUSH_AT`` events are waiting; under load the
writes run back to back, each taking everything queued (up to ``BATCH_ROWS``).

Strict mode (``RECORDING_STRICT``): when an event cannot be persisted within
``RECORDING_PERSIST_TIMEOUT`` seconds of being appended, ``on_failure(reason)`` is called
once and ``failed`` becomes true; the gateway then ends the session. Best-effort mode drops
that batch instead, counts it in ``Session.dropped_events`` and records a ``dropped`` event
in its place, so the chain stays whole and says where the gap is.

Usage (in a protocol handler, on the event loop)::

    recorder = await SessionRecorder.start(
        protocol="postgres", agent_name=agent.name, connection_name=conn.name,
        agent_id=agent.pk, connection_id=conn.pk, client_address=peer,
        on_failure=lambda reason: session.abort(reason),
    )
    recorder.append("statement", {"text": sql, "params": params})
    ...
    await recorder.close(reason="client disconnected")
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import functools
import hashlib
import json
import logging
import queue
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar, NamedTuple

import orjson
from django.conf import settings
from django.db import close_old_connections, connection, connections, transaction
from django.db.models import Q

from audit import actions as audit
from gateway import native
from recordings import chain, chainrows, keys, live, search
from recordings.models import Event, Session

log = logging.getLogger("airlock.recordings")

BATCH_ROWS = 2000  # events per transaction at most
FLUSH_AT = 500  # events waiting that trigger a write before the flush interval is up
INSERT_ROWS = 500  # rows per INSERT where COPY is not available: 3,500 parameters (SQLite's limit is 32,766)
MAX_QUEUED = 100_000  # events waiting per recorder before appends are dropped
WRITER_THREADS = 8  # at most, per process; each holds a database connection
# The signing key's id is the first job a new writer process runs, so its wait includes
# that process starting (an interpreter and Django: seconds on a loaded machine): it is
# bounded by this, or by RECORDING_PERSIST_TIMEOUT when that is longer.
KEY_LOAD_SECONDS = 15.0
_KINDS = frozenset(Event.Kind.values)
_STATUSES = frozenset(Session.Status.values) - {Session.Status.LIVE}


class RecordingUnavailable(Exception):
    """A session's recording could not be opened (strict mode): the session must not start."""


def _snapshot_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    raise TypeError(f"a recording payload holds only JSON values, not {type(value).__name__}")


# The snapshot taken by append(): cheap (orjson, no key sorting), and immutable, so a
# caller that reuses its dict afterwards cannot change what is recorded. What orjson
# refuses (integers beyond 64 bits, lone surrogates) goes through the standard encoder.
_SNAPSHOT_OPTIONS = orjson.OPT_NON_STR_KEYS
_SNAPSHOT_FALLBACK = json.JSONEncoder(ensure_ascii=False, allow_nan=True, default=_snapshot_default)


def _snapshot(payload: dict[str, Any]) -> bytes | str:
    try:
        return orjson.dumps(payload, default=_snapshot_default, option=_SNAPSHOT_OPTIONS)
    except TypeError:
        return _SNAPSHOT_FALLBACK.encode(payload)


# What the writer thread needs of a payload besides its canonical bytes: the counters
# (``_Tally``) and the search words (``search.batch_words``) read only these fields (and a
# statement's ``text`` and joined result's ``masked``: ``_take``).
_FACT_KEYS: dict[str, tuple[str, ...]] = {
    Event.Kind.DECISION: ("action",),
    Event.Kind.RESULT: ("masked",),
    "input": ("data",),
}


# Fact values taken as they are: immutable, so the caller may reuse its dict.
_IMMUTABLE = (str, int)


def _take(kind: str, payload: dict[str, Any]) -> tuple[bytes | str, bytes | None, dict[str, Any] | None]:
    """(snapshot, canonical bytes or None, the facts the writer reads) of one payload.

    Plain JSON data (the usual case) is encoded once, already canonical
    (``chain.canonical_plain``), and that text is both the snapshot and what the chain
    hashes: the writer thread neither decodes nor re-encodes it. Anything else is
    snapshotted as before and made canonical on the writer thread.
    """
    canonical = chain.canonical_plain(payload)
    if canonical is None:
        return _snapshot(payload), None, None
    facts: dict[str, Any] = {}
    if kind == "statement":  # the usual event, spelt out (this runs for every statement)
        text = payload.get("text")
        if isinstance(text, _IMMUTABLE):
            facts["text"] = text
        # A statement with its result joined (``SessionRecorder.complete``) counts its
        # masked values as a result event would.
        result = payload.get("result")
        if type(result) is dict:
            masked = result.get("masked")
            if type(masked) is int:
                facts["result"] = {"masked": masked}
        return canonical, canonical, facts
    for key in _FACT_KEYS.get(kind, ()):
        value = payload.get(key)
        if isinstance(value, _IMMUTABLE):
            facts[key] = value
    return canonical, canonical, facts


def _load_snapshot(snapshot: bytes | str) -> Any:
    # orjson reads integers beyond 64 bits as floats: only its own output goes back to it.
    return orjson.loads(snapshot) if isinstance(snapshot, bytes) else json.loads(snapshot)


class _Queued(NamedTuple):
    mono: float  # time.monotonic() when appended: deadlines count from here
    wall: float  # time.time() when appended; becomes the event's time on a writer thread
    offset_ms: float
    kind: str
    payload: bytes | str  # JSON snapshot
    # The canonical bytes of the payload when they could be built at append time, and then
    # the payload fields the writer reads (see ``_take``); None: decode the snapshot.
    canonical: bytes | None = None
    facts: dict[str, Any] | None = None

    @property
    def at(self) -> datetime:
        return datetime.fromtimestamp(self.wall, UTC)


# ``_Queued(...)`` without the named tuple's ``__new__``, a Python function (0.36 -> 0.1 us).
_new_queued = tuple.__new__

# What a writer job is given of each queued event: ``_Queued``'s fields as a plain tuple.
# Pickled for the writer process, a named tuple costs six times what a tuple does (its
# ``__getnewargs__`` on the event loop, its ``__new__`` in the writer): 0.6 against 0.1 us
# per event on the loop.
_QueuedFields = tuple[float, float, float, str, bytes | str, bytes | None, dict[str, Any] | None]


def _fields(batch: list[_Queued]) -> list[_QueuedFields]:
    return list(map(tuple, batch))  # type: ignore[arg-type]


@dataclass(slots=True)
class _Tally:
    """The session counters, derived from event kinds and payloads (see docs/recordings.md)."""

    event_count: int = 0
    statement_count: int = 0
    denied_count: int = 0
    review_count: int = 0
    error_count: int = 0
    masked_count: int = 0

    def add(self, kind: str, payload: Any) -> None:
        self.event_count += 1
        if kind == Event.Kind.STATEMENT:
            self.statement_count += 1
            result = payload.get("result") if isinstance(payload, dict) else None
            if isinstance(result, dict):
                self._add_masked(result)
        elif kind == Event.Kind.DECISION:
            action = payload.get("action") if isinstance(payload, dict) else None
            if action == "deny":
                self.denied_count += 1
            elif action == "review":
                self.review_count += 1
        elif kind == Event.Kind.APPROVAL:
            # A held statement's outcome: the gateway records the statement itself with
            # the decision it ran (or failed) under, so its review shows only here.
            self.review_count += 1
        elif kind == Event.Kind.ERROR:
            self.error_count += 1
        elif kind == Event.Kind.RESULT and isinstance(payload, dict):
            self._add_masked(payload)

    def _add_masked(self, result: dict[str, Any]) -> None:
        masked = result.get("masked")
        if isinstance(masked, int) and not isinstance(masked, bool) and masked > 0:
            self.masked_count += masked

    def fields(self) -> dict[str, int]:
        return {
            "event_count": self.event_count,
            "statement_count": self.statement_count,
            "denied_count": self.denied_count,
            "review_count": self.review_count,
            "error_count": self.error_count,
            "masked_count": self.masked_count,
        }


@dataclass(frozen=True, slots=True)
class _ChainState:
    """What has been committed: the last seq and hash, and the counters."""

    last_hash: str
    tally: _Tally = field(default_factory=_Tally)

    @property
    def seq(self) -> int:
        return self.tally.event_count


# --- writer threads ---------------------------------------------------------------------


class _WriterThreads:
    """Threads with their own database connections, started as writes need them.

    Not asgiref's shared sync thread: a write stuck on a lock there would stall every
    other ``sync_to_async`` call of the process, and with it every other session. A new
    thread starts whenever every thread is busy (up to ``max_threads``), so one session's
    write held by a lock does not queue the others behind it.
    """

    def __init__(self, max_threads: int) -> None:
        self._max = max(1, max_threads)
        self._jobs: queue.SimpleQueue[
            tuple[concurrent.futures.Future[Any], Callable[..., Any], tuple[Any, ...]] | None
        ]
        self._jobs = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._busy = 0

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._lock:
            waiting = self._busy + self._jobs.qsize() + 1
            if waiting > len(self._threads) and len(self._threads) < self._max:
                thread = threading.Thread(
                    target=self._work, name=f"recording-writer-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
            self._jobs.put((future, fn, args))
        return future

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                connections.close_all()
                return
            future, fn, args = job
            if not future.set_running_or_notify_cancel():
                continue
            with self._lock:
                self._busy += 1
            try:
                # A connection broken by an earlier failure (database restarted) is
                # replaced here instead of failing every later write.
                close_old_connections()
                result = fn(*args)
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)
            finally:
                with self._lock:
                    self._busy -= 1

    def shutdown(self, timeout: float) -> None:
        with self._lock:
            threads = list(self._threads)
            for _ in threads:
                self._jobs.put(None)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))


_pool: _WriterThreads | None = None
_pool_lock = threading.Lock()


def _writer_threads() -> _WriterThreads:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = _WriterThreads(getattr(settings, "RECORDING_WRITER_THREADS", WRITER_THREADS))
        return _pool


def shutdown_writer(timeout: float = 10.0) -> None:
    """Stop the writer threads (or process) and close their database connections.

    Call after ``close_all()`` when the process stops (and between tests). A later
    recorder starts a new set of threads.
    """
    global _pool, _process
    with _pool_lock:
        pool, _pool = _pool, None
        process, _process = _process, None
    if pool is not None:
        pool.shutdown(timeout)
    if process is not None:
        process.stop(timeout)


# ``manage.py gateway`` runs the jobs in a writer process (recordings/writer_process.py says
# why); elsewhere (the console, tests, scripts) they run on this process's writer threads.
_process_mode = False
_process: Any = None  # the WriterProcess, once a job has started it


def use_writer_process(enabled: bool) -> None:
    """Run later writes in a child process (True) or on this process's threads (False)."""
    global _process_mode
    _process_mode = enabled


def _writer_process() -> Any:
    global _process
    from recordings.writer_process import WriterProcess

    loop = asyncio.get_running_loop()
    with _pool_lock:
        current = _process
        if current is None or current.closed or current.loop is not loop:
            if current is not None and not current.closed:
                # A new event loop (tests, a restarted server): the old child finishes and ends.
                threading.Thread(target=current.stop, args=(10.0,), daemon=True).start()
            current = _process = WriterProcess(loop)
        return current


def prestart_writer() -> None:
    """Start the writer process now (process mode, on the running loop); else nothing."""
    if _process_mode:
        _writer_process()


def _submit(fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
    if _process_mode:
        future = _writer_process().submit(_JOB_NAMES[fn], *args)
    else:
        future = asyncio.wrap_future(_writer_threads().submit(fn, *args))
    # A write abandoned at its deadline may still fail later; nobody awaits it then.
    future.add_done_callback(lambda f: f.cancelled() or f.exception())
    return future


class _GroupedWrites:
    """The batches recorders hand over within ``GROUP_WINDOW`` of one another, written by
    one job (``_persist_group``) on PostgreSQL; one alone, or elsewhere, by ``_persist``.

    The recorders flush on a grid shared by the process (``SessionRecorder._due``), so
    under load every live session's batch comes within the same window. Each recorder
    gets a future of its own and waits on it with its own deadline, as for a write of its
    own. When the group is not written (any error, a lock held, a session closed
    elsewhere) each batch is written again by a job of its own, marked uncertain (the
    group may have committed before its answer was lost: the write then finds where its
    chain really ends), and its outcome is that job's.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._pending: list[tuple[_Write, float, asyncio.Future[Any]]] = []

    def submit(self, write: _Write, timeout: float) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = self.loop.create_future()
        # A write abandoned at its deadline may still fail later; nobody awaits it then.
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        if not self._pending:
            self.loop.call_later(GROUP_WINDOW, self._send)
        self._pending.append((write, timeout, future))
        return future

    def _send(self) -> None:
        pending, self._pending = self._pending, []
        if len(pending) == 1 or not _grouping():
            for write, timeout, future in pending:
                _chain_future(_submit(_persist, *write, timeout), future)
            return
        job = _submit(_persist_group, [write for write, _, _ in pending], max(t for _, t, _ in pending))
        job.add_done_callback(functools.partial(self._sent, pending))

    def _sent(
        self, pending: list[tuple[_Write, float, asyncio.Future[Any]]], job: asyncio.Future[Any]
    ) -> None:
        if not job.cancelled() and job.exception() is None:
            for (_, _, future), state in zip(pending, job.result(), strict=True):
                if not future.done():
                    future.set_result(state)
            return
        why = "cancelled" if job.cancelled() else _describe(job.exception())  # type: ignore[arg-type]
        log.info("%d sessions' batches written one by one: %s", len(pending), why)
        for write, timeout, future in pending:
            session_id, base, items, dropped, create, _ = write
            single = _submit(_persist, session_id, base, items, dropped, create, True, timeout)
            _chain_future(single, future)


GROUP_WINDOW = 0.002  # seconds: batches handed over this close together are written as one


def _grouping() -> bool:
    return connections["default"].vendor == "postgresql"


def _chain_future(source: asyncio.Future[Any], target: asyncio.Future[Any]) -> None:
    def copy(done: asyncio.Future[Any]) -> None:
        if target.done():
            return
        if done.cancelled():
            target.cancel()
        elif done.exception() is not None:
            target.set_exception(done.exception())  # type: ignore[arg-type]
        else:
            target.set_result(done.result())

    source.add_done_callback(copy)


_grouped: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _GroupedWrites] = weakref.WeakKeyDictionary()


def _submit_write(write: _Write, timeout: float) -> asyncio.Future[Any]:
    """Hand one recorder's batch to the writer, with the others handed over with it."""
    loop = asyncio.get_running_loop()
    grouped = _grouped.get(loop)
    if grouped is None:
        grouped = _grouped[loop] = _GroupedWrites(loop)
    return grouped.submit(write, timeout)


def _describe(exc: BaseException) -> str:
    from recordings.writer_process import WriterJobFailed

    if isinstance(exc, WriterJobFailed):
        return str(exc)  # described in the writer process already
    # First line only: a database error's DETAIL can quote the failing row, i.e. payload.
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}"[:200] if first else type(exc).__name__


# --- the jobs run on writer threads -----------------------------------------------------


def _chain_rows(
    session_id: uuid.UUID,
    base: _ChainState,
    items: list[_QueuedFields],
    searched: list[tuple[str, Any]] | None = None,
) -> tuple[list[tuple[int, float, str, float, str, str, str]], _ChainState]:
    """Chain ``items`` after ``base``; the searchable events are added to ``searched``.

    Rows are ``(seq, wall, the time as canonical text, offset_ms, kind, payload text,
    hash)``, ``wall`` the ``time.time()`` of the event (``_Queued.at`` as a float).
    """
    prev = base.last_hash
    tally = replace(base.tally)
    seq = base.seq
    rows = []
    sha256 = hashlib.sha256
    envelope = chain.envelope
    for _mono, wall, offset_ms, kind, snapshot, canonical, facts in items:
        text = canonical
        if text is None:
            payload = _load_snapshot(snapshot)
            text = chain.canonical_decoded_payload(payload)
        else:
            payload = facts
        if searched is not None and kind in search.SEARCHED_KINDS:
            searched.append((kind, payload))
        at_text = chain.format_wall(wall)  # format_time(_Queued.at), faster
        seq += 1
        digest = sha256(prev.encode() + envelope(seq, at_text, offset_ms, kind, text)).hexdigest()
        rows.append((seq, wall, at_text, offset_ms, kind, text.decode(), digest))
        tally.add(kind, payload)
        prev = digest
    return rows, _ChainState(prev, tally)


# A batch of plain events chained and written as COPY text in one pass
# (``recordings.chainrows``): its C build when built from the sources in use.
_chain_copy = native.load(chainrows).chain_copy


def _tally_plain(
    base: _ChainState, items: list[_QueuedFields], last_hash: str, searched: list[tuple[str, Any]]
) -> _ChainState:
    """The state after ``items`` that ``chain_copy`` chained (every one carries its canonical
    bytes, so its facts are what the counters and the search words read, as in
    ``_chain_rows``); the searchable events are added to ``searched``."""
    tally = replace(base.tally)
    add = tally.add
    kinds = search.SEARCHED_KINDS
    for item in items:
        kind = item[3]
        facts = item[6]
        if kind in kinds:
            searched.append((kind, facts))
        add(kind, facts)
    return _ChainState(last_hash, tally)


_EVENT_COLUMNS = ("session", "seq", "at", "offset_ms", "kind", "payload", "hash")


def _copy_text(session_id: uuid.UUID, rows: list[tuple[int, float, str, float, str, str, str]]) -> str:
    """The rows in COPY's text format, built in one pass (no per-value adaptation).

    Every field is ASCII or JSON text: JSON escapes tabs, newlines and carriage returns
    inside strings, so the only character COPY would read specially is the backslash.
    """
    sid = str(session_id)
    return "".join(
        f"{sid}\t{seq}\t{at_text}\t{offset_ms!r}\t{kind}\t{text.replace(chr(92), chr(92) * 2)}\t{digest}\n"
        for seq, _, at_text, offset_ms, kind, text, digest in rows
    )


def _events_table() -> tuple[str, str]:
    """The events table's quoted name and its written columns, in ``_EVENT_COLUMNS``'s order."""
    meta = Event._meta
    quote = connection.ops.quote_name
    return quote(meta.db_table), ", ".join(quote(meta.get_field(name).column) for name in _EVENT_COLUMNS)


def _copy_events(data: str | bytes) -> None:
    """COPY ``data`` (``_copy_text``'s form) into the events table (PostgreSQL)."""
    table, columns = _events_table()
    # COPY: one statement per batch and the least work per row on both ends. Raw
    # psycopg under Django's error wrapper, so failures read (and mark the connection)
    # as any other database error.
    with connection.cursor() as cursor, connection.wrap_database_errors:
        with cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
            copy.write(data)


def _insert_events(session_id: uuid.UUID, rows: list[tuple[int, float, str, float, str, str, str]]) -> None:
    if connection.vendor == "postgresql":
        _copy_events(_copy_text(session_id, rows))
        return
    table, columns = _events_table()
    sid = Session._meta.pk.get_db_prep_value(session_id, connection)  # type: ignore[union-attr]
    at_field = Event._meta.get_field("at")
    with connection.cursor() as cursor:
        for start in range(0, len(rows), INSERT_ROWS):
            chunk = rows[start : start + INSERT_ROWS]
            params: list[Any] = []
            for seq, wall, _, offset_ms, kind, text, digest in chunk:
                at = datetime.fromtimestamp(wall, UTC)
                params.extend(
                    (sid, seq, at_field.get_db_prep_value(at, connection), offset_ms, kind, text, digest)
                )
            values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s)"] * len(chunk))
            cursor.execute(f"INSERT INTO {table} ({columns}) VALUES {values}", params)  # noqa: S608 - names from the model, values bound


# The session row's counters that ``_Tally`` keeps (its fields, by the same names).
_TALLY_FIELDS = tuple(f.name for f in fields(_Tally))


def _committed_state(session_id: uuid.UUID) -> _ChainState | None:
    row = Session.objects.filter(pk=session_id).values("last_hash", *_TALLY_FIELDS).first()
    if row is None:
        return None
    last_hash = row.pop("last_hash") or chain.genesis_hash(session_id)
    return _ChainState(last_hash, _Tally(**row))


def _state_of(session: Session) -> _ChainState:
    """``_committed_state`` of a session row already read."""
    tally = _Tally(**{name: getattr(session, name) for name in _TALLY_FIELDS})
    return _ChainState(session.last_hash or chain.genesis_hash(session.pk), tally)


def _reconciled(
    session_id: uuid.UUID,
    base: _ChainState,
    items: list[_QueuedFields],
    create: dict[str, Any] | None,
    uncertain: bool,
) -> tuple[_ChainState, _ChainState | None]:
    """(the state to chain ``items`` after, and the state if they are committed already).

    In the caller's transaction. ``uncertain`` after a write that failed or was abandoned:
    it may have committed after all, so the session row (updated in the same transaction
    as its events) says where the chain really ends. ``create``: the session's row is
    made here if it is not there yet.
    """
    if not uncertain and create is None:
        return base, None
    committed = _committed_state(session_id)
    if committed is None:
        if create is None:
            raise RuntimeError("the session row is missing")
        Session.objects.create(**create)
        committed = _ChainState(chain.genesis_hash(session_id))
    if committed.seq != base.seq or committed.last_hash != base.last_hash:
        _, would_be = _chain_rows(session_id, base, items)
        if committed.seq == would_be.seq and committed.last_hash == would_be.last_hash:
            return base, would_be  # the earlier attempt did commit this very batch
        base = committed
    return base, None


def _persist(
    session_id: uuid.UUID,
    base: _ChainState,
    items: list[_QueuedFields],
    dropped: int,
    create: dict[str, Any] | None,
    uncertain: bool,
    timeout: float,
) -> _ChainState:
    """Write one batch; return the new committed state (``_reconciled`` says how a write
    after an ``uncertain`` one finds where the chain ends)."""
    with transaction.atomic():
        # Frees this thread when a lock holds the write longer than a recorder waits.
        _limit_statements(timeout)
        base, done = _reconciled(session_id, base, items, create, uncertain)
        if done is not None:
            return done
        if connection.vendor == "postgresql":
            state, data, words = _staged(session_id, base, items)
            if data:
                _copy_events(data)
            if words:
                search.add_batches_words([(str(session_id), words)])
        else:
            rows, state = _chain_rows(session_id, base, items)
            if rows:
                _insert_events(session_id, rows)
        written = Session.objects.filter(pk=session_id, status=Session.Status.LIVE).update(
            last_hash=state.last_hash,
            dropped_events=dropped,
            gateway_seen_at=datetime.now(UTC),
            **state.tally.fields(),
        )
        if not written:
            raise SessionClosedElsewhere(_closed_elsewhere(session_id))
    return state


def _staged(
    session_id: uuid.UUID, base: _ChainState, items: list[_QueuedFields]
) -> tuple[_ChainState, bytes, str]:
    """``items`` chained after ``base`` (PostgreSQL): the state after them, their rows as
    COPY text (``_copy_events``) and their search words (``search.batch_words``)."""
    searched: list[tuple[str, Any]] = []
    copied = _chain_copy(str(session_id), base.last_hash, base.seq, items) if items else None
    if copied is not None:
        data, last_hash = copied
        state = _tally_plain(base, items, last_hash, searched)
    else:
        rows, state = _chain_rows(session_id, base, items, searched)
        data = _copy_text(session_id, rows).encode() if rows else b""
    return state, data, search.batch_words(searched)


# One write's arguments, as ``_persist`` takes them before its ``timeout``.
_Write = tuple[uuid.UUID, _ChainState, list[_QueuedFields], int, "dict[str, Any] | None", bool]


class GroupWriteFailed(Exception):
    """A group of sessions' batches was not written together (``_persist_group``): each
    is then written by a job of its own, which decides that session's outcome alone."""


def _persist_group(writes: list[_Write], timeout: float) -> list[_ChainState]:
    """Write several sessions' batches in one transaction (PostgreSQL): one COPY for all
    their events, one statement for their search words and one for their rows; return
    each one's new committed state, in order.

    What a transaction costs besides its rows (its statements, their round trips, the
    commit, the writer's Python around them) is then paid once for the group instead of
    once per session (docs/recordings.md, "Writing"). All or nothing: any error, a lock
    waited on longer than briefly (another session's row held: ``lock_timeout``) or a
    session no longer live raises ``GroupWriteFailed``, and the gateway writes each batch
    on its own (``_GroupedWrites``), so that one session's trouble stays its own.
    """
    if connection.vendor != "postgresql":
        raise GroupWriteFailed("group writes need PostgreSQL")
    states: list[_ChainState] = []
    copies: list[bytes] = []
    words: list[tuple[str, str]] = []
    rows: list[tuple[Any, ...]] = []
    seen = datetime.now(UTC)
    try:
        with transaction.atomic():
            _limit_statements(timeout, lock_ms=_GROUP_LOCK_MS)
            for session_id, base, items, dropped, create, uncertain in writes:
                base, done = _reconciled(session_id, base, items, create, uncertain)
                if done is not None:
                    states.append(done)
                    continue
                state, data, text = _staged(session_id, base, items)
                copies.append(data)
                if text:
                    words.append((str(session_id), text))
                tally = state.tally
                counts = (getattr(tally, name) for name in _TALLY_FIELDS)
                rows.append((str(session_id), state.last_hash, dropped, *counts))
                states.append(state)
            data = b"".join(copies)
            if data:
                _copy_events(data)
            if words:
                search.add_batches_words(words)
            updated = _update_sessions(rows, seen)
            if updated != len(rows):
                raise GroupWriteFailed(f"{len(rows) - updated} of {len(rows)} sessions no longer live")
    except GroupWriteFailed:
        raise
    except Exception as exc:
        raise GroupWriteFailed(_describe(exc)) from exc
    return states


# How long a group write waits for a lock before giving the group up (milliseconds): a
# session's row held by someone else must not hold up the sessions written with it.
_GROUP_LOCK_MS = 200


def _update_sessions(rows: list[tuple[Any, ...]], seen: datetime) -> int:
    """Set the live sessions' last hash, dropped count and counters from ``rows`` (each
    ``(id, last_hash, dropped_events, *_TALLY_FIELDS)``) in one statement; the number of
    rows updated."""
    if not rows:
        return 0
    meta = Session._meta
    quote = connection.ops.quote_name
    names = ("last_hash", "dropped_events", *_TALLY_FIELDS)
    columns = [meta.get_field(name).column for name in names]  # type: ignore[union-attr]
    assignments = ", ".join(f"{quote(c)} = v.{quote(c)}" for c in columns)
    values = ", ".join(["(%s::uuid, %s, " + ", ".join(["%s::integer"] * (len(names) - 1)) + ")"] * len(rows))
    sql = (
        f"UPDATE {quote(meta.db_table)} AS s SET {assignments}, {quote(meta.get_field('gateway_seen_at').column)} = %s"  # noqa: S608 - names from the model, values bound
        f" FROM (VALUES {values}) AS v(id, {', '.join(quote(c) for c in columns)})"
        f" WHERE s.{quote(meta.pk.column)} = v.id AND s.{quote(meta.get_field('status').column)} = %s"
    )
    params: list[Any] = [seen]
    for row in rows:
        params.extend(row)
    params.append(Session.Status.LIVE)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return int(cursor.rowcount)


def _is_closed_elsewhere(exc: BaseException) -> bool:
    # From the writer process the error comes back described (``WriterJobFailed``).
    return isinstance(exc, SessionClosedElsewhere) or _describe(exc).startswith("SessionClosedElsewhere")


class SessionClosedElsewhere(Exception):
    """The session's row is no longer live: another gateway closed it as abandoned
    (``close_abandoned``) while this one, cut off from the database, still served it."""


def _closed_elsewhere(session_id: uuid.UUID) -> str:
    row = Session.objects.filter(pk=session_id).values("status", "end_reason").first()
    if row is None:
        return "the session row is missing"
    return f"the recording was closed meanwhile ({row['status']}: {row['end_reason']})"


def _heartbeat(session_id: uuid.UUID) -> None:
    """The gateway still serves this idle session (``Session.gateway_seen_at``)."""
    if not Session.objects.filter(pk=session_id, status=Session.Status.LIVE).update(
        gateway_seen_at=datetime.now(UTC)
    ):
        raise SessionClosedElsewhere(_closed_elsewhere(session_id))


def _finalise(
    session_id: uuid.UUID,
    state: _ChainState,
    dropped: int,
    status: str,
    ended_at: datetime,
    end_reason: str,
    timeout: float,
) -> None:
    with transaction.atomic():
        _limit_statements(timeout)
        _seal(session_id, state, dropped, status, ended_at, end_reason)
    _merge_words(session_id, timeout)


def _seal(
    session_id: uuid.UUID, state: _ChainState, dropped: int, status: str, ended_at: datetime, end_reason: str
) -> None:
    """End the live session's row at ``state`` with this host's seal (in the caller's
    transaction); ``SessionClosedElsewhere`` if the row is no longer live."""
    private_key = keys.signing_key()
    sealed = Session.objects.filter(pk=session_id, status=Session.Status.LIVE).update(
        status=status,
        ended_at=ended_at,
        end_reason=end_reason[:255],
        last_hash=state.last_hash,
        dropped_events=dropped,
        seal=chain.seal(private_key, session_id, state.last_hash, state.seq),
        sealed_at=datetime.now(UTC),
        signing_key_id=chain.key_id(private_key.public_key()),
        **state.tally.fields(),
    )
    if not sealed:
        raise SessionClosedElsewhere(_closed_elsewhere(session_id))


def _merge_words(session_id: uuid.UUID, timeout: float) -> None:
    if connection.vendor == "postgresql":
        # After the seal, in a transaction of its own: an index's housekeeping never puts
        # the seal at risk. Best effort: unmerged words are searched all the same.
        try:
            with transaction.atomic():
                _limit_statements(timeout)
                search.merge_session_words(session_id)
        except Exception as exc:
            log.warning("session %s: search words not merged: %s", session_id, _describe(exc))


def _abandoned(cutoff: datetime, unknown: bool) -> Q:
    """Live sessions whose gateway has not vouched for them since ``cutoff``; with
    ``unknown``, also those started before it by a gateway that never vouches (a release
    before ``gateway_seen_at``, which may still be serving them during an upgrade)."""
    stale = Q(gateway_seen_at__lt=cutoff)
    if unknown:
        stale |= Q(gateway_seen_at__isnull=True, started_at__lt=cutoff)
    return Q(status=Session.Status.LIVE) & stale


def _close_abandoned_one(session_id: uuid.UUID, cutoff: datetime, unknown: bool, timeout: float) -> bool:
    """Close one abandoned session, if it still is: a ``session_end`` event chained after
    the last one its gateway wrote, the status ``interrupted``, the seal of this host's key.
    False when it is not abandoned any more (its gateway spoke meanwhile, or another
    gateway closed it first)."""
    with transaction.atomic():
        _limit_statements(timeout)
        # The row lock waits for a batch its gateway is writing (which vouches for the
        # session: the condition is checked again on the row as it then is); a row another
        # sweeper holds is skipped.
        session = (
            Session.objects.select_for_update(skip_locked=True)
            .filter(_abandoned(cutoff, unknown), pk=session_id)
            .first()
        )
        if session is None:
            return False
        base = _state_of(session)
        now = datetime.now(UTC)
        seen = session.gateway_seen_at or session.started_at
        reason = (
            "the gateway serving it stopped without ending it: not heard of since "
            f"{seen.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
        )
        payload = {"reason": reason, "status": Session.Status.INTERRUPTED.value}
        snapshot, canonical, facts = _take(Event.Kind.SESSION_END, payload)
        offset_ms = max(0, int((now - session.started_at).total_seconds() * 1_000_000)) / 1000
        item = (0.0, now.timestamp(), offset_ms, Event.Kind.SESSION_END.value, snapshot, canonical, facts)
        rows, state = _chain_rows(session_id, base, [item])
        _insert_events(session_id, rows)
        ended_at = datetime.fromtimestamp(rows[0][1], UTC)
        _seal(session_id, state, session.dropped_events, Session.Status.INTERRUPTED, ended_at, reason)
        audit.record("gateway", "session.interrupted", session, reason=reason, events=state.seq)
    _merge_words(session_id, timeout)
    return True


def close_abandoned(
    *, abandoned_after: float | None = None, limit: int = 100, unknown: bool = False
) -> list[uuid.UUID]:
    """Close and seal the live sessions whose gateway stopped without ending them (the
    process killed, its host lost): not heard of for ``abandoned_after`` seconds
    (``RECORDING_ABANDONED_SECONDS``). Each gets a last event saying so, the status
    ``interrupted`` and a seal by this host's key, so it verifies like any ended session
    and no longer shows as live. Returns the sessions closed (at most ``limit``).
    ``unknown``: also sessions no gateway ever vouched for (started by a release before
    the heartbeat), started more than ``abandoned_after`` ago: an operator's choice, never
    the gateways' own sweep, since such a gateway may still be serving them.

    Safe to run from several gateways at once, and against a gateway that is alive but
    slow: a session its gateway vouches for meanwhile is left alone, and a gateway that
    finds its session closed (``SessionClosedElsewhere``) ends it.
    """
    if abandoned_after is None:
        abandoned_after = float(settings.RECORDING_ABANDONED_SECONDS)
    cutoff = datetime.now(UTC) - timedelta(seconds=abandoned_after)
    timeout = float(settings.RECORDING_PERSIST_TIMEOUT)
    candidates = list(
        Session.objects.filter(_abandoned(cutoff, unknown))
        .order_by("started_at")
        .values_list("pk", flat=True)[:limit]
    )
    closed = []
    for session_id in candidates:
        try:
            if _close_abandoned_one(session_id, cutoff, unknown, timeout):
                closed.append(session_id)
                log.warning(
                    "session %s: its gateway stopped without ending it: closed as interrupted", session_id
                )
        except Exception as exc:
            log.error("session %s: abandoned, but could not be closed: %s", session_id, _describe(exc))
    return closed


def _limit_statements(timeout: float, *, lock_ms: int | None = None) -> None:
    """Bound each statement of the current transaction by ``timeout`` (PostgreSQL), and
    each wait for a lock by ``lock_ms`` milliseconds when given."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            if lock_ms is None:
                cursor.execute(
                    "SELECT set_config('statement_timeout', %s, true)", [f"{int(timeout * 1000)}ms"]
                )
            else:
                cursor.execute(
                    "SELECT set_config('statement_timeout', %s, true), set_config('lock_timeout', %s, true)",
                    [f"{int(timeout * 1000)}ms", f"{lock_ms}ms"],
                )


def _load_key_id() -> str:
    return keys.signing_key_id()


# The jobs a writer process may run, by name (recordings/writer_process.py).
_JOB_NAMES: dict[Callable[..., Any], str] = {
    _persist: "persist",
    _persist_group: "persist_group",
    _finalise: "finalise",
    _heartbeat: "heartbeat",
    _load_key_id: "load_key_id",
}


# --- the recorder -----------------------------------------------------------------------


class SessionRecorder:
    """Records one session: ``start``, then ``append`` freely, then ``close``.

    Call every method from the event loop that started the recorder.
    """

    _live: ClassVar[weakref.WeakSet[SessionRecorder]] = weakref.WeakSet()

    session_id: uuid.UUID
    failed: bool
    failure_reason: str

    def __init__(self, *, on_failure: Callable[[str], None] | None) -> None:
        self.session_id = uuid.uuid4()
        self.failed = False
        self.failure_reason = ""
        self._on_failure = on_failure
        self._strict = bool(settings.RECORDING_STRICT)
        self._flush_seconds = float(settings.RECORDING_FLUSH_SECONDS)
        self._timeout = float(settings.RECORDING_PERSIST_TIMEOUT)
        # Before the clock starts: the first call loads the channel layer.
        self._announcer = live.Announcer(self.session_id)
        self._t0 = time.monotonic()
        self._queue: collections.deque[_Queued] = collections.deque()
        self._wake = asyncio.Event()
        self._state = _ChainState(chain.genesis_hash(self.session_id))
        self._batch: list[_Queued] | None = None
        self._inflight: asyncio.Future[Any] | None = None
        self._uncertain = False
        self._attempt = 0
        self._last_error = ""
        self._create: dict[str, Any] | None = None
        self._dropped = 0
        self._overflow: list[_Queued] = []  # first and last event dropped while the queue was full
        self._overflow_count = 0
        self._closed = False
        self._closing = False
        self._final_deadline: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._finish_task: asyncio.Task[None] | None = None
        self._ended_at = datetime.now(UTC)
        # The statement event a result may still join (``open_statement``): its handle,
        # monotonic and wall times, and payload. Not queued until it is settled.
        self._open: tuple[int, float, float, dict[str, Any]] | None = None
        self._handles = 0
        self._heartbeat_seconds = float(settings.RECORDING_HEARTBEAT_SECONDS)
        # Another gateway closed this session as abandoned (``close_abandoned``): nothing
        # more can be written to it.
        self._closed_elsewhere = False

    # -- public interface ---------------------------------------------------------------

    @classmethod
    async def start(
        cls,
        *,
        protocol: str,
        agent_name: str,
        connection_name: str,
        agent_id: int | None = None,
        connection_id: int | None = None,
        on_behalf_of_name: str = "",
        on_behalf_of_id: int | None = None,
        client_address: str = "",
        application_name: str = "",
        client_tls: str = "",
        on_failure: Callable[[str], None] | None = None,
    ) -> SessionRecorder:
        """Create the Session row and its ``session_start`` event (one awaited write).

        Raises ``RecordingUnavailable`` in strict mode when that write fails or takes longer
        than ``RECORDING_PERSIST_TIMEOUT``. In best-effort mode the recorder keeps trying
        in the background.
        """
        self = cls(on_failure=on_failure)
        self._push(
            Event.Kind.SESSION_START.value,
            {
                "protocol": protocol,
                "agent": agent_name,
                "agent_id": agent_id,
                "connection": connection_name,
                "connection_id": connection_id,
                "on_behalf_of": on_behalf_of_name,
                "client_address": client_address,
                "application_name": application_name,
                "client_tls": client_tls,
            },
        )
        first = self._queue[0]
        try:
            key_id = await asyncio.wait_for(_submit(_load_key_id), max(self._timeout, KEY_LOAD_SECONDS))
        except Exception as exc:
            # Without the key no recording could ever be sealed: a configuration error.
            raise RecordingUnavailable(f"recording signing key unavailable: {_describe(exc)}") from None
        self._create = {
            "id": self.session_id,
            "protocol": protocol,
            "agent_id": agent_id,
            "agent_name": agent_name,
            "on_behalf_of_id": on_behalf_of_id,
            "on_behalf_of_name": on_behalf_of_name,
            "connection_id": connection_id,
            "connection_name": connection_name,
            "client_address": client_address,
            "application_name": application_name,
            "client_tls": client_tls,
            "started_at": first.at,
            "signing_key_id": key_id,
        }
        self._batch = [self._queue.popleft()]
        future = _submit(
            _persist,
            self.session_id,
            self._state,
            _fields(self._batch),
            0,
            self._create,
            False,
            self._timeout,
        )
        done, _ = await asyncio.wait({future}, timeout=self._timeout)
        if future in done and future.exception() is None:
            self._state, self._batch, self._create = future.result(), None, None
        else:
            error = future.exception() if future in done else None
            why = _describe(error) if error is not None else f"no answer within {self._timeout:g}s"
            reason = f"recording could not be started: {why}"
            if self._strict:
                # A write that is still running may yet create the row; it then stays
                # "live" with only its start event, which is what happened.
                log.error("session %s: %s", self.session_id, reason)
                raise RecordingUnavailable(reason)
            log.warning("session %s: %s; retrying in the background", self.session_id, reason)
            self._uncertain = True
            self._last_error = reason
            if future not in done:
                self._inflight = future
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"recording {self.session_id}")
        self._live.add(self)
        return self

    def append(self, kind: str, payload: dict[str, Any]) -> None:
        """Queue one event. Never awaits and never touches the database.

        Raises ``ValueError`` for an unknown kind and ``TypeError`` for a payload that is not
        JSON data (programming errors, caught by tests). After ``close`` it only logs.
        """
        if self._closed:
            log.warning("session %s: %s event after close was not recorded", self.session_id, kind)
            return
        if kind not in _KINDS:
            raise ValueError(f"unknown recording event kind {kind!r}")
        if type(kind) is not str:
            # An ``Event.Kind`` member: queued as its plain value, which the writer's one
            # pass over a batch takes (``recordings.chainrows``).
            kind = str(kind)
        if self._open is not None:
            self._settle()
        self._push(kind, payload)

    def open_statement(self, payload: dict[str, Any]) -> int:
        """Record a ``statement`` event whose result may still join it; returns its handle.

        The event takes its place and time now. If ``complete`` comes before anything else
        is appended and before the flush interval is up, the result is recorded inside it
        (``payload["result"]``): one event instead of two for the usual statement, and the
        statement's text once. Otherwise the event is queued as it is, and the result
        becomes an event of its own. The caller must not change ``payload`` afterwards:
        it is snapshotted when the event is queued, so a payload that is not JSON data (a
        programming error) raises there (in ``complete``, ``append``, ``open_statement`` or
        ``close``), or fails the recording if the flush interval queues it.
        """
        if self._closed:
            log.warning("session %s: statement event after close was not recorded", self.session_id)
            return 0
        if self._open is not None:
            self._settle()
        self._handles += 1
        self._open = (self._handles, time.monotonic(), time.time(), payload)
        if not self._queue:
            self._wake.set()  # the flush loop times the open event
        return self._handles

    def complete(self, handle: int, result: dict[str, Any]) -> bool:
        """Join ``result`` to the statement ``handle`` opened, if it is still open (True);
        False when it was settled (the caller records the result as an event of its own)."""
        pending = self._open
        if pending is None or pending[0] != handle:
            return False
        self._open = None
        payload = pending[3]
        payload["result"] = result
        self._push(Event.Kind.STATEMENT.value, payload, pending[1], pending[2])
        return True

    def _settle(self) -> None:
        """Queue the open statement event without a result."""
        pending = self._open
        if pending is not None:
            self._open = None
            self._push(Event.Kind.STATEMENT.value, pending[3], pending[1], pending[2])

    async def close(self, *, reason: str, status: str = "ended") -> None:
        """Record ``session_end``, persist everything, seal, and mark the session ended.

        Bounded by about three times ``RECORDING_PERSIST_TIMEOUT`` even when the database
        is gone (drain, one last attempt, seal). Safe to call twice and from a task being cancelled (the work is shielded and
        completes; a second call waits for it).
        """
        if self._finish_task is None:
            if status not in _STATUSES:
                log.error(
                    "session %s: unknown end status %r, recorded as terminated", self.session_id, status
                )
                status = Session.Status.TERMINATED
            self._settle()
            self._push(Event.Kind.SESSION_END.value, {"reason": reason, "status": status})
            self._ended_at = self._queue[-1].at
            self._closed = True
            self._closing = True
            self._wake.set()
            self._finish_task = asyncio.get_running_loop().create_task(self._finish(reason, status))
        await asyncio.shield(self._finish_task)

    @property
    def dropped_events(self) -> int:
        return self._dropped + self._overflow_count

    # -- queueing -----------------------------------------------------------------------

    def _push(self, kind: str, payload: dict[str, Any], mono: float = 0.0, wall: float = 0.0) -> None:
        """Queue one event, timed now or at ``mono``/``wall`` (an open statement's times)."""
        text, canonical, facts = _take(kind, payload)
        if not mono:
            mono, wall = time.monotonic(), time.time()
        # Milliseconds to the microsecond (integer arithmetic: round(x, 3) formats decimals).
        offset_ms = int((mono - self._t0) * 1_000_000) / 1000
        item = _new_queued(_Queued, (mono, wall, offset_ms, kind, text, canonical, facts))
        if len(self._queue) >= MAX_QUEUED and kind != Event.Kind.SESSION_END:
            self._overflowed(item)
            return
        if self._overflow_count:
            self._queue.append(self._marker(self._overflow, self._overflow_count, "recording queue full"))
            self._dropped += self._overflow_count
            self._overflow, self._overflow_count = [], 0
        self._queue.append(item)
        if len(self._queue) == 1 or len(self._queue) >= FLUSH_AT:
            self._wake.set()

    def _overflowed(self, item: _Queued) -> None:
        if not self._overflow:
            self._overflow = [item, item]
        else:
            self._overflow[1] = item
        self._overflow_count += 1
        if self._strict:
            self._fail("recording queue full: the database is not keeping up")

    def _marker(self, span: list[_Queued], count: int, reason: str) -> _Queued:
        first, last = span[0], span[-1]
        payload = {
            "count": count,
            "first_offset_ms": first.offset_ms,
            "last_offset_ms": last.offset_ms,
            "reason": reason,
        }
        # Placed where the lost events were, in time order; its deadline counts from now.
        return _Queued(time.monotonic(), last.wall, last.offset_ms, Event.Kind.DROPPED, orjson.dumps(payload))

    def _fail(self, reason: str) -> None:
        if self.failed:
            return
        self.failed = True
        self.failure_reason = reason
        log.error("session %s: recording failed: %s", self.session_id, reason)
        if self._on_failure is not None and not self._closed:
            try:
                self._on_failure(reason)
            except Exception:
                log.exception("session %s: on_failure callback raised", self.session_id)

    # -- flushing -----------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while True:
                pending = self._open
                if pending is not None:
                    # An open statement waits for its result at most one flush interval.
                    due = pending[1] + self._flush_seconds - time.monotonic()
                    if due <= 0:
                        self._settle()
                    elif self._batch is None and not self._queue:
                        await self._sleep(due, wake=True)
                        continue
                if self._batch is None and not self._queue:
                    if self._closing:
                        return
                    if not await self._sleep(self._heartbeat_seconds, wake=True) and self._create is None:
                        await self._beat()
                        if self._closed_elsewhere:
                            return
                    continue
                if self._batch is None and not self._closing and len(self._queue) < FLUSH_AT:
                    delay = self._due(self._queue[0].mono) - time.monotonic()
                    if delay > 0:
                        await self._sleep(delay, wake=True)
                        continue
                await self._write_once()
                if self._closed_elsewhere:
                    return
                if self.failed and self._strict and self._final_deadline is None:
                    return  # close() makes the last attempt
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("session %s: recording writer stopped", self.session_id)
            self._fail(f"recording writer stopped: {_describe(exc)}")

    async def _beat(self) -> None:
        """Tell the database this gateway still serves the (idle) session, so that no
        other gateway takes it for abandoned (``close_abandoned``)."""
        future = _submit(_heartbeat, self.session_id)
        done, _ = await asyncio.wait({future}, timeout=self._timeout)
        if future not in done:
            log.warning("session %s: heartbeat not written within %gs", self.session_id, self._timeout)
            return
        exc = future.exception()
        if exc is None:
            return
        if _is_closed_elsewhere(exc):
            self._gone(_describe(exc))
        else:
            log.warning("session %s: heartbeat not written: %s", self.session_id, _describe(exc))

    def _gone(self, reason: str) -> None:
        """The session was closed by another gateway: what is still queued is lost, and
        the session ends (in either recording mode: its recording is sealed)."""
        self._closed_elsewhere = True
        lost = len(self._queue) + len(self._batch or []) + (self._open is not None)
        self._queue.clear()
        self._batch = None
        self._open = None
        self._dropped += lost
        self._fail(reason)

    async def _sleep(self, delay: float, *, wake: bool) -> bool:
        """Sleep ``delay`` seconds, or (``wake``) until an event comes: True when one did."""
        if not wake:
            await asyncio.sleep(delay)
            return False
        try:
            async with asyncio.timeout(delay):
                await self._wake.wait()
        except TimeoutError:
            return False
        self._wake.clear()
        return True

    def _due(self, oldest: float) -> float:
        """When a batch whose oldest event was queued at ``oldest`` is written: the first
        tick after it of a grid of flush intervals that every recorder of the process
        shares, so that under load the sessions' batches come together and are written
        as one (``_GroupedWrites``); at most one interval after the event."""
        interval = self._flush_seconds
        return (oldest // interval + 1) * interval

    def _deadline(self, batch: list[_Queued]) -> float:
        if self._final_deadline is not None:
            return self._final_deadline
        return batch[0].mono + self._timeout

    async def _write_once(self) -> None:
        if self._batch is None:
            count = min(len(self._queue), BATCH_ROWS)
            self._batch = [self._queue.popleft() for _ in range(count)]
        batch = self._batch
        deadline = self._deadline(batch)
        if self._inflight is None:
            if self._last_error and time.monotonic() >= deadline:
                self._give_up(self._last_error)
                return
            self._inflight = _submit_write(
                (self.session_id, self._state, _fields(batch), self._dropped, self._create, self._uncertain),
                self._timeout,
            )
        future = self._inflight
        done, _ = await asyncio.wait({future}, timeout=max(0.0, deadline - time.monotonic()))
        if future not in done:
            self._uncertain = True
            reason = f"events not persisted within {self._timeout:g}s (database slow or locked)"
            if self._strict or self._final_deadline is not None:
                self._fail(reason)
                return
            # Best effort: the write may still commit, so wait for its outcome before
            # deciding whether this batch is lost. The statement timeout bounds the wait.
            log.warning("session %s: %s", self.session_id, reason)
            await asyncio.wait({future})
        self._inflight = None
        exc = future.exception()
        if exc is None:
            self._state, self._batch, self._create = future.result(), None, None
            self._uncertain = False
            self._attempt = 0
            self._last_error = ""
            # One announcement per committed batch, for live watchers.
            self._announcer.announce(live.events_message(self.session_id, self._state.seq))
            return
        if _is_closed_elsewhere(exc):
            self._gone(_describe(exc))
            return
        self._uncertain = True
        self._last_error = f"recording write failed: {_describe(exc)}"
        if time.monotonic() >= deadline:
            self._give_up(self._last_error)
            return
        log.warning("session %s: %s; retrying", self.session_id, self._last_error)
        self._attempt += 1
        backoff = min(max(self._flush_seconds, 0.05) * 2**self._attempt, 1.0)
        await self._sleep(min(backoff, max(0.0, deadline - time.monotonic())), wake=False)

    def _give_up(self, reason: str) -> None:
        if self._strict or self._final_deadline is not None:
            self._fail(reason)
        else:
            self._drop_batch(reason)
            self._last_error = ""

    def _drop_batch(self, reason: str) -> None:
        assert self._batch is not None  # noqa: S101 - only called with a batch in hand
        lost = self._batch
        self._batch = None
        self._attempt = 0
        # Events already older than the bound are lost too: writing them would only delay
        # the events behind them.
        now = time.monotonic()
        while (
            self._queue
            and self._queue[0].mono + self._timeout <= now
            and self._queue[0].kind != Event.Kind.SESSION_END
        ):
            lost.append(self._queue.popleft())
        start = None
        if self._create is not None and lost and lost[0].kind == Event.Kind.SESSION_START:
            # The start event is what creates the session row: it is never dropped.
            start, lost = lost[0]._replace(mono=now), lost[1:]
        if lost:
            # An earlier gap marker caught up in this loss is folded into the new one.
            count = sum(
                _load_snapshot(i.payload)["count"] if i.kind == Event.Kind.DROPPED else 1 for i in lost
            )
            self._dropped += sum(1 for i in lost if i.kind != Event.Kind.DROPPED)
            log.warning("session %s: %d events dropped: %s", self.session_id, count, reason)
            self._queue.appendleft(self._marker(lost, count, reason))
        if start is not None:
            self._queue.appendleft(start)

    # -- closing ------------------------------------------------------------------------

    async def _finish(self, reason: str, status: str) -> None:
        assert self._task is not None  # noqa: S101 - start() always creates it
        try:
            await asyncio.wait({self._task}, timeout=self._timeout)
            if not self._task.done():
                self._task.cancel()
                await asyncio.wait({self._task})
            if self._closed_elsewhere:
                log.warning(
                    "session %s: ended (%s); its recording was closed by another gateway",
                    self.session_id,
                    reason,
                )
                return
            if self._batch is not None or self._queue:
                # Strict mode after a failure, or best effort with a stuck write: one more
                # bounded attempt, the database may be back.
                self._final_deadline = time.monotonic() + self._timeout
                while (self._batch is not None or self._queue) and time.monotonic() < self._final_deadline:
                    await self._write_once()
                    if (
                        self.failed
                        and (self._batch is not None or self._queue)
                        and self._inflight is not None
                    ):
                        break
            unpersisted = len(self._queue) + len(self._batch or [])
            if self._create is not None:
                log.error("session %s: recording never reached the database", self.session_id)
                return
            end_reason = reason
            if unpersisted or self.failed:
                self._dropped += unpersisted
                note = f"recording incomplete: {unpersisted} events not persisted" if unpersisted else ""
                end_reason = "; ".join(p for p in (reason, self.failure_reason, note) if p)
            future = _submit(
                _finalise,
                self.session_id,
                self._state,
                self.dropped_events,
                status,
                self._ended_at,
                end_reason,
                self._timeout,
            )
            done, _ = await asyncio.wait({future}, timeout=self._timeout)
            if future not in done or future.exception() is not None:
                why = "timed out" if future not in done else _describe(future.exception())  # type: ignore[arg-type]
                log.error("session %s: recording could not be sealed: %s", self.session_id, why)
            else:
                self._announcer.announce(live.ended_message(self.session_id, status, end_reason[:255]))
        finally:
            self._live.discard(self)
            await self._announcer.drain()


async def close_all(reason: str = "gateway shutting down") -> None:
    """Close every live recorder of this process (on the current loop), for a clean stop."""
    recorders = list(SessionRecorder._live)
    if recorders:
        await asyncio.gather(
            *(r.close(reason=reason, status=Session.Status.TERMINATED) for r in recorders),
            return_exceptions=True,
        )
