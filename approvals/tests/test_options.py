"""The connection option that says how a held statement is answered."""

from gateway.options import option_problems


def test_the_approval_mode_is_wait_or_return():
    for kind in ("postgres", "ssh", "kubernetes"):
        assert option_problems(kind, {"approval_mode": "wait"}) == []
        assert option_problems(kind, {"approval_mode": "return"}) == []
        assert option_problems(kind, {"approval_mode": "later"}) == [
            ("approval_mode", "must be one of wait, return")
        ]
        assert option_problems(kind, {"approval_mode": False}) == [
            ("approval_mode", "must be one of wait, return")
        ]


def test_a_rules_approval_mode_takes_precedence_over_the_connections():
    from approvals.gateway import ReviewGate
    from policies.types import Action, Decision

    def decision(mode):
        return Decision(action=Action.REVIEW, rule="writes", reviewers=("dba",), approval_mode=mode)

    waits = ReviewGate(agent_id=1, connection_id=1, agent_waits=True)
    returns = ReviewGate(agent_id=1, connection_id=1, agent_waits=False)
    assert [waits.waits_for(decision(m)) for m in (None, "wait", "return")] == [True, True, False]
    assert [returns.waits_for(decision(m)) for m in (None, "wait", "return")] == [False, True, False]
