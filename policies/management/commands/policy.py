"""``manage.py policy check --connection C --agent A [--json] "SQL"``: what would the gateway do?

Prints the decision (action, rule, message) and the full classification, using the
connection's policy (its current version) and the agent's groups, exactly as the gateway
compiles them. For scripts and CI pipelines the exit status says the action: 0 allow,
2 review, 3 deny (1 is an error: unknown connection or agent, or an invalid policy).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError, CommandParser

from policies.engine import PolicyError, compile_policy
from policies.types import Action, Decision, Request

EXIT_STATUS = {Action.ALLOW: 0, Action.REVIEW: 2, Action.DENY: 3}


def decision_as_dict(decision: Decision) -> dict[str, Any]:
    return {
        "action": str(decision.action),
        "rule": decision.rule,
        "message": decision.message,
        "policy": decision.policy,
        "policy_version": decision.policy_version,
        "reasons": list(decision.reasons),
        "reviewers": list(decision.reviewers),
        "approvals_needed": decision.approvals_needed,
        "timeout_seconds": decision.timeout_seconds,
        "observed": list(decision.observed),
        "classification": decision.classification,
    }


class Command(BaseCommand):
    help = "Policy tools: `policy check` prints the decision on a statement."

    def add_arguments(self, parser: CommandParser) -> None:
        commands = parser.add_subparsers(dest="subcommand", required=True)
        check = commands.add_parser("check", help="print the decision on a statement")
        check.add_argument("--connection", required=True, help="connection name")
        check.add_argument("--agent", required=True, help="agent name")
        check.add_argument("--json", action="store_true", help="print the decision as JSON")
        check.add_argument("statement", help="the SQL (or command) to decide on")

    def handle(self, *args: Any, **options: Any) -> None:
        decision = self.decide(options["connection"], options["agent"], options["statement"])
        if options["json"]:
            self.stdout.write(json.dumps(decision_as_dict(decision), indent=2, sort_keys=True))
        else:
            self.stdout.write(self.render(decision))
        status = EXIT_STATUS[decision.action]
        if status:
            sys.exit(status)

    def decide(self, connection_name: str, agent_name: str, statement: str) -> Decision:
        from gateway.models import Connection
        from identity.models import Agent

        connection = Connection.objects.select_related("policy").filter(name=connection_name).first()
        if connection is None:
            raise CommandError(f"no connection named {connection_name!r}")
        agent = Agent.objects.filter(name=agent_name).first()
        if agent is None:
            raise CommandError(f"no agent named {agent_name!r}")
        if connection.policy is None:
            raise CommandError(f"connection {connection_name!r} has no policy")
        groups = frozenset(agent.group_names())
        allowed_groups = set(connection.groups.values_list("name", flat=True))
        if not allowed_groups & groups:
            self.stderr.write(
                f"note: agent {agent_name!r} is in none of the groups of connection {connection_name!r}: "
                "the gateway refuses its login"
            )
        # Reviewer groups must exist and have someone in them to approve.
        known = Group.objects.filter(user__is_active=True).values_list("name", flat=True).distinct()
        policy = connection.policy
        try:
            compiled = compile_policy(policy.name, policy.version, policy.spec, known_groups=set(known))
        except PolicyError as exc:
            raise CommandError(str(exc)) from None
        return compiled.evaluate(
            Request(
                protocol=connection.kind,
                connection=connection.name,
                agent=agent.name,
                groups=groups,
                statement=statement,
            )
        )

    def render(self, decision: Decision) -> str:
        lines = [
            f"action:  {decision.action}",
            f"rule:    {decision.rule or '(none)'}",
            f"message: {decision.message}",
            f"policy:  {decision.policy} v{decision.policy_version}",
        ]
        if decision.action is Action.REVIEW:
            timeout = f"{decision.timeout_seconds}s" if decision.timeout_seconds else "the default"
            lines.append(
                f"review:  {decision.approvals_needed} approval(s) from {', '.join(decision.reviewers)}, "
                f"timeout {timeout}"
            )
        if decision.observed:
            lines.append(f"observed: {', '.join(decision.observed)}")
        details = decision.classification
        if details.get("error"):
            lines.append(f"error:   {details['error']}")
        for index, info in enumerate(details.get("statements", []), start=1):
            lines.append(f"statement {index}: {info['text']}")
            lines.append(f"  decision:   {info['action']} ({info['rule'] or 'no rule'})")
            for key in (
                "operations",
                "tables_read",
                "tables_written",
                "functions",
                "unknown_functions",
                "settings",
            ):
                if info[key]:
                    lines.append(f"  {key.replace('_', ' ') + ':':<18}{', '.join(info[key])}")
            if info["facts"]:
                lines.append(f"  {'facts:':<18}{', '.join(info['facts'])}")
            if info["error"]:
                lines.append(f"  {'error:':<18}{info['error']}")
        return "\n".join(lines)
