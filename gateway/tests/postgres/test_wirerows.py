"""The masking fast path's passes over DataRows: the C build against the reference.

``gateway/postgres/_wirerows.c`` is ``gateway.postgres.wirerows`` in C (built by ``make
venv`` as ``_airlock_wirerows``); the relay masks small results through it when it was
built from both files as they are now. What ``write_rows`` returns is what the agent
receives of a masked result, and the rows it reads come from the upstream server: the
build must answer exactly as the reference for every run of rows, malformed ones
included (lengths past the message or the buffer, NULLs, truncated headers, other widths,
NUL inside values, values that are not UTF-8), and raise the same errors for bad
arguments. ``make test`` runs with ``AIRLOCK_NATIVE=require``: a missing or stale build
fails, not skips.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.postgres import protocol as pg
from gateway.postgres import wirerows as pure
from gateway.tests.nativebuilds import built_or_fail, check_an_edited_c_source_makes_the_build_stale
from masking.placeholders import Method, Renderer


@pytest.fixture(scope="module")
def built() -> ModuleType:
    return built_or_fail(pure)


def _outcome(function: Any, *args: Any) -> Any:
    try:
        return ("ok", function(*args))
    except (ValueError, TypeError) as exc:
        return (type(exc).__name__,)


def _both(built: ModuleType, name: str, *args: Any) -> Any:
    expected = _outcome(getattr(pure, name), *args)
    assert _outcome(getattr(built, name), *args) == expected, (name, args)
    return expected


ROWS = [
    [b"1", b"ann", b"ann@example.com", None],
    [b"2", b"", b"bob@example.com", b"\xc3\xa9t\xc3\xa9"],
    [b"3", None, None, b"x"],
]
RUN = pg.data_rows(ROWS)
# Dates, times and timestamps as PostgreSQL writes them with DateStyle ISO.
ISO_VALUES = [
    b"2026-12-05",
    b"2026-12-05 BC",
    b"2026-12-05 17:52:33",
    b"2026-12-05 17:52:33.512345+00",
    b"0044-03-15 00:00:00+00:53:28 BC",
    b"17:52:33",
    b"24:00:00-05:30",
    b"infinity",
    b"-infinity",
]


def test_a_run_is_read_as_the_general_path_reads_it(built: ModuleType) -> None:
    outcome = _both(built, "scan_rows", RUN, 0, len(RUN), 4, (2, 0), (1, 3))
    stop, count, fetched, joined, nulls, looked = outcome[1]
    rows, bounds = pg.parse_data_rows(RUN, 0, len(RUN))
    assert (stop, count) == (bounds[-1], len(rows)) == (len(RUN), 3)
    assert fetched == [[r[2] for r in rows], [r[0] for r in rows]]
    assert joined == b"ann\x00\x00\x00" + b"\x00\xc3\xa9t\xc3\xa9\x00x"
    assert nulls == [0, 1, 1, 1]
    assert looked == [False, False]
    # Followed by another message, or by the start of a row still to come: the run stops there.
    tail = RUN + pg.message(b"C", b"SELECT 3\x00") + pg.data_row([b"4"])[:6]
    assert _both(built, "scan_rows", tail, 0, len(tail), 4, (), ())[1][:2] == (len(RUN), 3)
    assert _both(built, "scan_rows", RUN + b"D\x00", 0, len(RUN) + 2, 4, (), ())[1][:2] == (len(RUN), 3)


@pytest.mark.parametrize(
    "run, width, fetch, scan",
    [
        (RUN, 3, (), ()),  # another width
        (RUN, 4, (4,), ()),  # a column out of range
        (RUN, 4, (), (-1,)),
        (RUN, 4, (1 << 70,), ()),
        (pg.data_rows([[b"a\x00b"]]), 1, (), (0,)),  # NUL inside a scanned value
        (b"D\x00\x00\x00\x05\x00", 1, (), ()),  # shorter than its header
        (b"D\x00\x00\x00\x0a\x00\x01\x00\x00\x00\x09ab", 1, (), ()),  # a value past its message
        (b"D\x00\x00\x00\x08\x00\x01\x00\x00", 1, (), ()),  # a length cut short
    ],
)
def test_runs_the_fast_path_does_not_take(
    built: ModuleType, run: bytes, width: int, fetch: Any, scan: Any
) -> None:
    assert _both(built, "scan_rows", run, 0, len(run), width, fetch, scan) == ("ok", None)


def test_a_column_is_looked_up_in_a_cache_when_every_value_is_there(built: ModuleType) -> None:
    cache = {hash(b"ann@example.com"): b"[EMAIL:1]", hash(b"bob@example.com"): b"[EMAIL:2]"}
    outcome = _both(built, "scan_rows", RUN, 0, len(RUN), 4, ((2, cache), 1, (3, cache)), ())
    fetched, looked = outcome[1][2], outcome[1][5]
    assert fetched[0] == [b"[EMAIL:1]", b"[EMAIL:2]", None] and looked[0] is True
    assert fetched[1] == [b"ann", b"", None] and looked[1] is False
    assert fetched[2] == [None, b"\xc3\xa9t\xc3\xa9", b"x"] and looked[2] is False  # not ASCII, and a miss
    missing = {hash(b"ann@example.com"): b"[EMAIL:1]"}
    assert _both(built, "scan_rows", RUN, 0, len(RUN), 4, ((2, missing),), ())[1][2:6:3] == (
        [[b"ann@example.com", b"bob@example.com", None]],
        [False],
    )
    odd = {hash(b"ann@example.com"): "[EMAIL:1]", hash(b"bob@example.com"): b"[EMAIL:2]"}  # not bytes
    assert _both(built, "scan_rows", RUN, 0, len(RUN), 4, ((2, odd),), ())[1][5] == [False]


@pytest.mark.parametrize(
    "value",
    [
        b"4111111111111111",
        b"4111 1111 1111 1111",
        b"1234567",
        b"12345678",
        b"",
        b"--==--",
        b"caf\xc3\xa9 12 34 56 78 ab",
    ],
)
def test_a_partial_instruction_masks_as_the_renderer_does(built: ModuleType, value: bytes) -> None:
    renderer = Renderer("card", Method.PARTIAL, None)
    run = pg.data_rows([[value], [None]])
    out, sample = _both(built, "write_rows", run, 0, len(run), 1, [renderer.partial_parts()], [], 2)[1]
    assert pg.parse_data_rows(out, 0, len(out))[0] == [[renderer.partial_bytes(value)], [None]]


@pytest.mark.parametrize(
    "minimum, keep", [(0, 0), (3, -1), (2, 10), (1 << 80, 4), (4, 1 << 80), (-(1 << 80), 2)]
)
def test_partial_instructions_at_their_bounds(built: ModuleType, minimum: int, keep: int) -> None:
    run = pg.data_rows([[b"ab-cd-ef"], [b"x"]])
    _both(built, "write_rows", run, 0, len(run), 1, [(b"[P:", b"[P]", minimum, keep)], [(0, 1, b"y")], 2)


def test_a_nul_in_a_fetched_value_is_read_whole(built: ModuleType) -> None:
    run = pg.data_rows([[b"a\x00b"]])
    assert _both(built, "scan_rows", run, 0, len(run), 1, (0,), ())[1][2] == [[b"a\x00b"]]


@pytest.mark.parametrize(
    "args",
    [
        (RUN, -1, len(RUN), 4, (), ()),
        (RUN, 5, 4, 4, (), ()),
        (RUN, 0, len(RUN) + 1, 4, (), ()),
        (RUN, 0, len(RUN), -1, (), ()),
        (RUN, 0, len(RUN), 65536, (), ()),
        (RUN, 0, len(RUN), 4, [0], ()),
        (RUN, 0, len(RUN), 4, (9, "x"), ()),
        (RUN, 0, len(RUN), 4, (), (0.0,)),
        (RUN, 0, len(RUN), 4, ((0, {}, 1),), ()),
        (RUN, 0, len(RUN), 4, ((0, []),), ()),
        (RUN, 0, len(RUN), 4, (), ((0, {}),)),
    ],
)
def test_bad_arguments_to_scan_rows(built: ModuleType, args: Any) -> None:
    assert _both(built, "scan_rows", *args)[0] in ("ValueError", "TypeError")


@pytest.mark.parametrize("quiet", [[1], (1.0,), ("1",), ((1, {}),), None])
def test_quiet_columns_are_a_tuple_of_indices(built: ModuleType, quiet: Any) -> None:
    assert _both(built, "scan_rows", RUN, 0, len(RUN), 4, (), (1,), quiet)[0] == "TypeError"


def test_iso_values_of_a_quiet_column_are_joined_empty(built: ModuleType) -> None:
    rows = [[b"2026-12-05 17:52:33+00", b"a@b.io"], [b"Sat Dec 05 2026 PST", b"x"], [None, b"17:52:33"]]
    run = pg.data_rows(rows)
    for module in (pure, built):
        quiet = module.scan_rows(run, 0, len(run), 2, (), (0, 1), (0,))
        loud = module.scan_rows(run, 0, len(run), 2, (), (0, 1))
        assert quiet[3] == b"\x00Sat Dec 05 2026 PST\x00\x00a@b.io\x00x\x0017:52:33"
        assert loud[3] == b"2026-12-05 17:52:33+00\x00Sat Dec 05 2026 PST\x00\x00a@b.io\x00x\x0017:52:33"
        assert quiet[:3] == loud[:3] and quiet[4:] == loud[4:]
        # A quiet column out of range: the general path's, as for any column index.
        assert module.scan_rows(run, 0, len(run), 2, (), (0,), (2,)) is None


ISO_NEAR_MISSES = [
    b"",
    b"2026-12-5",
    b"12026-12-05",
    b"2026-12-05 ",
    b"2026-12-05 B",
    b"2026-12-05 BCE",
    b"2026-12-05T17:52:33",
    b"2026-12-05 17:52",
    b"2026-12-05 17:52:33.",
    b"2026-12-05 17:52:33.1234567",
    b"2026-12-05 17:52:33+5",
    b"2026-12-05 17:52:33+05:",
    b"2026-12-05 17:52:33+05:30:15:00",
    b"2026-12-05 17:52:33 PST",
    b"17:52:33 BC",
    b"17:52",
    b"Infinity",
    b"infinity ",
    b"+infinity",
    b"2026-12-05\x00",
    b"\xef\xbc\x92026-12-05",
]


@pytest.mark.parametrize("value", ISO_VALUES + ISO_NEAR_MISSES)
def test_iso_datetime_answers_as_the_reference(built: ModuleType, value: bytes) -> None:
    assert built.iso_datetime(value) is pure.iso_datetime(value) is (value in ISO_VALUES)


@settings(max_examples=2000, deadline=None)
@given(
    st.sampled_from(ISO_VALUES),
    st.integers(0, 40),
    st.sampled_from([b"", b"0", b"9", b"-", b"+", b":", b".", b" ", b"B", b"C", b"x", b"\x00", b"\xff"]),
    st.sampled_from(["insert", "replace", "cut"]),
)
def test_iso_datetime_answers_as_the_reference_on_mutations(
    built: ModuleType, value: bytes, at: int, piece: bytes, how: str
) -> None:
    at = min(at, len(value))
    if how == "insert":
        text = value[:at] + piece + value[at:]
    elif how == "replace":
        text = value[:at] + piece + value[at + 1 :]
    else:
        text = value[:at]
    assert built.iso_datetime(text) is pure.iso_datetime(text), text


def _skeletons() -> list[bytes]:
    """Every form ``iso_datetime`` accepts, each digit written as 5 (below: any digit is
    the same to the shapes once their digit classes are widened)."""
    fractions = [b""] + [b"." + b"5" * n for n in range(1, 7)]
    zones = [b""] + [sign + rest for sign in (b"+", b"-") for rest in (b"55", b"55:55", b"55:55:55")]
    times = [b"55:55:55" + f + z for f in fractions for z in zones]
    date = b"5555-55-55"
    forms = [b"infinity", b"-infinity", date, date + b" BC", *times]
    forms += [date + b" " + t + bc for t in times for bc in (b"", b" BC")]
    return forms


def _widened(shape: str) -> str:
    """``shape`` matching at least what it matches, with every digit it requires widened to
    any digit: ``[2-9]`` and each literal digit outside a class or a count become
    ``[0-9]`` (classes holding digits already hold 0-9 or a hex range that does)."""
    import re

    widened = shape.replace("[2-9]", "[0-9]")
    return re.sub(r"(?<![{,\d\[-])\d(?![\d,}\]-])", "[0-9]", widened)


def test_no_trigger_shape_matches_an_iso_date_or_time() -> None:
    # The reason a quiet column's ISO values need no scan: every built-in detector's
    # match holds one of these shapes (masking.detectors), and none can match any text
    # iso_datetime accepts. Widening each shape's digits makes all digits alike, so the
    # skeletons (every digit a 5) stand for every such text.
    import re

    from masking.detectors import TRIGGER_SHAPES

    widened = [_widened(shape) for shape, _ in TRIGGER_SHAPES]
    assert [w for w, (s, _) in zip(widened, TRIGGER_SHAPES, strict=True) if w != s] == [
        r"\([0-9][0-9]{2}\)",
        "[0-9][0-9]{1,4}[ -][0-9]{3,4}[ -][0-9]{3}",
        "AKIA|ASIA|ABIA|ACCA|A[0-9]T",
    ]
    skeletons = _skeletons()
    assert all(pure.iso_datetime(s) for s in skeletons) and len(skeletons) == 4 + 2 * 49 + 49
    for shape in widened:
        pattern = re.compile(shape.encode())
        for skeleton in skeletons:
            assert pattern.search(skeleton) is None, (shape, skeleton)
    # And the widening is what makes the argument: an unwidened digit would hide matches.
    assert re.search(rb"[0-9](?:[ -]?[0-9]){12}", b"5555-55-55 55:55:55") is None
    assert re.search(rb"[0-9](?:[ -]?[0-9]){9}", b"5555-55-55 55:55:55") is not None


def test_rows_are_written_with_their_replacements(built: ModuleType) -> None:
    columns: list[Any] = [None, [b"N1", None, b"N3"], b"[EMAIL]", None]
    changes: list[Any] = [(3, 2, b"[X]"), (0, 0, None), (0, 0, b"one")]
    out, sample = _both(built, "write_rows", RUN, 0, len(RUN), 4, columns, changes, 2)[1]
    assert pg.parse_data_rows(out, 0, len(out))[0] == [
        [b"one", b"N1", b"[EMAIL]", None],
        [b"2", None, b"[EMAIL]", b"\xc3\xa9t\xc3\xa9"],
        [b"3", b"N3", None, b"[X]"],
    ]
    assert sample == [["one", "N1", "[EMAIL]", None], ["2", None, "[EMAIL]", "\u00e9t\u00e9"]]


def test_unchanged_rows_go_on_as_they_came(built: ModuleType) -> None:
    # A row with bytes after its values (PostgreSQL sends none) is copied, not re-encoded,
    # when nothing in it changes; re-encoded when something does.
    padded = b"D\x00\x00\x00\x10\x00\x01\x00\x00\x00\x03abcPAD" + pg.data_row([b"x"])
    assert _both(built, "write_rows", padded, 0, len(padded), 1, [None], [], 5)[1] == (None, [["abc"], ["x"]])
    same = _both(built, "write_rows", padded, 0, len(padded), 1, [None], [(0, 0, b"abc"), (0, 1, b"y")], 0)[1]
    assert same == (padded[:17] + pg.data_row([b"y"]), [])
    assert (
        _both(built, "write_rows", RUN, 0, len(RUN), 4, [None, None, b"ann@example.com", None], [], 0)[1][0]
        is not None
    )


def test_a_sample_that_is_not_utf8_is_left_to_the_caller(built: ModuleType) -> None:
    run = pg.data_rows([[b"ok"], [b"\xff"], [b"\xed\xa0\x80"]])
    assert _both(built, "write_rows", run, 0, len(run), 1, [None], [], 1)[1] == (None, [["ok"]])
    assert _both(built, "write_rows", run, 0, len(run), 1, [None], [], 2)[1] == (None, None)
    assert _both(built, "write_rows", run, 0, len(run), 1, [None], [(0, 1, b"fine")], 3)[1][1] is None


@pytest.mark.parametrize(
    "columns, changes",
    [
        ([None, None, None], []),  # fewer columns than the width
        ((None, None, None, None), []),  # not a list
        ([None, [b"a"], None, None], []),  # a column list shorter than the rows
        ([None, [b"a", "b", None], None, None], []),  # a value that is not bytes
        ([None, "x", None, None], []),
        ([None, (b"[", b"]", 8), None, None], []),
        ([None, (b"[", "]", 8, 4), None, None], []),
        ([None, (b"[", b"]", 8, 4.0), None, None], []),
        ([None, None, None, None], ((0, 0, None),)),
        ([None, None, None, None], [(0, 0)]),
        ([None, None, None, None], [(4, 0, None)]),
        ([None, None, None, None], [(0, 3, None)]),
        ([None, None, None, None], [(0, -1, None)]),
        ([None, None, None, None], [(0, 1 << 70, None)]),
        ([None, None, None, None], [("0", 0, None)]),
        ([None, None, None, None], [(0, 0, "x")]),
    ],
)
def test_bad_instructions_to_write_rows(built: ModuleType, columns: Any, changes: Any) -> None:
    assert _both(built, "write_rows", RUN, 0, len(RUN), 4, columns, changes, 3)[0] == "ValueError"


@pytest.mark.parametrize("end", [len(RUN) - 1, len(RUN) - 20])
def test_write_rows_takes_only_a_whole_run(built: ModuleType, end: int) -> None:
    assert _both(built, "write_rows", RUN, 0, end, 4, [None] * 4, [], 3)[0] == "ValueError"


VALUES = st.one_of(
    st.none(),
    st.binary(max_size=12),
    st.sampled_from([b"\x00", b"\xff", b"a\x00", b"@", "é".encode(), *ISO_VALUES]),
)


@st.composite
def runs(draw: st.DrawFn) -> tuple[bytes, int, int]:
    width = draw(st.integers(0, 5))
    rows = draw(st.lists(st.lists(VALUES, min_size=width, max_size=width), max_size=6))
    data = bytearray(pg.data_rows(rows))
    if draw(st.booleans()):  # another row's width
        data += pg.data_row(draw(st.lists(VALUES, max_size=6)))
    if data and draw(st.integers(0, 3)) == 0:  # a byte anywhere changed: lengths, counts, types
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    if data and draw(st.booleans()):  # cut anywhere
        del data[draw(st.integers(0, len(data))) :]
    prefix = draw(st.binary(max_size=3))
    return prefix + bytes(data) + draw(st.binary(max_size=8)), len(prefix), width


@settings(max_examples=600, deadline=None)
@given(runs(), st.data())
def test_the_build_answers_as_the_reference_on_generated_runs(
    built: ModuleType, case: tuple[bytes, int, int], data: st.DataObject
) -> None:
    run, pos, width = case
    indices = st.integers(-1, width).map(int)
    cache = {hash(v): b"[H]" for v in (b"", b"a", b"@", b"x" * 3)}
    fetch = tuple(data.draw(st.lists(st.one_of(indices, st.tuples(indices, st.just(cache))), max_size=3)))
    scan = tuple(data.draw(st.lists(indices, max_size=4)))
    quiet = tuple(data.draw(st.lists(indices, max_size=3)))
    end = data.draw(st.integers(pos, len(run)))
    outcome = _both(built, "scan_rows", run, pos, end, width, fetch, scan, quiet)
    if outcome[0] != "ok" or outcome[1] is None:
        stop = data.draw(st.integers(pos, end))
        rows = 0
    else:
        stop, rows = outcome[1][:2]
    value = st.one_of(st.none(), st.binary(max_size=6), st.just(b"\xff"))
    partial = st.tuples(
        st.sampled_from([b"[P:", b""]), st.sampled_from([b"[P]", b""]), st.integers(-2, 9), st.integers(-1, 9)
    )
    column = st.one_of(
        st.none(),
        value.filter(lambda v: v is not None),
        st.lists(value, min_size=rows, max_size=rows),
        partial,
    )
    columns = data.draw(st.lists(column, min_size=width, max_size=width))
    changes = data.draw(
        st.lists(
            st.tuples(st.integers(0, max(width - 1, 0)), st.integers(0, max(rows - 1, 0)), value), max_size=4
        )
    )
    _both(built, "write_rows", run, pos, stop, width, columns, changes, data.draw(st.integers(-1, 7)))


def test_an_edited_c_source_makes_the_build_stale(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    check_an_edited_c_source_makes_the_build_stale(pure, monkeypatch, tmp_path)
