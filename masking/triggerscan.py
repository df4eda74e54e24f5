"""Whether the content detectors' trigger may match in a text: the look in front of the
masking engine's RE2 shape scan of a single text (``Scanner.selection``).

Most of what the gateway scans holds nothing to mask (every statement's text is masked
for the recording), and RE2 answers that with its set of the trigger's shapes
(``masking.detectors.TRIGGER_SHAPES``), whose call costs more than the scan of a short
text. ``may_trigger`` says, for a text all in ASCII, exactly whether the trigger matches
anywhere in it, and for any other text, "it may" (RE2 decides, case folding and all). A
pgbench statement's recorded text: 0.67 -> 0.38 us. Over a long text (a batch of values
joined) RE2's DFA is the faster, so the batch scan (``Scanner.dirty_indices``) does not
ask.

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

from masking.detectors import TRIGGER

# The trigger this module answers for (the C build carries the one it was written for).
TRIGGER_SOURCE = TRIGGER

_TRIGGER = re2.compile(TRIGGER.encode("ascii"))


def may_trigger(data: bytes) -> bool:
    """True when ``data`` is not all ASCII or the trigger matches somewhere in it."""
    return not data.isascii() or _TRIGGER.search(data) is not None
