"""``policies.sql.mentions``: the same answer as the case-insensitive search it stands for."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.postgres.copyout import _MAY_COPY
from gateway.postgres.sqltext import _NAMESPACE_LOWER, _NAMESPACE_WORDS
from policies.sql import _EXECUTE, _EXECUTE_WORDS, mentions

SEARCHES = [(_EXECUTE, _EXECUTE_WORDS), (_NAMESPACE_WORDS, _NAMESPACE_LOWER), (_MAY_COPY, ("copy",))]
WORDS = ["execute", "prepare", "deallocate", "discard", "copy"]


def _any_case(draw_bool, word: str) -> str:
    return "".join(c.upper() if draw_bool() else c for c in word)


@st.composite
def texts(draw) -> str:
    """Statements with the words in any case, glued to neighbours or not, among ASCII and
    the Unicode characters that match ASCII letters case-insensitively (ı, ſ, İ, K)."""
    pieces = []
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.integers(0, 3))
        if kind == 0:
            pieces.append(_any_case(lambda: draw(st.booleans()), draw(st.sampled_from(WORDS))))
        elif kind == 1:
            word = draw(st.sampled_from(WORDS))
            at = draw(st.integers(0, len(word) - 1))
            swap = {"i": "ı", "s": "ſ", "c": "C", "e": "E"}.get(word[at], word[at])
            pieces.append(word[:at] + draw(st.sampled_from([swap, "İ", "\u212a"])) + word[at + 1 :])
        else:
            pieces.append(draw(st.text(alphabet=st.sampled_from(list(" _.;(),'0aZeı")), max_size=6)))
    return "".join(pieces)


@settings(max_examples=3000, deadline=None)
@given(texts())
def test_mentions_is_the_search(text: str) -> None:
    for pattern, words in SEARCHES:
        assert mentions(text, pattern, words) == (pattern.search(text) is not None), (text, pattern)


def test_unicode_case_partners_are_searched() -> None:
    # Python's case-insensitive search reads "ı" as "i" and "ſ" as "s": such text is never
    # answered by the ASCII shortcut.
    assert mentions("DıSCARD ALL", _NAMESPACE_WORDS, _NAMESPACE_LOWER)
    assert mentions("diſcard all", _NAMESPACE_WORDS, _NAMESPACE_LOWER)
    assert re.search("(?i)discard", "diſcard")
    assert not mentions("SELECT 1", _EXECUTE, _EXECUTE_WORDS)
    assert mentions("select 1; ExEcUtE p", _EXECUTE, _EXECUTE_WORDS)
    assert not mentions("SELECT copyright FROM t", _MAY_COPY, ("copy",))
