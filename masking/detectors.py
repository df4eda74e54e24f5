"""The built-in content detectors and the shapes that decide when they run.

A detector is a regular expression (Python ``re``, run on one value at a time) plus, where
a checksum or a shape rule exists, a validator: the expression finds candidates, the
validator keeps the false positives down (a 16-digit order number failing Luhn stays
visible). The part of a match that is masked is the named group ``s`` (or ``s2``, ``s3``:
the first that took part), or the whole match. Detectors use only ASCII digits
(``[0-9]``), like the shapes.

``TRIGGER_SHAPES`` are necessary conditions: a value that holds none of a detector's
shapes holds nothing that detector would find (the tests check this on every example and
on generated text). RE2 runs them over a whole batch joined with NUL (PostgreSQL text
never holds NUL), so a shape never matches NUL: explicit character classes only.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from masking import validators as v

Span = tuple[int, int]


def _digits_only(value: str) -> str:
    return "".join(ch for ch in value if ch.isascii() and ch.isalnum()).upper()


def _ip_normal(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return value


NORMALISERS: dict[str, Callable[[str], str]] = {
    "email": str.casefold,
    "card": _digits_only,
    "iban": _digits_only,
    "ssn": _digits_only,
    "phone": _digits_only,
    "ip": _ip_normal,
}

_NOT_ALNUM_BYTES = bytes(c for c in range(256) if not chr(c).isascii() or not chr(c).isalnum())


def _digits_only_ascii(value: bytes) -> bytes:
    return value.translate(None, _NOT_ALNUM_BYTES).upper()


# The same normalisers for ASCII text given as bytes (the UTF-8 of what the above give);
# an entity missing here has none that simple (``ip``).
ASCII_NORMALISERS: dict[str, Callable[[bytes], bytes]] = {
    "email": bytes.lower,  # casefold changes no ASCII letter but A-Z
    "card": _digits_only_ascii,
    "iban": _digits_only_ascii,
    "ssn": _digits_only_ascii,
    "phone": _digits_only_ascii,
}


@dataclass(frozen=True)
class Detector:
    """One way of finding one entity (an entity may have several, as ``ip`` has)."""

    entity: str
    pattern: str
    validator: Callable[[str], bool] | None = None
    # Chooses the secret's span inside a match when the greedy match can overshoot it
    # (a card followed by an expiry date); returns None when there is no valid one.
    refine: Callable[[str, int, int], Span | None] | None = None
    name: str = ""
    secret_groups: tuple[str, ...] = field(default=(), init=False)

    def __post_init__(self) -> None:
        groups = re.compile(self.pattern).groupindex
        object.__setattr__(self, "secret_groups", tuple(g for g in ("s", "s2", "s3") if g in groups))

    def secret_span(self, match: re.Match[str], groups: Sequence[int | str] = ()) -> Span | None:
        """The span of the secret in ``match`` if it is valid, else None.

        ``groups`` are the match's groups for ``secret_groups`` (the whole detector's group
        last), when the match comes from a combined expression.
        """
        text = match.string
        start = end = -1
        for group in groups or (*self.secret_groups, 0):
            start, end = match.span(group)
            if start >= 0:
                break
        if self.refine is not None:
            return self.refine(text, start, end)
        if start == end:
            return None
        if self.validator is not None and not self.validator(text[start:end]):
            return None
        return start, end


def whole_check(detector: Detector) -> Callable[[str], bool] | None:
    """Whether a secret of ``detector`` that is all of a text is valid as it stands (what
    ``secret_span`` decides for the span ``(0, len(text))``); None: any is."""
    refine = detector.refine
    if refine is None:
        return detector.validator
    whole: Callable[[str], bool] | None = getattr(refine, "whole", None)
    if whole is not None:
        return whole

    def check(text: str) -> bool:
        return refine(text, 0, len(text)) == (0, len(text))

    return check


_DIGIT_RUN = re.compile(r"[0-9]+")


def _digit_groups_refine(
    low: int, high: int, valid_digits: Callable[[str], bool]
) -> Callable[[str, int, int], Span | None]:
    """The longest run of whole digit groups from the start of ``[start, end)`` with
    low..high digits whose digits are valid.

    Greedy expressions over "digits and separators" overshoot into a neighbouring number
    ("4111 1111 1111 1111 12/27"); trying whole groups, longest first, finds the card. Runs
    starting at a later group are tried when the scan moves on to that group.
    """

    def refine(text: str, start: int, end: int) -> Span | None:
        digits = v.digits_of(text[start:end])
        if low <= len(digits) <= high and valid_digits(digits):
            return start, end  # the usual case: the match is the number
        total = 0
        ends: list[tuple[int, int]] = []
        for run in _DIGIT_RUN.finditer(text, start, end):
            total += run.end() - run.start()
            if total > high:
                break
            if total >= low:
                ends.append((total, run.end()))
        for total, stop in reversed(ends):
            if valid_digits(digits[:total]):
                return start, stop
        return None

    def whole(text: str) -> bool:
        # refine(text, 0, len(text)) keeps all of ``text`` only through its first test: the
        # runs it tries after that hold fewer digits, or all of them again (the same test).
        digits = v.digits_of(text)
        return low <= len(digits) <= high and valid_digits(digits)

    refine.whole = whole  # type: ignore[attr-defined]  # read by whole_check()
    return refine


def _any_digits(digits: str) -> bool:
    return True


def _iban_refine(text: str, start: int, end: int) -> Span | None:
    length = v.IBAN_LENGTHS.get(text[start : start + 2])
    if length is None:
        return None
    seen = 0
    for index in range(start, end):
        if text[index] != " ":
            seen += 1
            if seen == length:
                stop = index + 1
                # The IBAN must end at a group boundary, not inside a longer word.
                if stop < len(text) and text[stop].isalnum():
                    return None
                return (start, stop) if v.iban_valid(text[start:stop]) else None
    return None


def _ipv6_refine(text: str, start: int, end: int) -> Span | None:
    while end > start and text[end - 1] == ".":
        end -= 1
    if end - start > 45:  # the longest textual IPv6 address (with an embedded IPv4)
        return None
    return (start, end) if v.ipv6_valid(text[start:end]) else None


_GITLAB_PREFIXES = (
    "glpat",
    "gldt",
    "glrt",
    "glcbt",
    "glptt",
    "glft",
    "glimt",
    "glagent",
    "gloas",
    "glsoat",
    "glffct",
)

# In priority order: at the same starting position the first detector that matches and
# validates wins; specific token shapes come before generic number shapes.
BUILTIN_DETECTORS: tuple[Detector, ...] = (
    Detector(
        "private_key",
        r"-----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----"
        r"(?:[^\x00]*?-----END[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----|[^\x00]*)",
        name="pem",
    ),
    Detector(
        "jwt",
        r"(?<![A-Za-z0-9_-])(?P<s>eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*)",
        v.jwt_valid,
        name="jwt",
    ),
    Detector(
        "aws_access_key_id",
        r"(?<![A-Za-z0-9])(?P<s>(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16})(?![A-Za-z0-9])",
        name="aws_key_id",
    ),
    Detector(
        "aws_secret_key",
        r"(?i:secret_?access_?key)[\"']?[ \t]*[:=][ \t]*[\"']?(?P<s>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])",
        name="aws_secret",
    ),
    Detector(
        "github_token",
        r"(?<![A-Za-z0-9_])(?P<s>gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{22,247})(?![A-Za-z0-9_])",
        name="github",
    ),
    Detector(
        "gitlab_token",
        r"(?<![A-Za-z0-9_-])(?P<s>(?:"
        + "|".join(_GITLAB_PREFIXES)
        + r")-[A-Za-z0-9_-]{20,}(?:\.[A-Za-z0-9_-]+)*)",
        name="gitlab",
    ),
    Detector(
        "slack_token",
        r"(?<![A-Za-z0-9-])(?P<s>xox[abposre]-[A-Za-z0-9-]{10,}|xapp-[0-9]-[A-Za-z0-9-]{10,})",
        name="slack",
    ),
    Detector(
        "slack_token",
        r"(?P<s>https://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9/_-]{10,})",
        name="slack_webhook",
    ),
    Detector(
        "stripe_key",
        r"(?<![A-Za-z0-9_])(?P<s>(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{10,247}|whsec_[A-Za-z0-9]{24,})(?![A-Za-z0-9_])",
        name="stripe",
    ),
    Detector(
        "google_api_key",
        r"(?<![A-Za-z0-9_-])(?P<s>AIza[A-Za-z0-9_-]{35})(?![A-Za-z0-9_-])",
        name="google",
    ),
    Detector(
        "password",
        # scheme://user:PASSWORD@host; the password may hold '@' and ':', not '/' or space.
        r"://[^\s:/@\x00]*:(?P<s>[^\s/\x00]+)@",
        name="url_password",
    ),
    Detector(
        "password",
        # libpq "password=x", "password = 'x y'", ODBC "Pwd=x;", env "PGPASSWORD=x",
        # JSON '"password": "x"'.
        r"(?i:pass(?:word|wd)|pwd)[\"']?[ \t]*[:=][ \t]*"
        r"(?:\"(?P<s>[^\"\x00\n]+)\"|'(?P<s2>[^'\x00\n]+)'|(?P<s3>[^\s'\";,&\x00]+))",
        name="kv_password",
    ),
    Detector(
        "bearer_token",
        r"(?<![A-Za-z0-9_])(?:[Bb]earer|BEARER)[ \t]+(?P<s>[A-Za-z0-9._~+/-]+=*)",
        v.bearer_valid,
        name="bearer",
    ),
    Detector(
        "bearer_token",
        # Authorization: Basic dXNlcjpwYXNz / token ghx... / any scheme.
        r"(?i:authorization)[\"']?[ \t]*[:=][ \t]*[\"']?(?:[A-Za-z]+[ \t]+)?(?P<s>[A-Za-z0-9._~+/-]{8,}=*)",
        name="authorization",
    ),
    Detector(
        "email",
        r"(?<![\w.%+-])(?P<s>[\w.%+-]{1,64}@(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+[^\W\d_]{2,63})(?![\w-])",
        name="email",
    ),
    Detector(
        "iban",
        r"(?<![A-Za-z0-9])(?P<s>[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30})",
        refine=_iban_refine,
        name="iban",
    ),
    Detector(
        "card",
        r"(?<![0-9])(?P<s>[0-9](?:[ -]?[0-9]){12,18})(?![0-9])",
        refine=_digit_groups_refine(13, 19, v.card_digits_valid),
        name="card",
    ),
    Detector(
        "ssn",
        r"(?<![0-9-])(?P<s>[0-9]{3}(?P<sep>[- ])[0-9]{2}(?P=sep)[0-9]{4})(?![0-9-])",
        v.ssn_valid,
        name="ssn",
    ),
    Detector(
        "phone",
        r"(?<![\w+])(?P<s>\+[0-9][0-9 ().-]{6,22}[0-9])(?![0-9])",
        refine=_digit_groups_refine(8, 15, _any_digits),  # E.164: 8 to 15 digits
        name="phone_international",
    ),
    Detector(
        "phone",
        r"(?<![0-9])(?P<s>(?:\([2-9][0-9]{2}\) ?|[2-9][0-9]{2}[-. ])[2-9][0-9]{2}[-. ][0-9]{4})(?![0-9])",
        name="phone_nanp",
    ),
    Detector(
        "phone",
        r"(?<![0-9])(?P<s>0[0-9]{1,4}[ -][0-9]{3,4}[ -][0-9]{3,4})(?![0-9])",
        v.phone_valid,
        name="phone_national",
    ),
    Detector(
        "ip",
        r"(?<![0-9.])(?P<s>[0-9]{1,3}(?:\.[0-9]{1,3}){3})(?![0-9]|\.[0-9])",
        v.ipv4_valid,
        name="ipv4",
    ),
    Detector(
        "ip",
        # Possessive: a long run of hex and colons must not be re-split (quadratic).
        r"(?<![\w:.])(?P<s>[0-9A-Fa-f]{0,4}:[0-9A-Fa-f:.]*+)(?!\w)",
        refine=_ipv6_refine,
        name="ipv6",
    ),
)

BUILTIN_ENTITIES: tuple[str, ...] = tuple(dict.fromkeys(d.entity for d in BUILTIN_DETECTORS))


# Every detector's match contains one of these shapes (RE2 syntax: no look-around), and
# each shape names the detectors it may start. RE2 runs them all at DFA speed: over a whole
# batch joined into one string (is any value worth a closer look?) and, as a set, over one
# value (which detectors should look?). Its cost does not grow with the number of shapes or
# with how many digits the data holds, and it cannot backtrack.
TRIGGER_SHAPES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("@", ("email", "url_password")),
    ("://", ("url_password", "slack_webhook")),
    ("::", ("ipv6",)),
    (":[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:", ("ipv6",)),
    (r"[0-9]\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]", ("ipv4",)),
    (r"\+[0-9][0-9 ().-]{6}", ("phone_international",)),
    (r"\([2-9][0-9]{2}\)", ("phone_nanp",)),
    ("[0-9](?:[ -]?[0-9]){12}", ("card",)),
    ("[0-9]{3}[-. ][0-9]{3}[-. ][0-9]{4}", ("phone_nanp",)),
    ("[0-9]{3}[- ][0-9]{2}[- ][0-9]{4}", ("ssn",)),
    ("0[0-9]{1,4}[ -][0-9]{3,4}[ -][0-9]{3}", ("phone_national",)),
    ("[A-Z]{2}[0-9]{2}", ("iban",)),
    ("-----BEGIN", ("pem",)),
    ("eyJ", ("jwt",)),
    ("AKIA|ASIA|ABIA|ACCA|A3T", ("aws_key_id",)),
    ("AIza", ("google",)),
    ("(?i:key)", ("aws_secret",)),
    ("(?i:pass|pwd)", ("kv_password",)),
    ("(?i:bearer)", ("bearer",)),
    ("(?i:authorization)", ("authorization",)),
    ("gh[pousr]_|github_pat_", ("github",)),
    ("(?:" + "|".join(_GITLAB_PREFIXES) + ")-", ("gitlab",)),
    ("xox[abposre]-|xapp-", ("slack",)),
    ("[sr]k_(?:live|test)_|whsec_", ("stripe",)),
)
TRIGGER = "|".join(f"(?:{shape})" for shape, _ in TRIGGER_SHAPES)


# Whole-column forms: for a detector named here, a value of ASCII text that ``form`` (RE2
# syntax, ASCII classes) matches in full is a value whose first candidate for the detector
# at its start -- what the scan takes there, lookarounds and all -- is the whole value,
# with the secret group spanning it. RE2 can then test a whole column, joined with NUL, in
# one call at DFA speed (``Scanner.mask_whole_column``). Each form is its detector's
# expression without the lookarounds (or a subset of it), and the argument is the same for
# each: every quantifier's greedy choice is forced by the next character (a separator
# class never holds what follows it, a label never holds its dot), so the first path the
# backtracking engine tries through a value that the form matches in full is the full one,
# and at the value's two ends the lookbehind and the lookahead both hold.
@dataclass(frozen=True)
class WholeForm:
    """``form`` as above; ``check_each`` gives, for many ASCII values (bytes) at once, the
    detector's check of each as a whole value (``whole_check``); None: the form implies it."""

    form: str
    check_each: Callable[[Sequence[bytes]], list[bool]] | None = None


