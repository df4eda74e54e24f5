"""Property tests: spelling never changes a decision, and the cache never changes one either.

Statements are generated as tokens from a small SQL grammar that reaches every part of the
engine (CTE writes, functions of each set, catalog tables, settings, EXPLAIN ANALYZE,
stacked statements). The same tokens are then rendered with random comments, whitespace,
keyword and identifier case and identifier quoting: PostgreSQL reads every rendering as the
same statement, so the engine must decide them all alike.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies.engine import compile_policy
from policies.packs import pack
from policies.tests.test_security_cases import GUARDED
from policies.types import Request

KW, ID, LIT, P = "kw", "id", "lit", "p"
Token = tuple[str, str]

READ_ONLY = compile_policy("read-only-agent", 1, pack("read-only-agent"))
SHAPES = compile_policy(
    "shapes",
    1,
    {
        "default": "allow",
        "rules": [
            {"name": "regex", "match": {"regex": r"^SELECT email FROM users\b"}, "action": "deny"},
            {"name": "secret", "match": {"tables": ["secret.*"]}, "action": "deny"},
            {"name": "mine", "match": {"functions": ["my_*"]}, "action": "review", "reviewers": ["dba"]},
            {"name": "all-rows", "match": {"no_where": True}, "action": "review", "reviewers": ["dba"]},
            {
                "name": "read-public",
                "match": {"operations": ["read"], "tables": ["public.*"]},
                "action": "allow",
            },
            {"name": "settings", "match": {"settings": ["role", "*read_only"]}, "action": "deny"},
        ],
    },
)
POLICIES = (READ_ONLY, GUARDED, SHAPES)

TABLE_NAMES = ["users", "orders", "t", "tokens", "pg_authid", "pg_shadow", "pg_class"]
SCHEMAS = ["public", "secret", "pg_catalog", "app"]
COLUMNS = ["id", "email", "total", "name"]
FUNCTIONS = [
    "lower",
    "count",
    "now",
    "pg_read_file",
    "pg_terminate_backend",
    "nextval",
    "my_fn",
    "lo_import",
    "query_to_xml",
]
SETTINGS = ["role", "statement_timeout", "default_transaction_read_only", "search_path", "work_mem"]


@st.composite
def table(draw) -> list[Token]:
    name = draw(st.sampled_from(TABLE_NAMES))
    if draw(st.booleans()):
        return [(ID, draw(st.sampled_from(SCHEMAS))), (P, "."), (ID, name)]
    return [(ID, name)]


@st.composite
def expression(draw, depth: int = 0) -> list[Token]:
    choice = draw(st.integers(0, 4 if depth < 2 else 2))
    if choice == 0:
        return [(ID, draw(st.sampled_from(COLUMNS)))]
    if choice == 1:
        return [(LIT, str(draw(st.integers(0, 99))))]
    if choice == 2:
        return [(LIT, draw(st.sampled_from(["'x'", "'/etc/passwd'", "'a b'"])))]
    if choice == 3:
        name = draw(st.sampled_from(FUNCTIONS))
        qualified = [(ID, "pg_catalog"), (P, ".")] if draw(st.booleans()) and name != "my_fn" else []
        return [*qualified, (ID, name), (P, "("), *draw(expression(depth + 1)), (P, ")")]
    left = draw(expression(depth + 1))
    right = draw(expression(depth + 1))
    return [*left, (P, draw(st.sampled_from(["=", "+", "<", "||"]))), *right]


@st.composite
def where(draw) -> list[Token]:
    if draw(st.booleans()):
        return []
    return [(KW, "WHERE"), *draw(expression())]


@st.composite
def select(draw) -> list[Token]:
    columns = draw(st.lists(expression(), min_size=1, max_size=3))
    tokens: list[Token] = [(KW, "SELECT")]
    for index, column in enumerate(columns):
        tokens += ([(P, ",")] if index else []) + column
    if draw(st.booleans()):
        tokens += [(KW, "FROM"), *draw(table()), *draw(where())]
    return tokens


@st.composite
def statement(draw) -> list[Token]:
    kind = draw(st.integers(0, 10))
    if kind <= 2:
        return draw(select())
    if kind == 3:
        body = [(KW, "DELETE"), (KW, "FROM"), *draw(table()), *draw(where()), (KW, "RETURNING"), (P, "*")]
        return [(KW, "WITH"), (ID, "d"), (KW, "AS"), (P, "("), *body, (P, ")"), *draw(select())]
    if kind == 4:
        return [
            (KW, "INSERT"),
            (KW, "INTO"),
            *draw(table()),
            (KW, "VALUES"),
            (P, "("),
            *draw(expression()),
            (P, ")"),
        ]
    if kind == 5:
        column = (ID, draw(st.sampled_from(COLUMNS)))
        return [
            (KW, "UPDATE"),
            *draw(table()),
            (KW, "SET"),
            column,
            (P, "="),
            *draw(expression()),
            *draw(where()),
        ]
    if kind == 6:
        return [(KW, "DELETE"), (KW, "FROM"), *draw(table()), *draw(where())]
    if kind == 7:
        return [(KW, "DROP"), (KW, "TABLE"), *draw(table())]
    if kind == 8:
        value = draw(st.sampled_from(["'postgres'", "'off'", "'5s'", "'on'", "0"]))
        return [(KW, "SET"), (ID, draw(st.sampled_from(SETTINGS))), (P, "="), (LIT, value)]
    if kind == 9:
        inner = draw(st.sampled_from([[(KW, "DELETE"), (KW, "FROM"), *draw(table())], draw(select())]))
        return [(KW, "EXPLAIN"), *([(KW, "ANALYZE")] if draw(st.booleans()) else []), *inner]
    target = draw(st.sampled_from([[(KW, "STDOUT")], [(KW, "PROGRAM"), (LIT, "'sh'")]]))
    return [(KW, "COPY"), *draw(table()), (KW, "TO"), *target]


@st.composite
def statements(draw) -> list[Token]:
    parts = draw(st.lists(statement(), min_size=1, max_size=3))
    tokens: list[Token] = []
    for index, part in enumerate(parts):
        tokens += ([(P, ";")] if index else []) + part
    return tokens


def plain(tokens: list[Token]) -> str:
    return " ".join(text for _, text in tokens)


@st.composite
def respelled(draw, tokens: list[Token]) -> str:
    out: list[str] = []
    for kind, text in tokens:
        if kind == KW:
            text = "".join(c.upper() if draw(st.booleans()) else c.lower() for c in text)
        elif kind == ID:
            style = draw(st.integers(0, 2))
            if style == 1:
                text = f'"{text}"'  # quoting a lower-case name changes nothing
            elif style == 2:
                text = "".join(c.upper() if draw(st.booleans()) else c for c in text)  # unquoted names fold
        separator = draw(
            st.sampled_from([" ", "  ", "\n", "\t", " /* c */ ", " /* ; DROP TABLE x */ ", " -- c\n"])
        )
        out.append(text)
        out.append(separator)
    return draw(st.sampled_from(["", "/* lead */ ", "-- lead\n", "\n "])) + "".join(out)


def request(text: str) -> Request:
    return Request(
        protocol="postgres", connection="shop", agent="bot", groups=frozenset({"agents"}), statement=text
    )


def outcome(policy, text: str) -> tuple:
    decision = policy.evaluate(request(text))
    details = decision.classification
    return (
        decision.action,
        decision.rule,
        details["operations"],
        details["tables_read"],
        details["tables_written"],
        details["functions"],
        details["facts"],
        details["settings"],
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), tokens=statements())
def test_comments_whitespace_case_and_quoting_never_change_a_decision(data, tokens):
    original = plain(tokens)
    variant = data.draw(respelled(tokens))
    for policy in POLICIES:
        assert outcome(policy, variant) == outcome(policy, original), (policy.name, original, variant)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(statements(), st.sampled_from(["agents", "ops"])), min_size=1, max_size=20))
def test_a_cached_decision_is_the_decision_made_afresh(batch):
    cached = compile_policy("shapes", 1, {"default": "deny", "rules": SHAPES_RULES}, cache_size=8)
    for tokens, group in batch + batch:
        text = plain(tokens)
        req = Request(
            protocol="postgres", connection="shop", agent="bot", groups=frozenset({group}), statement=text
        )
        fresh = compile_policy("shapes", 1, {"default": "deny", "rules": SHAPES_RULES})
        assert cached.evaluate(req) == fresh.evaluate(req)


SHAPES_RULES = [
    {"name": "ops", "match": {"groups": ["ops"], "operations": ["read", "write"]}, "action": "allow"},
    {"name": "reads", "match": {"operations": ["read"]}, "action": "allow"},
]
