"""The checksums and shape rules behind the detectors."""

from __future__ import annotations

import pytest

from masking import validators as v


@pytest.mark.parametrize(
    "number", ["4111111111111111", "5500 0000 0000 0004", "378282246310005", "79927398713"]
)
def test_luhn_accepts_valid_numbers(number: str) -> None:
    assert v.luhn_valid(number)


@pytest.mark.parametrize("number", ["4111111111111112", "79927398710", "", "abc"])
def test_luhn_rejects_invalid_numbers(number: str) -> None:
    assert not v.luhn_valid(number)


def test_card_needs_13_to_19_digits_and_no_leading_zero() -> None:
    assert v.card_valid("4222222222222")
    assert not v.card_valid("0000000000000")
    assert not v.card_valid("411111111111")  # 12 digits


@pytest.mark.parametrize("iban", ["GB82WEST12345698765432", "GB82 WEST 1234 5698 7654 32", "NO9386011117947"])
def test_iban_accepts_valid_ibans(iban: str) -> None:
    assert v.iban_valid(iban)


@pytest.mark.parametrize(
    "iban",
    ["GB82WEST12345698765431", "GB82WEST1234569876543", "ZZ82WEST12345698765432", "gb82west12345698765432"],
)
def test_iban_rejects_bad_checksum_length_country_or_case(iban: str) -> None:
    assert not v.iban_valid(iban)


@pytest.mark.parametrize(
    "ssn", ["000-12-3456", "666-12-3456", "900-12-3456", "999-12-3456", "123-00-4567", "123-45-0000"]
)
def test_ssn_rejects_numbers_never_issued(ssn: str) -> None:
    assert not v.ssn_valid(ssn)


def test_ssn_accepts_an_issuable_number() -> None:
    assert v.ssn_valid("123-45-6789")
    assert v.ssn_valid("899-99-9999")


@pytest.mark.parametrize("ip", ["0.0.0.1", "10.1.2.3", "255.255.255.255"])
def test_ipv4_accepts_real_addresses(ip: str) -> None:
    assert v.ipv4_valid(ip)


@pytest.mark.parametrize("ip", ["999.999.999.999", "256.0.0.1", "1.2.3", "01.2.3.4", "1.2.3.4.5"])
def test_ipv4_rejects_dotted_quads_that_are_not_addresses(ip: str) -> None:
    assert not v.ipv4_valid(ip)


def test_ipv6_needs_a_real_address_with_a_hex_digit() -> None:
    assert v.ipv6_valid("2001:db8::1")
    assert not v.ipv6_valid("::")
    assert not v.ipv6_valid("12:30:00")
    assert not v.ipv6_valid("1:2:3:4:5:6:7:8:9")


def test_jwt_header_must_decode_to_json_naming_alg() -> None:
    assert v.jwt_valid("eyJhbGciOiJIUzI1NiJ9.eyJ4IjoxfQ.c2ln")
    assert not v.jwt_valid("eyJ0eXAiOiJKV1QifQ.eyJ4IjoxfQ.c2ln")  # {"typ":"JWT"}: no alg
    assert not v.jwt_valid("eyJhbGciOiJIUzI1NiJ9.eyJ4IjoxfQ")  # two parts
    assert not v.jwt_valid("eyJhbGciOiJIUzI1NiJ9x.e.c")  # header not JSON


def test_phone_has_8_to_15_digits() -> None:
    assert v.phone_valid("+1 555 201 3344")
    assert not v.phone_valid("+1 234")
    assert not v.phone_valid("+1234567890123456")


def test_luhn_over_a_column_agrees_with_luhn_value_by_value() -> None:
    import random

    rng = random.Random(5)
    numbers = ["".join(rng.choice("0123456789") for _ in range(rng.randint(0, 24))) for _ in range(3000)]
    numbers += ["4111111111111111", "378282246310005", "4222222222222", "0" * 16, "6011000990139424"]
    numbers += ["4111111111111112", "04111111111111111", "9" * 19, "1234567890123456789"]
    expected = [v.card_digits_valid(n) for n in numbers]
    assert v.card_digits_valid_each([n.encode() for n in numbers]) == expected
    assert any(expected) and not all(expected)


def test_digits_over_a_column_are_each_values_digits() -> None:
    values = [b"+1 (555) 201-3344", b"", b"abc", b"4111 1111"]
    assert v.digits_each(values) == [v.digits_of(x.decode()).encode() for x in values]
