"""The decision point: where every protocol asks the policy about a statement or command.

Protocol code builds a ``policies.types.Request`` for each statement and acts on the
``Decision``; it holds no policy logic. One ``DecisionPoint`` is made per session at
login (the only place it touches the database, through ``for_connection``), and
``decide`` is called on the hot path, so it must stay a cheap, synchronous call.

The policy a session's point decides with is the connection's ``PolicySlot``
(``gateway.policy_watch``): the gateway's policy watcher replaces the compiled policy in
it when an administrator changes the policy, so an open session's next statement is
decided by the new version.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Protocol

from gateway.policy_watch import PolicySlot
from policies import sql
from policies.engine import with_text
from policies.types import ALLOW_ALL, Action, Decision, Request

if TYPE_CHECKING:
    from gateway.models import Connection


_new_request = object.__new__


class CompiledPolicy(Protocol):
    def evaluate(self, request: Request) -> Decision: ...


# How many allowed shapes a session keeps (``DecisionPoint.decide``), first in, first out:
# about 1.7 KB each, so about 110 KB for a session of 64 shapes or more (an agent's
# statements mostly repeat a few shapes; pgbench's, one).
KNOWN_SHAPES = 64

# A simple key without its constants, and the outcomes of the policy's ``regex`` rules.
_ShapeKey = tuple[tuple[str, ...], str, tuple[bool, ...]]


REVIEW_UNAVAILABLE = "this statement needs a reviewer's approval, and approvals are not available yet"


class DecisionPoint:
    """Decides on the statements of one session.

    >>> point = DecisionPoint(protocol="postgres", connection="shop", agent="billing-bot",
    ...                       groups=frozenset({"agents"}))
    >>> point.decide(point.request("SELECT 1")).action
    <Action.ALLOW: 'allow'>
    """

    def __init__(
        self,
        *,
        protocol: str,
        connection: str,
        agent: str,
        groups: frozenset[str],
        policy: CompiledPolicy | None = None,
        slot: PolicySlot | None = None,
    ) -> None:
        self.protocol = protocol
        self.connection = connection
        self.agent = agent
        self.groups = groups
        # A point made with a fixed ``policy`` (tests, benchmarks, "Try it") has a slot of
        # its own that nothing refreshes.
        self.slot = slot if slot is not None else PolicySlot(policy)
        # The session's masking (masking.MaskingPolicy) or None: what an approval card or
        # notification shows of a statement goes through ``masking.mask_text``.
        self.masking: Any = None
        # The shapes this session's statements were allowed for (``decide``), by simple key
        # and outcomes: the search path then, and the decision made for the shape; all of
        # them by ``_allowed_by``, the policy in force then (emptied when it changes).
        self._allowed: OrderedDict[_ShapeKey, tuple[tuple[str, ...], Decision]] = OrderedDict()
        self._allowed_by: object = None

    @property
    def policy(self) -> CompiledPolicy | None:
        """The policy in force now (it changes when the stored policy does)."""
        return self.slot.policy

    @classmethod
    def for_connection(cls, connection: Connection, *, agent: str, groups: frozenset[str]) -> DecisionPoint:
        """The decision point for a session on ``connection`` (ORM: call at login only).

        Its policy follows the stored one (``gateway.policy_watch``). Raises
        ``PolicyError`` when the current version does not compile.
        """
        from gateway.policy_watch import REGISTRY

        return cls(
            protocol=connection.kind,
            connection=connection.name,
            agent=agent,
            groups=groups,
            slot=REGISTRY.slot_for(connection),
        )

    def request(
        self, statement: str, params: tuple[str | None, ...] = (), session: dict[str, Any] | None = None
    ) -> Request:
        """The ``Request`` for one statement of this session (the relay asks for one per
        statement: built without the frozen dataclass's ``__init__``, whose
        ``object.__setattr__`` per field costs 0.6 us more; the same value, every field
        set, ``gateway/tests/test_decision_point.py``)."""
        request = _new_request(Request)
        fields = request.__dict__
        fields["protocol"] = self.protocol
        fields["connection"] = self.connection
        fields["agent"] = self.agent
        fields["groups"] = self.groups
        fields["statement"] = statement
        fields["params"] = params
        fields["session"] = session if session is not None else {}
        fields["kind"] = "query"
        return request

    def decide(self, request: Request) -> Decision:
        """The policy's decision on ``request``.

        A PostgreSQL statement of a shape this session was allowed before, by the same
        policy version under the same search path and with the same outcome of each of
        the policy's ``regex`` rules, is allowed again without asking the policy (pgbench's
        and an agent's ``... WHERE id = 42`` with a new constant each time: about 4 us less
        a statement). The policy would decide it alike: the same simple key, once proven
        (``policies.sql.proven_shape_text``), means the same shape, and the policy decides
        statements of one shape alike but for what its ``regex`` rules read
        (``CompiledPolicy.outcomes_by_shape``). The decision returned then is the shape's:
        its classification shows the statement as the shape's normalized text (constants
        as ``$1``...), never another statement's constants.
        """
        # A point made without a policy (tests, benchmarks) allows everything; a connection
        # without a policy gets ``NoPolicy`` from ``for_connection`` and allows nothing.
        policy = self.slot.policy
        if policy is None:
            return ALLOW_ALL
        key = None
        outcomes_by_shape = getattr(policy, "outcomes_by_shape", None)
        # (Not looked for with bound parameters: the statement refers to them as $n,
        # which no simple key holds.)
        if (
            outcomes_by_shape is not None
            and not request.params
            and request.kind == "query"
            and request.protocol == "postgres"
        ):
            if self._allowed_by is not policy:
                self._allowed.clear()  # a new version: and the old one is let go
                self._allowed_by = policy
            simple = sql.shape_key(request.statement)
            outcomes = None if simple is None else outcomes_by_shape(simple, request.session)
            if simple is not None and outcomes is not None:
                key = (simple[0], simple[1], outcomes)
                known = self._allowed.get(key)
                if known is not None and known[0] == sql.session_search_path(request.session):
                    return known[1]
        try:
            decision = policy.evaluate(request)
        except Exception as exc:
            return Decision(
                action=Action.DENY, rule=None, message=f"the policy could not be evaluated: {exc}"
            )
        if key is not None and decision.action is Action.ALLOW and not decision.session_effects:
            self._remember(key, request, decision)
        return decision

    def _remember(self, key: _ShapeKey, request: Request, decision: Decision) -> None:
        if len(decision.classification.get("statements") or ()) != 1:
            return
        text = sql.proven_shape_text(key[0], key[1], request.session)
        if text is None:
            return
        value = (sql.session_search_path(request.session), with_text(decision, text))
        sql.bounded_put(self._allowed, key, value, KNOWN_SHAPES)

    async def wait_review(self, request: Request, decision: Decision) -> Decision:
        """Hold a statement for a reviewer and return the final decision (allow or deny).

        SEAM for the approvals issue: create the approval request, wait (bounded) for
        approval, rejection, expiry or cancellation, and answer accordingly. Until then a
        review is refused with a clear message, never allowed.
        """
        return Decision(
            action=Action.DENY,
            rule=decision.rule,
            message=REVIEW_UNAVAILABLE,
            policy=decision.policy,
            policy_version=decision.policy_version,
        )


class NoPolicy:
    """A connection without a policy: every statement is denied (fail closed), as the
    console says on the connection's page."""

    def __init__(self, connection: str) -> None:
        self.decision = Decision(
            action=Action.DENY,
            rule=None,
            message=f'connection "{connection}" has no policy: every statement is denied',
        )

    def __repr__(self) -> str:
        return "<NoPolicy: denies everything>"

    def evaluate(self, request: Request) -> Decision:
        return self.decision
