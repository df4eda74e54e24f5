"""Policy engine throughput: decisions per second and latency for a mix of typical statements.

    .venv/bin/python -m bench.policy_bench

Uncached: every statement text is new (a literal changes), so the exact-text decision
cache misses; a statement of a shape seen before reuses that shape's classification and
decision (docs/policies.md "Caching"), as an agent's repeated queries with new values do.
Cold: every cache emptied before each decision (the engine's and the classifier's), so each
one parses, classifies and decides from nothing. Cached: the same statements again, so
each decision is a dictionary lookup.
Targets (issue 4): uncached p50 under 300 µs, cached p50 under 5 µs.
"""

from __future__ import annotations

import gc
import os
import statistics
import time

from policies import sql
from policies.engine import compile_policy
from policies.packs import combine, pack
from policies.types import Request

MIX = [
    "SELECT * FROM users WHERE id = {n}",
    "SELECT id, email, created_at FROM users WHERE email = 'user{n}@example.com' LIMIT 1",
    "SELECT o.id, o.total, u.email FROM orders o JOIN users u ON u.id = o.user_id "
    "WHERE o.created_at > now() - interval '7 days' AND o.total > {n} ORDER BY o.created_at DESC LIMIT 50",
    "SELECT date_trunc('day', created_at) AS day, count(*), sum(total) FROM orders "
    "WHERE created_at >= '2026-01-01' AND customer_id = {n} GROUP BY 1 ORDER BY 1",
    "WITH recent AS (SELECT * FROM orders WHERE customer_id = {n}) "
    "SELECT r.id, coalesce(r.note, '') FROM recent r WHERE r.total > 10",
    "INSERT INTO events (kind, payload, created_at) VALUES ('login', '{{\"n\": {n}}}', now())",
    "UPDATE accounts SET balance = balance - 10, updated_at = now() WHERE id = {n}",
    "DELETE FROM sessions WHERE expires_at < now() - interval '{n} days'",
    "BEGIN; SELECT balance FROM accounts WHERE id = {n} FOR UPDATE; COMMIT",
    "SET statement_timeout = {n}",
    "EXPLAIN SELECT * FROM orders WHERE customer_id = {n}",
    "/* dashboard */ SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND pid <> {n}",
]

GUARDED = {
    **combine("no-server-files", "no-role-changes", "no-destructive-ddl", default="allow"),
}
GUARDED["rules"] = [
    {"name": "secrets", "match": {"facts": ["catalog_secrets"]}, "action": "deny"},
    *GUARDED["rules"],
    {"name": "whole-table", "match": {"no_where": True}, "action": "review", "reviewers": ["dba"]},
    {"name": "billing-tables", "match": {"tables": ["billing.*"]}, "action": "review", "reviewers": ["dba"]},
    {"name": "no-pii-export", "match": {"regex": r"^COPY users\b"}, "action": "deny"},
]

POLICIES = {
    "read-only-agent": pack("read-only-agent"),
    "guarded (packs + regex)": GUARDED,
}


def _request(statement: str) -> Request:
    return Request(
        protocol="postgres",
        connection="shop",
        agent="billing-bot",
        groups=frozenset({"agents"}),
        statement=statement,
    )


def _measure(policy, requests: list[Request]) -> list[float]:
    timings = []
    clock = time.perf_counter_ns
    for request in requests:
        start = clock()
        policy.evaluate(request)
        timings.append((clock() - start) / 1000)
    return timings


def _report(label: str, timings: list[float]) -> None:
    timings = sorted(timings)
    p50 = statistics.median(timings)
    p99 = timings[int(len(timings) * 0.99) - 1]
    per_second = len(timings) / (sum(timings) / 1e6)
    print(f"  {label:<9} {per_second:>12,.0f} decisions/s   p50 {p50:8.2f} µs   p99 {p99:8.2f} µs")


def main(rounds: int = 500) -> None:
    load = os.getloadavg()[0]
    print(
        f"policy engine: {len(MIX)} statement shapes x {rounds} rounds ({os.cpu_count()} CPUs, load {load:.1f})"
    )
    print("  (p99 includes the scheduler's preemptions on a busy host; p50 is the figure to compare)")
    for name, spec in POLICIES.items():
        policy = compile_policy(name, 1, spec, cache_size=len(MIX) * rounds + 1)
        sql._classify_cached.cache_clear()
        sql.normalize.cache_clear()
        fresh = [_request(shape.format(n=n)) for n in range(rounds) for shape in MIX]
        warm = [_request(shape.format(n=0)) for shape in MIX] * rounds
        _clear_classifier()
        gc.collect()
        uncached = _measure(policy, fresh)
        policy.evaluate(warm[0])
        cached = _measure(policy, warm)
        cold = []
        for request in fresh[: len(MIX) * min(rounds, 50)]:
            policy.clear_cache()
            _clear_classifier()
            cold.extend(_measure(policy, [request]))
        print(f" {name}")
        _report("uncached", uncached)
        _report("cold", cold)
        _report("cached", cached)


def _clear_classifier() -> None:
    sql._shapes.clear()
    sql._simple_shapes.clear()
    sql._classify_cached.cache_clear()
    sql.normalize.cache_clear()


if __name__ == "__main__":
    main()
