"""A batch of queued events chained and written as COPY text in one pass (pure).

The recording writer (``recordings.writer._persist``) hashes every event into the chain
(``recordings.chain.envelope``: the canonical JSON of the whole event, after the previous
hash) and sends the batch to PostgreSQL as COPY text. For the usual event, whose payload
was made canonical when it was queued (``writer._take``), that is pure byte work: the
time formatted, the envelope built, SHA-256, the COPY line. ``chain_copy`` does it for a
whole batch, or declines (None) when any event is not of that usual kind, and the writer
then chains the batch as before (``writer._chain_rows``, ``writer._copy_text``): the two
give the same hashes and the same COPY text (``recordings/tests/test_chainrows.py``).

This module is the reference; ``recordings/_chainrows.c`` is the same function in C
(SHA-256 from OpenSSL's libcrypto, which Python's ``hashlib`` uses too), built by ``make
venv`` as ``_airlock_chainrows`` and used by the writer through ``gateway.native.load``
when it was built from these two files as they are now.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any

from recordings import chain

# A kind as the writer queues it (``Event.Kind``): written into the envelope and the COPY
# text as it is, with nothing to escape.
_PLAIN_KIND = re.compile(r"[a-z_]{1,20}")
# An offset whose ``repr`` (COPY) and orjson text (the envelope) are the same: fixed
# notation (an exponent is written differently by the two, and ``inf`` and ``nan`` are
# not JSON numbers).
_PLAIN_FLOAT = re.compile(r"-?[0-9]+\.[0-9]+")
# Event times the writer formats as ``chain.format_wall`` does, with a four-digit year.
WALL_MIN = 0.0
WALL_MAX = 253402300798.0  # 9999-12-31T23:59:58 UTC: its rounding stays in the year
SEQ_MAX = 1 << 62


def chain_copy(session: str, prev: str, seq: int, items: Sequence[Any]) -> tuple[bytes, str] | None:
    """The COPY text of ``items`` (``writer._QueuedFields``) chained after event ``seq``
    whose hash is ``prev``, and the last hash; None when an item is not a plain one (a
    seven-field tuple whose time, offset and kind are floats and a plain kind, with its
    canonical bytes), or ``session``, ``seq`` or a time is out of the usual range.

    Each line holds the session, the seq, the time, the offset, the kind, the payload
    (backslashes doubled, COPY's only special character in JSON text) and the hash, tab
    separated: ``writer._copy_text`` of ``writer._chain_rows``.
    """
    if not (
        type(session) is str
        and type(prev) is str
        and type(seq) is int
        and session.isascii()
        and prev.isascii()
    ):
        return None
    if not 0 <= seq < SEQ_MAX - len(items):
        return None
    sha256 = hashlib.sha256
    lines = []
    sid = session.encode()
    for item in items:
        if type(item) is not tuple or len(item) != 7:
            return None
        wall, offset_ms, kind, canonical = item[1], item[2], item[3], item[5]
        if type(wall) is not float or type(offset_ms) is not float or type(kind) is not str:
            return None
        if type(canonical) is not bytes or not WALL_MIN <= wall <= WALL_MAX:
            return None
        if _PLAIN_KIND.fullmatch(kind) is None:
            return None
        shown = repr(offset_ms)
        if _PLAIN_FLOAT.fullmatch(shown) is None:
            return None
        at_text = chain.format_wall(wall)
        seq += 1
        digest = sha256(prev.encode() + chain.envelope(seq, at_text, offset_ms, kind, canonical)).hexdigest()
        escaped = canonical.replace(b"\\", b"\\\\")
        fields = (sid, seq, at_text.encode(), shown.encode(), kind.encode(), escaped, digest.encode())
        lines.append(b"%s\t%d\t%s\t%s\t%s\t%s\t%s\n" % fields)
        prev = digest
    return b"".join(lines), prev
