// A node-postgres client for gateway/tests/postgres/test_node_client.py:
// node node_client.js SCENARIO [ARG], with the gateway in PGHOST/PGPORT, the agent in PGUSER
// and its token in PGPASSWORD (node-postgres reads them as libpq does). node-postgres is what
// many agent tools use, the reference MCP PostgreSQL server among them: a query without
// values goes as a simple Query, one with values through the extended protocol (an unnamed
// statement, or a named one when the query has a name), text parameters and results.
// It prints one line per check.
"use strict";

const fs = require("fs");
const pg = require("pg");

function options() {
  const ca = process.env.AIRLOCK_CA;
  return {
    database: "shop",
    connectionTimeoutMillis: 10000,
    ssl: ca ? { ca: fs.readFileSync(ca), rejectUnauthorized: true } : false,
  };
}

async function connected(fn) {
  const client = new pg.Client(options());
  await client.connect();
  try {
    await fn(client);
  } finally {
    await client.end();
  }
}

async function basics(client) {
  const user = await client.query("SELECT current_user AS u");
  console.log(`user ${user.rows[0].u}`);
  const count = await client.query("SELECT count(*) AS n FROM items");
  console.log(`items ${count.rows[0].n}`);
  const one = await client.query("SELECT name, price FROM items WHERE id = $1", [3]);
  console.log(`param ${one.rows[0].name}|${one.rows[0].price}`);
  const names = [];
  for (let id = 1; id <= 4; id++) {
    const r = await client.query({ name: "item-by-id", text: "SELECT name FROM items WHERE id = $1", values: [id] });
    names.push(r.rows[0].name);
  }
  console.log(`named ${names.join("|")}`);
  const typed = await client.query({
    text: "SELECT $1::text AS t, $2::int8 AS b, NULL::text AS n, $3::bytea AS raw, $4::jsonb AS doc",
    values: ["żółw ✓ 🐢", "1099511627776", Buffer.from([0, 255, 98]), { k: [1, "two"] }],
  });
  const row = typed.rows[0];
  console.log(`typed ${row.t}|${row.b}|${row.n}|${row.raw.toString("hex")}|${JSON.stringify(row.doc)}`);
  const arrays = await client.query({ text: "SELECT id, name FROM items WHERE id <= 2 ORDER BY id", rowMode: "array" });
  console.log(`arrays ${JSON.stringify(arrays.rows)}`);
  await client.query("BEGIN");
  await client.query("CREATE TEMP TABLE node_seen (id int, label text)");
  for (let i = 0; i < 3; i++) {
    await client.query("INSERT INTO node_seen VALUES ($1, $2)", [i, `row ${i}`]);
  }
  await client.query("ROLLBACK");
  const gone = await client.query("SELECT count(*) AS n FROM pg_class WHERE relname = 'node_seen'");
  console.log(`rolled back ${gone.rows[0].n}`);
  // Several statements in one simple Query: node-postgres returns one result per statement.
  const multi = await client.query("SELECT 1 AS a; SELECT 2 AS b");
  console.log(`multi ${multi.map((r) => Object.values(r.rows[0])[0]).join("|")}`);
}

// The reference MCP PostgreSQL server's read-only query tool, as it runs an agent's SQL.
async function mcpReadOnly(client, sql) {
  await client.query("BEGIN TRANSACTION READ ONLY");
  try {
    const result = await client.query(sql);
    console.log(`rows ${JSON.stringify(result.rows)}`);
  } catch (err) {
    console.log(`error ${err.code} ${err.message}`);
  } finally {
    await client.query("ROLLBACK").catch((err) => console.log(`rollback failed ${err.code}`));
  }
}

async function denied(client, marker) {
  try {
    await client.query(`SELECT '${marker}'`);
    console.log("not denied");
  } catch (err) {
    console.log(`denied ${err.code} ${err.message}`);
  }
  try {
    await client.query("SELECT 1 WHERE $1::text = 'x'", [marker]);
    console.log("not denied");
  } catch (err) {
    console.log(`denied with a parameter ${err.code}`);
  }
  await client.query("BEGIN");
  await client.query("SELECT 1");
  try {
    await client.query(`SELECT '${marker}'`);
  } catch (err) {
    console.log(`denied in transaction ${err.code}`);
  }
  try {
    await client.query("SELECT 2");
  } catch (err) {
    console.log(`in transaction ${err.code}`);
  }
  await client.query("ROLLBACK");
  const after = await client.query("SELECT count(*) AS n FROM items");
  console.log(`after rollback ${after.rows[0].n}`);
}

async function masked(client, table) {
  const rows = await client.query(`SELECT id, email AS contact, pin, notes FROM ${table}`);
  for (const r of rows.rows) {
    console.log(`row ${r.id} ${r.contact}|${r.pin}|${r.notes}`);
  }
  const echoed = await client.query("SELECT $1::text AS v", ["write to dana.secret@example.org"]);
  console.log(`echo ${echoed.rows[0].v}`);
  try {
    await client.query(`UPDATE ${table} SET notes = $1 WHERE id = $2`, ["[EMAIL]", 1]);
    console.log("write-back allowed");
  } catch (err) {
    console.log(`write-back ${err.code}`);
  }
}

async function pool() {
  const p = new pg.Pool({ ...options(), max: 4 });
  try {
    const ids = Array.from({ length: 20 }, (_, i) => (i % 10) + 1);
    const results = await Promise.all(ids.map((id) => p.query("SELECT name FROM items WHERE id = $1", [id])));
    console.log(`pool ${results.length} ${new Set(results.map((r) => r.rows[0].name)).size}`);
  } finally {
    await p.end();
  }
}

async function notify(client) {
  const heard = new Promise((resolve) => client.on("notification", resolve));
  await client.query("LISTEN node_jobs");
  await client.query("SELECT pg_notify('node_jobs', 'ready ✓')");
  const message = await heard;
  console.log(`notify ${message.channel} ${message.payload}`);
}

async function main() {
  const [scenario, arg] = process.argv.slice(2);
  switch (scenario) {
    case "basics":
      return connected(basics);
    case "mcp":
      return connected((c) => mcpReadOnly(c, arg));
    case "denied":
      return connected((c) => denied(c, arg));
    case "masked":
      return connected((c) => masked(c, arg));
    case "pool":
      return pool();
    case "notify":
      return connected(notify);
    case "query":
      return connected(async (c) => console.log((await c.query(arg)).rows.map((r) => Object.values(r).join("|")).join("\n")));
    default:
      throw new Error(`unknown scenario ${scenario}`);
  }
}

main().catch((err) => {
  console.error(`${err.code || ""} ${err.stack || err}`);
  process.exit(1);
});
