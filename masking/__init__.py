"""Masking: detectors, methods and policies that keep secrets and personal data from agents.

Pure code (no Django, no I/O): the gateway calls it on result rows, notices and errors,
and before anything is recorded. See ``docs/masking.md``.
"""

from masking.detectors import BUILTIN_ENTITIES
from masking.errors import MaskingError, MaskingSpecError
from masking.pgtypes import TEXT_LIKE_TYPE_OIDS, ValueKind, is_text_like_type, value_kind
from masking.placeholders import Method, contains_placeholder
from masking.policy import MaskingPolicy, ResultMasker, compile_policy
from masking.spec import validate_masking_spec

__all__ = [
    "BUILTIN_ENTITIES",
    "TEXT_LIKE_TYPE_OIDS",
    "MaskingError",
    "MaskingPolicy",
    "MaskingSpecError",
    "Method",
    "ResultMasker",
    "ValueKind",
    "compile_policy",
    "contains_placeholder",
    "is_text_like_type",
    "validate_masking_spec",
    "value_kind",
]
