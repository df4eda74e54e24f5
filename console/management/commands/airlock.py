"""``manage.py airlock``: the console, the gateway and the worker in one command."""

from __future__ import annotations

import sys
import urllib.request
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import get_commands
from django.core.management.base import BaseCommand, CommandError

from console.supervisor import Child, Supervisor


def split_listen(name: str, value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise CommandError(f"{name}: expected host:port, got {value!r}")
    return host.strip("[]"), int(port)


class Command(BaseCommand):
    help = (
        "Run the console (daphne), the gateway listeners (manage.py gateway) and the Celery "
        "worker with beat as child processes; stop them all on Ctrl-C or SIGTERM."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--stop-timeout", type=float, default=20.0, help="Seconds to wait for children to stop."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        host, port = split_listen("AIRLOCK_HTTP_LISTEN", settings.HTTP_LISTEN)
        manage_py = str(Path(settings.BASE_DIR) / "manage.py")
        python = sys.executable
        children = [
            Child("web", [python, "-m", "daphne", "-b", host, "-p", str(port), "console.asgi:application"]),
        ]
        has_gateway = "gateway" in get_commands()
        if has_gateway:
            children.append(Child("gateway", [python, manage_py, "gateway"]))
        children.append(
            Child(
                "worker",
                [
                    python,
                    "-m",
                    "celery",
                    "-A",
                    "console",
                    "--quiet",
                    "worker",
                    "-B",
                    "--loglevel",
                    "INFO",
                    "--concurrency",
                    "1",
                ],
            )
        )
        for child in children:
            child.cwd = str(settings.BASE_DIR)

        probe_host = "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else host)  # noqa: S104
        console_url = f"http://{probe_host if ':' not in probe_host else f'[{probe_host}]'}:{port}/"

        def ready() -> bool:
            try:
                with urllib.request.urlopen(console_url + "healthz", timeout=1) as response:  # noqa: S310
                    return bool(response.status == 200)
            except OSError:
                return False

        def banner() -> None:
            lines = [
                "",
                "Airlock is running.",
                f"  Console:  {console_url}  (log in with an account `manage.py demo` printed)",
            ]
            if has_gateway:
                gw_host, gw_port = split_listen("AIRLOCK_POSTGRES_LISTEN", settings.GATEWAY_POSTGRES_LISTEN)
                lines.append(
                    f"  Gateway:  PostgreSQL on {gw_host}:{gw_port}  "
                    f'(psql "host={gw_host} port={gw_port} dbname=demo user=demo-agent", the token as password)'
                )
            else:
                lines.append("  Gateway:  not in this build (no `manage.py gateway` command)")
            broker = "Redis" if settings.REDIS_URL else "the embedded filesystem broker"
            lines += [f"  Worker:   Celery worker and beat on {broker}", "Press Ctrl-C to stop.", ""]
            self.stdout.write("\n".join(lines))
            self.stdout.flush()

        supervisor = Supervisor(
            children, stop_timeout=options["stop_timeout"], out=self.stdout, err=self.stderr
        )
        code = supervisor.run(ready=ready, on_ready=banner)
        if code:
            sys.exit(code)
