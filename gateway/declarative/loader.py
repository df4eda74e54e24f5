"""Reading ``apply`` YAML with the line of every key and item kept, for error messages.

Differences from ``yaml.safe_load``, each so that a mistake is reported instead of
silently changing meaning: a key given twice in one mapping is recorded (and reported
by the schema check) instead of the last one winning; timestamps stay strings (a
``2025-01-01`` is not turned into a date that JSON cannot hold); a file holding more
than one document is refused.

Pure: no Django, no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a configuration file, named by its path in the file."""

    path: str
    message: str
    line: int | None = None  # 1-based

    def __str__(self) -> str:
        where = f" (line {self.line})" if self.line else ""
        return f"{self.path}: {self.message}{where}"


class ConfigError(Exception):
    """A configuration that cannot be applied, with every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class Mapping(dict[Any, Any]):
    """A YAML mapping that remembers where it and each of its keys stand."""

    line: int = 0
    key_lines: dict[Any, int]
    duplicates: list[tuple[Any, int]]


class Sequence(list[Any]):
    """A YAML sequence that remembers where it and each of its items stand."""

    line: int = 0
    item_lines: list[int]


class _Loader(yaml.SafeLoader):
    pass


# Timestamps stay strings: the stored configuration is JSON.
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> Mapping:
    loader.flatten_mapping(node)
    result = Mapping()
    result.line = node.start_mark.line + 1
    result.key_lines = {}
    result.duplicates = []
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            key = str(key)
        line = key_node.start_mark.line + 1
        if key in result:
            result.duplicates.append((key, line))
            continue
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = line
    return result


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode) -> Sequence:
    result = Sequence(loader.construct_object(child, deep=True) for child in node.value)
    result.line = node.start_mark.line + 1
    result.item_lines = [child.start_mark.line + 1 for child in node.value]
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def load_yaml(text: str) -> Any:
    """Parse one YAML document; a syntax error raises ConfigError with line and column."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        what = " ".join(part for part in (exc.context, exc.problem) if part)
        raise ConfigError([Problem("(yaml)", f"{where}{what}", mark.line + 1 if mark else None)]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([Problem("(yaml)", str(exc))]) from None


_PATH_PART = re.compile(r"\.?([^.\[\]]+)|\[(\d+)\]")


def line_of(root: Any, path: str) -> int | None:
    """The line of the deepest element of ``path`` (``connections[2].port``) that exists."""
    line: int | None = None
    node = root
    for match in _PATH_PART.finditer(path):
        key, index = match.group(1), match.group(2)
        if key is not None and isinstance(node, Mapping) and key in node:
            line = node.key_lines.get(key, line)
            node = node[key]
        elif index is not None and isinstance(node, Sequence) and int(index) < len(node):
            line = node.item_lines[int(index)]
            node = node[int(index)]
        else:
            break
    return line


def plain(value: Any) -> Any:
    """``value`` with the line-keeping containers turned back into dict and list."""
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value
