"""Gateway throughput with masking on versus off (``python -m bench gateway_masking_bench``).

A private PostgreSQL with a ``customers`` table (8 columns: name, email, phone, city, card,
notes, created); each pgbench transaction reads 10 rows of it, the "typical result".
One gateway process (recording on, allow-all) serves two connections to the same
database: ``plain`` with masking off, ``masked`` with a masking policy naming the known
sensitive columns (email hashed, card partial, phone redacted) and content detection on
every other column (a secret in one note in twenty). Runs interleave (off, on, off, on...) and TPS
is the median of the rounds. Target: masking on costs at most 25% of throughput.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import perfsplit
from bench.pgbench import (
    CLIENTS,
    DURATION,
    MODES,
    PERF,
    PROFILE,
    ROUNDS,
    _cpu_seconds,
    _free_port,
    _wait_port,
    summarise,
)
from console.envconfig import database_url

# Diagnostics: AIRLOCK_BENCH_MASKING_TARGETS=masked runs one target only, and with
# AIRLOCK_BENCH_PROFILE=out.txt py-spy records the gateway meanwhile (raw stack counts);
# AIRLOCK_BENCH_PERF=1 samples the first round of each case and target with perf and prints
# the gateway's CPU per transaction part by part (bench.perfsplit). AIRLOCK_BENCH_MODES and
# AIRLOCK_BENCH_CLIENTS limit the cases, as for bench.pgbench.
TARGETS = [t for t in os.environ.get("AIRLOCK_BENCH_MASKING_TARGETS", "plain,masked").split(",") if t]
# AIRLOCK_BENCH_MASKING_NOREC=1: the gateway with its events dropped (bench.pgbench's
# diagnostic "gw-norec" copy), to see what recording's share of the process does to the ratio.
NOREC = os.environ.get("AIRLOCK_BENCH_MASKING_NOREC") == "1"

ROWS = 10_000
SCRIPT = "\\set a random(1, 9990)\nSELECT * FROM customers WHERE id BETWEEN :a AND :a + 9;\n"
SPEC = {
    "columns": [
        {"match": "public.customers.email", "method": "hash", "entity": "email"},
        {"match": "public.customers.card", "method": "partial", "entity": "card"},
        {"match": "public.customers.phone", "method": "redact", "entity": "phone"},
    ]
}
FILL = """
INSERT INTO customers
SELECT g, 'Customer ' || g, 'customer' || g || '@example.com', '+44 20 7946 ' || lpad((g % 10000)::text, 4, '0'),
       (ARRAY['London', 'Paris', 'Berlin', 'Madrid'])[1 + g % 4],
       '4111111111111111',
       CASE WHEN g % 20 = 0 THEN 'rotated key ghp_Ab3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF3hJ6'
            ELSE 'ordered ' || (g % 7) || ' items, delivered on time' END,
       now() - g * interval '1 minute'
