"""A session's allowed shapes (``DecisionPoint.decide``): a statement of a shape the
session was allowed before is allowed without asking the policy, and only when the policy
would decide it alike."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from gateway import decision as decision_module
from gateway.decision import DecisionPoint
from gateway.policy_watch import PolicySlot
from policies import sql
from policies.engine import compile_policy
from policies.types import Action, Decision

READS = {
    "default": "deny",
    "rules": [{"name": "reads", "match": {"operations": ["read"]}, "action": "allow"}],
}


class Counting:
    """The compiled policy with a count of the requests it was asked about."""

    def __init__(self, policy: Any) -> None:
        self.policy = policy
        self.outcomes_by_shape = policy.outcomes_by_shape
        self.asked: list[str] = []

    def evaluate(self, request: Any) -> Decision:
        self.asked.append(request.statement)
        return self.policy.evaluate(request)


def _point(spec: dict[str, Any] = READS, version: int = 1) -> tuple[DecisionPoint, Counting]:
    counting = Counting(compile_policy("agents", version, spec))
    point = DecisionPoint(
        protocol="postgres", connection="shop", agent="bot", groups=frozenset({"agents"}),
        slot=PolicySlot(counting),  # type: ignore[arg-type]
    )  # fmt: skip
    return point, counting


def _decide(point: DecisionPoint, statement: str, session: dict[str, Any] | None = None) -> Decision:
    return point.decide(point.request(statement, (), session if session is not None else {}))


def test_a_shape_allowed_once_is_allowed_again_without_asking_the_policy() -> None:
    point, policy = _point()
    first = _decide(point, "SELECT * FROM items WHERE id = 41")
    assert first.action is Action.ALLOW and first.rule == "reads"
    later = [_decide(point, f"SELECT * FROM items WHERE id = {n}") for n in (42, 2147483647, 7)]
    assert policy.asked == ["SELECT * FROM items WHERE id = 41"]
    fresh = compile_policy("agents", 1, READS).evaluate(point.request("SELECT * FROM items WHERE id = 42"))
    for decision in later:
        assert (decision.action, decision.rule, decision.message, decision.policy, decision.policy_version) == (
            fresh.action, fresh.rule, fresh.message, fresh.policy, fresh.policy_version,
        )  # fmt: skip
        assert (decision.reasons, decision.observed, decision.session_effects) == (
            fresh.reasons, fresh.observed, fresh.session_effects,
        )  # fmt: skip
        # The classification is the shape's: the statement as its normalized text, no
        # constant of another statement in it.
        expected = dict(fresh.classification)
        expected["statements"] = [
            {**fresh.classification["statements"][0], "text": "SELECT * FROM items WHERE id = $1"}
        ]
        assert decision.classification == expected
    # A string constant of another value, the same shape.
    _decide(point, "SELECT * FROM items WHERE name = 'ann'")
    _decide(point, "SELECT * FROM items WHERE name = 'bob@example.com'")
    assert policy.asked[1:] == ["SELECT * FROM items WHERE name = 'ann'"]


def test_a_new_policy_version_decides_again() -> None:
    point, policy = _point()
    assert _decide(point, "SELECT * FROM items WHERE id = 1").action is Action.ALLOW
    stricter = Counting(compile_policy("agents", 2, {"default": "deny", "rules": []}))
    point.slot.policy = stricter  # type: ignore[assignment]  # what the policy watcher does
    denied = _decide(point, "SELECT * FROM items WHERE id = 2")
    assert (denied.action, denied.policy_version) == (Action.DENY, 2)
    assert stricter.asked == ["SELECT * FROM items WHERE id = 2"]
    # The old version's shapes are let go with it.
    assert not point._allowed and point._allowed_by is stricter


def test_another_search_path_decides_again() -> None:
    spec = {
        "default": "deny",
        "rules": [{"name": "public-items", "match": {"tables": ["public.items"]}, "action": "allow"}],
    }
    point, policy = _point(spec)
    assert _decide(point, "SELECT * FROM items WHERE id = 1", {}).action is Action.ALLOW
    # ``items`` is now found in another schema first: not the table the rule allows.
    moved = {"search_path": ("billing", "public")}
    assert _decide(point, "SELECT * FROM items WHERE id = 2", moved).action is Action.DENY
    assert len(policy.asked) == 2


def test_a_regex_rule_that_reads_constants_is_asked_for_each_outcome() -> None:
    spec = {
        "default": "deny",
        "rules": [
            {"name": "not-666", "match": {"regex": "= 666$"}, "action": "deny"},
            {"name": "watch-7", "match": {"regex": "= 7$"}, "action": "observe"},
            *READS["rules"],
        ],
    }
    point, policy = _point(spec)
    assert _decide(point, "SELECT * FROM items WHERE id = 1").action is Action.ALLOW
    assert _decide(point, "SELECT * FROM items WHERE id = 2").action is Action.ALLOW
    for _ in range(2):
        denied = _decide(point, "SELECT * FROM items WHERE id = 666")
        assert (denied.action, denied.rule) == (Action.DENY, "not-666")
    watched = _decide(point, "SELECT * FROM items WHERE id = 7")
    assert (watched.action, watched.observed) == (Action.ALLOW, ("watch-7",))
    assert _decide(point, "SELECT * FROM items WHERE id = 0007").observed == ("watch-7",)
    assert _decide(point, "SELECT * FROM items WHERE id = 3").observed == ()
    assert policy.asked == [
        "SELECT * FROM items WHERE id = 1",
        "SELECT * FROM items WHERE id = 666",
        "SELECT * FROM items WHERE id = 666",
        "SELECT * FROM items WHERE id = 7",
    ]


@pytest.mark.parametrize(
    "statement, again",
    [
        # May hold an EXECUTE: judged as the prepared statement it runs.
        ("SELECT 'execute' FROM items WHERE id = 1", "SELECT 'execute' FROM items WHERE id = 2"),
        # No constant: the policy's own cache by exact text answers.
        ("SELECT * FROM items", "SELECT * FROM items"),
        # A simple key that is not PostgreSQL's normalization (ORDER BY 1 is not a constant).
        ("SELECT * FROM items ORDER BY 1", "SELECT * FROM items ORDER BY 2"),
        # No simple key: a comment.
        ("SELECT * FROM items WHERE id = 1 -- x", "SELECT * FROM items WHERE id = 2 -- x"),
    ],
)
def test_statements_without_a_proven_shape_are_asked_about_every_time(statement: str, again: str) -> None:
    point, policy = _point()
    _decide(point, statement)
    _decide(point, again)
    assert policy.asked == [statement, again]


def test_denied_and_held_shapes_are_asked_about_every_time() -> None:
    spec = {
        "default": "deny",
        "rules": [
            {"name": "no-secrets", "match": {"tables": ["public.secrets"]}, "action": "deny"},
            *READS["rules"],
        ],
    }
    point, policy = _point(spec)
    for n in range(3):
        assert _decide(point, f"SELECT * FROM secrets WHERE id = {n}").action is Action.DENY
        assert _decide(point, f"DELETE FROM items WHERE id = {n}").action is Action.DENY
    assert len(policy.asked) == 6


def test_an_override_of_decide_still_sees_every_statement() -> None:
    """Protocol code and tests narrow a point by overriding ``decide``; the allowed shapes
    are the base's, behind the override."""

    class NoSevens(DecisionPoint):
        def decide(self, request):  # type: ignore[no-untyped-def]
            if "7" in request.statement:
                return Decision(action=Action.DENY, rule="no-sevens", message="no")
            return super().decide(request)

    counting = Counting(compile_policy("agents", 1, READS))
    point = NoSevens(
        protocol="postgres", connection="shop", agent="bot", groups=frozenset(),
        slot=PolicySlot(counting),  # type: ignore[arg-type]
    )  # fmt: skip
    assert _decide(point, "SELECT * FROM items WHERE id = 1").action is Action.ALLOW
    assert _decide(point, "SELECT * FROM items WHERE id = 7").action is Action.DENY


