"""Policies the tests act on, made through the action functions like real ones."""

from __future__ import annotations

import copy
from typing import Any

from policies import actions
from policies.models import Policy

SHOP_SPEC: dict[str, Any] = {
    "default": "deny",
    "on_parse_error": "deny",
    "rules": [
        {"name": "no-drop", "match": {"facts": ["destructive"]}, "action": "deny", "message": "no DROP here"},
        {"name": "reads", "match": {"operations": ["read"]}, "action": "allow"},
        {
            "name": "writes",
            "match": {"operations": ["write"]},
            "action": "review",
            "reviewers": ["dba"],
            "timeout": "10m",
        },
    ],
}


def make_policy(
    name: str = "agents-default", spec: dict[str, Any] | None = None, actor: Any = None
) -> Policy:
    return actions.do_save_policy(actor, name, copy.deepcopy(SHOP_SPEC if spec is None else spec))
