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
import importlib
import re
from binascii import hexlify
from collections.abc import Callable, Iterable, Sequence
from enum import StrEnum


class Method(StrEnum):
    REDACT = "redact"
    PARTIAL = "partial"
    HASH = "hash"


METHODS = tuple(m.value for m in Method)
HASH_HEX_DIGITS = 8
_HASH_BYTES = HASH_HEX_DIGITS // 2
PARTIAL_KEEP = 4
PARTIAL_MIN = 8
MIN_HASH_KEY_BYTES = 16
# Placeholders of the hash method kept per renderer (``Renderer.hash_ascii_each``).
HASH_CACHE_SIZE = 32768

LABEL_RE = re.compile(r"[A-Z][A-Z0-9_]{0,62}")


def label_of(entity: str) -> str:
    return entity.upper()


_NOT_KEPT = re.compile(r"[^A-Za-z0-9]+")
_NOT_KEPT_BYTES = bytes(c for c in range(256) if not chr(c).isascii() or not chr(c).isalnum())
_NOT_KEPT_NOR_NUL = _NOT_KEPT_BYTES[1:]  # NUL (0) comes first: it separates values


def _keep(secret: str) -> str | None:
    kept = _NOT_KEPT.sub("", secret)
    if len(kept) < PARTIAL_MIN:
        return None
    return kept[-PARTIAL_KEEP:]


def _identity(value: str) -> str:
    return value


def _identity_bytes(value: bytes) -> bytes:
    return value


# What a scanner calls to turn a secret into its placeholder: a ``Renderer``, or a function
# wrapping one (``MaskingPolicy.traced_scanner``).
Render = Callable[[str], str]


