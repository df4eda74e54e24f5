"""``manage.py demo``: people, a policy, an agent and a connection to try Airlock with.

Idempotent: a second run changes nothing that exists. Passwords and the agent's token are
printed once, when they are made: Airlock keeps only their hashes.
"""

from __future__ import annotations

import secrets
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from gateway import actions as gateway_actions
from gateway.models import Connection
from identity import actions as identity_actions
from identity.models import Agent, User
from policies.models import Policy
from policies.packs import HARMLESS_SETTINGS

ACTOR = "demo"
PEOPLE = (("admin", "admin"), ("reviewer", "reviewer"), ("auditor", "auditor"))
AGENT = "demo-agent"
AGENT_GROUP = "agents"
POLICY = "demo"
CONNECTION = "demo"


def demo_policy_spec() -> dict[str, Any]:
    reviewers = settings.AIRLOCK_ROLE_GROUPS["reviewer"]
    return {
        "default": "deny",
        "on_parse_error": "deny",
        "rules": [
            {"name": "reads", "match": {"operations": ["read", "transaction"]}, "action": "allow"},
            {
                # What clients set when they connect (psql: application_name and, on a
                # terminal, client_encoding; JDBC: DateStyle, extra_float_digits, ...):
                # startup parameters are judged as SET statements.
                "name": "harmless-settings",
                "match": {"operations": ["read", "session", "transaction"], "settings": HARMLESS_SETTINGS},
                "action": "allow",
            },
            {
                "name": "writes",
                "match": {"operations": ["write"]},
                "action": "review",
                "reviewers": [reviewers],
                "timeout": "10m",
            },
        ],
    }


def postgres_reachable(host: str, port: int, timeout: float = 2.0) -> str | None:
    """None when ``postgres`` can log in to the ``postgres`` database without a password, else why not."""
    import psycopg

    try:
        with psycopg.connect(
            host=host, port=port, dbname="postgres", user="postgres", connect_timeout=max(1, int(timeout))
        ) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return None


class Command(BaseCommand):
    help = "Create demo people, a demo policy, agent and connection (idempotent); print new secrets once."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--postgres",
            default="127.0.0.1:5432",
            help="host:port of the local PostgreSQL for the demo connection (default 127.0.0.1:5432).",
        )
        parser.add_argument(
            "--new-token", action="store_true", help="Issue and print a new token for demo-agent."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        host, _, port = options["postgres"].rpartition(":")
        if not host or not port.isdigit():
            raise CommandError(f"--postgres: expected host:port, got {options['postgres']!r}")
        lines: list[str] = []
        with transaction.atomic():
            self._groups()
            for username, role in PEOPLE:
                lines.append(self._person(username, role))
            lines.append(self._policy())
            lines += self._agent(new_token=options["new_token"])
        lines.append(self._connection(host, int(port)))
        self.stdout.write("Demo data:\n" + "\n".join(f"  {line}" for line in lines))
        if any("password:" in line or "token:" in line for line in lines):
            self.stdout.write("Copy the passwords and token now: they are not shown again.")

    def _groups(self) -> None:
        for name in [*settings.AIRLOCK_ROLE_GROUPS.values(), AGENT_GROUP]:
            if not Group.objects.filter(name=name).exists():
                identity_actions.do_create_group(ACTOR, name)

    def _person(self, username: str, role: str) -> str:
        if User.objects.filter(username=username).exists():
            return f"{role:9} {username:10} exists (password printed when it was made; reset it: manage.py changepassword {username})"
        password = secrets.token_urlsafe(12)
        identity_actions.do_create_user(
            ACTOR, username, password=password, groups=[settings.AIRLOCK_ROLE_GROUPS[role]]
        )
        return f"{role:9} {username:10} password: {password}"

    def _policy(self) -> str:
        if Policy.objects.filter(name=POLICY).exists():
            return f"policy    {POLICY:10} exists"
        from policies.spec import validate_policy_spec

        spec = demo_policy_spec()
        problems = validate_policy_spec(spec, "demo")
        if problems:
            raise CommandError("the demo policy is invalid: " + "; ".join(f"{p}: {m}" for p, m in problems))
        try:
            from policies.actions import do_save_policy  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            # Until policies have their action function, create version 1 the way it would.
            from audit.actions import record
            from policies.models import PolicyVersion

            policy = Policy.objects.create(
                name=POLICY, description="Reads run, writes wait for a reviewer.", spec=spec
            )
            PolicyVersion.objects.create(policy=policy, number=1, spec=spec, comment="demo")
            record(ACTOR, "policy.create", policy, after={"name": POLICY, "spec": spec})
        else:
            do_save_policy(
                ACTOR, POLICY, spec, description="Reads run, writes wait for a reviewer.", comment="demo"
            )
        return f"policy    {POLICY:10} created: reads, transactions and harmless settings allowed, writes reviewed, the rest denied"

    def _agent(self, *, new_token: bool) -> list[str]:
        agent = Agent.objects.filter(name=AGENT).first()
        lines = []
        if agent is None:
            agent = identity_actions.do_create_agent(
                ACTOR, AGENT, groups=[AGENT_GROUP], description="The demo agent."
            )
            lines.append(f"agent     {AGENT:10} created in group {AGENT_GROUP}")
        if new_token or not agent.tokens.usable().exists():
            issued = identity_actions.do_issue_token(ACTOR, agent, label="demo")
            lines.append(f"agent     {AGENT:10} token: {issued.raw}")
        else:
            lines.append(
                f"agent     {AGENT:10} has a token (printed when it was made; `manage.py demo --new-token` "
                "or the console issues another)"
            )
        return lines

    def _connection(self, host: str, port: int) -> str:
        if Connection.objects.filter(name=CONNECTION).exists():
            return f"connection {CONNECTION:9} exists"
        why_not = postgres_reachable(host, port)
        if why_not is not None:
            return f"connection {CONNECTION:9} not created: no PostgreSQL at {host}:{port} ({why_not})"
        gateway_actions.do_create_connection(
            ACTOR,
            name=CONNECTION,
            kind="postgres",
            host=host,
            port=port,
            database="postgres",
            username="postgres",
            options={"sslmode": "prefer"},
            description="The local PostgreSQL, for the demo.",
            groups=[AGENT_GROUP],
            policy=Policy.objects.get(name=POLICY),
        )
        return f"connection {CONNECTION:9} created: postgres@{host}:{port}/postgres for group {AGENT_GROUP}"
