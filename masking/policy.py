"""A masking policy compiled from its spec, and the row API for the PostgreSQL data path.

>>> policy = compile_policy({"columns": [{"match": "users.email", "method": "redact",
...                                       "entity": "email"}]})
>>> rows, counts = policy.mask_rows([("public.users", "email"), (None, None)],
...                                 [[b"bob@example.com", b"call +1 555 201 3344"]])
>>> rows
[(b'[EMAIL]', b'call [PHONE]')]

Column rules apply by identity: the caller resolves each result column's table OID and
column number (RowDescription) to ``(table, column)``, which an ``AS`` alias does not
change. Content detectors apply to every text value, so ``lower(email)`` (no identity) is
still caught.
"""

from __future__ import annotations

import codecs
import fnmatch
import gc
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import wraps
from typing import Any, NamedTuple, ParamSpec, TypeVar, overload

from masking.detectors import ASCII_NORMALISERS, BUILTIN_ENTITIES, NORMALISERS
from masking.errors import MaskingError, MaskingSpecError
from masking.jsondoc import mask_json
from masking.pgtypes import DATETIME_TYPE_OIDS, ENTITY_FREE_TYPE_OIDS, TEXT_FORMAT, ValueKind, value_kind
from masking.placeholders import Method, Render, Renderer, label_of, placeholder_pattern
from masking.scanforms import binary_form, text_form
from masking.scanner import Counts, CustomEntity, Scanner, Value
from masking.spec import COLUMN_ENTITY_DEFAULT, validate_masking_spec
from masking.validators import VALIDATORS

Identity = tuple[str | None, str | None] | None
Row = Sequence[Value | None]
ALL = frozenset({"*"})  # an exemption of every entity

P = ParamSpec("P")
R = TypeVar("R")


def fail_closed(function: Callable[P, R]) -> Callable[P, R]:
    """Any failure becomes one ``MaskingError`` whose message holds no data."""

    @wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return function(*args, **kwargs)
        except MaskingError:
            raise
        except Exception as exc:
            # "from None": the cause's message may quote the value being masked.
            raise _failed(exc) from None

    return wrapper


def _failed(exc: Exception) -> MaskingError:
    """The one error a masking failure becomes (``fail_closed``): it names the kind of
    failure and holds no data."""
    return MaskingError(f"masking failed ({type(exc).__name__})")


def _glob(part: str) -> re.Pattern[str]:
    return re.compile(fnmatch.translate(part.casefold()))


def _split_table(table: str | None) -> tuple[str | None, str | None]:
    if table is None:
        return None, None
    schema, dot, name = table.rpartition(".")
    return (schema.casefold() if dot else None), name.casefold()


@dataclass(frozen=True)
class ColumnGlob:
    """``table.column`` or ``schema.table.column``, each part a glob, matched case-insensitively.

    A column whose table the caller gives without a schema matches a three-part glob on its
    table and column alone: masking one column too many is the safe mistake.
    """

    text: str
    parts: tuple[re.Pattern[str], ...]

    @classmethod
    def parse(cls, text: str) -> ColumnGlob:
        return cls(text, tuple(_glob(p) for p in text.split(".")))

    def matches(self, identity: Identity) -> bool:
        if identity is None or identity[0] is None or identity[1] is None:
            return False
        schema, table = _split_table(identity[0])
        column = identity[1].casefold()
        if len(self.parts) == 3 and schema is not None and not self.parts[0].fullmatch(schema):
            return False
        return bool(self.parts[-2].fullmatch(table or "") and self.parts[-1].fullmatch(column))


@dataclass(frozen=True)
class ColumnRule:
    glob: ColumnGlob
    entity: str
    render: Renderer


@dataclass(frozen=True)
class Exemption:
    column: ColumnGlob | None
    group: str | None
    entities: frozenset[str]  # ALL for every entity


def _deny_pattern(values: Sequence[str], ignore_case: bool) -> re.Pattern[str]:
    literals = sorted({re.escape(v) for v in values}, key=lambda s: (-len(s), s))
    return re.compile(r"(?<!\w)(?:" + "|".join(literals) + r")(?!\w)", re.IGNORECASE if ignore_case else 0)