def _card_each(values: Sequence[bytes]) -> list[bool]:
    return v.card_digits_valid_each(v.digits_each(values))


def _phone_international_each(values: Sequence[bytes]) -> list[bool]:
    return [8 <= len(digits) <= 15 for digits in v.digits_each(values)]


WHOLE_FORMS: dict[str, WholeForm] = {
    # Local part: greedy up to the only "@" (no later class holds "@"); labels: each one
    # ends at its own dot (no label class holds "."), and the loop takes every label
    # before the TLD, which has no dot after it; the TLD then takes the rest (letters).
    # No check: the detector has no validator.
    "email": WholeForm(
        r"[A-Za-z0-9_.%+-]{1,64}@(?:[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
    ),
    # Each repetition takes a separator when one is there (a digit never is one).
    "card": WholeForm(r"[0-9](?:[ -]?[0-9]){12,18}", _card_each),
    # The run takes all but the last character, which is a digit.
    "phone_international": WholeForm(r"\+[0-9][0-9 ().-]{6,22}[0-9]", _phone_international_each),
    # The only choice, the space after "(555)", is forced: a digit 2-9 is no space.
    "phone_nanp": WholeForm(r"(?:\([2-9][0-9]{2}\) ?|[2-9][0-9]{2}[-. ])[2-9][0-9]{2}[-. ][0-9]{4}"),
    # Each group of one to three digits is followed by a dot or the end. The form is the
    # validator's own expression (every octet 0-255, no leading zero), a subset of the
    # detector's, so it implies the check.
    "ipv4": WholeForm(v.IPV4_PATTERN),
}
