"""The row API: column rules by identity, content everywhere, formats and types, failing closed."""

from __future__ import annotations

import pytest

from masking import MaskingError, compile_policy, is_text_like_type, value_kind
from masking.pgtypes import BINARY_FORMAT, ValueKind

KEY = b"0123456789abcdef-test-key"
RULES = {
    "columns": [
        {"match": "users.email", "method": "redact", "entity": "email"},
        {"match": "public.payments.card_*", "method": "partial", "entity": "card"},
        {"match": "hr.staff.salary", "method": "redact"},
    ]
}


def test_a_column_rule_applies_by_identity_so_an_alias_does_not_escape_it() -> None:
    # SELECT email AS x FROM users: RowDescription still names users.email as the source.
    policy = compile_policy(RULES)
    rows, counts = policy.mask_rows([("public.users", "email")], [[b"not-even-an-email"], [None]])
    assert rows == [(b"[EMAIL]",), (None,)]
    assert counts == {"email": 1}


def test_content_detection_catches_an_expression_that_lost_its_identity() -> None:
    # SELECT lower(email) FROM users: the column has no source table.
    policy = compile_policy(RULES)
    rows, counts = policy.mask_rows([None], [[b"bob@example.com"], [b"plain"]])
    assert rows == [(b"[EMAIL]",), (b"plain",)]
    assert counts == {"email": 1}


def test_globs_schemas_and_case_in_column_rules() -> None:
    policy = compile_policy(RULES)
    columns = [
        ("public.payments", "card_number"),
        ("archive.payments", "card_number"),  # the rule names schema public
        ("payments", "CARD_LAST"),  # no schema known: matched on table and column
        ("HR.Staff", "Salary"),
    ]
    rows, _ = policy.mask_rows(columns, [["4111111111111111", "x", "ab12cd34ef", "100000"]])
    assert rows == [("[CARD:****1111]", "x", "[CARD:****34ef]", "[MASKED]")]


def test_a_masked_column_is_not_content_scanned_and_other_columns_are() -> None:
    policy = compile_policy(RULES)
    rows, counts = policy.mask_rows(
        [("users", "email"), ("users", "notes")],
        [["bob@example.com", "forward to carol@example.com"]],
    )
    assert rows == [("[EMAIL]", "forward to [EMAIL]")]
    assert counts == {"email": 2}


def test_it_keeps_each_value_type_and_nulls() -> None:
    policy = compile_policy({})
    rows, _ = policy.mask_rows([None, None, None], [["bob@example.com", b"bob@example.com", None]])
    assert rows == [("[EMAIL]", b"[EMAIL]", None)]


def test_column_exemptions_lift_rules_and_detectors_for_that_column() -> None:
    policy = compile_policy(
        {
            **RULES,
            "exempt": [
                {"column": "orders.order_ref", "entities": ["card"]},
                {"column": "users.email"},
            ],
        }
    )
    rows, counts = policy.mask_rows(
        [("orders", "order_ref"), ("users", "email"), ("orders", "note")],
        [["4111111111111111 bob@example.com", "bob@example.com", "4111111111111111"]],
    )
    assert rows == [("4111111111111111 [EMAIL]", "bob@example.com", "[CARD]")]
    assert counts == {"email": 1, "card": 1}


def test_group_exemptions_apply_only_to_agents_in_the_group() -> None:
    policy = compile_policy(
        {
            **RULES,
            "exempt": [
                {"group": "fraud-team", "entities": ["card"]},
                {"group": "dba", "column": "users.email"},
            ],
        }
    )
    columns = [("public.payments", "card_no"), ("users", "email"), (None, None)]
    row = [["4111111111111111", "bob@example.com", "4111111111111111"]]
    assert policy.mask_rows(columns, row)[0] == [("[CARD:****1111]", "[EMAIL]", "[CARD]")]
    fraud = policy.for_groups({"fraud-team", "agents"})
    assert fraud.mask_rows(columns, row)[0] == [("4111111111111111", "[EMAIL]", "4111111111111111")]
    dba = policy.for_groups(["dba"])
    assert dba.mask_rows(columns, row)[0] == [("[CARD:****1111]", "bob@example.com", "[CARD]")]
    assert policy.for_groups(["agents"]) is policy


