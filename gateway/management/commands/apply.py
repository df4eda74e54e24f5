"""manage.py apply -f airlock.yaml [--dry-run] [--prune] [--actor USER]"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from gateway.declarative.loader import ConfigError
from gateway.declarative.plan import APPLY_ACTOR, apply_config
from identity.models import User


class Command(BaseCommand):
    help = (
        "Create or update groups, connections, agents and policies from a YAML file. "
        "All or nothing; a bad file is refused with every problem listed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("-f", "--file", required=True, help="the YAML file, or - for standard input")
        parser.add_argument("--dry-run", action="store_true", help="print what would change, change nothing")
        parser.add_argument(
            "--prune",
            action="store_true",
            help="also delete connections, agents and policies that the file's sections do not list",
        )
        parser.add_argument("--actor", help="username recorded in the audit log (default: 'apply')")

    def handle(self, *args: Any, **options: Any) -> None:
        source = options["file"]
        if source == "-":
            text = sys.stdin.read()
            source = "<stdin>"
        else:
            try:
                text = Path(source).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise CommandError(
                    f"{source}: cannot read: {getattr(exc, 'strerror', None) or exc}"
                ) from None
        actor: Any = APPLY_ACTOR
        if options["actor"]:
            actor = User.objects.filter(username=options["actor"]).first()
            if actor is None:
                raise CommandError(f"--actor: no person with username {options['actor']!r}")
        try:
            result = apply_config(
                text, actor=actor, prune=options["prune"], dry_run=options["dry_run"], source=source
            )
        except ConfigError as exc:
            count = len(exc.problems)
            lines = [f"{source}: {count} problem{'s' if count != 1 else ''}; nothing was changed"]
            lines.extend(f"  {problem}" for problem in exc.problems)
            raise CommandError("\n".join(lines)) from None

        for warning in result.warnings:
            self.stderr.write(f"warning: {warning}")
        for change in result.changes:
            self.stdout.write(str(change))
        n = result.counts()
        if not result.changes:
            self.stdout.write("No changes.")
        elif result.dry_run:
            self.stdout.write(
                f"Dry run: {n['create']} to create, {n['update']} to update, {n['delete']} to delete; "
                "nothing was changed."
            )
        else:
            self.stdout.write(f"{n['create']} created, {n['update']} updated, {n['delete']} deleted.")
