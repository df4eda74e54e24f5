"""``DecisionPoint.request`` builds the same ``Request`` as the dataclass's constructor."""

from __future__ import annotations

import dataclasses

import pytest

from gateway.decision import DecisionPoint
from policies.types import Action, Request


def _every_field(request: Request) -> dict[str, object]:
    return {f.name: getattr(request, f.name) for f in dataclasses.fields(Request)}


def test_a_request_has_every_field_the_constructor_would_give_it() -> None:
    point = DecisionPoint(protocol="postgres", connection="shop", agent="bot", groups=frozenset({"agents"}))
    session: dict[str, object] = {"search_path": ("public",)}
    built = point.request("SELECT 1", ("7",), session)
    made = Request(
        protocol="postgres", connection="shop", agent="bot", groups=frozenset({"agents"}),
        statement="SELECT 1", params=("7",), session=session,
    )  # fmt: skip
    assert set(vars(built)) == {f.name for f in dataclasses.fields(Request)}
    assert _every_field(built) == _every_field(made) and built == made and hash(built) == hash(made)
    assert built.session is session
    # Defaults as the constructor's: a session of its own, statement kind "query".
    alone = point.request("SELECT 2")
    assert alone.session == {} and alone.session is not point.request("SELECT 2").session
    assert (alone.params, alone.kind) == ((), "query")


def test_a_request_is_as_immutable_as_one_made_by_the_constructor() -> None:
    request = DecisionPoint(protocol="postgres", connection="shop", agent="bot", groups=frozenset()).request(
        "SELECT 1"
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        request.statement = "DROP TABLE t"  # type: ignore[misc]
    assert request.statement == "SELECT 1"


def test_a_request_is_decided() -> None:
    point = DecisionPoint(protocol="postgres", connection="shop", agent="bot", groups=frozenset({"agents"}))
    assert point.decide(point.request("SELECT 1")).action is Action.ALLOW
