"""``manage.py user``: local accounts (people who do not log in through OIDC), and
people's API tokens (``user token create|list|revoke``).

A new token is printed once, alone on standard output (so that scripts can capture it);
everything else goes to standard error.
"""

from __future__ import annotations

import sys
from argparse import ArgumentParser
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from identity.actions import (
    PERSON_TOKEN_DEFAULT_LIFETIME,
    do_create_person_token,
    do_create_user,
    do_revoke_person_token,
    find_person_token,
)
from identity.durations import parse_duration
from identity.management.commands._common import CLI_ACTOR, person, table, validation_message
from identity.models import ROLES, User


class Command(BaseCommand):
    help = "Manage people's local accounts."
    stealth_options = ("stdin",)

    def add_arguments(self, parser: ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
        create = sub.add_parser("create", help="Create a local account.")
        create.add_argument("username")
        create.add_argument("--role", action="append", default=[], choices=ROLES, help="Repeatable.")
        create.add_argument("--group", action="append", default=[], help="Another group (repeatable).")
        create.add_argument("--email", default="")
        create.add_argument(
            "--password-stdin",
            action="store_true",
            help="Read the password from the first line of standard input. Without it the "
            "account has no password and can only log in through single sign-on.",
        )
        sub.add_parser("list", help="List people, their roles and groups.")

        token = sub.add_parser("token", help="A person's API tokens for the JSON API.")
        token_sub = token.add_subparsers(dest="token_command", required=True, metavar="COMMAND")
        create_token = token_sub.add_parser("create", help="Create a token and print it (once).")
        create_token.add_argument("username")
        create_token.add_argument("--name", required=True, help="Where the token will be used.")
        create_token.add_argument(
            "--expires",
            metavar="DURATION",
            default=f"{PERSON_TOKEN_DEFAULT_LIFETIME.days}d",
            help="Token lifetime, e.g. 30d (default: %(default)s, at most 365d).",
        )
        list_tokens = token_sub.add_parser("list", help="List people's tokens (never the tokens themselves).")
        list_tokens.add_argument("username", nargs="?", help="Only this person's.")
        revoke_token = token_sub.add_parser("revoke", help="Revoke one of a person's tokens.")
        revoke_token.add_argument("username")
        revoke_token.add_argument(
            "prefix", help="The token's first characters, as `user token list` shows them."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["subcommand"] == "list":
            return self._list()
        if options["subcommand"] == "token":
            try:
                return getattr(self, f"_token_{options['token_command']}")(options)
            except (ValueError, LookupError) as exc:
                raise CommandError(str(exc)) from None
        password = None
        if options["password_stdin"]:
            stdin = options.get("stdin") or sys.stdin
            password = stdin.readline().rstrip("\r\n")
            if not password:
                raise CommandError("--password-stdin: no password on standard input")
        if User.objects.filter(username=options["username"]).exists():
            raise CommandError(f"a person named {options['username']!r} exists already")
        try:
            user = do_create_user(
                CLI_ACTOR,
                options["username"],
                roles=options["role"],
                groups=options["group"],
                password=password,
                email=options["email"],
            )
        except ValidationError as exc:
            raise CommandError(validation_message(exc)) from None
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        roles = ", ".join(sorted(user.role_names())) or "none"
        login = "password" if password else "single sign-on only"
        self.stderr.write(f"Created {user.get_username()} (roles: {roles}; login: {login}).")

    def _list(self) -> None:
        rows: list[list[Any]] = [["USERNAME", "ACTIVE", "ROLES", "GROUPS", "LOGIN"]]
        for user in User.objects.order_by("username").prefetch_related("groups", "socialaccount_set"):
            rows.append(
                [
                    user.get_username(),
                    "yes" if user.is_active else "no",
                    ",".join(sorted(user.role_names())) or "-",
                    ",".join(sorted(g.name for g in user.groups.all())) or "-",
                    "+".join(
                        (["password"] if user.has_usable_password() else [])
                        + (["sso"] if user.socialaccount_set.all() else [])
                    )
                    or "-",
                ]
            )
        for line in table(rows):
            self.stdout.write(line)

    def _owner(self, username: str) -> User:
        found = person(username, "user token")
        if found is None:  # only for a username of None, which argparse never gives
            raise CommandError("user token: name a person")
        return found

    def _token_create(self, options: dict[str, Any]) -> None:
        from django.utils import timezone

        user = self._owner(options["username"])
        expires_at = timezone.now() + parse_duration(options["expires"])
        issued = do_create_person_token(CLI_ACTOR, user, name=options["name"], expires_at=expires_at)
        self.stderr.write(
            f"New API token {issued.token.name!r} for {user.get_username()} (expires "
            f"{issued.token.expires_at:%Y-%m-%d %H:%M} UTC). It is shown only this once: store it now."
        )
        self.stdout.write(issued.raw)

    def _token_list(self, options: dict[str, Any]) -> None:
        from identity.models import PersonToken

        found = PersonToken.objects.select_related("user").order_by("user__username", "-created_at")
        if options["username"]:
            found = found.filter(user=self._owner(options["username"]))
        rows: list[list[Any]] = [["PERSON", "TOKEN", "NAME", "STATUS", "EXPIRES", "LAST USED"]]
        for token in found:
            rows.append(
                [
                    token.user.get_username(),
                    f"{token.prefix}…",
                    token.name,
                    token.status,
                    f"{token.expires_at:%Y-%m-%d %H:%M}",
                    f"{token.last_used_at:%Y-%m-%d %H:%M}" if token.last_used_at else "never",
                ]
            )
        for line in table(rows):
            self.stdout.write(line)

    def _token_revoke(self, options: dict[str, Any]) -> None:
        user = self._owner(options["username"])
        token = find_person_token(user, options["prefix"])
        if not do_revoke_person_token(CLI_ACTOR, token):
            raise CommandError(f"token {token.prefix}… of {user.get_username()} was revoked already")
        self.stderr.write(f"Revoked token {token.prefix}… of {user.get_username()}.")
