"""The decision point: where every protocol asks the policy about a statement or command.

Protocol code builds a ``policies.types.Request`` for each statement and acts on the
``Decision``; it holds no policy logic. One ``DecisionPoint`` is made per session at
login (the only place it touches the database, through ``for_connection``), and
``decide`` is called on the hot path, so it must stay a cheap, synchronous call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from policies.types import ALLOW_ALL, Action, Decision, Request

if TYPE_CHECKING:
    from gateway.models import Connection


class CompiledPolicy(Protocol):
    def evaluate(self, request: Request) -> Decision: ...


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
    ) -> None:
        self.protocol = protocol
        self.connection = connection
        self.agent = agent
        self.groups = groups
        self.policy = policy

    @classmethod
    def for_connection(cls, connection: Connection, *, agent: str, groups: frozenset[str]) -> DecisionPoint:
        """The decision point for a session on ``connection`` (ORM: call at login only)."""
        return cls(
            protocol=connection.kind,
            connection=connection.name,
            agent=agent,
            groups=groups,
            policy=load_policy(connection),
        )

    def request(
        self, statement: str, params: tuple[str | None, ...] = (), session: dict[str, Any] | None = None
    ) -> Request:
        return Request(
            protocol=self.protocol,
            connection=self.connection,
            agent=self.agent,
            groups=self.groups,
            statement=statement,
            params=params,
            session=session if session is not None else {},
        )

    def decide(self, request: Request) -> Decision:
        if self.policy is None:
            return ALLOW_ALL
        try:
            return self.policy.evaluate(request)
        except Exception as exc:
            return Decision(
                action=Action.DENY, rule=None, message=f"the policy could not be evaluated: {exc}"
            )

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


def load_policy(connection: Connection) -> CompiledPolicy | None:
    """The compiled policy of ``connection``.

    SEAM for the policy engine (issue 4): once ``policies.engine`` exists this compiles
    the connection's policy (a faulty policy raises, and the login is refused). Until the
    engine lands there is nothing to load and every statement is allowed.
    """
    try:
        from policies.engine import compile_policy
    except ImportError:
        return None
    policy = connection.policy
    if policy is None:
        return None
    compiled: CompiledPolicy = compile_policy(policy.name, policy.version, policy.spec)
    return compiled