def test_a_session_keeps_a_bounded_number_of_shapes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decision_module, "KNOWN_SHAPES", 3)
    point, policy = _point()
    for column in "abcd":
        _decide(point, f"SELECT {column} FROM items WHERE id = 1")
    assert len(point._allowed) == 3
    _decide(point, "SELECT d FROM items WHERE id = 2")  # kept: asked no more
    _decide(point, "SELECT a FROM items WHERE id = 2")  # the oldest, dropped: asked again
    assert policy.asked[4:] == ["SELECT a FROM items WHERE id = 2"]


def test_a_decision_with_effects_on_the_session_is_not_kept() -> None:
    """The engine shares no shape whose classification reads a constant (``SET``,
    ``set_config``, ``PREPARE``), so no allowed shape has effects; should a policy give
    one, each statement is asked about."""

    class WithEffects(Counting):
        def evaluate(self, request: Any) -> Decision:
            decision = super().evaluate(request)
            return dataclasses.replace(decision, session_effects=(("search_path", "billing"),))

    counting = WithEffects(compile_policy("agents", 1, READS))
    point = DecisionPoint(
        protocol="postgres", connection="shop", agent="bot", groups=frozenset(),
        slot=PolicySlot(counting),  # type: ignore[arg-type]
    )  # fmt: skip
    for n in range(3):
        assert _decide(point, f"SELECT * FROM items WHERE id = {n}").action is Action.ALLOW
    assert len(counting.asked) == 3


def test_every_known_statement_after_its_siblings_is_decided_as_the_policy_decides_it() -> None:
    """The corpus of classification and security cases (``policies/tests/test_shapes.py``),
    each after siblings with other literals, through one session's point on a policy whose
    regular expressions look at literals, for two groups: every decision a session's shape
    serves equals the policy's own on a fresh cache, field for field, but for the
    statement's text in the classification, which is the shape's normalized text."""
    from policies.tests.test_shapes import REGEX_POLICY, _corpus, _siblings, everything

    served = 0
    for group in ("agents", "ops"):
        counting = Counting(compile_policy("shapes", 1, REGEX_POLICY, cache_size=64))
        point = DecisionPoint(
            protocol="postgres", connection="shop", agent="bot", groups=frozenset({group}),
            slot=PolicySlot(counting),  # type: ignore[arg-type]
        )  # fmt: skip
        for text in _corpus():
            for sibling in _siblings(text):
                _decide(point, sibling)
            asked = len(counting.asked)
            got = everything(_decide(point, text))
            served += len(counting.asked) == asked
            fresh = compile_policy("shapes", 1, REGEX_POLICY).evaluate(point.request(text))
            expected = everything(fresh)
            if len(counting.asked) == asked:
                shape = sql.shape_key(text)
                assert shape is not None
                text_of_shape = sql.proven_shape_text(shape[0], shape[1], {})
                details = dict(fresh.classification)
                details["statements"] = [{**details["statements"][0], "text": text_of_shape}]
                expected["classification"] = details
            assert got == expected, text
    assert served > 40  # the session's shapes were really exercised (51 statements)
