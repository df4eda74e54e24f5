"""The hash chain and seal of a session recording (pure: no ORM, no settings, no I/O).

Each event's hash is ``SHA-256(previous hash || canonical bytes of the event)``; the first
event chains from a genesis value derived from the session id, so events cannot be moved
between sessions. When a session ends, the gateway signs the last hash, the event count and
the session id with its Ed25519 key (the seal). An edited, deleted, inserted or reordered
event breaks the chain at that event; recomputing the whole chain after an edit (anyone can:
SHA-256 needs no key) no longer matches the seal.

Canonical bytes are compact JSON with sorted keys, UTF-8, as orjson writes it (shortest
round-trip floats), of ``{"at", "kind", "offset_ms", "payload", "seq"}``. The payload is
first normalised so that it survives a round trip through PostgreSQL's ``jsonb`` unchanged
(see ``normalise_payload``).
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from recordings import jsonscan

# Whether orjson's text may hold what jsonb stores differently (``recordings.jsonscan``):
# its C build when it was built from the sources in use (``gateway.native``); the
# reference where the project is not there (the offline verifier, docs/recordings.md).
_altered_by_jsonb: Callable[[bytes], bool]
try:
    from gateway import native
except ImportError:
    _altered_by_jsonb = jsonscan.altered_by_jsonb
else:
    _altered_by_jsonb = native.load(jsonscan).altered_by_jsonb

CHAIN_VERSION = b"airlock recording v1"
SEAL_VERSION = b"airlock seal v1"
HASH_LENGTH = 64

# Floats at or beyond 1e16 are printed with an exponent ("1e+16"); jsonb prints them as
# integers, which load back as int and would change the canonical text.
_FLOAT_EXPONENT_LIMIT = 1e16
# What orjson encodes: integers of at most 64 bits.
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
_SURROGATE = re.compile("[\ud800-\udfff]")


class ChainedEvent(Protocol):
    """What ``verify_chain`` reads of an event (an ORM row or a named tuple will do)."""

    @property
    def seq(self) -> int: ...
    @property
    def at(self) -> datetime: ...
    @property
    def offset_ms(self) -> float: ...
    @property
    def kind(self) -> str: ...
    @property
    def payload(self) -> Any: ...
    @property
    def hash(self) -> str: ...


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of checking a chain (and, for a session, its seal).

    ``first_broken_seq`` is the sequence number of the first event that is missing, changed,
    added or out of place (None when the chain itself is intact or the failure is not tied
    to one event, such as a bad seal). ``event_count`` and ``last_hash`` describe the chain
    as read, up to the first break.
    """

    ok: bool
    first_broken_seq: int | None = None
    reason: str = ""
    event_count: int = 0
    last_hash: str = ""


def genesis_hash(session_id: uuid.UUID | str) -> str:
    """The value the first event of a session chains from."""
    return hashlib.sha256(CHAIN_VERSION + b"\n" + str(uuid.UUID(str(session_id))).encode()).hexdigest()


def _normalise_string(value: str) -> str:
    # jsonb refuses NUL ("\u0000 cannot be converted to text") and lone surrogates; a
    # recorded terminal byte stream may contain either. U+FFFD is what a lossy UTF-8
    # decode would have produced.
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    if _SURROGATE.search(value):
        value = value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return value


def _normalise_int(value: int) -> int | str:
    # Beyond 64 bits no JSON reader can be trusted with the exact value: kept as digits.
    return value if _INT_MIN <= value <= _INT_MAX else str(value)


def _normalise_float(value: float) -> float | int | str | None:
    if not math.isfinite(value):
        return None  # JSON has no NaN or infinity
    if value == 0.0:
        return 0.0  # -0.0 has no numeric form in jsonb
    if abs(value) >= _FLOAT_EXPONENT_LIMIT:
        return _normalise_int(int(value))
    return value


def _normalise_key(key: Any) -> str:
    if isinstance(key, str):
        return _normalise_string(key)
    if key is None or isinstance(key, bool | int | float):
        return orjson.dumps(key).decode()  # as JSON writes the value: 3 -> "3", True -> "true"
    raise TypeError(f"a recording payload's keys are strings, not {type(key).__name__}")


