"""Session exports: JSONL with the hash chain and seal, and asciicast v2 (pure: no ORM, no I/O).

JSONL, one JSON object per line:

1. ``{"format": "airlock-recording", "version": 1, "session": {...}, "genesis_hash": ...}``;
   ``session`` holds the row's fields (id, protocol, agent, on_behalf_of, connection,
   client_address, application_name, client_tls, status, started_at, ended_at, end_reason,
   event_count, dropped_events).
2. One line per event, in order: ``{"seq", "at", "offset_ms", "kind", "payload", "hash"}``,
   ``at`` as the chain hashes it (ISO 8601, UTC, microseconds).
3. ``{"seal": {"signature", "key_id", "last_hash", "event_count", "sealed_at"}}``;
   ``signature`` is null for a session still live when exported.

``verify_lines`` checks such a file with nothing but the public key: the chain from the
session's genesis hash, every event's hash, and the seal over the last hash and count.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from recordings import chain

FORMAT = "airlock-recording"
VERSION = 1
CAST_WIDTH, CAST_HEIGHT = 80, 24


def header_line(session: Mapping[str, Any]) -> bytes:
    return (
        orjson.dumps(
            {
                "format": FORMAT,
                "version": VERSION,
                "session": dict(session),
                "genesis_hash": chain.genesis_hash(str(session["id"])),
            }
        )
        + b"\n"
    )


def event_line(seq: int, at: datetime, offset_ms: float, kind: str, payload: Any, digest: str) -> bytes:
    return (
        orjson.dumps(
            {
                "seq": seq,
                "at": chain.format_time(at),
                "offset_ms": offset_ms,
                "kind": kind,
                "payload": payload,
                "hash": digest,
            }
        )
        + b"\n"
    )


def seal_line(
    signature: str | None, key_id: str, last_hash: str, event_count: int, sealed_at: str | None
) -> bytes:
    return (
        orjson.dumps(
            {
                "seal": {
                    "signature": signature or None,
                    "key_id": key_id,
                    "last_hash": last_hash,
                    "event_count": event_count,
                    "sealed_at": sealed_at,
                }
            }
        )
        + b"\n"
    )


@dataclass(frozen=True)
class ExportCheck:
    """What ``verify_lines`` found. ``first_broken_seq`` names the first bad event, if any."""

    ok: bool
    reason: str = ""
    first_broken_seq: int | None = None
    session_id: str = ""
    event_count: int = 0
    sealed: bool = False


@dataclass(frozen=True)
class _Event:
    seq: int
    at: datetime
    offset_ms: float
    kind: str
    payload: Any
    hash: str


class _Malformed(Exception):
    pass


def _event(record: Any, line_number: int) -> _Event:
    try:
        at = datetime.fromisoformat(record["at"])
        seq, offset_ms = record["seq"], record["offset_ms"]
        if isinstance(seq, bool) or not isinstance(seq, int):
            raise TypeError("seq")
        if isinstance(offset_ms, bool) or not isinstance(offset_ms, int | float):
            raise TypeError("offset_ms")
        kind, digest = record["kind"], record["hash"]
        if not isinstance(kind, str) or not isinstance(digest, str):
            raise TypeError("kind")
        return _Event(seq, at, float(offset_ms), kind, record["payload"], digest)
    except (KeyError, TypeError, ValueError) as exc:
        raise _Malformed(f"line {line_number} is not an event ({exc})") from None


def verify_lines(lines: Iterable[bytes | str], public_keys: Mapping[str, Ed25519PublicKey]) -> ExportCheck:
    """Check an exported session against ``public_keys`` (key id -> key)."""
    iterator = iter(lines)
    try:
        first = orjson.loads(next(iterator))
    except StopIteration:
        return ExportCheck(False, "the file is empty")
    except orjson.JSONDecodeError:
        return ExportCheck(False, "line 1 is not JSON")
    if not isinstance(first, dict) or first.get("format") != FORMAT:
        return ExportCheck(False, "line 1 is not the header of an Airlock recording export")
    if first.get("version") != VERSION:
        return ExportCheck(False, f"unsupported export version {first.get('version')!r}")
    raw_session = first.get("session")
    session: dict[str, Any] = raw_session if isinstance(raw_session, dict) else {}
    session_id = str(session.get("id", ""))
    try:
        genesis = chain.genesis_hash(session_id)
    except ValueError:
        return ExportCheck(False, "the header names no valid session id")
    if first.get("genesis_hash") != genesis:
        return ExportCheck(False, "the header's genesis hash does not match its session id", None, session_id)

    seal: dict[str, Any] | None = None
    extra_after_seal = False

    def events() -> Iterable[_Event]:
        nonlocal seal, extra_after_seal
        for number, raw in enumerate(iterator, start=2):
            if not raw.strip():
                continue
            try:
                record = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise _Malformed(f"line {number} is not JSON") from None
            if seal is not None:
                extra_after_seal = True
                return
            if isinstance(record, dict) and "seal" in record:
                seal = record["seal"] if isinstance(record["seal"], dict) else {}
                continue
            yield _event(record, number)

    try:
        result = chain.verify_chain(session_id, events())
    except _Malformed as exc:
        return ExportCheck(False, str(exc), None, session_id)
    if not result.ok:
        return ExportCheck(False, result.reason, result.first_broken_seq, session_id, result.event_count)
    count = result.event_count
    if extra_after_seal:
        return ExportCheck(False, "lines follow the seal", count + 1, session_id, count)
    if seal is None:
        return ExportCheck(False, "the file ends without its seal line (cut short?)", None, session_id, count)
    if not seal.get("signature"):
        return ExportCheck(
            False,
            "the session was live when exported: its chain is intact but not sealed",
            None,
            session_id,
            count,
        )
    if seal.get("event_count") != count or seal.get("last_hash") != result.last_hash:
        return ExportCheck(
            False,
            f"the seal covers {seal.get('event_count')} events, the file holds {count} (events removed or added)",
            None,
            session_id,
            count,
        )
    key = public_keys.get(str(seal.get("key_id", "")))
    if key is None:
        return ExportCheck(
            False, "the seal was made by a key other than the one given", None, session_id, count
        )
    if not chain.verify_seal(key, session_id, result.last_hash, count, str(seal["signature"])):
        return ExportCheck(False, "the seal's signature does not match", None, session_id, count)
    declared = session.get("event_count")
    if declared is not None and declared != count:
        return ExportCheck(
            False, f"the header says {declared} events, the sealed chain has {count}", None, session_id, count
        )
    return ExportCheck(True, "", None, session_id, count, True)


# --- asciicast v2 (https://docs.asciinema.org/manual/asciicast/v2/) --------------------------


def cast_header(*, width: int, height: int, timestamp: int, title: str) -> bytes:
    return (
        orjson.dumps(
            {
                "version": 2,
                "width": width,
                "height": height,
                "timestamp": timestamp,
                "title": title,
                "env": {"TERM": "xterm-256color"},
            }
        )
        + b"\n"
    )


def cast_line(offset_ms: float, kind: str, payload: Any) -> bytes | None:
    """One asciicast event for an ``output`` or ``input`` event (None for other kinds)."""
    if kind not in ("output", "input") or not isinstance(payload, dict):
        return None
    data = payload.get("data")
    if not isinstance(data, str):
        return None
    return orjson.dumps([round(offset_ms / 1000, 6), "o" if kind == "output" else "i", data]) + b"\n"
