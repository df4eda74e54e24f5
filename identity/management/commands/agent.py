"""``manage.py agent``: create agents, issue and revoke their tokens, list them.

A new token is printed once, alone on standard output (so that scripts can capture it);
everything meant for people goes to standard error.
"""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import IntegrityError, transaction
from django.utils import timezone

from identity.actions import (
    IssuedToken,
    do_create_agent,
    do_issue_token,
    do_revoke_token,
    do_update_agent,
    find_token,
)
from identity.durations import parse_duration
from identity.management.commands._common import CLI_ACTOR, person, table, validation_message
from identity.models import Agent


class Command(BaseCommand):
    help = "Manage agents (service identities) and their tokens."

    def add_arguments(self, parser: ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")

        create = sub.add_parser("create", help="Create an agent and print its first token.")
        create.add_argument("name")
        create.add_argument("--group", action="append", default=[], help="A group of the agent (repeatable).")
        create.add_argument("--on-behalf-of", metavar="USER", help="The person the agent acts for.")
        create.add_argument("--owner", metavar="USER", help="The person responsible for the agent.")
        create.add_argument("--description", default="")
        create.add_argument("--expires", metavar="DURATION", help="Token lifetime, e.g. 30d (default: none).")
        create.add_argument("--label", default="", help="A label for the token.")
        create.add_argument("--jwt-subject", metavar="SUBJECT", help="Also accept JWTs with this subject.")
        create.add_argument("--jwt-issuer", metavar="ISSUER", help="The issuer of those JWTs.")
        create.add_argument("--no-token", action="store_true", help="Issue no token (JWT-only agents).")

        token = sub.add_parser("token", help="Issue another token to an agent (rotation).")
        token.add_argument("name")
        token.add_argument("--expires", metavar="DURATION", help="Token lifetime, e.g. 30d (default: none).")
        token.add_argument("--label", default="")

        revoke = sub.add_parser("revoke", help="Revoke one of an agent's tokens.")
        revoke.add_argument("name")
        revoke.add_argument("prefix", help="The token's first characters, as `agent list` shows them.")

        sub.add_parser("list", help="List agents and their tokens.")

        for verb in ("enable", "disable"):
            toggle = sub.add_parser(verb, help=f"{verb.capitalize()} an agent (all its tokens and JWTs).")
            toggle.add_argument("name")

        bind = sub.add_parser("bind", help="Accept JWTs with this subject from this issuer as the agent.")
        bind.add_argument("name")
        bind.add_argument("subject")
        bind.add_argument("--issuer", help="Required when several issuers are configured.")

        unbind = sub.add_parser("unbind", help="Stop accepting JWTs for the agent.")
        unbind.add_argument("name")

    def handle(self, *args: Any, **options: Any) -> None:
        handler = getattr(self, "_" + options["subcommand"])
        try:
            handler(options)
        except ValidationError as exc:
            raise CommandError(validation_message(exc)) from None
        except (ValueError, LookupError) as exc:
            raise CommandError(str(exc)) from None

    # --- subcommands ------------------------------------------------------------------
    def _create(self, options: dict[str, Any]) -> None:
        expires_at = self._expiry(options["expires"])
        external_subject = ""
        if options["jwt_subject"]:
            external_subject = f"{self._issuer(options['jwt_issuer'])}|{options['jwt_subject']}"
        elif options["jwt_issuer"]:
            raise CommandError("--jwt-issuer needs --jwt-subject")
        if Agent.objects.filter(name=options["name"]).exists():
            raise CommandError(f"an agent named {options['name']!r} exists already")
        try:
            with transaction.atomic():  # the agent and its first token, or neither
                issued = self._create_with_token(options, expires_at, external_subject)
        except IntegrityError:
            raise CommandError("another agent is bound to that JWT subject") from None
        agent = issued.token.agent if isinstance(issued, IssuedToken) else issued
        groups = ", ".join(agent.group_names()) or "none"
        self.stderr.write(f"Created agent {agent.name} (groups: {groups}).")
        if external_subject:
            self.stderr.write(f"JWTs with subject {external_subject} authenticate as {agent.name}.")
        if isinstance(issued, IssuedToken):
            self._print_token(issued)

    def _create_with_token(
        self, options: dict[str, Any], expires_at: Any, external_subject: str
    ) -> IssuedToken | Agent:
        agent = do_create_agent(
            CLI_ACTOR,
            options["name"],
            groups=options["group"],
            on_behalf_of=person(options["on_behalf_of"], "--on-behalf-of"),
            owner=person(options["owner"], "--owner"),
            description=options["description"],
            external_subject=external_subject,
        )
        if options["no_token"]:
            return agent
        return do_issue_token(CLI_ACTOR, agent, expires_at=expires_at, label=options["label"])

    def _token(self, options: dict[str, Any]) -> None:
        agent = self._agent(options["name"])
        expires_at = self._expiry(options["expires"])
        self._print_token(do_issue_token(CLI_ACTOR, agent, expires_at=expires_at, label=options["label"]))

    def _revoke(self, options: dict[str, Any]) -> None:
        agent = self._agent(options["name"])
        token = find_token(agent, options["prefix"])
        if token.revoked_at is not None:
            raise CommandError(f"token {token.prefix}… of {agent.name} was revoked already")
        do_revoke_token(CLI_ACTOR, token)
        self.stderr.write(f"Revoked token {token.prefix}… of {agent.name}.")

    def _list(self, options: dict[str, Any]) -> None:
        agents = Agent.objects.select_related("on_behalf_of", "owner").prefetch_related("groups", "tokens")
        if not agents:
            self.stderr.write("No agents.")
            return
        rows: list[list[Any]] = [["NAME", "ENABLED", "GROUPS", "ON BEHALF OF", "OWNER", "JWT SUBJECT"]]
        for agent in agents:
            rows.append(
                [
                    agent.name,
                    "yes" if agent.enabled else "no",
                    ",".join(agent.group_names()) or "-",
                    agent.on_behalf_of.get_username() if agent.on_behalf_of else "-",
                    agent.owner.get_username() if agent.owner else "-",
                    agent.external_subject or "-",
                ]
            )
        lines = table(rows)
        self.stdout.write(lines[0])
        for line, agent in zip(lines[1:], agents, strict=True):
            self.stdout.write(line)
            for token in agent.tokens.all():
                expires = f"expires {token.expires_at:%Y-%m-%d %H:%M}" if token.expires_at else "no expiry"
                used = (
                    f"last used {token.last_used_at:%Y-%m-%d %H:%M}" if token.last_used_at else "never used"
                )
                label = f" {token.label!r}" if token.label else ""
                self.stdout.write(f"    {token.prefix}…  {token.status:<7}  {expires}  {used}{label}")

    def _enable(self, options: dict[str, Any]) -> None:
        agent = do_update_agent(CLI_ACTOR, self._agent(options["name"]), enabled=True)
        self.stderr.write(f"Enabled agent {agent.name}.")

    def _disable(self, options: dict[str, Any]) -> None:
        agent = do_update_agent(CLI_ACTOR, self._agent(options["name"]), enabled=False)
        self.stderr.write(f"Disabled agent {agent.name}: its tokens and JWTs are refused.")

    def _bind(self, options: dict[str, Any]) -> None:
        agent = self._agent(options["name"])
        subject = f"{self._issuer(options['issuer'])}|{options['subject']}"
        clash = Agent.objects.filter(external_subject=subject).exclude(pk=agent.pk).first()
        if clash is not None:
            raise CommandError(f"agent {clash.name!r} is already bound to {subject}")
        do_update_agent(CLI_ACTOR, agent, external_subject=subject)
        self.stderr.write(f"JWTs with subject {subject} authenticate as {agent.name}.")

    def _unbind(self, options: dict[str, Any]) -> None:
        agent = do_update_agent(CLI_ACTOR, self._agent(options["name"]), external_subject="")
        self.stderr.write(f"Agent {agent.name} is bound to no JWT subject.")

    # --- helpers --------------------------------------------------------------------------
    def _agent(self, name: str) -> Agent:
        try:
            return Agent.objects.get(name=name)
        except Agent.DoesNotExist:
            raise CommandError(f"no agent named {name!r} (see `manage.py agent list`)") from None

    def _expiry(self, text: str | None) -> Any:
        return timezone.now() + parse_duration(text) if text else None

    def _issuer(self, given: str | None) -> str:
        configured = [str(entry.get("issuer", "")) for entry in settings.AIRLOCK_JWT_ISSUERS]
        if given:
            if given not in configured:
                raise CommandError(f"{given!r} is not a configured JWT issuer (AIRLOCK_AGENT_JWT_ISSUER)")
            return given
        if len(configured) == 1:
            return configured[0]
        if not configured:
            raise CommandError("no JWT issuer is configured (set AIRLOCK_AGENT_JWT_ISSUER)")
        raise CommandError("several JWT issuers are configured: name one with --issuer / --jwt-issuer")

    def _print_token(self, issued: IssuedToken) -> None:
        expiry = (
            f"expires {issued.token.expires_at:%Y-%m-%d %H:%M} UTC"
            if issued.token.expires_at
            else "no expiry"
        )
        self.stderr.write(
            f"New token for {issued.token.agent.name} ({expiry}). It is shown only this once: store it now."
        )
        self.stdout.write(issued.raw)
