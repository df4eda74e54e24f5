"""The masking engine as the gateway runs it: its compiled build against the source.

``make venv`` compiles ``masking/placeholders.py``, ``scanner.py`` and ``policy.py``
together with mypyc (``gateway.native.NATIVE_GROUPS``); ``gateway.masking_runtime.engine``
is that build when it was made from the sources in use. masking/tests test the source;
here every result of the build must equal the source's, on the detectors' own examples,
column rules of each method, custom entities, exemptions, JSON and binary values, NULLs,
dense columns and random rows. ``make test`` runs with ``AIRLOCK_NATIVE=require``, so a
missing or stale build fails rather than skips.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import masking.policy as pure
from gateway import masking_runtime, native
from masking import MaskingError
from masking.tests.cases import NEGATIVE, POSITIVE

KEY = b"k" * 32

SPECS: dict[str, dict[str, Any]] = {
    "builtin": {},
    "columns": {
        "columns": [
            {"match": "public.customers.email", "method": "hash", "entity": "email"},
            {"match": "public.customers.card", "method": "partial", "entity": "card"},
            {"match": "public.customers.phone", "method": "redact", "entity": "phone"},
            {"match": "*.secrets.*", "method": "redact"},
        ]
    },
    "methods": {"entities": {"email": "hash", "card": "partial", "phone": "redact", "iban": "hash"}},
    "custom": {
        "custom": [
            {"name": "ticket", "pattern": r"TCK-(?P<secret>\d{6})", "method": "partial"},
            {
                "name": "codename",
                "deny_list": ["bluebird", "Night Jar"],
                "ignore_case": True,
                "method": "hash",
            },
        ],
        "exempt": [{"column": "customers.notes", "entities": ["phone"]}],
    },
}

IDENTITIES = [
    ("public.customers", "id"),
    ("public.customers", "email"),
    ("public.customers", "phone"),
    ("public.customers", "card"),
    ("public.customers", "notes"),
    ("public.secrets", "token"),
    None,
]


@pytest.fixture(scope="module")
def compiled() -> ModuleType:
    module = native.built(pure)
    if module is None:
        if os.environ.get("AIRLOCK_NATIVE") == "require":
            pytest.fail("AIRLOCK_NATIVE=require but the compiled masking engine is missing or stale")
        pytest.skip("the compiled masking engine is not built (make venv)")
    return module


def _both(compiled: ModuleType, spec: dict[str, Any]) -> tuple[Any, Any]:
    return pure.compile_policy(spec, hash_key=KEY), compiled.compile_policy(spec, hash_key=KEY)


def _outcome(call: Any) -> Any:
    try:
        return call()
    except MaskingError as exc:  # the build raises masking's own errors
        return ("MaskingError", str(exc))


TEXTS = [text for cases in POSITIVE.values() for text, _ in cases] + [
    text for cases in NEGATIVE.values() for text in cases
]


@pytest.mark.parametrize("spec", sorted(SPECS))
def test_free_text_is_masked_exactly_as_the_source_masks_it(compiled: ModuleType, spec: str) -> None:
    source, build = _both(compiled, SPECS[spec])
    for text in [
        *TEXTS,
        "",
        "TCK-123456 for bluebird and night jar",
        "[EMAIL] already masked",
        "no secret here",
    ]:
        assert build.mask_text(text) == source.mask_text(text), text
        assert build.mask_text(text.encode()) == source.mask_text(text.encode()), text
        assert build.contains_placeholder(text) == source.contains_placeholder(text)
    assert sum(1 for text in TEXTS if build.mask_text(text)[1]) >= len(POSITIVE) // 2  # not all left alone


def _rows(values: list[str | None], width: int, as_bytes: bool) -> list[tuple[Any, ...]]:
    cells = [v.encode() if as_bytes and v is not None else v for v in values]
    cells += [None] * (-len(cells) % width)
    return [tuple(cells[i : i + width]) for i in range(0, len(cells), width)]


@pytest.mark.parametrize("spec", sorted(SPECS))
@pytest.mark.parametrize("as_bytes", [True, False])
def test_rows_are_masked_exactly_as_the_source_masks_them(
    compiled: ModuleType, spec: str, as_bytes: bool
) -> None:
    source, build = _both(compiled, SPECS[spec])
    width = len(IDENTITIES)
    rows = _rows([*TEXTS, None, "", "plain"], width, as_bytes)
    for policy_rows in (rows, rows[:1], rows * 30):  # one row, a page, a large batch
        assert build.mask_rows(IDENTITIES, policy_rows) == source.mask_rows(IDENTITIES, policy_rows)


@pytest.mark.parametrize("spec", sorted(SPECS))
def test_dense_columns_take_the_same_fast_paths_to_the_same_result(compiled: ModuleType, spec: str) -> None:
    source, build = _both(compiled, SPECS[spec])
    emails = [f"customer{i}@example.com".encode() for i in range(40)]
    cards = [b"4111111111111111", b"4111 1111 1111 1112"] * 20  # one passes the Luhn check
    phones = [f"+44 20 7946 {i:04d}".encode() for i in range(40)]
    mixed = [b"ordered 3 items", b"mail bob@example.com", None, b"", b"no secret"] * 8
    rows = list(zip(emails, cards, phones, mixed, strict=True))
    identities = [None, None, None, ("public.customers", "notes")]
    assert build.mask_rows(identities, rows) == source.mask_rows(identities, rows)
    as_text = [tuple(None if v is None else v.decode() for v in row) for row in rows]
    assert build.mask_rows(identities, as_text) == source.mask_rows(identities, as_text)


def test_json_binary_and_opaque_values_are_masked_as_the_source_masks_them(compiled: ModuleType) -> None:
    source, build = _both(compiled, SPECS["columns"])
    identities = [("public.customers", "notes"), ("public.customers", "email"), None, None]
    # json (114), jsonb in binary (3802, format 1), bytea in binary (17), int4 in binary (23)
    type_oids = [114, 3802, 17, 23]
    formats = [0, 1, 1, 1]
    rows = [
        (
            b'{"mail": "bob@example.com", "n": 1.50}',
            b'\x01{"card": "4111111111111111"}',
            b"\x00\x01",
            b"\x00\x00\x00\x07",
        ),
        (b"not json bob@example.com", b'\x01"x"', None, None),
        (None, None, b"bob@example.com", b"\x00\x00\x00\x08"),
    ]

    def masked(policy: Any) -> Any:
        return _outcome(
            lambda: policy.result_masker(
                identities, type_oids=type_oids, formats=formats, encoding="utf-8"
            ).mask_rows(rows)
        )

    assert masked(build) == masked(source)
    unknown = [(None, b'\x02{"card": "4111111111111111"}', None, None)]
    for policy in (source, build):
        masker = policy.result_masker(identities, type_oids=type_oids, formats=formats, encoding="utf-8")
        with pytest.raises(MaskingError):
            masker.mask_rows(unknown)


def test_group_exemptions_give_the_same_views(compiled: ModuleType) -> None:
    spec = {"exempt": [{"group": "support", "entities": ["email"]}, {"group": "audit"}]}
    source, build = _both(compiled, spec)
    text = "bob@example.com +44 20 7946 0958 4111111111111111"
    for groups in (frozenset(), frozenset({"support"}), frozenset({"audit", "x"})):
        assert build.for_groups(groups).mask_text(text) == source.for_groups(groups).mask_text(text)


secrets = st.sampled_from([text for cases in POSITIVE.values() for text, _ in cases])
cells = st.one_of(
    st.none(),
    st.text(max_size=30),
    secrets,
    st.builds(lambda a, b: f"{a} {b}", st.text(max_size=10), secrets),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(cells, min_size=4, max_size=4), min_size=1, max_size=40), st.booleans())
def test_random_rows_are_masked_as_the_source_masks_them(
    rows: list[list[str | None]], as_bytes: bool
) -> None:
    build = native.built(pure)
    if build is None:
        pytest.skip("the compiled masking engine is not built (make venv)")
    source_policy, build_policy = (
        pure.compile_policy(SPECS["columns"], hash_key=KEY),
        build.compile_policy(SPECS["columns"], hash_key=KEY),
    )
    identities = [
        ("public.customers", "email"),
        ("public.customers", "notes"),
        None,
        ("public.customers", "card"),
    ]
    data = [
        tuple(v.encode("utf-8", "surrogatepass") if as_bytes and v is not None else v for v in row)
        for row in rows
    ]
    assert _outcome(lambda: build_policy.mask_rows(identities, data)) == _outcome(
        lambda: source_policy.mask_rows(identities, data)
    )


def test_the_gateway_compiles_policies_with_the_build_when_the_suite_requires_it() -> None:
    if os.environ.get("AIRLOCK_NATIVE") != "require":
        pytest.skip("runs under make test (AIRLOCK_NATIVE=require)")
    assert masking_runtime.engine is not pure
    assert masking_runtime.engine.__name__ == "_airlock_masking_policy"
    policy = masking_runtime.compile_masking(-1, 1, SPECS["columns"])
    assert type(policy).__module__ == "_airlock_masking_policy"


def test_an_edit_to_any_module_of_the_group_makes_the_build_stale(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    group = native.group_of("masking.scanner")
    assert group == ("masking.placeholders", "masking.scanner", "masking.policy")
    digest = native.group_digest("masking.policy")
    assert native.group_digest("masking.placeholders") == digest
    assert native.group_of("gateway.postgres.relay") == ("gateway.postgres.relay",)
    relay_file = native.source_path("gateway.postgres.relay")
    assert native.group_digest("gateway.postgres.relay") == native.source_digest(relay_file)

    edited = tmp_path / "scanner.py"
    edited.write_bytes(native.source_path("masking.scanner").read_bytes() + b"\n# edited\n")
    real = native.source_path
    monkeypatch.setattr(native, "source_path", lambda m: edited if m == "masking.scanner" else real(m))
    assert native.group_digest("masking.policy") != digest

    class Built:
        SOURCE_SHA256 = digest  # built from the sources before the edit

    monkeypatch.setitem(sys.modules, "_airlock_masking_policy", Built)  # type: ignore[arg-type]
    monkeypatch.setenv("AIRLOCK_NATIVE", "auto")
    assert native.load(pure) is pure
    monkeypatch.setenv("AIRLOCK_NATIVE", "require")
    with pytest.raises(ImportError, match="masking/scanner.py"):
        native.load(pure)


def test_the_gateway_engine_asks_the_c_trigger_check_before_re2() -> None:
    """The comparisons above run with it in place: the build's scans go through
    ``masking/_triggerscan.c`` first (``masking_runtime`` installs it), the source's through
    RE2 alone."""
    import masking.scanner
    import masking.triggerscan

    built = native.built(masking.triggerscan)
    assert built is not None
    compiled_scanner = native.load(masking.scanner)
    assert compiled_scanner is not masking.scanner
    assert compiled_scanner._shapes_check is built.shapes
    assert compiled_scanner._dirty_check is built.dirty_spans
    assert masking.scanner._shapes_check is None and masking.scanner._dirty_check is None
    policy = masking_runtime.engine.compile_policy({})
    assert policy.mask_text("write to bob@example.com") == ("write to [EMAIL]", {"email": 1})
    masked, counts = policy.result_masker([None, None]).mask_rows(
        [(b"plain", b"mail bob@example.com"), (b"call +44 20 7946 0958", b"nothing")]
    )
    assert masked == [(b"plain", b"mail [EMAIL]"), (b"call [PHONE]", b"nothing")]
    assert counts == {"email": 1, "phone": 1}


SELECTION_TEXTS = sorted(
    {text for cases in POSITIVE.values() for text, _ in cases}
    | {t for texts in NEGATIVE.values() for t in texts}
)


def test_the_detectors_asked_for_a_text_are_those_re2_picks(compiled: ModuleType) -> None:
    # The build picks them from the C check's bits (masking/_triggerscan.c), the source
    # from RE2's set of the shapes: the same detectors for every text, for every entity set.
    for spec in (
        {},
        {"entities": ["email", "card"]},
        {"entities": ["github_token", "aws_secret_key", "phone"]},
    ):
        built_scanner = compiled.compile_policy(spec).scanner()
        source_scanner = pure.compile_policy(spec).scanner()
        for text in SELECTION_TEXTS:
            for around in ("", "x ", " caf\u00e9 "):
                value = around + text + around
                assert built_scanner.selection(value) == source_scanner.selection(value), (spec, value)
                data = value.encode("utf-8", "surrogatepass")
                assert built_scanner.selection(data) == source_scanner.selection(data), (spec, value)


def test_a_c_trigger_check_written_for_another_trigger_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    import masking.scanner
    import masking.triggerscan

    compiled_scanner = native.load(masking.scanner)
    installed_shapes = compiled_scanner._shapes_check
    installed_dirty = compiled_scanner._dirty_check
    assert installed_shapes is not None and installed_dirty is not None

    class Stale:
        SOURCE_SHA256 = native.group_digest("masking.triggerscan")
        TRIGGER_SOURCE = masking.triggerscan.TRIGGER_SOURCE + "|(?:newshape)"

        @staticmethod
        def shapes(data: bytes) -> int:
            return 0  # would hide every secret

        @staticmethod
        def dirty_spans(joined: bytes) -> list[tuple[int, int, int]]:
            return []  # would hide every secret

    monkeypatch.setitem(sys.modules, native.NATIVE_MODULES["masking.triggerscan"], Stale)
    compiled_scanner.use_trigger_check(None)
    try:
        masking_runtime._install_trigger_check()
        assert compiled_scanner._shapes_check is None and compiled_scanner._dirty_check is None
    finally:
        compiled_scanner.use_trigger_check(installed_shapes, installed_dirty)
