"""``manage.py user``: local accounts (people who do not log in through OIDC)."""

from __future__ import annotations

import sys
from argparse import ArgumentParser
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from identity.actions import do_create_user
from identity.management.commands._common import CLI_ACTOR, table, validation_message
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

    def handle(self, *args: Any, **options: Any) -> None:
        if options["subcommand"] == "list":
            return self._list()
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