class MaskingPolicy:
    """What to mask and how; compiled once from a spec, cheap to use per result.

    Use ``compile_policy(spec, hash_key=...)``. ``for_groups(agent_groups)`` gives the view
    that applies an agent's group exemptions; the policy itself applies none of them.
    """

    def __init__(
        self,
        *,
        entities: Mapping[str, Method],
        custom: Sequence[dict[str, Any]],
        column_rules: Sequence[dict[str, Any]],
        exemptions: Sequence[Exemption],
        default_method: Method,
        hash_key: bytes | None,
        groups: frozenset[str] = frozenset(),
    ) -> None:
        self._entity_methods = dict(entities)
        self._custom_specs = list(custom)
        self._column_rule_specs = list(column_rules)
        self._all_exemptions = list(exemptions)
        self._default_method = default_method
        self._hash_key = hash_key
        self.groups = groups
        custom_names = [c["name"] for c in self._custom_specs]
        rule_entities = [r.get("entity", COLUMN_ENTITY_DEFAULT) for r in self._column_rule_specs]
        self.labels = frozenset(
            label_of(e) for e in (*BUILTIN_ENTITIES, *custom_names, *rule_entities, COLUMN_ENTITY_DEFAULT)
        )
        self._placeholders = re.compile(placeholder_pattern(self.labels))
        self._placeholders_bytes = re.compile(self._placeholders.pattern.encode("ascii"))

        applicable = [x for x in self._all_exemptions if x.group is None or x.group in groups]
        self._global_exempt: frozenset[str] = frozenset().union(
            *(x.entities for x in applicable if x.column is None)
        )
        self._column_exemptions = [x for x in applicable if x.column is not None]
        self._renderers = {
            name: Renderer(name, method, hash_key, NORMALISERS.get(name), ASCII_NORMALISERS.get(name))
            for name, method in entities.items()
        }
        self._custom = [self._compile_custom(c) for c in self._custom_specs]
        self._column_rules = [
            ColumnRule(
                ColumnGlob.parse(r["match"]),
                r.get("entity", COLUMN_ENTITY_DEFAULT),
                Renderer(
                    r.get("entity", COLUMN_ENTITY_DEFAULT),
                    Method(r["method"]),
                    hash_key,
                    NORMALISERS.get(r.get("entity", "")),
                    ASCII_NORMALISERS.get(r.get("entity", "")),
                ),
            )
            for r in self._column_rule_specs
        ]
        self._scanners: dict[frozenset[str], Scanner] = {}
        self._text_scanner: Scanner | None = None  # ``scanner()``, kept for ``mask_text``
        self._views: dict[frozenset[str], MaskingPolicy] = {}

    def _compile_custom(self, spec: dict[str, Any]) -> CustomEntity:
        flags = re.IGNORECASE if spec.get("ignore_case") else 0
        method = Method(spec.get("method", self._default_method))
        return CustomEntity(
            name=spec["name"],
            render=Renderer(spec["name"], method, self._hash_key),
            pattern=re.compile(spec["pattern"], flags) if "pattern" in spec else None,
            validator=VALIDATORS[spec["validator"]] if "validator" in spec else None,
            deny=_deny_pattern(spec["deny_list"], bool(spec.get("ignore_case")))
            if "deny_list" in spec
            else None,
        )

    @property
    def uses_column_identity(self) -> bool:
        """Whether any column rule or column exemption applies: if not, a result's column
        identities do not matter and the caller need not look them up."""
        return bool(self._column_rules or self._column_exemptions)

    # -- views -------------------------------------------------------------------------

    @fail_closed
    def for_groups(self, groups: Iterable[str]) -> MaskingPolicy:
        """This policy as it applies to an agent in ``groups`` (its group exemptions applied)."""
        key = frozenset(groups) & frozenset(x.group for x in self._all_exemptions if x.group)
        if key == self.groups:
            return self
        view = self._views.get(key)
        if view is None:
            view = MaskingPolicy(
                entities=self._entity_methods,
                custom=self._custom_specs,
                column_rules=self._column_rule_specs,
                exemptions=self._all_exemptions,
                default_method=self._default_method,
                hash_key=self._hash_key,
                groups=key,
            )
            self._views[key] = view
        return view

    def scanner(self, exempt: frozenset[str] = frozenset()) -> Scanner:
        exempt = exempt | self._global_exempt
        scanner = self._scanners.get(exempt)
        if scanner is None:
            everything = "*" in exempt
            renderers = {
                name: r for name, r in self._renderers.items() if not everything and name not in exempt
            }
            custom = [c for c in self._custom if not everything and c.name not in exempt]
            scanner = Scanner(renderers, custom, self.labels)
            self._scanners[exempt] = scanner
        return scanner

    def traced_scanner(self, trace: Callable[[str, str, str], None]) -> Scanner:
        """A scanner masking exactly as ``scanner()`` does that also reports every secret it
        replaces to ``trace(entity, secret, placeholder)``. For explaining what a policy does
        (``masking.explain``), never for the data path: it is built afresh on every call."""
        everything = "*" in self._global_exempt

        def traced(entity: str, render: Render) -> Render:
            def call(secret: str) -> str:
                placeholder = render(secret)
                trace(entity, secret, placeholder)
                return placeholder

            return call  # the scanner only calls it: it is not a Renderer, so never taken for a constant

        renderers = {
            name: traced(name, r)
            for name, r in self._renderers.items()
            if not everything and name not in self._global_exempt
        }
        custom = [
            replace(c, render=traced(c.name, c.render))
            for c in self._custom
            if not everything and c.name not in self._global_exempt
        ]
        return Scanner(renderers, custom, self.labels)

    def method_of(self, entity: str) -> Method | None:
        """The method of a built-in or custom entity this policy masks by content."""
        renderer = self._renderers.get(entity)
        if renderer is not None:
            return renderer.method
        for custom in self._custom:
            if custom.name == entity:
                return custom.render.method if isinstance(custom.render, Renderer) else None
        return None

    # -- text ----------------------------------------------------------------------------

    @overload
    def mask_text(self, text: str) -> tuple[str, Counts]: ...
    @overload
    def mask_text(self, text: bytes, encoding: str = "utf-8") -> tuple[bytes, Counts]: ...

    # These two fail closed as ``fail_closed`` says, written out rather than wrapped: the
    # gateway calls them for every statement (its recorded text, the write-back guard),
    # and the wrapper's generic call cost about as much as the scan of a short text.

    def mask_text(self, text: Value, encoding: str = "utf-8") -> tuple[Value, Counts]:
        """Content masking of free text (a notice, an error message, a COPY line...)."""
        try:
            scanner = self._text_scanner
            if scanner is None:
                scanner = self._text_scanner = self.scanner()
            if isinstance(text, bytes):
                masked, counts = scanner.mask_text(text.decode(encoding, "surrogateescape"))
                return masked.encode(encoding, "surrogateescape"), counts
            return scanner.mask_text(text)
        except MaskingError:
            raise
        except Exception as exc:
            raise _failed(exc) from None

    def contains_placeholder(self, text: Value) -> bool:
        """Whether ``text`` holds a placeholder this policy produces (the write-back guard)."""
        try:
            # Every placeholder begins with "[" (``placeholder_pattern``): most texts the
            # guard sees (a statement, a bound number) have none, and the check costs less
            # than the call into the expression.
            if isinstance(text, bytes):
                return b"[" in text and self._placeholders_bytes.search(text) is not None
            return "[" in text and self._placeholders.search(text) is not None
        except Exception as exc:
            raise _failed(exc) from None

    # -- rows ----------------------------------------------------------------------------

    @property
    def has_custom(self) -> bool:
        """Whether the policy defines entities of its own (their expressions may match anything)."""
        return bool(self._custom)

    def column_exemptions(self, identity: Identity) -> frozenset[str]:
        found: frozenset[str] = frozenset()
        for exemption in self._column_exemptions:
            if exemption.column is not None and exemption.column.matches(identity):
                found |= exemption.entities
        return found

    def column_rule(self, identity: Identity) -> ColumnRule | None:
        """The first column rule naming this column that no exemption lifts."""
        exempt = self.column_exemptions(identity) | self._global_exempt
        for rule in self._column_rules:
            if rule.glob.matches(identity):
                if "*" in exempt or rule.entity in exempt:
                    return None
                return rule
        return None

    @fail_closed
    def result_masker(
        self,
        columns: Sequence[Identity],
        *,
        type_oids: Sequence[int | None] | None = None,
        formats: Sequence[int] | None = None,
        encoding: str = "utf-8",
    ) -> ResultMasker:
        """Prepare masking for one result shape (one RowDescription); reuse it for every batch."""
        return ResultMasker(self, columns, type_oids=type_oids, formats=formats, encoding=encoding)

    def mask_rows(
        self,
        columns: Sequence[Identity],
        rows: Iterable[Row],
        *,
        type_oids: Sequence[int | None] | None = None,
        formats: Sequence[int] | None = None,
        encoding: str = "utf-8",
    ) -> tuple[list[tuple[Value | None, ...]], Counts]:
        masker = self.result_masker(columns, type_oids=type_oids, formats=formats, encoding=encoding)
        return masker.mask_rows(rows)