def normalise_payload(value: Any) -> Any:
    """Return ``value`` as plain JSON data that jsonb stores and returns unchanged.

    Object keys become strings; tuples become lists; NUL and lone surrogates in strings
    become U+FFFD; NaN and infinities become null; floats of 1e16 and beyond become
    integers; integers beyond 64 bits become strings of digits. Anything else that is
    not JSON raises ``TypeError``.
    """
    if isinstance(value, str):
        return _normalise_string(value)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return _normalise_int(value)
    if isinstance(value, float):
        return _normalise_float(value)
    if isinstance(value, dict):
        return {_normalise_key(k): normalise_payload(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [normalise_payload(item) for item in value]
    raise TypeError(f"a recording payload holds only JSON values, not {type(value).__name__}")


def canonical_payload(payload: Any) -> bytes:
    """The canonical JSON of a payload: normalised, sorted keys, no spaces, UTF-8."""
    return orjson.dumps(normalise_payload(payload), option=orjson.OPT_SORT_KEYS)


def canonical_decoded_payload(payload: Any) -> bytes:
    """``canonical_payload`` for a value that a JSON reader produced, faster.

    Decoded JSON has only string keys, so normalising is needed only for what jsonb
    would alter (an integer beyond 64 bits, a lone surrogate...): ``canonical_plain``
    declines exactly that, and only then is the payload normalised.
    """
    text = canonical_plain(payload)
    return canonical_payload(payload) if text is None else text


def canonical_plain(payload: Any) -> bytes | None:
    """``canonical_payload`` in one encoding when ``payload`` needs no normalising, else None.

    Equal to ``canonical_decoded_payload`` of the payload after a JSON round trip: orjson
    refuses what is not plain JSON (non-string keys, bytes, integers beyond 64 bits, lone
    surrogates) and the encoded text shows the rest of what jsonb would alter.
    """
    try:
        text = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return None
    return None if _altered_by_jsonb(text) else text


def format_time(at: datetime) -> str:
    """ISO 8601 in UTC with microseconds (the precision the database keeps)."""
    if at.tzinfo is not UTC:
        if at.tzinfo is None:
            raise ValueError("event times must be timezone-aware")
        at = at.astimezone(UTC)
    return at.isoformat(timespec="microseconds")


# "YYYY-MM-DDTHH:MM:SS" of recent whole seconds (``format_wall``): a batch's events mostly
# share their second.
_SECONDS: dict[int, str] = {}
_SECONDS_KEPT = 64


def format_wall(wall: float) -> str:
    """``format_time(datetime.fromtimestamp(wall, UTC))``, the time of an event appended at
    ``time.time()`` = ``wall``, in a third of the time: the microseconds rounded as
    ``fromtimestamp`` rounds them (half to even), the date and time of day formatted once
    per second."""
    fraction, whole = math.modf(wall)
    second = int(whole)
    micro = round(fraction * 1e6)
    if micro >= 1_000_000:
        second += 1
        micro -= 1_000_000
    elif micro < 0:
        second -= 1
        micro += 1_000_000
    prefix = _SECONDS.get(second)
    if prefix is None:
        if len(_SECONDS) >= _SECONDS_KEPT:
            _SECONDS.clear()
        prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _SECONDS[second] = prefix
    return f"{prefix}.{micro:06d}+00:00"


def envelope(seq: int, at_text: str, offset_ms: float, kind: str, payload: bytes) -> bytes:
    """Canonical bytes from already canonical parts (what ``canonical_event`` builds)."""
    # Keys in sorted order: this is the canonical JSON of the whole event.
    return b'{"at":%s,"kind":%s,"offset_ms":%s,"payload":%s,"seq":%d}' % (
        orjson.dumps(at_text),
        orjson.dumps(kind),
        orjson.dumps(float(offset_ms)),
        payload,
        seq,
    )


def canonical_event(seq: int, at: datetime, offset_ms: float, kind: str, payload: Any) -> bytes:
    """The bytes an event's hash covers."""
    if not math.isfinite(offset_ms):
        raise ValueError("an event offset must be a finite number")
    return envelope(seq, format_time(at), offset_ms, kind, canonical_payload(payload))


def event_hash(prev_hash: str, canonical: bytes) -> str:
    """SHA-256 hex of the previous hash (64 hex characters) followed by the canonical bytes."""
    return hashlib.sha256(prev_hash.encode("ascii") + canonical).hexdigest()


def verify_chain(session_id: uuid.UUID | str, events: Iterable[ChainedEvent]) -> VerifyResult:
    """Check that ``events`` (in the order stored, by seq) form an unbroken chain from 1.

    Payloads are taken as decoded JSON (what the database returns), with string keys.

    Stops at the first event that is missing, out of place, or whose hash does not match
    its content and predecessor, and names its sequence number.
    """
    prev = genesis_hash(session_id)
    expected = 1
    for event in events:
        if event.seq != expected:
            if event.seq > expected:
                reason = f"event {expected} is missing (next stored event is {event.seq})"
            else:
                reason = f"event {event.seq} appears again or out of order after event {expected - 1}"
            return VerifyResult(False, expected, reason, expected - 1, prev)
        try:
            canonical = envelope(
                event.seq,
                format_time(event.at),
                event.offset_ms,
                event.kind,
                canonical_decoded_payload(event.payload),
            )
        except (TypeError, ValueError) as exc:
            return VerifyResult(
                False, expected, f"event {expected} cannot be read: {exc}", expected - 1, prev
            )
        digest = event_hash(prev, canonical)
        if digest != event.hash:
            return VerifyResult(
                False,
                expected,
                f"event {expected} does not match its hash (changed, inserted or reordered)",
                expected - 1,
                prev,
            )
        prev = digest
        expected += 1
    return VerifyResult(True, None, "", expected - 1, prev)


def _seal_message(session_id: uuid.UUID | str, last_hash: str, event_count: int) -> bytes:
    return b"\n".join(
        [
            SEAL_VERSION,
            str(uuid.UUID(str(session_id))).encode(),
            last_hash.encode("ascii"),
            b"%d" % event_count,
        ]
    )


def seal(
    private_key: Ed25519PrivateKey, session_id: uuid.UUID | str, last_hash: str, event_count: int
) -> str:
    """Sign the end of a chain; returns the signature in base64."""
    return base64.b64encode(private_key.sign(_seal_message(session_id, last_hash, event_count))).decode()


def verify_seal(
    public_key: Ed25519PublicKey,
    session_id: uuid.UUID | str,
    last_hash: str,
    event_count: int,
    signature: str,
) -> bool:
    try:
        raw = base64.b64decode(signature, validate=True)
        public_key.verify(raw, _seal_message(session_id, last_hash, event_count))
    except (InvalidSignature, ValueError):
        return False
    return True


def key_id(public_key: Ed25519PublicKey) -> str:
    """The fingerprint that names a signing key: SHA-256 hex of the raw public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()
