"""Held statements through the real PostgreSQL gateway (real psql and psycopg), the real
policy engine, and approvals decided the way the console decides them."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
from psycopg import errors

from approvals import actions
from approvals.models import ApprovalRequest, Status
from approvals.tests.gateway_world import SPEC, count_orders, newest_pending, psql
from gateway.tests.postgres.conftest import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def test_psql_is_told_at_once_and_gets_the_result_once_approved(held_gw, bob, private_pg):
    client = psql(held_gw, "DELETE FROM orders WHERE id <= 3")
    try:
        wait_until(lambda: newest_pending() is not None, what="the approval request")
        req = newest_pending()
        assert req.statement == "DELETE FROM orders WHERE id <= 3" and req.rule == "deletes"
        assert req.agent_name == "billing-bot" and req.connection_name == "shop"
        assert count_orders(private_pg) == 20  # held: nothing ran yet
        actions.do_approve(bob, req.pk, comment="three old orders")
        out, err = client.communicate(timeout=30)
    finally:
        client.kill()
    assert client.returncode == 0, err
    assert f"NOTICE:  waiting for approval {req.pk}: http://127.0.0.1:8000/approvals/{req.pk}/" in err
    assert "DELETE 3" in out
    assert count_orders(private_pg) == 17
    wait_until(lambda: ApprovalRequest.objects.get(pk=req.pk).status == Status.EXECUTED, what="executed")
    assert ApprovalRequest.objects.get(pk=req.pk).result == "DELETE 3"
    events = [kind for kind, _ in held_gw.events()]
    assert "approval" in events
    # The sessions page shows it as a reviewed statement ("had approvals").
    assert held_gw.session().review_count == 1


def test_psql_gets_the_rejection_with_the_reviewer_and_the_reason(held_gw, bob, private_pg):
    client = psql(held_gw, "DELETE FROM orders")
    try:
        wait_until(lambda: newest_pending() is not None, what="the approval request")
        req = newest_pending()
        actions.do_reject(bob, req.pk, reason="use the archive job")
        out, err = client.communicate(timeout=30)
    finally:
        client.kill()
    assert client.returncode != 0
    assert f"approval request {req.pk} was rejected by bob: use the archive job" in err
    assert count_orders(private_pg) == 20
    session = held_gw.session()
    assert (session.review_count, session.denied_count) == (1, 1)


def test_an_expired_request_fails_the_statement_and_the_session_goes_on(held_gw, private_pg, settings):
    from gateway.models import Connection
    from policies.actions import do_save_policy

    spec = {**SPEC, "rules": [{**SPEC["rules"][0], "timeout": "1s"}]}
    Connection.objects.filter(name="shop").update(policy=do_save_policy("test", "agents", spec))
    with held_gw.connect(autocommit=True) as conn:
        with pytest.raises(errors.InsufficientPrivilege, match=r"approval request \d+ expired"):
            conn.execute("DELETE FROM orders WHERE id = 1")
        assert conn.execute("SELECT count(*) FROM orders").fetchone() == (20,)
    assert ApprovalRequest.objects.get().status == Status.EXPIRED


def test_only_the_approved_parameters_run(held_gw, bob, private_pg):
    result: dict = {}

    def run():
        with held_gw.connect(autocommit=True) as conn:
            cur = conn.execute("DELETE FROM orders WHERE id = %s", (5,))
            result["rows"] = cur.rowcount
            # The same prepared text with other parameters needs its own approval.
            try:
                conn.execute("DELETE FROM orders WHERE id = %s", (6,))
            except errors.InsufficientPrivilege as exc:
                result["second"] = str(exc)

    worker = threading.Thread(target=run)
    worker.start()
    try:
        wait_until(lambda: newest_pending() is not None, what="the first request")
        first = newest_pending()
        assert first.params == ["5"]
        actions.do_approve(bob, first.pk)
        wait_until(
            lambda: (p := newest_pending()) is not None and p.pk != first.pk, what="the second request"
        )
        second = newest_pending()
        assert second.params == ["6"]
        actions.do_reject(bob, second.pk, reason="one at a time")
    finally:
        worker.join(30)
    assert result["rows"] == 1
    assert "rejected by bob: one at a time" in result["second"]
    assert count_orders(private_pg) == 19


def test_a_client_that_disconnects_cancels_its_request(held_gw, private_pg):
    client = psql(held_gw, "DELETE FROM orders")
    try:
        wait_until(lambda: newest_pending() is not None, what="the approval request")
        req = newest_pending()
    finally:
        client.kill()
        client.communicate(timeout=10)
    wait_until(lambda: ApprovalRequest.objects.get(pk=req.pk).status == Status.CANCELLED, what="cancelled")
    assert "disconnected" in ApprovalRequest.objects.get(pk=req.pk).reason
    assert count_orders(private_pg) == 20


def test_a_cancel_request_cancels_the_held_statement_and_the_session_goes_on(held_gw, private_pg):
    with held_gw.connect(autocommit=True) as conn:
        errors_seen: list[Exception] = []

        def run():
            try:
                conn.execute("DELETE FROM orders")
            except Exception as exc:
                errors_seen.append(exc)

        worker = threading.Thread(target=run)
        worker.start()
        wait_until(lambda: newest_pending() is not None, what="the approval request")
        req = newest_pending()
        conn.cancel_safe(timeout=10)
        worker.join(30)
        assert errors_seen and "canceling statement due to user request" in str(errors_seen[0])
        assert ApprovalRequest.objects.get(pk=req.pk).status == Status.CANCELLED
        assert conn.execute("SELECT count(*) FROM orders").fetchone() == (20,)


def test_an_agent_that_cannot_wait_gets_the_request_at_once_and_runs_it_once_approved(
    held_gw,
    bob,
    private_pg,
):
    from gateway.models import Connection

    Connection.objects.filter(name="shop").update(options={"sslmode": "disable", "approval_mode": "return"})
    with held_gw.connect(autocommit=True) as conn:
        started = time.monotonic()
        with pytest.raises(errors.InsufficientPrivilege, match=r"waiting for approval \d+"):
            conn.execute("DELETE FROM orders WHERE id = 7")
        assert time.monotonic() - started < 10
        req = ApprovalRequest.objects.get()
        assert not req.agent_waits
        actions.do_approve(bob, req.pk)
        assert conn.execute("DELETE FROM orders WHERE id = 7").rowcount == 1
        with pytest.raises(errors.InsufficientPrivilege, match=r"waiting for approval \d+"):
            conn.execute("DELETE FROM orders WHERE id = 7")
    assert count_orders(private_pg) == 19
    wait_until(lambda: ApprovalRequest.objects.get(pk=req.pk).status == Status.EXECUTED, what="executed")


def test_a_review_nobody_can_approve_is_refused(held_gw, private_pg):
    from django.contrib.auth.models import Group

    with held_gw.connect(autocommit=True) as conn:
        # The reviewers leave after the session started (a policy naming an empty group
        # at login refuses the login: see the next test); the held statement still fails closed.
        Group.objects.get(name="dba").user_set.clear()
        with pytest.raises(errors.InsufficientPrivilege, match="nobody can approve"):
            conn.execute("DELETE FROM orders")
        assert conn.execute("SELECT count(*) FROM orders").fetchone() == (20,)
    assert not ApprovalRequest.objects.exists()


def test_a_policy_whose_reviewers_are_gone_refuses_the_login(held_gw):
    from django.contrib.auth.models import Group

    Group.objects.get(name="dba").user_set.clear()
    with pytest.raises(psycopg.OperationalError, match="policy of connection .* cannot be loaded"):
        held_gw.connect(autocommit=True)


def _rule_mode(mode: str) -> None:
    from gateway.models import Connection
    from policies.actions import do_save_policy

    spec = {**SPEC, "rules": [{**SPEC["rules"][0], "approval_mode": mode}]}
    Connection.objects.filter(name="shop").update(policy=do_save_policy("test", "agents", spec))


def test_a_rule_that_returns_overrides_a_connection_that_waits(held_gw, bob, private_pg):
    from gateway.models import Connection

    assert "approval_mode" not in Connection.objects.get(name="shop").options  # the connection waits
    _rule_mode("return")
    started = time.monotonic()
    client = psql(held_gw, "DELETE FROM orders WHERE id = 7")
    out, err = client.communicate(timeout=30)
    assert time.monotonic() - started < 20  # refused at once, not held for the 30 s timeout
    req = ApprovalRequest.objects.get()
    assert client.returncode != 0 and f"waiting for approval {req.pk}: " in err
    assert "send the same statement again once it is approved" in err
    assert req.status == Status.PENDING and not req.agent_waits
    with held_gw.connect(autocommit=True) as conn:
        # Asked again before a decision: the same request is named, no new one is made.
        with pytest.raises(errors.InsufficientPrivilege, match=rf"waiting for approval {req.pk}: "):
            conn.execute("DELETE FROM orders WHERE id = 7")
        assert ApprovalRequest.objects.count() == 1
        actions.do_approve(bob, req.pk)
        # Another statement, or the same text with other parameters, does not run under it.
        with pytest.raises(errors.InsufficientPrivilege, match=r"waiting for approval \d+"):
            conn.execute("DELETE FROM orders WHERE id = 8")
        with pytest.raises(errors.InsufficientPrivilege, match=r"waiting for approval \d+"):
            conn.execute("DELETE FROM orders WHERE id = %s", (7,))
        assert count_orders(private_pg) == 20
        # The identical statement runs, once.
        assert conn.execute("DELETE FROM orders WHERE id = 7").rowcount == 1
        with pytest.raises(errors.InsufficientPrivilege, match=r"waiting for approval \d+"):
            conn.execute("DELETE FROM orders WHERE id = 7")
    assert count_orders(private_pg) == 19
    wait_until(lambda: ApprovalRequest.objects.get(pk=req.pk).status == Status.EXECUTED, what="executed")
    assert ApprovalRequest.objects.get(pk=req.pk).result == "DELETE 1"
    others = ApprovalRequest.objects.exclude(pk=req.pk)
    assert others.count() == 3 and all(not r.agent_waits for r in others)
    assert {tuple(r.params) for r in others} == {(), ("7",)}


def test_a_rule_that_waits_overrides_a_connection_that_returns(held_gw, bob, private_pg):
    from gateway.models import Connection

    Connection.objects.filter(name="shop").update(options={"sslmode": "disable", "approval_mode": "return"})
    _rule_mode("wait")
    client = psql(held_gw, "DELETE FROM orders WHERE id <= 2")
    try:
        wait_until(lambda: newest_pending() is not None, what="the approval request")
        req = newest_pending()
        assert req.agent_waits
        assert client.poll() is None  # held, not refused
        actions.do_approve(bob, req.pk)
        out, err = client.communicate(timeout=30)
    finally:
        client.kill()
    assert client.returncode == 0, err
    assert "DELETE 2" in out and count_orders(private_pg) == 18
