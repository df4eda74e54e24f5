"""What a masking policy does to a text, value by value: for the console's "Try it".

``explain_text(policy, text)`` masks ``text`` exactly as ``policy.mask_text`` does and
says, for every value it replaced, the entity, the detector that found it, where it was
(character offsets in ``text``) and the placeholder it became. It never returns the
secret itself, so a caller can show the explanation without showing the data.

Pure code, like the rest of the package; not for the data path (it builds a scanner per
call and runs every detector of an entity again to name the one that matched).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache

from masking.detectors import BUILTIN_DETECTORS, Detector
from masking.placeholders import Method
from masking.policy import MaskingPolicy
from masking.scanner import Counts


@dataclass(frozen=True)
class Finding:
    """One value masked: ``start``/``end`` are offsets in the original text (None when the
    masked text could not be lined up with it)."""

    entity: str
    detector: str
    method: str
    placeholder: str
    start: int | None
    end: int | None


@dataclass
class Explanation:
    masked: str
    counts: Counts
    findings: list[Finding] = field(default_factory=list)
    aligned: bool = True


@cache
def _detectors_of(entity: str) -> tuple[tuple[Detector, re.Pattern[str]], ...]:
    return tuple((d, re.compile(d.pattern)) for d in BUILTIN_DETECTORS if d.entity == entity)


def _detector_name(entity: str, text: str, start: int | None, end: int | None) -> str:
    detectors = _detectors_of(entity)
    if not detectors:
        return "custom entity"
    if start is not None and end is not None:
        for detector, pattern in detectors:
            for match in pattern.finditer(text, max(0, start - 200), min(len(text), end + 200)):
                if match.start() <= start and end <= match.end():
                    return detector.name or entity
    return detectors[0][0].name or entity if len(detectors) == 1 else entity


def explain_text(policy: MaskingPolicy, text: str) -> Explanation:
    """``text`` masked by ``policy`` (its group exemptions applied), with the reason of each value."""
    traced: list[tuple[str, str, str]] = []
    scanner = policy.traced_scanner(
        lambda entity, secret, placeholder: traced.append((entity, secret, placeholder))
    )
    masked, counts = scanner.mask_text(text)
    explanation = Explanation(masked, counts)
    # Line the masked text up with the original: the text between placeholders is the
    # original's, and each new placeholder stands for one traced secret at that point.
    unused = list(traced)
    spans: list[tuple[str, str, int | None, int | None]] = []
    position = 0
    last = 0
    aligned = True
    for match in scanner.placeholders.finditer(masked):
        literal = masked[last : match.start()]
        last = match.end()
        if aligned and text.startswith(literal, position):
            position += len(literal)
        else:
            aligned = False
        placeholder = match.group()
        chosen = None
        for index, (_entity, secret, produced) in enumerate(unused):
            if produced == placeholder and (not aligned or text.startswith(secret, position)):
                chosen = index
                break
        if chosen is None:
            if aligned and text.startswith(placeholder, position):
                position += len(placeholder)  # a placeholder that was in the text already
                continue
            aligned = False
            continue
        entity, secret, _ = unused.pop(chosen)
        if aligned:
            spans.append((entity, placeholder, position, position + len(secret)))
            position += len(secret)
        else:
            spans.append((entity, placeholder, None, None))
    if aligned and text[position:] != masked[last:]:
        aligned = False
    for entity, _secret, placeholder in unused:  # masked, then masked over again by a later pass
        spans.append((entity, placeholder, None, None))
    explanation.aligned = aligned
    for entity, placeholder, start, end in spans:
        if not aligned:
            start = end = None
        method = policy.method_of(entity)
        explanation.findings.append(
            Finding(
                entity=entity,
                detector=_detector_name(entity, text, start, end),
                method=str(method.value if isinstance(method, Method) else method or ""),
                placeholder=placeholder,
                start=start,
                end=end,
            )
        )
    return explanation
