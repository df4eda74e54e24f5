"""Scans of a statement's text on the decision path, without the parser (pure).

``simple_key``: the text around its constants, which finds a statement's cached shape and
so its cached decision (docs/policies.md, "Shapes found without the parser").
``ascii_lacks``: whether an ASCII text holds none of a few keywords in any case, which
spares ``policies.sql.mentions`` its regular expression (EXECUTE, PREPARE, COPY...).

This module is the reference implementation; ``policies/_textscan.c`` is the same
functions in C, built by ``make venv`` (``scripts/build_native.py``) as
``_airlock_textscan`` and used by ``policies.sql`` through ``gateway.native.load`` when it
was built from these two files as they are now. The C build must return exactly what this
module returns for every text (``policies/tests/test_textscan.py`` compares the two on
generated and adversarial texts): a wrong key would give a statement another shape's
decision, a wrong "lacks" would let an EXECUTE be judged without what it executes.

What a simple text is, and why a simple key is safe to cache by, is told in
``policies/sql.py`` ("shapes found without the parser").
"""

from __future__ import annotations

import re

# Any of these anywhere in the text and it is not simple: escapes, quoted identifiers,
# dollar quotes and placeholders, comments, a quote inside a string.
NOT_SIMPLE = ("\\", '"', "$", "--", "/*", "''")
# A plain string, or a number not glued to a word or a dot; written to begin with a
# character (the lookbehind after the first digit) so that the regular expression engine
# skips to the next quote or digit in C rather than trying the pattern at every position.
SIMPLE_CONSTANT = re.compile(r"('[^']*'|[0-9](?<![\w.][0-9])[0-9]*(?![\w.]))")
INT4_MAX = 2**31 - 1


def is_int4(token: str) -> bool:
    """PostgreSQL's lexer reads an integer that fits in int4 as an integer (the deparser
    prints its value) and a larger one as a numeric constant (printed as written)."""
    return len(token) < 10 or int(token) <= INT4_MAX


def simple_key(sql: str) -> tuple[tuple[str, ...], str, list[str]] | None:
    """``sql``'s simple key (the text around its constants), the kinds of its constants
    and the constants, or None when the text is not simple.

    The kinds ("s" a string, "i" an integer PostgreSQL reads as int4, "n" a larger one,
    which it reads as a numeric) are part of an entry's key: the deparser prints the two
    kinds of number differently in places (``(2147483648)::int8`` but ``5::int8``).

    >>> simple_key("SELECT * FROM t WHERE id = 42 AND name = 'ann'")
    (('SELECT * FROM t WHERE id = ', ' AND name = ', ''), 'is', ['42', "'ann'"])
    >>> simple_key("SELECT 1 -- a comment") is None
    True
    """
    for mark in NOT_SIMPLE:
        if mark in sql:
            return None
    parts = SIMPLE_CONSTANT.split(sql)
    constants = parts[1::2]
    kinds = "".join("s" if c[0] == "'" else "i" if is_int4(c) else "n" for c in constants)
    if sql.count("'") != 2 * kinds.count("s"):
        return None  # a quote outside the strings (unbalanced): the parser says what is wrong
    skeleton = tuple(parts[0::2])
    for part in skeleton[:-1]:
        if part and (part[-1].isalnum() or part[-1] in "_&"):
            # A prefixed string (E'...', B'...', X'...', N'...', U&'...'); a number is never
            # taken as a constant right after a letter.
            return None
    return skeleton, kinds, constants


def ascii_lacks(text: str, words: tuple[str, ...]) -> bool:
    """True when ``text`` is ASCII and holds none of ``words`` (lower-case ASCII), in any
    case; False otherwise (a word is there, or the text is not ASCII and Unicode case rules
    apply: ``ı`` upper-cases to ``I``, ``ſ`` to ``S``).

    >>> ascii_lacks("SELECT 1", ("execute",)), ascii_lacks("ExEcUtE p", ("execute",))
    (True, False)
    """
    if not text.isascii():
        return False
    lowered = text.lower()
    return not any(word in lowered for word in words)
