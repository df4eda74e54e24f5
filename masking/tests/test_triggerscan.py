"""The check in front of the masking engine's RE2 scans: the C build against the reference.

``masking/_triggerscan.c`` writes out each of the trigger's shapes (``masking.detectors
.TRIGGER_SHAPES``) over the bytes of an ASCII text; the reference asks RE2. A "no" from
the build where RE2 finds a shape would leave a secret unmasked, in a result or in a
recording, so the two must agree on every text: each shape's own texts, alone and inside
other text, the near misses of each shape (one digit short, a separator off, a case
changed), and generated text over the shapes' alphabet. ``make test`` runs with
``AIRLOCK_NATIVE=require``: a missing or stale build fails, not skips.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.tests.nativebuilds import built_or_fail, check_an_edited_c_source_makes_the_build_stale
from masking import triggerscan as pure
from masking.detectors import TRIGGER, TRIGGER_SHAPES
from masking.tests.cases import NEGATIVE, POSITIVE


@pytest.fixture(scope="module")
def built() -> ModuleType:
    return built_or_fail(pure)


def test_the_build_was_written_for_the_trigger_in_use(built: ModuleType) -> None:
    # An edited shape must be brought to the C before the gateway uses it again.
    assert built.TRIGGER_SOURCE == TRIGGER == pure.TRIGGER_SOURCE


ALPHABET = "0123456789 -.:+()@/_=;,'\"\nABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

NEAR_MISSES = [
    "",
    "SELECT abalance FROM pgbench_accounts WHERE aid = 412345;",
    "SELECT * FROM customers WHERE id BETWEEN 5 AND 5 + 9",
    "2026-12-05 10:00:00.123456+00",
    "12:30:00",
    "10:00:00+05:30",
    "1:2:3",
    ":abcd:ef01:2345",
    ":abcde:1:2:",
    "1.2.3",
    "1.2.3.",
    "1.2345.6.7",
    "+1 555",
    "+1 55a5555",
    "(199)",
    "(2a0)",
    "411111111111",
    "4111 1111 1111",
    "4111  1111 1111 1111",
    "4111-1111-1111-111",
    "555 201 334",
    "555.201.33a4",
    "123-45-678",
    "123.45.6789",
    "0 123 456",
    "01234 12 123",
    "020 79 123",
    "Gb82",
    "GB8",
    "----BEGIN",
    "-----begin",
    "eyj",
    "AKI",
    "ASI",
    "A3",
    "AIz",
    "ke",
    "kez",
    "pas",
    "pw",
    "beare",
    "authorizatio",
    "ghx_",
    "gh_",
    "github_pat",
    "glpat_",
    "glagen-",
    "xoxz-",
    "xap-",
    "sk_live",
    "tk_live_",
    "rk_tes_",
    "whsec",
]


CORPUS = (
    NEAR_MISSES
    + [text for cases in POSITIVE.values() for text, _ in cases]
    + [text for texts in NEGATIVE.values() for text in texts]
)


@pytest.mark.parametrize("text", CORPUS)
def test_the_build_answers_as_the_reference_on_the_corpus(built: ModuleType, text: str) -> None:
    data = text.encode("utf-8", "surrogatepass")
    assert built.may_trigger(data) is pure.may_trigger(data)
    for around in (b"x", b"0", b" ", b"-", b":", b"A"):
        assert built.may_trigger(around + data + around) is pure.may_trigger(around + data + around)


@pytest.mark.parametrize("shape", [shape for shape, _ in TRIGGER_SHAPES])
def test_every_shape_is_found_alone_and_inside_other_text(built: ModuleType, shape: str) -> None:
    @settings(max_examples=150, deadline=None)
    @given(
        st.from_regex(re.compile(shape.encode("ascii")), fullmatch=True),
        st.binary(max_size=6),
        st.binary(max_size=6),
    )
    def check(text: bytes, before: bytes, after: bytes) -> None:
        if not text.isascii():
            return
        assert built.may_trigger(text) is True
        for data in (before + text + after, text[:-1], text[1:]):
            assert built.may_trigger(data) is pure.may_trigger(data), data

    check()


@settings(max_examples=3000, deadline=None)
@given(st.text(alphabet=ALPHABET, max_size=40))
def test_the_build_answers_as_the_reference_on_generated_text(built: ModuleType, text: str) -> None:
    data = text.encode()
    assert built.may_trigger(data) is pure.may_trigger(data)


@settings(max_examples=1500, deadline=None)
@given(
    st.lists(
        st.sampled_from(["0", "1", "5", "9", " ", "-", ".", ":", "a", "F", "+", "(", ")", "0"]), max_size=30
    )
)
def test_the_build_answers_as_the_reference_on_digits_and_separators(
    built: ModuleType, parts: list[str]
) -> None:
    data = "".join(parts).encode()
    assert built.may_trigger(data) is pure.may_trigger(data)


@pytest.mark.parametrize(
    "data", ["caf\u00e9".encode(), "\u212aey".encode(), "pa\u017fs".encode(), b"\xff", b"\x80abc"]
)
def test_text_that_is_not_ascii_is_left_to_re2(built: ModuleType, data: bytes) -> None:
    assert built.may_trigger(data) is True is pure.may_trigger(data)


def test_only_bytes(built: ModuleType) -> None:
    with pytest.raises(TypeError):
        built.may_trigger("key")


def test_an_edited_c_source_makes_the_build_stale(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    check_an_edited_c_source_makes_the_build_stale(pure, monkeypatch, tmp_path)