FROM generate_series(1, {rows}) g
"""


def _prepare(pg_port: int) -> str:
    from django.contrib.auth.models import Group

    from gateway.models import Connection
    from gateway.secrets import set_secrets
    from gateway.tests.postgres.pgserver import ROLES
    from identity.actions import do_create_agent, do_issue_token
    from policies.actions import do_save_policy
    from policies.masking_actions import do_save_masking_policy

    agent = do_create_agent("bench", "bench-bot", groups=["agents"])
    token = do_issue_token("bench", agent).raw
    # A connection without a policy denies everything: both get an explicit allow-all.
    allow_all = do_save_policy("bench", "allow-all", {"default": "allow", "rules": []})
    for name in ("plain", "masked"):
        connection = Connection(
            name=name, kind="postgres", host="127.0.0.1", port=pg_port, database="bench",
            username="scram_user", options={"sslmode": "disable"}, policy=allow_all,
        )  # fmt: skip
        set_secrets(connection, {"password": ROLES["scram_user"][0]})
        connection.save()
        connection.groups.set([Group.objects.get(name="agents")])
    do_save_masking_policy("bench", "typical", SPEC, bindings=[("masked", None)])
    return token


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")
    import django

    django.setup()
    from django.db import connection

    from gateway.tests.postgres.pgserver import start_private_postgres

    if connection.vendor != "postgresql" or not shutil.which("pgbench"):
        print("masking bench: needs DATABASE_URL (PostgreSQL) and pgbench", file=sys.stderr)
        return 2
    base_name = connection.settings_dict["NAME"]
    connection.settings_dict["TEST"]["NAME"] = f"{base_name}_bench_masking"
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    server = start_private_postgres(_free_port())
    root = Path(tempfile.mkdtemp(prefix="airlock-bench-masking-"))
    gateway = None
    profiler: subprocess.Popen[bytes] | None = None
    try:
        with server.admin() as admin:
            admin.execute("CREATE DATABASE bench OWNER scram_user")
        with server.admin("bench") as admin:
            admin.execute("SET ROLE scram_user")
            admin.execute(
                "CREATE TABLE customers (id int PRIMARY KEY, name text, email text, phone text, city text,"
                " card text, notes text, created timestamptz)"
            )
            admin.execute(FILL.format(rows=ROWS))
        token = _prepare(server.port)
        gw_port = _free_port()
        env = {
            **os.environ,
            "DATABASE_URL": database_url(connection.settings_dict),
            "AIRLOCK_LOG_LEVEL": "WARNING",
            "AIRLOCK_MASKING_DEFAULT": "off",  # the "plain" connection has no masking at all
        }
        command = [sys.executable, "manage.py", "gateway", "--postgres-listen", f"127.0.0.1:{gw_port}"]
        if NOREC:
            command = [sys.executable, "-c", f"from bench.pgbench import serve_without_recording; serve_without_recording({gw_port})"]  # fmt: skip
        gateway = subprocess.Popen(
            command,
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            cwd=Path(__file__).resolve().parent.parent,
        )  # fmt: skip
        _wait_port(gw_port, gateway)
        if PROFILE:  # py-spy over the whole run (AIRLOCK_BENCH_MASKING_TARGETS=masked: that one only)
            spy = [str(Path(sys.executable).with_name("py-spy")), "record", "--nonblocking", "--format", "raw", "-r", "500",
                   "-o", PROFILE, "--pid", str(gateway.pid), "-d", str(DURATION * ROUNDS * 4 * len(TARGETS))]  # fmt: skip
            profiler = subprocess.Popen(spy, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        results = {}
        paired: dict[tuple[str, int], list[float]] = {}
        for mode in (m for m in ("simple", "prepared") if m in MODES):
            for clients in CLIENTS:
                runs: dict[str, list[tuple[float, list[int]]]] = {"plain": [], "masked": []}
                cpu = {"plain": 0.0, "masked": 0.0}
                for round_ in range(ROUNDS):
                    for target in TARGETS:
                        before = _cpu_seconds(gateway.pid)
                        runs[target].append(
                            perfsplit.measured(
                                functools.partial(
                                    _run_db, gw_port, "bench-bot", token, clients, root, mode, target
                                ),
                                gateway.pid if PERF and round_ == 0 else None,
                                root / "perf.data",
                                f"{target} {mode} {clients} client(s), first round",
                            )
                        )
                        cpu[target] += _cpu_seconds(gateway.pid) - before
                for target in runs:
                    results[(target, mode, clients)] = summarise(runs[target] or [(1.0, [0])], cpu[target])
                if runs["plain"] and runs["masked"]:
                    # Each round runs off and on back to back: their ratio is spared the drift
                    # of the machine's speed between rounds, which the medians are not.
                    paired[(mode, clients)] = [
                        on[0] / off[0] for off, on in zip(runs["plain"], runs["masked"], strict=True)
                    ]
    finally:
        if profiler is not None:
            profiler.wait(timeout=120)
        if gateway is not None:
            gateway.terminate()
            _, errors = gateway.communicate(timeout=30)
            if errors and errors.strip():
                print("gateway stderr (tail):", errors[-3000:], file=sys.stderr)
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
        connection.close()
        connection.creation.destroy_test_db(old_name, verbosity=0)
    print(f"gateway, 10-row 8-column result per transaction, {ROUNDS} x {DURATION}s, {os.cpu_count()} CPUs")
    print(
        f"{'mode':<9} {'clients':>7} {'off tps':>9} {'on tps':>9} {'on/off':>7} {'off cpu us':>10} {'on cpu us':>10}"
        f" {'off p50/p99 ms':>15} {'on p50/p99 ms':>15}"
    )
    both = set(TARGETS) >= {"plain", "masked"}
    worst = 1.0
    for mode in (m for m in ("simple", "prepared") if m in MODES):
        for clients in CLIENTS:
            off, on = results.get(("plain", mode, clients)), results.get(("masked", mode, clients))
            figures = {
                "off tps": f"{off['tps']:.0f}" if "plain" in TARGETS else "-",
                "on tps": f"{on['tps']:.0f}" if "masked" in TARGETS else "-",
                "on/off": f"{on['tps'] / off['tps']:.2f}" if both else "-",
                "off cpu": f"{off['cpu_us']:.1f}" if "plain" in TARGETS else "-",
                "on cpu": f"{on['cpu_us']:.1f}" if "masked" in TARGETS else "-",
                "off lat": f"{off['p50_ms']:.3f}/{off['p99_ms']:.3f}" if "plain" in TARGETS else "-",
                "on lat": f"{on['p50_ms']:.3f}/{on['p99_ms']:.3f}" if "masked" in TARGETS else "-",
            }
            if both:
                worst = min(worst, on["tps"] / off["tps"])
            print(
                f"{mode:<9} {clients:>7} {figures['off tps']:>9} {figures['on tps']:>9} {figures['on/off']:>7}"
                f" {figures['off cpu']:>10} {figures['on cpu']:>10} {figures['off lat']:>15} {figures['on lat']:>15}"
            )
    for (mode, clients), ratios in paired.items():
        print(
            f"paired on/off, {mode}, {clients} client(s), round by round: {' '.join(f'{r:.2f}' for r in ratios)}"
        )
    if not both or not {"simple", "prepared"} <= set(MODES) or not {1, 8} <= set(CLIENTS):
        # A diagnostic run of one target (AIRLOCK_BENCH_MASKING_TARGETS) or of some cases
        # only (AIRLOCK_BENCH_MODES, AIRLOCK_BENCH_CLIENTS) is not judged.
        print("target (masking on >= 0.75 x off): not judged, a partial run")
    else:
        print("target (masking on >= 0.75 x off):", "met" if worst >= 0.75 else "NOT met")
    return 0


def _run_db(
    port: int, user: str, token: str, clients: int, root: Path, mode: str, dbname: str
) -> tuple[float, list[int]]:
    for old in root.glob("pgbench_log.*"):
        old.unlink()
    script = root / "typical.sql"
    script.write_text(SCRIPT)
    cmd = [
        "pgbench", "-h", "127.0.0.1", "-p", str(port), "-U", user, "-f", str(script), "-M", mode,
        "-c", str(clients), "-j", str(min(clients, 4)), "-T", str(DURATION), "-n", "--log",
        f"--log-prefix={root}/pgbench_log", dbname,  # the database name is the connection
    ]  # fmt: skip
    env = {**os.environ, "PGPASSWORD": token, "PGSSLMODE": "disable"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=DURATION + 120, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"pgbench failed: {out.stderr[-2000:]}")
    tps = next(
        (
            float(line.split("=")[1].split()[0])
            for line in out.stdout.splitlines()
            if line.startswith("tps =")
        ),
        None,
    )
    if tps is None:
        raise RuntimeError(f"pgbench reported no tps: {out.stdout[-2000:]} {out.stderr[-2000:]}")
    latencies: list[int] = []
    for path in root.glob("pgbench_log.*"):
        with path.open() as handle:
            latencies.extend(int(line.split()[2]) for line in handle)
    return tps, latencies


if __name__ == "__main__":
    sys.exit(main())
