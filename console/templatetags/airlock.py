import json
from typing import Any

from django import template

register = template.Library()


@register.filter
def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)


@register.filter
def masked_summary(counts: Any) -> str:
    """``{"email": 12, "card": 3}`` -> ``"12 EMAIL, 3 CARD"`` (values masked per entity)."""
    if not isinstance(counts, dict):
        return ""
    return ", ".join(f"{count} {str(entity).upper()}" for entity, count in counts.items())
