"""What the tests through the PostgreSQL gateway share: the policy that holds writes for the
dba reviewers, psql, and looks at the target."""

from __future__ import annotations

import subprocess
from typing import Any

from approvals.models import ApprovalRequest

SPEC: dict[str, Any] = {
    "default": "allow",
    "rules": [
        {
            "name": "deletes",
            "match": {"operations": ["write"]},
            "action": "review",
            "reviewers": ["dba"],
            "timeout": "30s",
        }
    ],
}


def count_orders(private_pg: Any) -> int:
    with private_pg.admin("shop") as conn:
        return int(conn.execute("SELECT count(*) FROM orders").fetchone()[0])


def newest_pending() -> ApprovalRequest | None:
    return ApprovalRequest.objects.pending().order_by("-id").first()


def psql(env: Any, sql: str) -> subprocess.Popen[str]:
    """The real psql, through the gateway, running ``sql`` (stops at the first error)."""
    return subprocess.Popen(
        ["psql", env.conninfo(), "-v", "ON_ERROR_STOP=1", "-c", sql],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