# Below this many rows the batch trigger scan costs less than sampling a column for density.
_DENSE_MIN_ROWS = 32
# From this many rows on, a batch is masked with the garbage collector paused
# (``ResultMasker.mask_rows``).
_LARGE_RESULT = 1024
# Dirty values masked one by one rather than as a batch (``ResultMasker._mask_batch``) up
# to this many: for one value, ``Scanner.mask_into`` takes 7.5 us where ``mask_batch`` takes 19.
_SMALL_BATCH = 2


class WirePlan(NamedTuple):
    """Which columns of a result the masking fast path reads: ``fetch`` as values, for a
    column rule's renderer (an index, or an index and the hash placeholders to look the
    values up in first); ``scan`` joined, for the content detectors; ``quiet``, the columns
    of ``scan`` of a date or time type whose ISO values the detectors need not read
    (``masking.pgtypes.DATETIME_TYPE_OIDS``)."""

    fetch: tuple[int | tuple[int, dict[int, bytes]], ...]
    scan: tuple[int, ...]
    quiet: tuple[int, ...] = ()


class ResultMasker:
    """Masks the rows of one result: column rules by identity, content detectors on the rest.

    Columns are ``(table, column)`` pairs (``table`` may be ``schema.table``) or None for a
    column with no source (an expression). ``type_oids`` and ``formats`` come from the
    RowDescription; without them every value is treated as text in the text format.
    Values are ``bytes`` (decoded with ``encoding``), ``str``, or None for NULL; each
    masked value keeps its input type.
    """

    def __init__(
        self,
        policy: MaskingPolicy,
        columns: Sequence[Identity],
        *,
        type_oids: Sequence[int | None] | None,
        formats: Sequence[int] | None,
        encoding: str,
    ) -> None:
        count = len(columns)
        if type_oids is not None and len(type_oids) != count:
            raise MaskingError("type_oids must have one entry per column")
        if formats is not None and len(formats) not in (0, 1, count):
            raise MaskingError("formats must have zero, one or one entry per column")
        "".encode(encoding)  # an unknown encoding fails here, not on the first row
        self._encoding = encoding
        # In these encodings ASCII letters and digits are single bytes that never occur
        # inside a multi-byte character, so partial masking can work on the bytes.
        self._ascii_compatible = codecs.lookup(encoding).name in ("utf-8", "ascii", "iso8859-1", "cp1252")
        self.width = count
        self.kinds: list[ValueKind] = []
        self.rules: list[ColumnRule | None] = []
        scanners: list[Scanner | None] = []
        # Columns whose values the detectors read in another form than they come in
        # (``masking.scanforms``: binary numbers, arrays and records, bytea): index -> reader.
        self._forms: dict[int, Callable[[bytes], bytes]] = {}
        for index, identity in enumerate(columns):
            fmt = TEXT_FORMAT if not formats else formats[0] if len(formats) == 1 else formats[index]
            type_oid = None if type_oids is None else type_oids[index]
            kind = value_kind(type_oid, fmt)
            self.kinds.append(kind)
            rule = policy.column_rule(identity)
            self.rules.append(rule)
            scanner = None
            if rule is None:
                scanner = policy.scanner(policy.column_exemptions(identity))
                if not scanner.active or (type_oid in ENTITY_FREE_TYPE_OIDS and not scanner.has_custom):
                    # Nothing to find, or values no built-in detector can match (pgtypes).
                    scanner = None
                elif kind is ValueKind.OPAQUE_BINARY:
                    # Not text as it comes: read as text, and NULL if anything is found.
                    self._forms[index] = _binary_reader(type_oid)
                else:
                    form = text_form(type_oid)
                    if form is not None:
                        self._forms[index] = form
            scanners.append(scanner)
        # Looked up once here: a result of a few rows costs little more than these lookups.
        self._jsonb_binary = [i for i, kind in enumerate(self.kinds) if kind is ValueKind.JSONB_BINARY]
        self._ruled = [(i, rule, self.kinds[i]) for i, rule in enumerate(self.rules) if rule is not None]
        # Columns scanned by the same scanner are scanned together, as one batch.
        self._scan_groups: dict[int, tuple[Scanner, list[int]]] = {}
        for index, scanner in enumerate(scanners):
            if scanner is not None:
                self._scan_groups.setdefault(id(scanner), (scanner, []))[1].append(index)
        # Nothing in this result's shape can be masked (no column rule, every column
        # skipped by the detectors): its rows go on untouched, unread (``mask_rows``).
        self.passes_through = not self._ruled and not self._scan_groups and not self._jsonb_binary
        # The fast path over the wire bytes (``mask_columns``), for a shape whose values are
        # all in the text format, read as they come (no JSON, no other form) by one scanner
        # at most: which rule columns are fetched as values (``fetch``, in ``_ruled``'s
        # order, those masked in place aside: ``_in_place``), and which the detectors read
        # (``scan``).
        self.wire_plan: WirePlan | None = None
        # Rule columns the fast path masks where they lie: a constant, or the parts of a
        # partial (``gateway.postgres.wirerows.write_rows``).
        self._in_place: dict[int, bytes | tuple[bytes, bytes, int, int]] = {}
        if (
            not self.passes_through
            and all(kind is ValueKind.TEXT or kind is ValueKind.OPAQUE for kind in self.kinds)
            and not self._forms
            and len(self._scan_groups) <= 1
        ):
            fetch: list[int | tuple[int, dict[int, bytes]]] = []
            try:
                for index, rule, kind in self._ruled:
                    render = rule.render
                    if kind is ValueKind.TEXT and render.method is Method.REDACT:
                        self._in_place[index] = render.redacted.encode(encoding)
                    elif (
                        kind is ValueKind.TEXT and render.method is Method.PARTIAL and self._ascii_compatible
                    ):
                        self._in_place[index] = render.partial_parts()
                    else:
                        cache = (
                            render.hash_cache() if kind is ValueKind.TEXT and self._ascii_compatible else None
                        )
                        fetch.append(index if cache is None else (index, cache))
            except UnicodeError:  # a placeholder this encoding cannot hold: the general path fails closed
                self._in_place = {}
            else:
                scan = [i for _, group in self._scan_groups.values() for i in group]
                quiet = [
                    i
                    for scanner, group in self._scan_groups.values()
                    if not scanner.has_custom and self._ascii_compatible
                    for i in group
                    if type_oids is not None and type_oids[i] in DATETIME_TYPE_OIDS
                ]
                self.wire_plan = WirePlan(tuple(fetch), tuple(scan), tuple(quiet))

    @property
    def masked_columns(self) -> list[bool]:
        """Which columns a column rule masks whole (the gateway may describe them as text)."""
        return [rule is not None for rule in self.rules]

    def _decode(self, value: Value) -> str:
        return value.decode(self._encoding, "surrogateescape") if isinstance(value, bytes) else value

    def _encode(self, text: str, like: Value) -> Value:
        return text.encode(self._encoding, "surrogateescape") if isinstance(like, bytes) else text

    def _whole(self, rule: ColumnRule, kind: ValueKind, value: Value) -> Value | None:
        if kind in (ValueKind.OPAQUE, ValueKind.OPAQUE_BINARY):
            return None
        if kind is ValueKind.JSONB_BINARY:
            text = self._decode(value[1:])
            return b"\x01" + json.dumps(rule.render(text)).encode(self._encoding, "surrogateescape")
        placeholder = rule.render(self._decode(value))
        if kind is ValueKind.JSON:
            placeholder = json.dumps(placeholder)
        return self._encode(placeholder, value)

    def _content(
        self,
        scanner: Scanner,
        kind: ValueKind,
        value: Value,
        counts: Counts,
        selection: tuple[int, ...] | None = None,
    ) -> tuple[bool, Value | None]:
        if kind is ValueKind.JSONB_BINARY:
            if not isinstance(value, bytes) or value[:1] != b"\x01":
                raise MaskingError("unexpected jsonb binary version")
            changed, masked = self._content(scanner, ValueKind.JSON, value[1:], counts)
            if not changed:
                return False, value
            # Masked text goes back behind its version byte; NULL stays NULL.
            return True, b"\x01" + masked if isinstance(masked, bytes) else None
        text = value.decode(self._encoding, "surrogateescape") if isinstance(value, bytes) else value
        if kind is ValueKind.JSON:
            found: Counts = {}
            masked_json = mask_json(text, scanner.mask_text, found)
            if masked_json is not None:
                if not found:
                    return False, value
                for entity, n in found.items():
                    counts[entity] = counts.get(entity, 0) + n
                return True, self._encode(masked_json, value)
            kind = ValueKind.OPAQUE  # not JSON after all: mask as text, NULL if anything was found
        masked = scanner.mask_into(text, counts, selection)
        if masked is text:
            return False, value
        if kind is ValueKind.OPAQUE or kind is ValueKind.OPAQUE_BINARY:
            return True, None
        return True, masked.encode(self._encoding, "surrogateescape") if isinstance(value, bytes) else masked

    def _rule_column(
        self, rule: ColumnRule, kind: ValueKind, column: Sequence[Value | None]
    ) -> list[Value | None]:
        if kind in (ValueKind.OPAQUE, ValueKind.OPAQUE_BINARY):
            return [None] * len(column)
        render = rule.render
        if kind is not ValueKind.TEXT:
            whole = self._whole
            return [None if v is None else whole(rule, kind, v) for v in column]
        if render.method is Method.REDACT:
            as_text = render.redacted
            as_bytes = as_text.encode(self._encoding)
            return [None if v is None else as_bytes if isinstance(v, bytes) else as_text for v in column]
        if self._ascii_compatible:
            # The usual column, bytes and no NULL: each renderer's lookups done once for all.
            try:
                if render.method is Method.PARTIAL:
                    return render.partial_bytes_each(column)  # type: ignore[arg-type, return-value]
                joined: bytes | None = b"".join(column)  # type: ignore[arg-type]
            except TypeError:  # NULL or str values: the joins refuse them
                joined = None
            if joined is not None and render.method is Method.HASH and joined.isascii():
                hashed = render.hash_ascii_each(column)  # type: ignore[arg-type]
                if hashed is not None:
                    return hashed  # type: ignore[return-value]
        if render.method is Method.PARTIAL and self._ascii_compatible:
            partial = render.partial_bytes
            return [None if v is None else partial(v) if isinstance(v, bytes) else render(v) for v in column]
        if render.method is Method.HASH and self._ascii_compatible:
            # ASCII text is the same bytes in these encodings and in UTF-8 (what is hashed).
            hash_bytes = render.hash_bytes
            encoding = self._encoding
            return [
                None
                if v is None
                else (hash_bytes(v) or render(v.decode(encoding, "surrogateescape")).encode(encoding))
                if isinstance(v, bytes)
                else render(v)
                for v in column
            ]
        encoding = self._encoding
        return [
            None
            if v is None
            else render(v.decode(encoding, "surrogateescape")).encode(encoding)
            if isinstance(v, bytes)
            else render(v)
            for v in column
        ]

    def _mask_dense(
        self, scanner: Scanner, columns: list[Sequence[Value | None]], index: int, counts: Counts
    ) -> None:
        """A column where most values hold something to mask: the detectors run over the
        column as one batch (``Scanner.mask_batch``), or, where that cannot be done, each
        value asks for its own detectors, skipping the trigger scan that would flag them all."""
        column = columns[index]
        if self._ascii_compatible:
            # ASCII bytes are the same text in these encodings.
            whole = scanner.mask_whole_column(column)  # str values: None
            if whole is not None:
                masked_column, rest, found = whole
                for entity, n in found.items():
                    counts[entity] = counts.get(entity, 0) + n
                if rest:
                    others: list[Sequence[Value | None]] = [[column[row] for row in rest]]
                    self._mask_dense_values(scanner, others, 0, counts)
                    for row, value in zip(rest, others[0], strict=True):
                        masked_column[row] = value  # type: ignore[assignment]  # bytes in, bytes out
                columns[index] = masked_column
                return
        self._mask_dense_values(scanner, columns, index, counts)

    def _mask_dense_values(
        self, scanner: Scanner, columns: list[Sequence[Value | None]], index: int, counts: Counts
    ) -> None:
        column = columns[index]
        encoding = self._encoding
        try:  # the usual column: every value bytes, none NULL
            texts = [v.decode(encoding, "surrogateescape") for v in column]  # type: ignore[union-attr]
        except AttributeError:
            texts = [
                "" if v is None else v.decode(encoding, "surrogateescape") if isinstance(v, bytes) else v
                for v in column
            ]
        masked_texts = scanner.mask_batch(texts, counts)
        if masked_texts is not None:
            columns[index] = [
                value
                if text is old
                else text.encode(encoding, "surrogateescape")
                if isinstance(value, bytes)
                else text
                for value, text, old in zip(column, masked_texts, texts, strict=True)
            ]
            return
        selection_of = scanner.selection
        content = self._content
        changed_column: list[Value | None] | None = None
        for row, value in enumerate(column):
            if not value:
                continue
            selection = selection_of(value)  # type: ignore[arg-type]
            if not selection:
                continue
            changed, masked = content(scanner, ValueKind.TEXT, value, counts, selection)  # type: ignore[arg-type]
            if changed:
                if changed_column is None:
                    changed_column = columns[index] = list(column)
                changed_column[row] = masked

    def _mask_batch(
        self,
        scanner: Scanner,
        columns: list[Sequence[Value | None]],
        batch: list[tuple[int, int, Value]],
        counts: Counts,
    ) -> None:
        """Mask text values (column index, row, value) found dirty, as one batch."""
        for index, row, new in self._batch_changes(scanner, batch, counts):
            column = columns[index]
            if not isinstance(column, list):
                column = columns[index] = list(column)
            column[row] = new

    def _batch_changes(
        self, scanner: Scanner, batch: list[tuple[int, int, Value]], counts: Counts
    ) -> list[tuple[int, int, Value | None]]:
        """The values of ``batch`` (column index, row, value) that masking changes, as
        (column index, row, masked value)."""
        changes: list[tuple[int, int, Value | None]] = []
        encoding = self._encoding
        texts = [v.decode(encoding, "surrogateescape") if isinstance(v, bytes) else v for _, _, v in batch]
        # A value or two (a secret in one note of a page of rows) costs less on its own
        # than as a batch (the join, a second shape scan, the whole-value pass).
        masked_texts = scanner.mask_batch(texts, counts) if len(batch) > _SMALL_BATCH else None
        for k, (index, row, value) in enumerate(batch):
            kind = self.kinds[index]
            if masked_texts is None:
                changed, new = self._content(scanner, kind, value, counts)
                if not changed:
                    continue
            else:
                text = masked_texts[k]
                if text is texts[k]:
                    continue
                if kind is ValueKind.OPAQUE or kind is ValueKind.OPAQUE_BINARY:
                    new = None
                elif isinstance(value, bytes):
                    new = text.encode(encoding, "surrogateescape")
                else:
                    new = text
            changes.append((index, row, new))
        return changes

    @fail_closed
    def mask_columns(
        self,
        fetched: list[list[bytes | None]],
        joined: bytes,
        nulls: list[int],
        count: int,
        looked: list[bool],
    ) -> tuple[list[Any], list[tuple[int, int, Value | None]], Counts] | None:
        """``mask_rows`` for the fast path (``wire_plan``; ``gateway.postgres.wirerows``):
        given what ``scan_rows`` read of ``count`` rows (the plan's ``fetch`` columns'
        values, or their hash placeholders where ``looked`` says so; its ``scan`` columns'
        values joined with NUL; each column's number of NULLs), what becomes of each column
        (None: unchanged; bytes: that constant for every value not NULL; a partial's parts;
        a list: the new values), the single values the detectors changed (column, row,
        value) and how many of each entity were masked: exactly what ``mask_rows`` makes of
        those rows. None when the general path must decide (a result large enough for a
        column to be masked as a dense one)."""
        plan = self.wire_plan
        if (
            plan is None
            or len(fetched) != len(plan.fetch)
            or len(looked) != len(fetched)
            or len(nulls) != self.width
        ):
            raise MaskingError("the values do not match the result's plan")
        if count >= _DENSE_MIN_ROWS and self._scan_groups:
            return None
        counts: Counts = {}
        columns: list[Any] = [None] * self.width
        changes: list[tuple[int, int, Value | None]] = []
        if not count:
            return columns, changes, counts
        k = 0
        for index, rule, kind in self._ruled:
            in_place = self._in_place.get(index)
            if in_place is not None:
                columns[index] = in_place
            else:
                columns[index] = fetched[k] if looked[k] else self._rule_column(rule, kind, fetched[k])
                k += 1
            masked = count - nulls[index]
            if masked:
                counts[rule.entity] = counts.get(rule.entity, 0) + masked
        for scanner, group in self._scan_groups.values():
            dirty = scanner.dirty_in_joined(joined, len(group) * count)
            if not dirty:
                continue
            batch: list[tuple[int, int, Value]] = []
            for d, start, stop in dirty:
                if stop > start:
                    c, r = divmod(d, count)
                    batch.append((group[c], r, joined[start:stop]))
            if batch:
                changes = self._batch_changes(scanner, batch, counts)
        return columns, changes, counts

    @fail_closed
    def mask_rows(self, rows: Iterable[Row]) -> tuple[list[tuple[Value | None, ...]], Counts]:
        """The rows (as tuples) with every masked value replaced, and how many of each entity
        were masked. The rows passed in are not changed."""
        rows = rows if isinstance(rows, list) else list(rows)
        if self.passes_through and set(map(len, rows)) <= {self.width}:
            return [tuple(row) for row in rows], {}
        if len(rows) < _LARGE_RESULT or not gc.isenabled():
            return self._mask_rows(rows)
        # A large batch allocates a tuple per row and a few objects per column, none in a
        # reference cycle; left on, the collector would traverse every live object
        # (the caller's rows among them) several times over for nothing. It runs as usual
        # once the batch is done.
        gc.disable()
        try:
            return self._mask_rows(rows)
        finally:
            gc.enable()

    def _mask_rows(self, rows: list[Row]) -> tuple[list[tuple[Value | None, ...]], Counts]:
        counts: Counts = {}
        if not rows:
            return [], counts
        if set(map(len, rows)) != {self.width}:
            raise MaskingError(f"every row must have {self.width} values")
        if not self.width:  # SELECT FROM t: rows with no columns
            return [() for _ in rows], counts
        # Column by column: per-value work runs in comprehensions, and the transposition
        # both ways runs in C (a column is a tuple until something in it changes).
        columns: list[Sequence[Value | None]] = list(zip(*rows, strict=True))
        count = len(rows)
        for index in self._jsonb_binary:
            if any(v is not None and v[:1] != b"\x01" for v in columns[index]):
                # Only version 1 is known; another could hide text from the detectors.
                raise MaskingError("unknown jsonb binary format version")
        for index, rule, kind in self._ruled:
            masked = count - columns[index].count(None)
            columns[index] = self._rule_column(rule, kind, columns[index])
            if masked:
                counts[rule.entity] = counts.get(rule.entity, 0) + masked
        for scanner, group in self._scan_groups.values():
            indices = []
            for index in group:
                if (
                    count >= _DENSE_MIN_ROWS
                    and self.kinds[index] is ValueKind.TEXT
                    and scanner.dense(columns[index])
                ):
                    self._mask_dense(scanner, columns, index, counts)
                else:
                    indices.append(index)
            if not indices:
                continue
            first = next((x for i in indices for x in columns[i] if x is not None), b"")
            empty: Value = b"" if isinstance(first, bytes) else ""
            items = [empty if x is None else x for i in indices for x in columns[i]]
            if self._forms:
                for c, index in enumerate(indices):
                    form = self._forms.get(index)
                    if form is not None:
                        base = c * count
                        for r, x in enumerate(columns[index]):
                            if isinstance(x, bytes):
                                items[base + r] = form(x)
            # Dirty text values are masked together, as one batch; JSON values one by one.
            batch: list[tuple[int, int, Value]] = []
            for k in scanner.dirty_indices(items):
                value = items[k]
                if not value:
                    continue
                c, r = divmod(k, count)
                index = indices[c]
                kind = self.kinds[index]
                if kind is ValueKind.TEXT or kind is ValueKind.OPAQUE or kind is ValueKind.OPAQUE_BINARY:
                    batch.append((index, r, value))
                    continue
                changed, masked_value = self._content(scanner, kind, value, counts)
                if changed:
                    column = columns[index]
                    if not isinstance(column, list):
                        column = columns[index] = list(column)
                    column[r] = masked_value
            if batch:
                self._mask_batch(scanner, columns, batch, counts)
        return list(zip(*columns, strict=True)), counts


