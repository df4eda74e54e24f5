from datetime import timedelta

import pytest

from identity.durations import parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", timedelta(days=30)),
        ("12h", timedelta(hours=12)),
        ("90m", timedelta(minutes=90)),
        ("45s", timedelta(seconds=45)),
        ("2w", timedelta(weeks=2)),
        ("1d12h", timedelta(days=1, hours=12)),
        (" 7D ", timedelta(days=7)),
    ],
)
def test_durations_are_read(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "30", "d", "30 days", "-1d", "1.5h", "1y", "0d", "99999d"])
def test_a_bad_duration_is_refused_with_a_message(text):
    with pytest.raises(ValueError, match=repr(text)):
        parse_duration(text)
