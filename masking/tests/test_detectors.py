"""Every built-in detector: what it masks, exactly, and the look-alikes it leaves alone."""

from __future__ import annotations

import pytest

from masking import BUILTIN_ENTITIES, compile_policy
from masking.tests.cases import NEGATIVE, POSITIVE

POLICY = compile_policy({})
SCANNER = POLICY.scanner()


def _positive_cases() -> list[tuple[str, str, str]]:
    return [(entity, text, secret) for entity, cases in POSITIVE.items() for text, secret in cases]


def _negative_cases() -> list[tuple[str, str]]:
    return [(entity, text) for entity, texts in NEGATIVE.items() for text in texts]


def test_every_builtin_entity_has_true_and_false_cases() -> None:
    assert set(POSITIVE) == set(BUILTIN_ENTITIES)
    assert set(NEGATIVE) == set(BUILTIN_ENTITIES)


@pytest.mark.parametrize(("entity", "text", "secret"), _positive_cases())
def test_it_masks_exactly_the_secret(entity: str, text: str, secret: str) -> None:
    masked, counts = POLICY.mask_text(text)
    assert masked == text.replace(secret, f"[{entity.upper()}]")
    assert counts == {entity: 1}


@pytest.mark.parametrize(("entity", "text", "secret"), _positive_cases())
def test_the_batch_trigger_flags_every_value_a_detector_would_mask(
    entity: str, text: str, secret: str
) -> None:
    # The prefilter must be a superset of the detectors, or a secret would slip through.
    padded = [b"clean", text.encode(), b"2024-01-15 12:30:00+00"]
    assert SCANNER.dirty_indices(padded) == [1]
    assert SCANNER.dirty_indices(["clean", text, "more"]) == [1]
    # The same values joined as the fast path joins them, each found where it lies.
    joined = b"\x00".join([b"", *padded, text.encode()])
    start = len(b"clean") + 2
    assert SCANNER.dirty_in_joined(joined, 5) == [
        (2, start, start + len(padded[1])),
        (4, len(joined) - len(padded[1]), len(joined)),
    ]


@pytest.mark.parametrize(("entity", "text"), _negative_cases())
def test_it_leaves_look_alikes_visible(entity: str, text: str) -> None:
    masked, counts = POLICY.mask_text(text)
    assert entity not in counts
    assert f"[{entity.upper()}" not in masked


def test_a_sixteen_digit_order_number_failing_luhn_stays_visible() -> None:
    assert POLICY.mask_text("order 4111111111111112 shipped") == ("order 4111111111111112 shipped", {})


def test_a_card_is_found_when_a_greedy_match_overshoots_into_the_next_number() -> None:
    masked, counts = POLICY.mask_text("4111111111111111 12 and 4111 1111 1111 1111 2024-01-01")
    assert masked == "[CARD] 12 and [CARD] 2024-01-01"
    assert counts == {"card": 2}


def test_a_card_after_a_failing_number_in_the_same_run_is_found() -> None:
    masked, _ = POLICY.mask_text("ref 12 4111 1111 1111 1111")
    assert "4111" not in masked


def test_an_email_in_a_connection_url_is_not_mistaken_for_the_password() -> None:
    masked, counts = POLICY.mask_text("postgres://app:pw@db.example.com/x")
    assert masked == "postgres://app:[PASSWORD]@db.example.com/x"
    assert counts == {"password": 1}


def test_only_enabled_entities_are_masked() -> None:
    policy = compile_policy({"entities": ["email"]})
    masked, counts = policy.mask_text("bob@example.com 4111111111111111 10.1.2.3")
    assert masked == "[EMAIL] 4111111111111111 10.1.2.3"
    assert counts == {"email": 1}


def test_several_entities_in_one_text_are_all_masked_and_counted() -> None:
    text = "user bob@example.com from 10.1.2.3 paid with 4111-1111-1111-1111, call +1 555 201 3344"
    masked, counts = POLICY.mask_text(text)
    assert masked == "user [EMAIL] from [IP] paid with [CARD], call [PHONE]"
    assert counts == {"email": 1, "ip": 1, "card": 1, "phone": 1}


def test_with_a_custom_entity_every_value_of_a_join_is_read_where_it_lies() -> None:
    # A custom pattern can match anything: no trigger stands in front of it.
    scanner = compile_policy({"custom": [{"name": "badge", "pattern": r"B-[0-9]{4}"}]}).scanner()
    joined = b"\x00".join([b"one", b"", b"B-1234", b"two"])
    assert scanner.dirty_in_joined(joined, 4) == [(0, 0, 3), (2, 5, 11), (3, 12, 15)]
    assert scanner.dirty_in_joined(b"", 0) == []
