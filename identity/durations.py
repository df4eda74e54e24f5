"""Human durations such as ``30d`` or ``1d12h`` (token lifetimes on the command line)."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_WHOLE = re.compile(r"^(?:\d+[smhdw])+$")
_PART = re.compile(r"(\d+)([smhdw])")
# Ten years: anything longer is a typo, and "never expires" is spelled by leaving it out.
MAX_DURATION = timedelta(days=3650)


def parse_duration(text: str) -> timedelta:
    """``"30d"`` -> 30 days. Units: s, m, h, d, w; parts add up (``1d12h``).

    Raises ``ValueError`` with a message fit to show to the person who typed it.
    """
    value = text.strip().lower()
    if not _WHOLE.match(value):
        raise ValueError(f"{text!r} is not a duration such as 90m, 12h, 30d or 2w")
    seconds = sum(int(number) * _UNITS[unit] for number, unit in _PART.findall(value))
    if seconds <= 0:
        raise ValueError(f"{text!r}: a duration must be longer than zero")
    duration = timedelta(seconds=seconds)
    if duration > MAX_DURATION:
        raise ValueError(f"{text!r}: at most {MAX_DURATION.days} days")
    return duration
