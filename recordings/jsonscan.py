"""Whether an event's canonical JSON may hold what ``jsonb`` stores differently (pure).

``recordings.chain.canonical_plain`` encodes an event's payload once with orjson and uses
that text as its canonical bytes unless the text may hold what PostgreSQL's ``jsonb``
would store differently (then the payload is normalised first): a float in exponent form
(``1e+17``), a negative zero, a NUL. A false positive costs only the slow path; a false
negative would record a hash that ``manage.py recordings verify`` cannot reproduce from
the stored event, a broken chain.

This module is the reference; ``recordings/_jsonscan.c`` is the same function in C, built
by ``make venv`` as ``_airlock_jsonscan`` and used by ``recordings.chain`` through
``gateway.native.load`` when it was built from these two files as they are now
(``recordings/tests/test_jsonscan.py`` compares the two).
"""

from __future__ import annotations


def altered_by_jsonb(text: bytes) -> bool:
    """Whether ``text`` holds ``e+``, ``\\u0000`` or ``-0.0``.

    A one-byte search runs at memchr's speed, a longer one several times slower over the
    long texts results carry: "e+" and "\\u0000" are looked for only past their rare byte.
    The longer needles are searched from the end: CPython's ``rfind`` reads a text without
    the needle three times faster than ``find`` (a ten-row result's event, 2 KB: 0.5
    against 1.5 us for "e+", 0.3 against 1.0 for "-0.0"), and either answers whether it
    is there. Not ``in``: CPython's ``bytes in bytes`` first tries the needle as an integer
    and makes (and drops) a TypeError each time.

    >>> altered_by_jsonb(b'{"a":1e+17}'), altered_by_jsonb(b'{"a":"1e17 -0"}')
    (True, False)
    """
    find, rfind = text.find, text.rfind
    return (
        (find(b"+") >= 0 and rfind(b"e+") >= 0)
        or (find(b"\\") >= 0 and rfind(b"\\u0000") >= 0)
        or rfind(b"-0.0") >= 0
    )
