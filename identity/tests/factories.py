"""Factories for identity tests: the agent billing-bot and its tokens."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from identity.actions import IssuedToken, do_create_agent, do_issue_token
from identity.models import Agent


def make_agent(name: str = "billing-bot", groups: Iterable[str] = ("agents",), **fields: Any) -> Agent:
    return do_create_agent("test", name, groups=list(groups), **fields)


def issue(agent: Agent, **fields: Any) -> IssuedToken:
    return do_issue_token("test", agent, **fields)
