"""Masking inside a JSON document, keeping it valid JSON (``mask_json``).

Interpreted on purpose: ``masking/policy.py`` is compiled with mypyc for the gateway
(``gateway/native.py``), and a JSON number kept as written is a ``str`` subclass, which a
compiled module cannot define.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any


class _JSONNumber(str):
    """A JSON number kept as written (no float rounding, no ``Infinity``)."""


def _json_dump(value: Any) -> str:
    if isinstance(value, _JSONNumber):
        return str.__str__(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_json_dump(k)}: {_json_dump(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_json_dump(v) for v in value) + "]"
    return json.dumps(value)


def mask_json(
    text: str, mask_text: Callable[[str], tuple[str, dict[str, int]]], counts: dict[str, int]
) -> str | None:
    """Mask inside a JSON document, keeping it valid JSON (a masked number becomes a string).

    None when ``text`` is not JSON.
    """
    try:
        document = json.loads(
            text, parse_int=_JSONNumber, parse_float=_JSONNumber, parse_constant=_JSONNumber
        )
    except ValueError:
        return None

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            masked, found = mask_text(str.__str__(value))
            if found:
                for entity, n in found.items():
                    counts[entity] = counts.get(entity, 0) + n
                return masked
            return value
        if isinstance(value, dict):
            return {walk(k): walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    return _json_dump(walk(document))