class Renderer:
    """Turns a secret into its placeholder for one entity and method."""

    __slots__ = (
        "_hash_prefix",
        "_hashed",
        "_inner",
        "_key",
        "_label",
        "_normalise",
        "_normalise_ascii",
        "_outer",
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
        normalise_ascii: Callable[[bytes], bytes] | None = None,
    ) -> None:
        if method is Method.HASH and (hash_key is None or len(hash_key) < MIN_HASH_KEY_BYTES):
            raise ValueError(f"the hash method needs a key of at least {MIN_HASH_KEY_BYTES} bytes")
        self._label = label_of(entity)
        self.method = method
        self._key = hash_key or b""
        self._normalise = normalise or _identity
        # ``normalise`` for ASCII bytes, when it has such a form (see hash_bytes()).
        self._normalise_ascii = _identity_bytes if normalise is None else normalise_ascii
        self._hash_prefix = f"[{self._label}:".encode("ascii")
        self.redacted = f"[{self._label}]"
        self._redacted_bytes = self.redacted.encode("ascii")
        self._partial_prefix = f"[{self._label}:****".encode("ascii")
        # HMAC (RFC 2104) from SHA-256 states keyed once: copying them costs a fraction of
        # hmac.digest(), which looks the hash up by name on every call (OpenSSL 3), and of
        # hmac.HMAC.copy(), which goes through Python.
        self._inner: hashlib._Hash | None = None
        self._outer: hashlib._Hash | None = None
        if method is Method.HASH:
            self._inner, self._outer = _keyed_states(self._key)
        # hash(secret) -> placeholder, for ASCII secrets given as bytes (hash_ascii_each):
        # the same values come back in result after result (an agent paging through a
        # table), and a dictionary lookup costs a tenth of the HMAC. Keyed by Python's
        # hash of the value (SipHash under the process's random key), never by the value,
        # so the cache keeps no secret. Two values with the same 64-bit hash would share a
        # placeholder: about 2**-64 per lookup, where the placeholder's own 32 bits make
        # two different values share one at 2**-32 per pair.
        self._hashed: dict[int, bytes] = {}

    def partial_bytes(self, secret: bytes) -> bytes:
        """``partial`` straight from bytes in an ASCII-compatible encoding (the same result)."""
        kept = secret.translate(None, _NOT_KEPT_BYTES)
        if len(kept) < PARTIAL_MIN:
            return self._redacted_bytes
        return self._partial_prefix + kept[-PARTIAL_KEEP:] + b"]"

    def hash_bytes(self, secret: bytes) -> bytes | None:
        """``hash`` of an ASCII secret given as bytes, as bytes (the same placeholder); None
        when ``secret`` is not ASCII or this entity's normaliser has no ASCII form."""
        normalise = self._normalise_ascii
        if normalise is None or self._inner is None or self._outer is None or not secret.isascii():
            return None
        return self._hmac_placeholder(normalise(secret))

    def _hmac_placeholder(self, message: bytes) -> bytes:
        """The ``hash`` placeholder of ``message`` (normalised already), as ASCII bytes."""
        assert self._inner is not None and self._outer is not None  # noqa: S101 - HASH renderers only
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return self._hash_prefix + hexlify(outer.digest()[:_HASH_BYTES]) + b"]"

    def partial_parts(self) -> tuple[bytes, bytes, int, int]:
        """What ``partial_bytes`` puts together, for code that masks bytes where they lie
        (``gateway.postgres.wirerows``): the prefix, the placeholder of a value with too few
        letters and digits, how many it needs, how many it keeps."""
        return self._partial_prefix, self._redacted_bytes, PARTIAL_MIN, PARTIAL_KEEP

    def hash_cache(self) -> dict[int, bytes] | None:
        """The placeholders ``hash_ascii_each`` keeps (keyed by Python's hash of an ASCII
        value), for lookups where the values lie (``gateway.postgres.wirerows``); None when
        it keeps none (no ASCII form of this entity's normaliser)."""
        if self._normalise_ascii is None or self._inner is None or self._outer is None:
            return None
        return self._hashed

    def partial_bytes_each(self, secrets: Sequence[bytes]) -> list[bytes]:
        """``partial_bytes`` of each of ``secrets`` (none holding NUL), the letters and digits
        of all of them picked out in one pass."""
        kept_each = b"\x00".join(secrets).translate(None, _NOT_KEPT_NOR_NUL).split(b"\x00")
        if len(kept_each) != len(secrets):
            return [self.partial_bytes(secret) for secret in secrets]
        redacted, prefix = self._redacted_bytes, self._partial_prefix
        return [
            redacted if len(kept) < PARTIAL_MIN else prefix + kept[-PARTIAL_KEEP:] + b"]"
            for kept in kept_each
        ]

    def hash_ascii_each(self, secrets: Sequence[bytes]) -> list[bytes] | None:
        """``hash_bytes`` of each of ``secrets``, ASCII text as bytes, looked up once for all;
        None when this entity's normaliser has no ASCII form."""
        normalise = self._normalise_ascii
        if normalise is None or self._inner is None or self._outer is None:
            return None
        cache = self._hashed
        out: list[bytes] = []
        append = out.append
        for secret in secrets:
            key = hash(secret)
            placeholder = cache.get(key)
            if placeholder is None:
                placeholder = self._hmac_placeholder(normalise(secret))
                if len(cache) >= HASH_CACHE_SIZE:
                    cache.clear()
                cache[key] = placeholder
            append(placeholder)
        return out

    def __call__(self, secret: str) -> str:
        if self.method is Method.REDACT:
            return self.redacted
        if self.method is Method.PARTIAL:
            kept = _keep(secret)
            return self.redacted if kept is None else f"[{self._label}:****{kept}]"
        message = self._normalise(secret).encode("utf-8", "surrogateescape")
        if self._inner is None or self._outer is None:  # a HASH renderer always has them
            digest = hmac.digest(self._key, message, "sha256").hex()
        else:
            inner = self._inner.copy()
            inner.update(message)
            outer = self._outer.copy()
            outer.update(inner.digest())
            digest = outer.hexdigest()
        return f"[{self._label}:{digest[:HASH_HEX_DIGITS]}]"


def _keyed_states(key: bytes) -> tuple[hashlib._Hash, hashlib._Hash]:
    """SHA-256 after the inner and the outer padded key of HMAC-SHA256 (RFC 2104 section 2)."""
    block = hashlib.sha256().block_size
    if len(key) > block:
        key = hashlib.sha256(key).digest()
    key = key.ljust(block, b"\x00")
    inner = _sha256(bytes(byte ^ 0x36 for byte in key))
    outer = _sha256(bytes(byte ^ 0x5C for byte in key))
    return inner, outer


def _builtin_sha256() -> Callable[[bytes], hashlib._Hash]:
    """CPython's own SHA-256 where it has one (``_sha2`` from 3.12, ``_sha256`` before):
    copying its state is a memory copy, where OpenSSL 3's copy of a digest context costs
    more than hashing the few bytes of a value. The digest is SHA-256 either way (the
    tests compare with ``hmac``)."""
    for name in ("_sha2", "_sha256"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        function: Callable[[bytes], hashlib._Hash] | None = getattr(module, "sha256", None)
        if function is not None:
            return function
    return hashlib.sha256


_sha256 = _builtin_sha256()


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
