"""Content masking: finds the enabled entities in text and replaces them with placeholders.

``Scanner.mask_text`` masks one value. For a batch of values, ``Scanner.dirty_indices``
says which need it: the batch is joined into one byte string (NUL between values, which
PostgreSQL text never holds) and ``TRIGGER`` runs over it once (RE2's DFA, or in the
gateway ``masking/_triggerscan.c``'s ``dirty_spans``: ``use_trigger_check``), so a clean
value costs no Python work of its own. In a value to mask, the same shapes run as an
RE2 set pick the detectors that could match, and only those run.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast

import re2  # type: ignore[import-untyped]

from masking.detectors import (
    BUILTIN_DETECTORS,
    TRIGGER,
    TRIGGER_SHAPES,
    WHOLE_FORMS,
    Detector,
    Span,
    WholeForm,
    whole_check,
)
from masking.placeholders import Method, Render, Renderer, placeholder_pattern

Counts = dict[str, int]
Value = str | bytes

_GROUP_NAME = re.compile(r"\(\?P([<=])(\w+)")
# Masking a value can give a neighbour new context (a placeholder where a letter was); a
# few passes reach the fixed point, so masking the output again changes nothing.
_MAX_PASSES = 4

# Which of the trigger's shapes match in a single value or text, as bits
# (``TRIGGER_SHAPES``'s order), or None where RE2 must say (``use_trigger_check``). None:
# RE2's set of the shapes alone.
_shapes_check: Callable[[bytes], int | None] | None = None
# The same check over a batch's values joined with NUL: the values it does not rule out,
# as (index, start, stop). None: RE2 scans the join.
_dirty_check: Callable[[bytes], list[tuple[int, int, int]]] | None = None


def use_trigger_check(
    shapes: Callable[[bytes], int | None] | None,
    dirty: Callable[[bytes], list[tuple[int, int, int]]] | None = None,
) -> None:
    """Let ``shapes`` (``masking.triggerscan.shapes``'s C build) say which shapes a single
    text holds in place of RE2's set of the shapes (``Scanner.selection``), and ``dirty``
    (``masking.triggerscan.dirty_spans``'s) pick a batch's values for the detectors in place
    of RE2's scan of the join (``Scanner.dirty_indices``). Each must answer exactly as RE2
    would, or "may" (``shapes`` None, a value in ``dirty``) where it cannot say (None: RE2
    alone). The gateway installs the C build when it was written for the trigger in use."""
    global _shapes_check, _dirty_check
    _shapes_check = shapes
    _dirty_check = dirty


# A secret touching one of these may have hidden a neighbour from a detector's boundary
# check (an email directly followed by digits); only then is another pass worth its cost.
_GLUE = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_.%+-@:/")
# The integers an int4 or an oid prints (``masking.pgtypes.ENTITY_FREE_TYPE_OIDS``): no
# built-in detector matches one (``masking/tests/test_entity_free_types.py``).
_ENTITY_FREE_MIN = -(2**31)
_ENTITY_FREE_MAX = 2**32 - 1


def entity_free_integer(text: str) -> bool:
    """Whether ``text`` is an integer as PostgreSQL prints an int4 or an oid (no sign but
    ``-``, no leading zero, within their ranges): a value no built-in detector can match,
    such as a bound parameter ``42``."""
    if not 0 < len(text) <= 11 or not text.isascii():
        return False
    digits = text[1:] if text[0] == "-" else text
    if not digits.isdigit() or (digits[0] == "0" and len(text) > 1):
        return False
    return _ENTITY_FREE_MIN <= int(text) <= _ENTITY_FREE_MAX


def _prefixed(pattern: str, prefix: str) -> str:
    return _GROUP_NAME.sub(lambda m: f"(?P{m.group(1)}{prefix}{m.group(2)}", pattern)


@dataclass(frozen=True)
class CustomEntity:
    """An entity an admin defines: a regular expression (its group ``secret``, if any, is the
    part masked) with an optional validator, and/or a deny list of literal values."""

    name: str
    render: Render
    pattern: re.Pattern[str] | None = None
    validator: Callable[[str], bool] | None = None
    deny: re.Pattern[str] | None = None
    _secret_group: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        has_secret = self.pattern is not None and "secret" in self.pattern.groupindex
        object.__setattr__(self, "_secret_group", has_secret)

    def _sub(self, pattern: re.Pattern[str], text: str, counts: Counts, validate: bool) -> str:
        out: list[str] = []
        last = 0
        for match in pattern.finditer(text):
            start, end = match.span("secret") if self._secret_group and validate else match.span()
            if start < last or start == end:
                continue
            secret = text[start:end]
            if validate and self.validator is not None and not self.validator(secret):
                continue
            out.append(text[last:start])
            out.append(self.render(secret))
            last = end
            counts[self.name] = counts.get(self.name, 0) + 1
        if not out:
            return text
        out.append(text[last:])
        return "".join(out)

    def mask(self, text: str, counts: Counts, placeholders: re.Pattern[str]) -> str:
        for pattern, validate in ((self.pattern, True), (self.deny, False)):
            if pattern is None:
                continue
            # Placeholders already in the text are left whole: a custom expression must
            # not re-mask a part of one (that would break idempotence and the write guard).
            if "[" in text:
                pieces: list[str] = []
                last = 0
                for ph in placeholders.finditer(text):
                    pieces.append(self._sub(pattern, text[last : ph.start()], counts, validate))
                    pieces.append(ph.group())
                    last = ph.end()
                pieces.append(self._sub(pattern, text[last:], counts, validate))
                text = "".join(pieces)
            else:
                text = self._sub(pattern, text, counts, validate)
        return text


@dataclass(frozen=True)
class _Combined:
    pattern: re.Pattern[str]
    group_to_detector: list[int]
    secret_groups: dict[int, tuple[int, ...]]  # detector -> its secret groups, then its whole group
    selection: tuple[int, ...]
    # The same alternatives, atomic and to the end of the text: ``whole.match(text)``
    # matches exactly when the scan's first match in ``text`` is the whole of it (the scan
    # takes, at the leftmost place, the first alternative that matches there).
    whole: re.Pattern[str]
    first_secret: dict[int, int]  # detector -> its first secret group (its whole group if none)


class Scanner:
    """Masks the enabled built-in entities and custom entities in text.

    >>> from masking.placeholders import Method, Renderer
    >>> scanner = Scanner({"email": Renderer("email", Method.REDACT, None)})
    >>> scanner.mask_text("write to bob@example.com")
    ('write to [EMAIL]', {'email': 1})
    """

    def __init__(
        self,
        renderers: Mapping[str, Render],
        custom: Sequence[CustomEntity] = (),
        labels: Iterable[str] = (),
    ) -> None:
        self._detectors: list[Detector] = [d for d in BUILTIN_DETECTORS if d.entity in renderers]
        self._renderers = [renderers[d.entity] for d in self._detectors]
        position = {d.name: i for i, d in enumerate(self._detectors)}
        self._shape_detectors = [
            tuple(position[name] for name in names if name in position) for _, names in TRIGGER_SHAPES
        ]
        self._shapes = re2.Set.SearchSet()
        for shape, _ in TRIGGER_SHAPES:
            self._shapes.Add(shape)
        self._shapes.Compile()
        # RE2's own entry point, when the wrapper exposes it: the wrapper re-encodes.
        self._shapes_match = getattr(getattr(self._shapes, "_set", None), "Match", None)
        self._by_bits: dict[int, tuple[int, ...]] = {}
        self._own = [re.compile(d.pattern) for d in self._detectors]
        self._entities = [d.entity for d in self._detectors]
        self._validators = [d.validator for d in self._detectors]
        self._refines = [d.refine for d in self._detectors]
        self._whole_checks = [whole_check(d) for d in self._detectors]
        self._whole_forms: list[tuple[WholeForm, re2._Regexp] | None] = [
            None if form is None else (form, re2.compile(f"(?:{form.form})(?:\x00(?:{form.form}))*".encode()))
            for form in (WHOLE_FORMS.get(d.name) for d in self._detectors)
        ]
        self._earlier: dict[tuple[tuple[int, ...], int], re.Pattern[str]] = {}
        # A redacting renderer's placeholder does not depend on the secret.
        self._constants = [
            r.redacted if isinstance(r, Renderer) and r.method is Method.REDACT else None
            for r in self._renderers
        ]
        self._custom = tuple(custom)
        all_labels = {*labels, *(e.upper() for e in renderers), *(c.name.upper() for c in self._custom)}
        self.placeholders = re.compile(placeholder_pattern(all_labels or {"MASKED"}))
        self._combined: dict[tuple[int, ...], _Combined] = {}
        self._trigger = re2.compile(TRIGGER.encode("ascii")) if self._detectors else None
        regexp = getattr(self._trigger, "_regexp", None)
        self._trigger_match = getattr(regexp, "Match", None)
        self._unanchored = getattr(getattr(re2, "_Anchor", None), "UNANCHORED", None)
        if self._unanchored is None:
            self._trigger_match = None

    @property
    def active(self) -> bool:
        return bool(self._detectors or self._custom)

    @property
    def has_custom(self) -> bool:
        """Whether custom entities (an admin's patterns) are among the detectors."""
        return bool(self._custom)

    def _combined_for(self, selection: tuple[int, ...]) -> _Combined:
        """One expression for the detectors that may match (the placeholder first)."""
        found = self._combined.get(selection)
        if found is None:
            parts = [f"(?P<ph>{self.placeholders.pattern})"]
            parts += [f"(?P<d{i}>{_prefixed(self._detectors[i].pattern, f'd{i}_')})" for i in selection]
            pattern = re.compile("|".join(parts))
            whole = re.compile(f"(?>{pattern.pattern})\\Z")
            group_to_detector = [-1] * (pattern.groups + 1)
            secret_groups: dict[int, tuple[int, ...]] = {}
            for i in selection:
                group_to_detector[pattern.groupindex[f"d{i}"]] = i
                names = [f"d{i}_{g}" for g in self._detectors[i].secret_groups] + [f"d{i}"]
                secret_groups[i] = tuple(pattern.groupindex[name] for name in names)
            if len(self._combined) > 512:  # selections are few in practice; bound it anyway
                self._combined.clear()
            found = self._combined[selection] = _Combined(
                pattern,
                group_to_detector,
                secret_groups,
                selection,
                whole,
                {i: groups[0] for i, groups in secret_groups.items()},
            )
        return found

    def _fallback(self, match: re.Match[str], index: int, combined: _Combined) -> tuple[Span, int] | None:
        """The first alternative that matched here was not valid (a card failing Luhn); a
        later detector may still match at the same place."""
        text, start = match.string, match.start()
        selection = combined.selection
        for j in selection[selection.index(index) + 1 :]:
            other = self._own[j].match(text, start)
            if other is not None:
                span = self._detectors[j].secret_span(other)
                if span is not None:
                    return span, j
        return None

    def selection(self, value: Value) -> tuple[int, ...]:
        """The detectors that could match in ``value`` (empty: nothing to mask in it)."""
        data = value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass")
        shaped = _shapes_check
        bits = shaped(data) if shaped is not None else None
        if bits is None:
            bits = 0
            for shape in (
                self._shapes_match(data) if self._shapes_match is not None else self._shapes.Match(data)
            ):
                bits |= 1 << shape
        return self._selection_of(bits) if bits else ()

    def _selection_of(self, bits: int) -> tuple[int, ...]:
        """The detectors the shapes of ``bits`` (bit ``i``: ``TRIGGER_SHAPES[i]``) call for."""
        selection = self._by_bits.get(bits)
        if selection is None:
            chosen = {
                i for shape, found in enumerate(self._shape_detectors) if bits >> shape & 1 for i in found
            }
            selection = self._by_bits[bits] = tuple(sorted(chosen))
        return selection

    def dense(self, values: Sequence[Value | None], sample: int = 32) -> bool:
        """Whether most values hold a trigger shape (a column of emails, say): then asking
        each value for its detectors costs less than a batch scan followed by that."""
        if self._custom or not self._detectors:
            return False
        seen = flagged = 0
        for value in values:
            if value:
                seen += 1
                flagged += bool(self.selection(value))
                if seen == sample:
                    break
        return seen > 0 and flagged * 2 > seen

    def _mask_builtin(
        self,
        text: str,
        counts: Counts,
        selection: tuple[int, ...] | None = None,
        glued_at: list[int] | None = None,
    ) -> tuple[str, bool]:
        """The masked text, and whether a masked secret touched a word-like neighbour
        (``glued_at``, when given, collects where each such secret starts)."""
        if selection is None:
            selection = self.selection(text)
        if not selection:
            return text, False
        combined = self._combined_for(selection)
        group_to_detector = combined.group_to_detector
        secret_groups = combined.secret_groups
        search = combined.pattern.search
        match = search(text)
        length = len(text)
        if match is not None and match.end() == length and not match.start():
            # The common case in a column of data: the whole value is one secret.
            index = group_to_detector[match.lastindex or 0]
            if index >= 0:
                for group in secret_groups[index]:
                    a, b = match.span(group)
                    if a >= 0:
                        break
                if not a and b == length:
                    refine = self._refines[index]
                    validator = self._validators[index]
                    if (
                        refine(text, 0, length) == (0, length)
                        if refine is not None
                        else validator is None or validator(text)
                    ):
                        entity = self._entities[index]
                        counts[entity] = counts.get(entity, 0) + 1
                        return self._renderers[index](text), False
        out: list[str] = []
        last = 0
        glued = False
        while match is not None:
            start = match.start()
            index = group_to_detector[match.lastindex or 0]
            if index < 0:  # a placeholder: leave it whole
                match = search(text, match.end())
                continue
            # The secret: the first of the detector's secret groups that took part.
            for group in secret_groups[index]:
                a, b = match.span(group)
                if a >= 0:
                    break
            refine = self._refines[index]
            validator = self._validators[index]
            span: Span | None
            if refine is not None:
                span = refine(text, a, b)
            elif a == b or (validator is not None and not validator(text[a:b])):
                span = None
            else:
                span = a, b
            j = index
            if span is None:
                found = self._fallback(match, index, combined)
                if found is None:
                    match = search(text, start + 1)
                    continue
                span, j = found
            a, b = span
            if text[a] == "[" and self.placeholders.fullmatch(text, a, b) is not None:
                # "password=[PASSWORD]": the secret was masked already.
                match = search(text, start + 1)
                continue
            if (a and text[a - 1] in _GLUE) or (b < len(text) and text[b] in _GLUE):
                glued = True
                if glued_at is not None:
                    glued_at.append(a)
            out.append(text[last:a])
            out.append(self._renderers[j](text[a:b]))
            last = b
            entity = self._entities[j]
            counts[entity] = counts.get(entity, 0) + 1
            match = search(text, max(b, start + 1))
        if not out:
            return text, False
        out.append(text[last:])
        return "".join(out), glued

    def mask_into(
        self,
        text: str,
        counts: Counts,
        selection: tuple[int, ...] | None = None,
        _passes: int = _MAX_PASSES,
    ) -> str:
        """``text`` masked, adding what was masked to ``counts``; the same object if nothing was.

        ``selection``, when the caller has it already, is ``self.selection(text)``.
        """
        if len(text) <= 11 and not self._custom and entity_free_integer(text):
            return text  # the usual bound parameter: nothing built in can be found in it
        original = text
        for _ in range(_passes):
            glued = bool(self._custom)
            masked = text
            if self._detectors:
                masked, touched = self._mask_builtin(masked, counts, selection)
                selection = None  # later passes see new text
                glued = glued or touched
            for entity in self._custom:
                masked = entity.mask(masked, counts, self.placeholders)
            if masked == text:
                break
            text = masked
            if not glued:
                break
        return original if text == original else text

    def mask_batch(self, texts: Sequence[str], counts: Counts) -> list[str] | None:
        """Each of ``texts`` masked as ``mask_into`` masks it (unchanged ones are the same
        objects), adding to ``counts``; None when the batch cannot be done this way (custom
        entities, or a value holding NUL), and the caller masks value by value.

        For a column where most values hold a secret. First, each value that is as a whole
        one valid secret (a column of emails) is masked on its own, without a scan
        (``_mask_whole``). The other values are joined with NUL and the detectors run once
        over them all (the RE2 shape set once, for the union of the detectors any value
        needs, then one combined expression), which saves the per-value calls. It gives the
        same result as value by value because no detector nor shape matches NUL (a match
        never spans two values, and NUL is a boundary like the ends of a value) and a
        detector whose shapes a value lacks finds nothing in it. The few values where a
        masked secret touched a word-like neighbour get their further passes on their own,
        as ``mask_into`` gives them.
        """
        if self._custom or not self._detectors:
            return None
        if not texts:
            return []
        joined = "\x00".join(texts)
        if joined.count("\x00") != len(texts) - 1:
            return None
        selection = self.selection(joined)
        if not selection:
            return list(texts)
        out = self._mask_whole(texts, self._combined_for(selection), counts)
        rest = [index for index, text in enumerate(out) if text is None]
        if not rest:
            return out  # type: ignore[return-value]  # no None left
        if len(rest) == len(texts):
            return self._mask_joined(texts, joined, selection, counts)
        others = [texts[index] for index in rest]
        joined = "\x00".join(others)
        selection = self.selection(joined)
        masked = self._mask_joined(others, joined, selection, counts) if selection else others
        for index, text in zip(rest, masked, strict=True):
            out[index] = text
        return out  # type: ignore[return-value]  # every None replaced

    def _mask_whole(self, texts: Sequence[str], combined: _Combined, counts: Counts) -> list[str | None]:
        """Each value the scan would mask whole, masked (or left as it is, for a value that
        is one placeholder); None for every other value.

        ``combined.whole`` matches exactly when the scan's first match is the whole value;
        the value is then masked whole when that match's secret is the whole value and its
        detector's check accepts it, as the scan decides. Nothing is left beside the
        placeholder, so no further pass would change it. (A value that is one placeholder
        is taken by the placeholder alternative, which comes first.)
        """
        group_to_detector = combined.group_to_detector
        first_secret = combined.first_secret
        checks = self._whole_checks
        constants = self._constants
        renderers = self._renderers
        found = [0] * len(self._detectors)
        out: list[str | None] = []
        append = out.append
        for text, match in zip(texts, map(combined.whole.match, texts), strict=True):
            if match is None:
                append(None if text else text)
                continue
            index = group_to_detector[match.lastindex or 0]
            if index < 0:
                append(text)
                continue
            if match.span(first_secret[index]) != (0, len(text)):
                append(None)
                continue
            check = checks[index]
            if check is not None and not check(text):
                append(None)
                continue
            found[index] += 1
            append(constants[index] or renderers[index](text))
        entities = self._entities
        for index, n in enumerate(found):
            if n:
                entity = entities[index]
                counts[entity] = counts.get(entity, 0) + n
        return out

    def mask_whole_column(
        self, values: Sequence[Value | None]
    ) -> tuple[list[Value | None], list[int], Counts] | None:
        """A column of ASCII values (bytes) where every value is one whole secret of one
        detector (a column of emails), masked as ``mask_batch`` masks it: the masked
        column, the indices of the values left for ``mask_batch`` (those the detector's
        check refuses), and what was masked. None when the column is not of that kind.

        Instead of an expression per value (``_mask_whole``), three passes over the whole
        column, none in Python per value: RE2 matches the column joined with NUL against
        the detector's whole form (``WHOLE_FORMS``: the detector's first candidate at a
        value's start is then all of it), Python's ``re`` finds no value starting with a
        candidate of the alternatives the scan tries first (a placeholder, an earlier
        detector: they would win), and the detector's check runs on the column at once.
        NULL and empty values stay as they are, as in the scan. A column with ``str``
        values is not of that kind either.
        """
        if self._custom or not self._detectors:
            return None
        present = [value for value in values if value]
        if not present:
            return None
        try:
            joined = b"\x00".join(present)  # type: ignore[arg-type]  # str values: TypeError
        except TypeError:
            return None
        if not joined.isascii() or joined.count(0) != len(present) - 1:
            return None
        selection = self.selection(joined)
        if not selection:
            return None
        combined = self._combined_for(selection)
        first = present[0]
        if not isinstance(first, bytes):
            return None
        match = combined.whole.match(first.decode("ascii"))
        if match is None:
            return None
        index = combined.group_to_detector[match.lastindex or 0]
        whole = self._whole_forms[index] if index >= 0 else None
        if whole is None:
            return None
        form, column_form = whole
        if column_form.fullmatch(joined) is None:
            return None
        if self._earlier_for(combined, index).search("\x00" + joined.decode("ascii")) is not None:
            return None
        rest: list[int] = []
        if form.check_each is not None:
            accepted = form.check_each(cast("list[bytes]", present))  # the join took only bytes
            if not all(accepted):
                rows = [row for row, value in enumerate(values) if value]
                rest = [row for row, ok in zip(rows, accepted, strict=True) if not ok]
        placeholder = self._constants[index]
        out: list[Value | None]
        if placeholder is not None:
            as_bytes = placeholder.encode("ascii")
            out = [value and as_bytes for value in values]
        else:
            render = self._renderers[index]
            rejected = frozenset(rest)
            out = [
                render(value.decode("ascii")).encode("ascii")
                if value and row not in rejected and isinstance(value, bytes)
                else value
                for row, value in enumerate(values)
            ]
        for row in rest:
            out[row] = values[row]
        masked = len(present) - len(rest)
        counts: Counts = {self._entities[index]: masked} if masked else {}
        return out, rest, counts

    def _earlier_for(self, combined: _Combined, index: int) -> re.Pattern[str]:
        """Matches at a value's start (after NUL, like the start of a value to every
        alternative) a candidate of what the scan tries before detector ``index``."""
        key = (combined.selection, index)
        found = self._earlier.get(key)
        if found is None:
            before = combined.selection[: combined.selection.index(index)]
            parts = [self.placeholders.pattern]
            parts += [_prefixed(self._detectors[i].pattern, f"d{i}_") for i in before]
            if len(self._earlier) > 512:
                self._earlier.clear()
            found = self._earlier[key] = re.compile("\x00(?:" + "|".join(f"(?:{p})" for p in parts) + ")")
        return found

    def _mask_joined(
        self, texts: Sequence[str], joined: str, selection: tuple[int, ...], counts: Counts
    ) -> list[str]:
        """``texts`` (joined with NUL in ``joined``) masked by one scan of the join."""
        glued_at: list[int] = []
        masked, _ = self._mask_builtin(joined, counts, selection, glued_at)
        if masked is joined:
            return list(texts)
        parts = masked.split("\x00")
        if len(parts) != len(texts):  # cannot happen: renderers never produce NUL
            raise ValueError("a masked value holds NUL")
        out = [new if new != old else old for new, old in zip(parts, texts, strict=True)]
        if glued_at:
            starts: list[int] = []
            offset = 0
            for text in texts:
                starts.append(offset)
                offset += len(text) + 1
            for index in sorted({bisect.bisect_right(starts, at) - 1 for at in glued_at}):
                if out[index] is not texts[index]:
                    # Passes after the first, on this value alone (as in mask_into).
                    again = self.mask_into(out[index], counts, None, _MAX_PASSES - 1)
                    out[index] = texts[index] if again == texts[index] else again
        return out

    def mask_text(self, text: str) -> tuple[str, Counts]:
        """The text with every enabled entity masked, and how many of each were masked."""
        counts: Counts = {}
        return self.mask_into(text, counts), counts

    def dirty_indices(self, items: Sequence[Value]) -> list[int]:
        """Indices of the values that may hold something to mask (a superset of those that do).

        Values are joined with NUL and RE2 scans the whole batch once; a value the trigger
        flags is not scanned further by it (the detectors will read all of it).
        """
        if self._custom:
            return [i for i, item in enumerate(items) if item]
        if self._trigger is None or not items:
            return []
        try:
            joined = b"\x00".join(items)  # type: ignore[arg-type]
        except TypeError:
            joined = "\x00".join(
                x.decode("utf-8", "surrogateescape") if isinstance(x, bytes) else x for x in items
            ).encode("utf-8", "surrogatepass")
        if joined.count(b"\x00") != len(items) - 1:
            # A value holds NUL itself: the join cannot tell values apart, scan each one.
            return [i for i, item in enumerate(items) if item]
        return self._dirty_in(joined)

    def dirty_in_joined(self, joined: bytes, count: int) -> list[tuple[int, int, int]]:
        """``dirty_indices`` of ``count`` values given joined with NUL, as that method joins
        them (none of them holds NUL itself: ``gateway.postgres.wirerows.scan_rows``), each
        as (index, where the value starts and stops in ``joined``)."""
        if not count:
            return []
        if self._custom:
            spans = []
            start = 0
            for index, item in enumerate(joined.split(b"\x00")):
                if item:
                    spans.append((index, start, start + len(item)))
                start += len(item) + 1
            return spans
        if self._trigger is None:
            return []
        return self._dirty_spans(joined)

    def _dirty_in(self, joined: bytes) -> list[int]:
        return [index for index, _, _ in self._dirty_spans(joined)]

    def _dirty_spans(self, joined: bytes) -> list[tuple[int, int, int]]:
        check = _dirty_check
        if check is not None:
            return check(joined)
        search = self._search_bytes
        spans: list[tuple[int, int, int]] = []
        index = 0
        counted_to = 0
        at = search(joined, 0)
        while at >= 0:
            index += joined.count(b"\x00", counted_to, at)
            counted_to = at
            end = joined.find(b"\x00", at)
            spans.append((index, joined.rfind(b"\x00", 0, at) + 1, len(joined) if end < 0 else end))
            if end < 0:
                break
            at = search(joined, end + 1)
        return spans

    def _search_bytes(self, data: bytes, pos: int) -> int:
        """Where the trigger first matches in ``data`` from ``pos``, or -1."""
        if self._trigger_match is not None:
            # RE2's own entry point: the module's wrapper builds a generator and a match
            # object per call, which costs more than the search on a short span.
            return int(self._trigger_match(self._unanchored, data, pos, len(data))[0][0])
        assert self._trigger is not None  # noqa: S101 - only called when there are detectors
        match = self._trigger.search(data, pos)
        return -1 if match is None else int(match.start())
