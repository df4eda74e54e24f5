"""``manage.py policy check --connection C --agent A [--json] "SQL"``: what would the gateway do?

``-`` as the statement reads it from standard input (a migration file in a CI pipeline;
several statements in it are decided together, the strictest wins, as in the gateway).

Prints the decision (action, rule, message) and the full classification, using the
connection's policy (its current version) and the agent's groups, exactly as the gateway
compiles them. For scripts and CI pipelines the exit status says the action: 0 allow,
2 review, 3 deny (1 is an error: unknown connection or agent, or an invalid policy).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from policies.engine import PolicyError
from policies.stored import compile_stored, decision_as_dict, request_for
from policies.types import Action, Decision

EXIT_STATUS = {Action.ALLOW: 0, Action.REVIEW: 2, Action.DENY: 3}


class Command(BaseCommand):
    help = "Policy tools: `policy check` prints the decision on a statement."

    def add_arguments(self, parser: CommandParser) -> None:
        commands = parser.add_subparsers(dest="subcommand", required=True)
        check = commands.add_parser("check", help="print the decision on a statement")
        check.add_argument("--connection", required=True, help="connection name")
        check.add_argument("--agent", required=True, help="agent name")
        check.add_argument("--json", action="store_true", help="print the decision as JSON")
        check.add_argument("statement", help='the SQL (or command) to decide on; "-" reads it from stdin')

    def handle(self, *args: Any, **options: Any) -> None:
        statement = options["statement"]
        if statement == "-":
            statement = sys.stdin.read()
        decision = self.decide(options["connection"], options["agent"], statement)
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
        allowed_groups = set(connection.groups.values_list("name", flat=True))
        if not allowed_groups & set(agent.group_names()):
            self.stderr.write(
                f"note: agent {agent_name!r} is in none of the groups of connection {connection_name!r}: "
                "the gateway refuses its login"
            )
        try:
            # Reviewer groups must exist and have someone in them to approve.
            compiled = compile_stored(connection.policy)
        except PolicyError as exc:
            raise CommandError(str(exc)) from None
        return compiled.evaluate(request_for(connection, agent, statement))

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
                + (f", approval mode {decision.approval_mode}" if decision.approval_mode else "")
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