def _binary_reader(type_oid: int | None) -> Callable[[bytes], bytes]:
    def read(raw: bytes) -> bytes:
        return binary_form(type_oid, raw)

    return read


def _exemptions(spec: Mapping[str, Any]) -> list[Exemption]:
    found = []
    for entry in spec.get("exempt", []):
        column = ColumnGlob.parse(entry["column"]) if "column" in entry else None
        entities = frozenset(entry["entities"]) if "entities" in entry else ALL
        found.append(Exemption(column, entry.get("group"), entities))
    return found


def compile_policy(spec: Mapping[str, Any] | None, *, hash_key: bytes | None = None) -> MaskingPolicy:
    """Compile a masking spec; raises ``MaskingSpecError`` listing every problem.

    ``hash_key`` (at least 16 bytes) is needed when any entity or column uses ``hash``.
    An empty spec masks every built-in entity with ``redact``.
    """
    spec = dict(spec or {})
    problems = validate_masking_spec(spec, "masking")
    if problems:
        raise MaskingSpecError(problems)
    default = Method(spec.get("default_method", Method.REDACT))
    entities_spec = spec.get("entities", "all")
    if entities_spec == "all":
        entities = dict.fromkeys(BUILTIN_ENTITIES, default)
    elif isinstance(entities_spec, list):
        entities = dict.fromkeys(entities_spec, default)
    else:
        entities = {
            name: Method(value["method"] if isinstance(value, dict) else value)
            for name, value in entities_spec.items()
        }
    methods = [*entities.values(), *(Method(r["method"]) for r in spec.get("columns", []))]
    methods += [Method(c.get("method", default)) for c in spec.get("custom", [])]
    if Method.HASH in methods and (hash_key is None or len(hash_key) < 16):
        raise MaskingSpecError([("masking", "the hash method needs a hash key of at least 16 bytes")])
    return MaskingPolicy(
        entities=entities,
        custom=spec.get("custom", []),
        column_rules=spec.get("columns", []),
        exemptions=_exemptions(spec),
        default_method=default,
        hash_key=hash_key,
    )