def test_binary_text_like_values_are_masked_in_place_and_others_become_null() -> None:
    policy = compile_policy({"columns": [{"match": "users.*", "method": "redact", "entity": "pii"}]})
    columns = [("users", "email"), ("users", "id"), ("users", "prefs")]
    rows, counts = policy.mask_rows(
        columns,
        [[b"bob@example.com", (42).to_bytes(4, "big"), b'\x01{"a": 1}']],
        type_oids=[25, 23, 3802],
        formats=[1, 1, 1],
    )
    assert rows == [(b"[PII]", None, b'\x01"[PII]"')]
    assert counts == {"pii": 3}


def test_content_in_binary_jsonb_keeps_the_version_byte_and_valid_json() -> None:
    policy = compile_policy({})
    rows, counts = policy.mask_rows(
        [None],
        [[b'\x01{"card": 4111111111111111, "mail": "bob@example.com", "n": 1.50}']],
        type_oids=[3802],
        formats=[1],
    )
    assert rows == [(b'\x01{"card": "[CARD]", "mail": "[EMAIL]", "n": 1.50}',)]
    assert counts == {"card": 1, "email": 1}


def test_binary_values_of_other_types_are_read_as_the_client_sees_them() -> None:
    # A binary int8 is read as its digits (masking.scanforms): a card number becomes NULL,
    # an order number that fails Luhn passes as it came.
    policy = compile_policy({})
    card = (4111111111111111).to_bytes(8, "big")
    order = (4111111111111112).to_bytes(8, "big")
    rows, counts = policy.mask_rows([None], [[card], [order]], type_oids=[20], formats=[1])
    assert rows == [(None,), (order,)]
    assert counts == {"card": 1}


def test_a_text_format_value_of_a_non_text_type_becomes_null_when_masked() -> None:
    # psycopg parses an int8 column as an integer: "[CARD]" would break the client.
    policy = compile_policy({})
    rows, counts = policy.mask_rows(
        [None, None, None], [[b"4111111111111111", b"10.1.2.3", b"12345"]], type_oids=[20, 869, 20]
    )
    assert rows == [(None, None, b"12345")]
    assert counts == {"card": 1, "ip": 1}


def test_a_json_column_stays_valid_json() -> None:
    policy = compile_policy({"columns": [{"match": "t.doc", "method": "redact", "entity": "doc"}]})
    rows, _ = policy.mask_rows(
        [("t", "doc"), (None, None)],
        [['{"a": "b"}', '{"owner": {"email": "bob@example.com"}, "ip": ["10.1.2.3"]}']],
        type_oids=[114, 3802],
    )
    assert rows == [('"[DOC]"', '{"owner": {"email": "[EMAIL]"}, "ip": ["[IP]"]}')]


def test_text_like_types() -> None:
    for oid in (25, 1043, 1042, 19, 114, 3802):
        assert is_text_like_type(oid)
    for oid in (20, 23, 1700, 1114, 869, 17, 2950):
        assert not is_text_like_type(oid)
    assert value_kind(3802, BINARY_FORMAT) is ValueKind.JSONB_BINARY
    assert value_kind(23, BINARY_FORMAT) is ValueKind.OPAQUE_BINARY
    assert value_kind(None) is ValueKind.TEXT


def test_a_value_holding_nul_is_still_scanned_on_its_own() -> None:
    policy = compile_policy({})
    rows, _ = policy.mask_rows([None, None], [["a\x00bob@example.com", "x"], ["y", "carol@example.com"]])
    assert rows == [("a\x00[EMAIL]", "x"), ("y", "[EMAIL]")]


def test_many_rows_and_columns_are_masked_in_the_right_places() -> None:
    policy = compile_policy({})
    rows = [
        [f"row {i}".encode(), f"user{i}@example.com".encode() if i % 3 == 0 else b"-"] for i in range(300)
    ]
    masked, counts = policy.mask_rows([None, None], rows)
    assert counts == {"email": 100}
    for i, row in enumerate(masked):
        assert row == (f"row {i}".encode(), b"[EMAIL]" if i % 3 == 0 else b"-")


@pytest.mark.parametrize(
    "call",
    [
        lambda p: p.mask_rows([None, None], [["a", "b"], ["c"]]),
        lambda p: p.mask_rows([None, None], [["a", "b", "c"]]),
        lambda p: p.mask_rows([None], [[b"\x02{}"]], type_oids=[3802], formats=[1]),
        lambda p: p.mask_rows([None], [[12345]]),
        lambda p: p.mask_rows([None], [["x"]], encoding="no-such-codec"),
        lambda p: p.mask_rows([None], [["x"]], type_oids=[25, 25]),
        lambda p: p.mask_text(None),
        lambda p: p.mask_text(b"x", encoding="no-such-codec"),
    ],
)
def test_any_failure_is_one_masking_error(call) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(MaskingError):
        call(compile_policy({}))


