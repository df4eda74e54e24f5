"""Agent tokens in the database: stored only as hashes, refused once revoked or expired."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from audit.models import AuditRecord
from identity import tokens
from identity.actions import (
    authenticate_person_token,
    authenticate_token,
    do_create_person_token,
    do_revoke_token,
    do_update_agent,
    note_person_token_used,
    note_token_used,
    scram_verifiers_for,
)
from identity.auth import AgentAuthError, authenticate_agent, identity_for_token
from identity.models import AgentToken
from identity.tests.factories import issue, make_agent

pytestmark = pytest.mark.django_db


def _whole_database_as_text() -> str:
    """Every row of every table of the test database, cast to text."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT quote_ident(table_schema) || '.' || quote_ident(table_name) FROM information_schema.tables "
            "WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema')"
        )
        tables = [row[0] for row in cursor.fetchall()]
        assert "public.identity_agenttoken" in tables and "public.identity_persontoken" in tables
        chunks = []
        for table in tables:
            cursor.execute(f"SELECT t::text FROM {table} AS t")
            chunks.extend(row[0] for row in cursor.fetchall())
    return "\n".join(chunks)


def test_the_raw_token_is_nowhere_in_the_database(alice):
    """Agents' tokens and people's API tokens, made by the actions and by the commands, and used."""
    agent = make_agent(on_behalf_of=alice)
    from_action = issue(agent, label="laptop")
    out = StringIO()
    call_command("agent", "token", "billing-bot", "--expires", "30d", stdout=out, stderr=StringIO())
    from_command = out.getvalue().strip()
    assert tokens.looks_like_token(from_command)
    # Both work, so the rows that would give them away are really there.
    assert authenticate_token("billing-bot", from_action.raw) is not None
    note_token_used(authenticate_token("billing-bot", from_command))
    person_from_action = do_create_person_token(
        alice, alice, name="chat bot", expires_at=timezone.now() + timedelta(days=30)
    )
    out = StringIO()
    call_command("user", "token", "create", "alice", "--name", "script", stdout=out, stderr=StringIO())
    person_from_command = out.getvalue().strip()
    assert tokens.looks_like_person_token(person_from_command)
    for raw in (person_from_action.raw, person_from_command):
        note_person_token_used(authenticate_person_token(raw), source_address="127.0.0.1", path="/api/")

    dump = _whole_database_as_text()

    assert from_action.token.token_hash in dump  # the dump does include the token rows
    assert person_from_action.token.token_hash in dump
    for raw in (from_action.raw, from_command, person_from_action.raw, person_from_command):
        secret_part = raw[len(tokens.TOKEN_PREFIX) :]
        assert raw not in dump
        assert secret_part not in dump
        assert raw.encode().hex() not in dump  # as bytea


def test_a_token_authenticates_its_agent_only(alice):
    agent = make_agent(on_behalf_of=alice)
    make_agent("report-bot")
    issued = issue(agent)

    assert authenticate_token("billing-bot", issued.raw) == issued.token
    assert authenticate_token(None, issued.raw) == issued.token
    assert authenticate_token("report-bot", issued.raw) is None
    assert (
        authenticate_token("billing-bot", issued.raw[:-1] + ("A" if issued.raw[-1] != "A" else "B")) is None
    )
    assert authenticate_token("billing-bot", "not-a-token") is None


def test_a_revoked_token_is_refused_and_has_no_scram_verifier():
    agent = make_agent()
    issued = issue(agent)

    do_revoke_token("test", issued.token)

    assert authenticate_token("billing-bot", issued.raw) is None
    assert scram_verifiers_for("billing-bot") == (agent, [])
    with pytest.raises(AgentAuthError, match="unknown, expired or revoked"):
        authenticate_agent(issued.raw, agent_name="billing-bot")


def test_an_expired_token_is_refused_and_has_no_scram_verifier():
    agent = make_agent()
    issued = issue(agent, expires_at=timezone.now() + timedelta(hours=1))
    assert authenticate_token("billing-bot", issued.raw) is not None

    AgentToken.objects.filter(pk=issued.token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    assert authenticate_token("billing-bot", issued.raw) is None
    assert scram_verifiers_for("billing-bot") == (agent, [])


def test_a_token_cannot_be_issued_already_expired():
    with pytest.raises(ValueError, match="future"):
        issue(make_agent(), expires_at=timezone.now() - timedelta(minutes=1))
    assert not AgentToken.objects.exists()


def test_a_disabled_agent_is_refused():
    agent = make_agent()
    issued = issue(agent)

    do_update_agent("test", agent, enabled=False)

    assert authenticate_token("billing-bot", issued.raw) is None
    assert scram_verifiers_for("billing-bot") == (None, [])
    with pytest.raises(AgentAuthError):
        authenticate_agent(issued.raw)


def test_two_tokens_both_work_until_one_is_revoked():
    agent = make_agent()
    old, new = issue(agent, label="old"), issue(agent, label="new")

    assert authenticate_token("billing-bot", old.raw) == old.token
    assert authenticate_token("billing-bot", new.raw) == new.token
    _, verifiers = scram_verifiers_for("billing-bot")
    assert {token.pk for token, _ in verifiers} == {old.token.pk, new.token.pk}
    # One salt per agent, so the gateway can send it before knowing which token is used.
    assert {verifier.salt for _, verifier in verifiers} == {bytes(agent.scram_salt)}

    do_revoke_token("test", old.token)

    assert authenticate_token("billing-bot", old.raw) is None
    assert authenticate_token("billing-bot", new.raw) == new.token
    _, verifiers = scram_verifiers_for("billing-bot")
    assert [token.pk for token, _ in verifiers] == [new.token.pk]


def test_the_scram_verifier_matches_the_raw_token():
    agent = make_agent()
    issued = issue(agent)

    _, [(token, verifier)] = scram_verifiers_for("billing-bot")

    assert verifier == tokens.make_verifier(issued.raw, bytes(agent.scram_salt))


def test_a_token_identity_carries_the_agents_groups_and_person(alice):
    agent = make_agent(groups=["agents", "reporting"], on_behalf_of=alice)
    issued = issue(agent, expires_at=timezone.now() + timedelta(days=1))

    identity = authenticate_agent(issued.raw, agent_name="billing-bot")

    assert identity == identity_for_token(issued.token)
    assert identity.name == "billing-bot"
    assert identity.groups == frozenset({"agents", "reporting"})
    assert identity.on_behalf_of == "alice"
    assert identity.via == "token"
    assert identity.token_id == issued.token.pk
    assert identity.expires_at == issued.token.expires_at
    issued.token.refresh_from_db()
    assert issued.token.last_used_at is not None


def test_something_that_is_neither_a_token_nor_a_jwt_is_refused():
    with pytest.raises(AgentAuthError, match="not an Airlock token"):
        authenticate_agent("hunter2")


def test_audit_records_of_create_issue_and_revoke_never_hold_the_raw_token(alice):
    agent = make_agent(on_behalf_of=alice)
    issued = issue(agent, expires_at=timezone.now() + timedelta(days=3), label="ci")
    do_revoke_token("test", issued.token)

    records = list(AuditRecord.objects.filter(target_type="identity.agent").order_by("id"))

    assert [r.action for r in records] == ["agent.create", "token.issue", "token.revoke"]
    assert records[1].after["token"] == issued.token.prefix
    text = json.dumps([[r.before, r.after, r.detail, r.target_repr] for r in records])
    assert issued.raw not in text
    assert issued.raw.removeprefix(tokens.TOKEN_PREFIX) not in text
    assert issued.token.token_hash not in text
    assert issued.token.scram_verifier not in text
