"""contains_placeholder: the write-back guard recognises what this engine writes."""

from __future__ import annotations

import pytest

from masking import compile_policy, contains_placeholder


@pytest.mark.parametrize(
    "text",
    [
        "UPDATE users SET email = '[EMAIL]' WHERE id = 1",
        "INSERT INTO t VALUES ('[CARD:****1111]')",
        "INSERT INTO t VALUES ('[EMAIL:3f9a1c2b]')",
        "UPDATE t SET secret = '[MASKED]'",
        b"COPY t FROM STDIN; [PHONE]",
    ],
)
def test_it_recognises_placeholders(text: str | bytes) -> None:
    assert contains_placeholder(text)


@pytest.mark.parametrize(
    "text",
    [
        "UPDATE users SET email = 'bob@example.com'",
        "SELECT '[INFO] started'",
        "SELECT '[EMAIL:notahash]'",
        "SELECT '[email]'",
        "SELECT arr[1] FROM t",
    ],
)
def test_it_ignores_text_that_merely_looks_bracketed(text: str) -> None:
    assert not contains_placeholder(text)


def test_everything_the_engine_writes_is_recognised() -> None:
    policy = compile_policy(
        {
            "entities": {"email": "hash", "card": "partial", "ip": "redact"},
            "columns": [{"match": "t.c", "method": "redact", "entity": "salary"}],
        },
        hash_key=b"k" * 16,
    )
    masked, _ = policy.mask_text("bob@example.com 4111111111111111 10.1.2.3")
    for placeholder in masked.split():
        assert policy.contains_placeholder(placeholder)
        assert contains_placeholder(placeholder)
    rows, _ = policy.mask_rows([("t", "c")], [["100"]])
    assert policy.contains_placeholder(f"UPDATE t SET c = '{rows[0][0]}'")


def test_the_guard_fails_closed_on_a_value_it_cannot_read() -> None:
    from masking import MaskingError

    with pytest.raises(MaskingError):
        compile_policy({}).contains_placeholder(None)  # type: ignore[arg-type]
