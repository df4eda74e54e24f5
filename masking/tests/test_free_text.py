"""MSK-04: secrets inside free text, such as a notes column or a log line."""

from __future__ import annotations

from masking import compile_policy

POLICY = compile_policy({})


def test_an_api_key_inside_a_notes_column_is_masked() -> None:
    notes = "Customer said their deploy used ghp_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8 last week; rotate it."
    rows, counts = POLICY.mask_rows([("crm.tickets", "notes")], [[notes.encode()]])
    assert rows == [(b"Customer said their deploy used [GITHUB_TOKEN] last week; rotate it.",)]
    assert counts == {"github_token": 1}


def test_a_log_line_loses_its_credentials_and_keeps_the_rest() -> None:
    line = (
        "2024-05-01T10:22:33Z ERROR worker[42]: connect failed url=postgres://app:Sup3rS3cret@10.0.4.7:5432/shop "
        'headers={"Authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlX2J5dGVz"} '
        "aws=AKIAIOSFODNN7EXAMPLE stripe=sk_live_4eC39HqLyjWDarjtT1zdp7dc"
    )
    masked, counts = POLICY.mask_text(line)
    for secret in ("Sup3rS3cret", "10.0.4.7", "eyJhbGciOiJIUzI1NiJ9", "AKIAIOSFODNN7EXAMPLE", "sk_live_"):
        assert secret not in masked
    assert masked.startswith(
        "2024-05-01T10:22:33Z ERROR worker[42]: connect failed url=postgres://app:[PASSWORD]@[IP]:5432"
    )
    assert counts == {"password": 1, "ip": 1, "bearer_token": 1, "aws_access_key_id": 1, "stripe_key": 1}


def test_a_private_key_pasted_into_a_comment_is_masked_whole() -> None:
    text = "see key:\n-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIIc0\nAwEHoUQDQgAE\n-----END EC PRIVATE KEY-----\nthanks"
    assert POLICY.mask_text(text) == ("see key:\n[PRIVATE_KEY]\nthanks", {"private_key": 1})


def test_an_error_message_echoing_a_card_is_masked() -> None:
    # MSK-02: SELECT card::int echoes the value in the error text.
    message = 'invalid input syntax for type integer: "4111 1111 1111 1111"'
    assert POLICY.mask_text(message.encode()) == (
        b'invalid input syntax for type integer: "[CARD]"',
        {"card": 1},
    )


def test_a_copy_data_line_is_masked_field_by_field() -> None:
    # MSK-05: COPY users TO STDOUT sends tab-separated lines.
    line = "17\tbob@example.com\t+1 555 201 3344\t2024-01-15\n"
    assert POLICY.mask_text(line)[0] == "17\t[EMAIL]\t[PHONE]\t2024-01-15\n"
