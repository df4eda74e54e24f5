"""Inputs built to make regular expressions backtrack: masking must stay linear.

Each would take minutes (or forever) with a catastrophic pattern; the timeout turns a
regression into a failure instead of a hang.
"""

from __future__ import annotations

import pytest

from masking import compile_policy

POLICY = compile_policy({})
N = 20_000

PATHOLOGICAL = [
    "a@" + "a." * N + "1",  # email domain labels without a TLD
    "x" * N + "@",  # a local part that never starts
    "1" * N,  # one long digit run (cards, phones, SSNs)
    "1 " * N,  # digits and separators (card groups)
    "+1" + " 2" * N,  # an endless international phone number
    "1:" * N + "x",  # IPv6-like run
    "1." * N,  # IPv4-like run
    "-----BEGIN RSA PRIVATE KEY-----" * 200 + "x" * N,  # headers without an end
    "password=" * N,  # keywords without values
    "://:" * N,  # URL credentials without an @
    "eyJ" + "a" * N + ".",  # a JWT that never gets its parts
    "GB82 " * N,  # IBAN-like groups
    "[EMAIL" * N,  # placeholders that never close
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("text", PATHOLOGICAL, ids=range(len(PATHOLOGICAL)))
def test_pathological_input_is_masked_in_linear_time(text: str) -> None:
    masked, _ = POLICY.mask_text(text)
    assert isinstance(masked, str)
    rows, _ = POLICY.mask_rows([None], [[text.encode()]])
    assert len(rows) == 1
