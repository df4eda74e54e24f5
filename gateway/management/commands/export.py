"""manage.py export [-o FILE] [--no-members]"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from gateway.declarative.export import ExportError, export_yaml


class Command(BaseCommand):
    help = "Print groups, connections, agents and policies as apply YAML (secrets as ${NAME} placeholders)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("-o", "--output", help="write to this file instead of standard output")
        parser.add_argument(
            "--no-members",
            action="store_true",
            help="leave out the people in each group (apply then leaves membership alone)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            text = export_yaml(members=not options["no_members"])
        except ExportError as exc:
            raise CommandError(str(exc)) from None
        if options["output"]:
            path = Path(options["output"])
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
        else:
            self.stdout.write(text, ending="")
