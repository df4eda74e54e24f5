"""The reference MCP PostgreSQL server (npm ``@modelcontextprotocol/server-postgres``), unchanged,
between an agent and the gateway.

It is how many AI agents reach PostgreSQL: a ``query`` tool that runs the agent's SQL inside
``BEGIN TRANSACTION READ ONLY`` ... ``ROLLBACK``, and table schemas as resources. Its
read-only wrapper is known to be escapable: the agent's text is sent as one simple Query, so
``COMMIT; DELETE ...`` ends the read-only transaction and runs the write. Run here as an
agent runtime runs it (``node`` with the gateway's URL, JSON-RPC over stdin and stdout),
first straight against PostgreSQL, where that escape deletes rows, then through the gateway
under the read-only-agent pack, where each statement is decided on its own and the write is
refused while the read still works.
"""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from gateway.tests.postgres.events import results as recorded_results
from gateway.tests.postgres.test_clients import _masked_people
from gateway.tests.postgres.test_policies_e2e import READ_ONLY_SPEC, policy_gateway  # noqa: F401 (fixture)

SERVER = (
    Path(__file__).resolve().parents[3] / "node_modules/@modelcontextprotocol/server-postgres/dist/index.js"
)
ESCAPE = "COMMIT; DELETE FROM mcp_orders"


class McpClient:
    """An MCP client over the server's stdin and stdout (newline-delimited JSON-RPC)."""

    def __init__(self, database_url: str) -> None:
        node = shutil.which("node")
        assert node is not None and SERVER.exists(), "make venv installs Node.js and the dev npm packages"
        self.process = subprocess.Popen(
            [node, str(SERVER), database_url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self._next_id = 0
        answer = self.request(
            "initialize",
            {
                "protocolVersion": "2024-11-05",
                "capabilities": {},
                "clientInfo": {"name": "airlock-tests", "version": "1"},
            },
        )
        assert answer["result"]["serverInfo"]["name"] == "example-servers/postgres"
        self._send({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)

    def _send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()

    def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self._next_id += 1
        self._send({"jsonrpc": "2.0", "id": self._next_id, "method": method, "params": params})
        while True:
            try:
                message = json.loads(self._lines.get(timeout=30))
            except queue.Empty:
                raise AssertionError(f"no answer to {method} from the MCP server") from None
            if message.get("id") == self._next_id:
                return message

    def query(self, sql: str) -> Any:
        """The tool's rows, or ``("error", message)``."""
        answer = self.request("tools/call", {"name": "query", "arguments": {"sql": sql}})
        if "error" in answer:
            return ("error", answer["error"]["message"])
        content = answer["result"]["content"][0]
        # Several statements give node-postgres a result each, and the tool no rows at all.
        return json.loads(content["text"]) if "text" in content else None

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        # The server's connection pool keeps node running for its idle timeout (10 s) after
        # stdin ends; an agent runtime stops it with a signal.
        self.process.terminate()
        self.process.wait(10)


@pytest.fixture
def orders(private_pg):
    def fill() -> None:
        with private_pg.admin("shop") as admin:
            admin.execute("DROP TABLE IF EXISTS mcp_orders")
            admin.execute("CREATE TABLE mcp_orders (id int, item text)")
            admin.execute("INSERT INTO mcp_orders SELECT g, 'order ' || g FROM generate_series(1, 3) g")
            admin.execute("GRANT ALL ON mcp_orders TO scram_user")

    def count() -> int:
        with private_pg.admin("shop") as admin:
            return admin.execute("SELECT count(*) FROM mcp_orders").fetchone()[0]

    fill()
    yield fill, count
    with private_pg.admin("shop") as admin:
        admin.execute("DROP TABLE IF EXISTS mcp_orders")


def test_the_mcp_servers_read_only_escape_works_directly_and_is_refused_through_the_gateway(
    policy_gateway,  # noqa: F811 (the fixture imported above)
    private_pg,
    orders,
):
    fill, count = orders
    # Straight to PostgreSQL (the role the gateway's connection uses): the escape deletes.
    direct = McpClient(f"postgresql://scram_user:scram-Pass-1@{private_pg.host}:{private_pg.port}/shop")
    try:
        assert direct.query(ESCAPE) is None
    finally:
        direct.close()
    assert count() == 0
    fill()

    env = policy_gateway("mcp-read-only", READ_ONLY_SPEC)
    agent = McpClient(f"postgresql://billing-bot:{env.token}@127.0.0.1:{env.port}/shop")
    try:
        assert agent.query("SELECT id, item FROM mcp_orders ORDER BY id") == [
            {"id": 1, "item": "order 1"},
            {"id": 2, "item": "order 2"},
            {"id": 3, "item": "order 3"},
        ]
        assert agent.query(ESCAPE) == (
            "error",
            "no rule matched: the default of policy 'mcp-read-only' is deny",
        )
        # The server's pool and its next transaction are unharmed.
        assert agent.query("SELECT count(*)::int AS n FROM mcp_orders") == [{"n": 3}]
        resources = agent.request("resources/list", {})["result"]["resources"]
        assert any(r["name"] == '"mcp_orders" database schema' for r in resources)
    finally:
        agent.close()
    assert count() == 3
    events = env.events()
    statements = [(p.get("text"), p["action"]) for kind, p in events if kind == "statement"]
    escape = statements.index(("COMMIT", "allow"))
    assert statements[escape : escape + 3] == [
        ("COMMIT", "allow"),
        ("DELETE FROM mcp_orders", "deny"),
        ("ROLLBACK", "allow"),  # the server's own
    ]
    # As PostgreSQL runs a Query's statements up to the one that fails: the COMMIT ends the
    # read-only transaction, the DELETE fails in its place with the policy's message.
    tags = [r["command_tag"] for r in recorded_results(events)]
    assert tags.count("COMMIT") == 1 and not any(tag.startswith("DELETE") for tag in tags)
    assert tags.count("ROLLBACK") == 3  # one per tool call


def test_the_mcp_servers_answers_are_masked(gateway_factory, private_pg):
    gw = _masked_people(gateway_factory, private_pg, "mcp_people", "card 4111111111111111 on file")
    agent = McpClient(f"postgresql://billing-bot:{gw.token}@127.0.0.1:{gw.port}/shop")
    try:
        rows = agent.query("SELECT id, email AS contact, lower(email) AS l, pin, notes FROM mcp_people")
    finally:
        agent.close()
    assert rows == [
        {"id": 1, "contact": "[EMAIL]", "l": "[EMAIL]", "pin": None, "notes": "card [CARD] on file"}
    ]