def test_a_masking_error_never_quotes_the_data() -> None:
    policy = compile_policy({})
    with pytest.raises(MaskingError) as caught:
        policy.mask_rows([None], [[b"\xff secret 4111111111111111"]], encoding="ascii-strict-no")
    assert "4111" not in str(caught.value)
    assert caught.value.__cause__ is None
    with pytest.raises(MaskingError) as caught:
        policy.mask_text(b"\xff secret 4111111111111111", encoding="ascii-strict-no")
    assert "4111" not in str(caught.value)
    assert caught.value.__cause__ is None


def test_masked_columns_tells_the_gateway_which_columns_rules_mask() -> None:
    masker = compile_policy(RULES).result_masker([("users", "email"), ("users", "id")])
    assert masker.masked_columns == [True, False]


def test_a_binary_jsonb_value_that_is_not_json_but_holds_a_secret_becomes_null() -> None:
    policy = compile_policy({})
    rows, counts = policy.mask_rows(
        [None], [[b"\x01not json bob@example.com"]], type_oids=[3802], formats=[1]
    )
    assert rows == [(None,)]
    assert counts == {"email": 1}


def test_rows_with_no_columns_stay_rows() -> None:
    assert compile_policy({}).mask_rows([], [[], []]) == ([(), ()], {})


def test_a_dense_column_and_a_sparse_column_give_the_same_masks_as_single_values() -> None:
    # A column where most values hold an entity is masked value by value, the rest in a
    # batch scan; both must agree with masking each value on its own.
    policy = compile_policy({})
    rows = [
        [
            f"user{i}@example.com".encode() if i % 7 else b"no entity",
            b"note" if i % 9 else b"call +1 555 201 3344",
        ]
        for i in range(200)
    ]
    rows[5][0] = None  # type: ignore[call-overload]
    masker = policy.result_masker([None, None])
    scanner = policy.scanner()
    assert scanner.dense([r[0] for r in rows]) and not scanner.dense([r[1] for r in rows])
    masked, counts = masker.mask_rows(rows)
    for row_in, row_out in zip(rows, masked, strict=True):
        for value_in, value_out in zip(row_in, row_out, strict=True):
            assert value_out == (None if value_in is None else policy.mask_text(value_in)[0])
    assert counts == {"email": 200 - 29 - 1, "phone": 23}


def _large_rows(count: int) -> list[list[bytes | None]]:
    notes = [b"plain", b"mail bob@example.com", None, b"card 4111 1111 1111 1111", b""]
    return [[str(i).encode(), notes[i % len(notes)], f"user{i}@example.com".encode()] for i in range(count)]


def test_a_large_batch_is_masked_as_the_same_rows_in_small_batches() -> None:
    # From _LARGE_RESULT rows on, the batch is masked with the collector paused.
    from masking.policy import _LARGE_RESULT

    policy = compile_policy(
        {"columns": [{"match": "t.email", "method": "hash", "entity": "email"}]}, hash_key=b"k" * 16
    )
    columns = [("t", "id"), ("t", "note"), ("t", "email")]
    rows = _large_rows(_LARGE_RESULT + 100)
    whole, counts = policy.mask_rows(columns, rows)
    pieces: list[tuple[bytes | None, ...]] = []
    expected_counts: dict[str, int] = {}
    for start in range(0, len(rows), 100):
        masked, found = policy.mask_rows(columns, rows[start : start + 100])
        pieces.extend(masked)
        for entity, n in found.items():
            expected_counts[entity] = expected_counts.get(entity, 0) + n
    assert whole == pieces
    assert counts == expected_counts


def test_the_garbage_collector_is_left_as_it_was_after_a_large_batch() -> None:
    import gc

    from masking.policy import _LARGE_RESULT

    masker = compile_policy({}).result_masker([None, None, None])
    rows = _large_rows(_LARGE_RESULT)
    assert gc.isenabled()
    masker.mask_rows(rows)
    assert gc.isenabled()
    with pytest.raises(MaskingError):
        masker.mask_rows([*rows, [b"one value short", b""]])
    assert gc.isenabled()
    gc.disable()
    try:
        masker.mask_rows(rows)
        assert not gc.isenabled()
    finally:
        gc.enable()
