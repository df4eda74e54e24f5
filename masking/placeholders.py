"""How masked values are written, and how to recognise them again.

Every mask is an ASCII placeholder in square brackets, so that it survives any client
encoding and can be told apart from data:

- ``redact``: ``[EMAIL]``
- ``partial``: ``[CARD:****1111]`` (the last four letters or digits; values with fewer
  than eight of them are redacted instead, since four would give most of them away)
- ``hash``: ``[EMAIL:3f9a1c2b]``, the first 8 hex digits of HMAC-SHA256 under a key the
  caller passes in: the same value gives the same placeholder, so joins and counting still
  work, and without the key nobody can test guesses against it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Iterable
from enum import StrEnum


class Method(StrEnum):
    REDACT = "redact"
    PARTIAL = "partial"
    HASH = "hash"


METHODS = tuple(m.value for m in Method)
HASH_HEX_DIGITS = 8
PARTIAL_KEEP = 4
PARTIAL_MIN = 8
MIN_HASH_KEY_BYTES = 16

LABEL_RE = re.compile(r"[A-Z][A-Z0-9_]{0,62}")


def label_of(entity: str) -> str:
    return entity.upper()


_NOT_KEPT = re.compile(r"[^A-Za-z0-9]+")
_NOT_KEPT_BYTES = re.compile(rb"[^A-Za-z0-9]+")


def _keep(secret: str) -> str | None:
    kept = _NOT_KEPT.sub("", secret)
    if len(kept) < PARTIAL_MIN:
        return None
    return kept[-PARTIAL_KEEP:]


def _identity(value: str) -> str:
    return value


class Renderer:
    """Turns a secret into its placeholder for one entity and method."""

    __slots__ = (
        "_hmac",
        "_key",
        "_label",
        "_normalise",
        "_partial_prefix",
        "_redacted_bytes",
        "method",
        "redacted",
    )

    def __init__(
        self,
        entity: str,
        method: Method,
        hash_key: bytes | None,
        normalise: Callable[[str], str] | None = None,
    ) -> None:
        if method is Method.HASH and (hash_key is None or len(hash_key) < MIN_HASH_KEY_BYTES):
            raise ValueError(f"the hash method needs a key of at least {MIN_HASH_KEY_BYTES} bytes")
        self._label = label_of(entity)
        self.method = method
        self._key = hash_key or b""
        self._normalise = normalise or _identity
        self.redacted = f"[{self._label}]"
        self._redacted_bytes = self.redacted.encode("ascii")
        self._partial_prefix = f"[{self._label}:****".encode("ascii")
        # Keyed once: a copy per value costs a fraction of hmac.digest(), which looks the
        # hash up by name on every call (OpenSSL 3).
        self._hmac = hmac.new(self._key, digestmod=hashlib.sha256) if method is Method.HASH else None

    def partial_bytes(self, secret: bytes) -> bytes:
        """``partial`` straight from bytes in an ASCII-compatible encoding (the same result)."""
        kept = _NOT_KEPT_BYTES.sub(b"", secret)
        if len(kept) < PARTIAL_MIN:
            return self._redacted_bytes
        return self._partial_prefix + kept[-PARTIAL_KEEP:] + b"]"

    def __call__(self, secret: str) -> str:
        if self.method is Method.REDACT:
            return self.redacted
        if self.method is Method.PARTIAL:
            kept = _keep(secret)
            return self.redacted if kept is None else f"[{self._label}:****{kept}]"
        message = self._normalise(secret).encode("utf-8", "surrogateescape")
        if self._hmac is None:  # a HASH renderer always has one; kept for safety
            digest = hmac.digest(self._key, message, "sha256").hex()[:HASH_HEX_DIGITS]
        else:
            keyed = self._hmac.copy()
            keyed.update(message)
            digest = keyed.hexdigest()[:HASH_HEX_DIGITS]
        return f"[{self._label}:{digest}]"


def placeholder_pattern(labels: Iterable[str]) -> str:
    """A regular expression (no capturing groups) matching the placeholders of ``labels``."""
    alternatives = "|".join(sorted((re.escape(label) for label in set(labels)), key=lambda s: (-len(s), s)))
    return (
        rf"\[(?:{alternatives})(?::[0-9a-f]{{{HASH_HEX_DIGITS}}}|:\*\*\*\*[A-Za-z0-9]{{{PARTIAL_KEEP}}})?\]"
    )


def _builtin_placeholders() -> tuple[re.Pattern[str], re.Pattern[bytes]]:
    from masking.detectors import BUILTIN_ENTITIES

    pattern = placeholder_pattern([*(label_of(e) for e in BUILTIN_ENTITIES), "MASKED"])
    return re.compile(pattern), re.compile(pattern.encode("ascii"))


_BUILTIN_STR, _BUILTIN_BYTES = _builtin_placeholders()


def contains_placeholder(text: str | bytes) -> bool:
    """Whether ``text`` holds a placeholder of a built-in entity or a column rule.

    The write-back guard: a statement that would write a masked value back into a table
    is denied. ``MaskingPolicy.contains_placeholder`` also knows the policy's own entities.
    """
    if isinstance(text, bytes):
        return _BUILTIN_BYTES.search(text) is not None
    return _BUILTIN_STR.search(text) is not None
