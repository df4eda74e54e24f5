"""Checksums and shape rules that keep content detectors' false positives down.

Each validator takes the candidate text a detector's regular expression found and says
whether it really is a value of that kind: a 16-digit order number failing the Luhn check
is not a payment card, ``999.1.1.1`` is not an IPv4 address.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
from collections.abc import Callable, Sequence

# ISO 13616 IBAN lengths by country (SWIFT IBAN registry).
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22,
    "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32,
    "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24,
    "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31,
    "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28, "TL": 23,
    "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip


_NOT_DIGITS = re.compile(r"[^0-9]+")
# Deletes every ASCII character but the digits (str.translate has a fast path for ASCII).
_ASCII_NOT_DIGITS = str.maketrans("", "", "".join(chr(c) for c in range(128) if not 48 <= c <= 57))
# The digit sum of twice each digit (Luhn), as a translation table.
_DOUBLED = bytes.maketrans(b"0123456789", b"0246813579")


def digits_of(text: str) -> str:
    """The ASCII digits of ``text``, in order."""
    if text.isascii():
        return text.translate(_ASCII_NOT_DIGITS)
    return _NOT_DIGITS.sub("", text)


def luhn_valid(text: str) -> bool:
    """The Luhn (mod 10) check over the ASCII digits of ``text``; separators are ignored."""
    return luhn_digits_valid(digits_of(text))


def luhn_digits_valid(digits: str) -> bool:
    """The Luhn check of a string of ASCII digits only."""
    if not digits:
        return False
    data = digits.encode("ascii")
    # Summing the ASCII codes adds 48 per digit: sum() over bytes runs in C.
    total = sum(data[-1::-2]) + sum(data[-2::-2].translate(_DOUBLED)) - 48 * len(data)
    return total % 10 == 0


def card_valid(text: str) -> bool:
    """A payment card number: 13 to 19 digits, not starting with 0, passing Luhn."""
    return card_digits_valid(digits_of(text))


def card_digits_valid(digits: str) -> bool:
    return 13 <= len(digits) <= 19 and digits[0] != "0" and luhn_digits_valid(digits)


# Bytes tables for checking many ASCII digit strings at once (``card_digits_valid_each``).
_NOT_DIGIT_NOR_NUL = bytes(c for c in range(1, 256) if not 48 <= c <= 57)
_DIGIT_VALUE = bytes.maketrans(b"0123456789", bytes(range(10)))
_DOUBLED_VALUE = bytes.maketrans(bytes(range(10)), bytes((2 * d) % 9 if d != 9 else 9 for d in range(10)))
_NOT_MULTIPLE_OF_10 = bytes(int(n % 10 != 0) for n in range(256))
_CARD_WIDTH = 19


def digits_each(values: Sequence[bytes]) -> list[bytes]:
    """The ASCII digits of each of ``values`` (bytes without NUL), in one pass in C."""
    return b"\x00".join(values).translate(None, _NOT_DIGIT_NOR_NUL).split(b"\x00")


def card_digits_valid_each(numbers: Sequence[bytes]) -> list[bool]:
    """``card_digits_valid`` of each of ``numbers`` (ASCII digits as bytes), for a column.

    Luhn ignores leading zeros, so each number is padded to 19 digits; then the k-th
    digits of all the numbers are one bytes object, doubled where Luhn doubles, and those
    objects are added as big integers, one byte per number: no byte's sum (at most 19 x 9)
    carries into the next, so each byte of the total is one number's Luhn sum.
    """
    if not numbers:
        return []
    shaped = [13 <= len(x) <= _CARD_WIDTH and x[0] != 48 for x in numbers]
    padded = b"".join([x[-_CARD_WIDTH:].rjust(_CARD_WIDTH, b"0") for x in numbers]).translate(_DIGIT_VALUE)
    total = 0
    for k in range(_CARD_WIDTH):
        digits = padded[k::_CARD_WIDTH]
        if (_CARD_WIDTH - 1 - k) % 2:
            digits = digits.translate(_DOUBLED_VALUE)
        total += int.from_bytes(digits, "big")
    failed = total.to_bytes(len(numbers), "big").translate(_NOT_MULTIPLE_OF_10)
    return [ok and not bad for ok, bad in zip(shaped, failed, strict=True)]


def mod97_valid(text: str) -> bool:
    """The ISO 7064 mod 97-10 check used by IBANs (spaces ignored, letters as 10..35)."""
    compact = "".join(text.split()).upper()
    if len(compact) < 5 or not compact.isascii() or not compact.isalnum():
        return False
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(number) % 97 == 1


def iban_valid(text: str) -> bool:
    """An IBAN: a known country, that country's length, two check digits and mod 97 == 1."""
    compact = "".join(text.split())
    country = compact[:2]
    if not (country.isascii() and country.isupper()) or IBAN_LENGTHS.get(country) != len(compact):
        return False
    return compact[2:4].isdigit() and mod97_valid(compact)


def ssn_valid(text: str) -> bool:
    """A US social security number that could be issued.

    The SSA never issues area 000, 666 or 900-999, group 00 or serial 0000
    (https://www.ssa.gov/employer/randomization.html).
    """
    digits = digits_of(text)
    if len(digits) != 9:
        return False
    area, group, serial = int(digits[:3]), int(digits[3:5]), int(digits[5:])
    return area not in (0, 666) and area < 900 and group != 0 and serial != 0


IPV4_PATTERN = (
    r"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
)
_IPV4 = re.compile(IPV4_PATTERN)


def ipv4_valid(text: str) -> bool:
    """Four dotted decimal octets, each 0-255 (no leading zeros: 010 would be octal to some)."""
    return _IPV4.fullmatch(text) is not None


def ipv6_valid(text: str) -> bool:
    # "::" alone (the unspecified address) is also a cast in SQL text: not worth masking.
    if not any(ch in "0123456789abcdefABCDEF" for ch in text):
        return False
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def phone_valid(text: str) -> bool:
    """E.164 allows at most 15 digits; fewer than 8 is an extension or a short code."""
    return 8 <= len(digits_of(text)) <= 15


def jwt_valid(text: str) -> bool:
    """Three base64url parts whose first decodes to a JSON object naming an ``alg``."""
    parts = text.split(".")
    if len(parts) != 3:
        return False
    header = parts[0].rstrip("=")
    try:
        decoded = base64.urlsafe_b64decode(header + "=" * (-len(header) % 4))
        data = json.loads(decoded)
    except (binascii.Error, ValueError):
        return False
    return isinstance(data, dict) and isinstance(data.get("alg"), str)


def bearer_valid(text: str) -> bool:
    """Prose ("the bearer of this") is not a token: tokens are long and not all lowercase."""
    return len(text) >= 16 and not (text.isalpha() and text.islower())


VALIDATORS: dict[str, Callable[[str], bool]] = {
    "luhn": luhn_valid,
    "card": card_valid,
    "mod97": mod97_valid,
    "iban": iban_valid,
    "ssn": ssn_valid,
    "ipv4": ipv4_valid,
    "ipv6": ipv6_valid,
    "phone": phone_valid,
    "jwt": jwt_valid,
}
