"""manage.py connection list | connection test NAME"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from gateway.models import Connection
from gateway.probe import test_connection
from gateway.secrets import secret_field_names


class Command(BaseCommand):
    help = "List connections, or test one by opening a real connection with its stored secret."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="subcommand", required=True, parser_class=CommandParser)
        sub.add_parser("list", help="list connections (secret fields by name only)")
        test = sub.add_parser("test", help="open a real connection to the target and report")
        test.add_argument("name")
        test.add_argument("--timeout", type=float, help="seconds (default: options.connect_timeout or 10)")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["subcommand"] == "list":
            self._list()
        else:
            self._test(options["name"], options.get("timeout"))

    def _list(self) -> None:
        rows = [("NAME", "KIND", "ADDRESS", "GROUPS", "POLICY", "ENABLED", "SECRETS")]
        for conn in Connection.objects.select_related("policy").prefetch_related("groups"):
            address = conn.host if "://" in conn.host else f"{conn.host}:{conn.effective_port()}"
            if conn.database:
                address += f"/{conn.database}"
            if conn.username:
                address = f"{conn.username}@{address}"
            rows.append(
                (
                    conn.name,
                    conn.kind,
                    address,
                    ",".join(sorted(g.name for g in conn.groups.all())) or "-",
                    conn.policy.name if conn.policy else "-",
                    "yes" if conn.enabled else "no",
                    ",".join(secret_field_names(conn)) or "-",
                )
            )
        if len(rows) == 1:
            self.stdout.write("No connections.")
            return
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            self.stdout.write(
                "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            )

    def _test(self, name: str, timeout: float | None) -> None:
        conn = Connection.objects.filter(name=name).first()
        if conn is None:
            raise CommandError(f"no connection named {name!r}")
        result = test_connection(conn, timeout=timeout)
        line = f"{conn.name}: {result.message} ({result.elapsed_ms:.0f} ms)"
        if not result.ok:
            raise CommandError(f"FAILED {line}")
        self.stdout.write(f"OK {line}")
