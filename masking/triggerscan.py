"""Whether the content detectors' trigger may match in a text: the look in front of the
masking engine's RE2 shape scan of a single text (``Scanner.selection``).

Most of what the gateway scans holds nothing to mask (every statement's text is masked
for the recording), and RE2 answers that with its set of the trigger's shapes
(``masking.detectors.TRIGGER_SHAPES``), whose call costs more than the scan of a short
text. ``may_trigger`` says, for a text all in ASCII, exactly whether the trigger matches
anywhere in it, and for any other text, "it may" (RE2 decides, case folding and all);
``shapes`` says which shapes match (None for a text that is not all ASCII), and the
gateway asks it in place of RE2's set (a text with none holds nothing to mask). A
pgbench statement's recorded text: 0.67 -> 0.38 us with the first C build.

``dirty_spans`` answers the same for each value of a batch joined with NUL (no shape matches
NUL, so none spans two values): the values the detectors must read
(``Scanner.dirty_indices``; a value that is not all ASCII is among them, which the batch's
contract allows: a superset of the values that hold something). The C build asks whether a
shape matches only where the first two bytes let one begin (a table, ``start_pairs``),
in one pass that follows the card's run of digits too. The text columns of ten customer
rows joined (547 bytes): ``may_trigger`` 1.97 us in the build's first version (which asked
at every byte, in three passes), 0.82 now; the dirty values 1.70 us with RE2's DFA (2.89
when one value is dirty: RE2 then finds where the match starts), 0.96 with ``dirty_spans``.

This module is the reference (RE2 itself); ``masking/_triggerscan.c`` is the same
function written out shape by shape over the bytes, built by ``make venv`` as
``_airlock_triggerscan`` and used by the gateway (``gateway.masking_runtime``, through
``masking.scanner.use_trigger_check``) when it was built from this exact source and that
file and was written for the trigger as it is (``TRIGGER_SOURCE``): an edited shape makes
the build unused until its C is brought along, and
``masking/tests/test_triggerscan.py`` fails until then. That test holds the build to the
reference on every shape's own texts, near misses and generated text.
"""

from __future__ import annotations

import re2  # type: ignore[import-untyped]

from masking.detectors import TRIGGER, TRIGGER_SHAPES

# The trigger this module answers for (the C build carries the one it was written for).
TRIGGER_SOURCE = TRIGGER

_TRIGGER = re2.compile(TRIGGER.encode("ascii"))
_SHAPES = [re2.compile(shape.encode("ascii")) for shape, _ in TRIGGER_SHAPES]


def may_trigger(data: bytes) -> bool:
    """True when ``data`` is not all ASCII or the trigger matches somewhere in it."""
    return not data.isascii() or _TRIGGER.search(data) is not None


def shapes(data: bytes) -> int | None:
    """Which of ``TRIGGER_SHAPES`` match somewhere in ``data``, as bits (bit ``i`` for the
    shape at index ``i``); None when ``data`` is not all ASCII (RE2 decides)."""
    if not data.isascii():
        return None
    return sum(1 << i for i, shape in enumerate(_SHAPES) if shape.search(data) is not None)


def dirty_spans(joined: bytes) -> list[tuple[int, int, int]]:
    """The values of ``joined`` (split at each NUL) for which ``may_trigger`` is true, in
    order, each as (its index, where it starts and stops in ``joined``)."""
    spans = []
    start = 0
    for index, value in enumerate(joined.split(b"\x00")):
        if may_trigger(value):
            spans.append((index, start, start + len(value)))
        start += len(value) + 1
    return spans
