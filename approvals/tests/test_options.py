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
