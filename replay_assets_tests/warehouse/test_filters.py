"""The ``filters`` grammar: what it accepts, what it refuses, and that values never become SQL text."""

from __future__ import annotations

import datetime as dt
import random
import re

import duckdb
import pyarrow as pa
import pytest

from replay_assets.sources.metta.schema import METTA_ACTION_SAMPLES
from replay_assets.warehouse.filters import (
    Condition,
    FilterError,
    filters_expression,
    filters_sql,
    parse_filter,
    parse_filters,
)

SCHEMA = METTA_ACTION_SAMPLES
OCT_14, OCT_20 = dt.date(2025, 10, 14), dt.date(2025, 10, 20)


def parse(column: str, text: str) -> Condition:
    return parse_filter(column, text, SCHEMA)


# ---------------------------------------------------------------------------------------------------------
# Accepted forms


@pytest.mark.parametrize(
    ("column", "text", "sql", "params"),
    [
        ("agent_id", "= 5", '"agent_id" = ?', [5]),
        ("agent_id", "=5", '"agent_id" = ?', [5]),
        ("agent_id", "  !=  -3  ", '"agent_id" != ?', [-3]),
        ("agent_id", "<> 3", '"agent_id" != ?', [3]),
        ("timestep", "< 10", '"timestep" < ?', [10]),
        ("timestep", "> 10", '"timestep" > ?', [10]),
        ("timestep", "<= 10", '"timestep" <= ?', [10]),
        ("timestep", ">= 10", '"timestep" >= ?', [10]),
        ("reward", "> 0.25", '"reward" > ?', [0.25]),
        ("reward", ">= -1.5e-3", '"reward" >= ?', [-0.0015]),
        ("reward", "< .5", '"reward" < ?', [0.5]),
        ("agent_id", "IN (1, 2, 3)", '"agent_id" IN (?, ?, ?)', [1, 2, 3]),
        ("agent_id", "in(1)", '"agent_id" IN (?)', [1]),
        ("agent_id", "NOT IN (1,2)", '"agent_id" NOT IN (?, ?)', [1, 2]),
        ("timestep", "BETWEEN 1 AND 10", '"timestep" BETWEEN ? AND ?', [1, 10]),
        ("timestep", "between 1 and 10", '"timestep" BETWEEN ? AND ?', [1, 10]),
        ("timestep", "NOT BETWEEN 1 AND 10", '"timestep" NOT BETWEEN ? AND ?', [1, 10]),
        ("environment", "IS NULL", '"environment" IS NULL', []),
        ("environment", "is not null", '"environment" IS NOT NULL', []),
        ("inventory", "IS NOT NULL", '"inventory" IS NOT NULL', []),
        ("episode_id", "= 'abc'", '"episode_id" = ?', ["abc"]),
        ("episode_id", "= 'it''s'", '"episode_id" = ?', ["it's"]),
        ("episode_id", "= ''", '"episode_id" = ?', [""]),
        ("episode_id", "IN ('a', 'b''c')", '"episode_id" IN (?, ?)', ["a", "b'c"]),
        ("action_name", "= 'x; DROP TABLE t; --'", '"action_name" = ?', ["x; DROP TABLE t; --"]),
        ("action_success", "= TRUE", '"action_success" = ?', [True]),
        ("action_success", "!= false", '"action_success" != ?', [False]),
        ("date", "= '2025-10-14'", '"date" = ?', [OCT_14]),
        ("date", "BETWEEN '2025-10-14' AND '2025-10-20'", '"date" BETWEEN ? AND ?', [OCT_14, OCT_20]),
    ],
)  # fmt: skip
def test_valid_forms(column: str, text: str, sql: str, params: list) -> None:
    condition = parse(column, text)
    assert condition.sql() == (sql, params)
    assert condition.expression() is not None


def test_several_filters_combine_with_and() -> None:
    conditions = parse_filters({"agent_id": "IN (1, 2, 3)", "action": "> 0"}, SCHEMA)
    assert filters_sql(conditions) == ('("agent_id" IN (?, ?, ?)) AND ("action" > ?)', [1, 2, 3, 0])
    assert filters_sql([]) == ("TRUE", [])
    assert filters_expression([]) is None
    assert parse_filters(None, SCHEMA) == []


# ---------------------------------------------------------------------------------------------------------
# Refused: every one a ValueError naming the filter


HOSTILE = [
    "= 5 OR 1=1",
    "= 5 or 1 = 1",
    "= 5; DROP TABLE x",
    "; DROP TABLE x",
    "= 5 --",
    "= 5 -- comment",
    "= 5 /* c */",
    "IN (SELECT agent_id FROM metta_action_samples)",
    "IN (1, (SELECT 1))",
    "= abs(1)",
    "= abs (1)",
    "= agent_id",
    '= "agent_id"',
    "= 5 AND agent_id = 6",
    "= 5 UNION SELECT 1",
    "= 1e999",
    "= 99999999999999999999",
    "= 0x10",
    "= 5abc",
    "= 1.2.3",
    "= 1e",
    "= -",
    "= --5",
    "= +5",
    "= ²",
    "= \uff15",  # fullwidth digit five
    "= NULL",
    "IS NULL OR 1=1",
    "IS NOT",
    "IN ()",
    "IN (1,)",
    "IN (1 2)",
    "IN 1, 2",
    "IN (1, 2",
    "BETWEEN 1",
    "BETWEEN 1 OR 2",
    "BETWEEN 1 AND 2 AND 3",
    "NOT = 5",
    "NOT NOT IN (1)",
    "== 5",
    "=< 5",
    "5",
    "",
    "   ",
    "= ",
    "= 5 5",
    "= 5)",
    "LIKE '%'",
    "= 'unbalanced",
    "= 'a'' ",
    "= '''",
    "= 'a' 'b'",
    "= 'a' || 'b'",
    "= :p",
    "= ?",
    "= $1",
    "= 5\x00",
    "= 5\\",
    "= `5`",
    "= 5 -- '",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_and_malformed_conditions_are_refused(text: str) -> None:
    with pytest.raises(FilterError) as info:
        parse("agent_id", text)
    assert isinstance(info.value, ValueError)
    assert "'agent_id'" in str(info.value) and repr(text) in str(info.value)


@pytest.mark.parametrize(
    ("column", "text", "reason"),
    [
        ("nope", "= 5", "unknown column"),
        ("agent_id; DROP TABLE x", "= 5", "unknown column"),
        ('agent_id" = 1 OR "1', "= 5", "unknown column"),
        ("agent_id", "= 'five'", "needs a number"),
        ("agent_id", "= TRUE", "needs a number"),
        ("episode_id", "= 5", "'quoted'"),
        ("action_success", "= 1", "TRUE or FALSE"),
        ("date", "= '2025-13-01'", "YYYY-MM-DD"),
        ("date", "= 20251014", "YYYY-MM-DD"),
        ("inventory", "= 1", "IS NULL"),
        ("episode_id", "IN ('a', 1)", "'quoted'"),
    ],
)
def test_unknown_columns_and_wrong_types_are_refused(column: str, text: str, reason: str) -> None:
    with pytest.raises(FilterError, match=re.escape(reason)) as info:
        parse(column, text)
    assert repr(column) in str(info.value)


def test_non_string_filters_are_refused() -> None:
    with pytest.raises(FilterError):
        parse_filters({"agent_id": 5}, SCHEMA)  # type: ignore[dict-item]
    with pytest.raises(FilterError):
        parse_filters("agent_id = 5", SCHEMA)  # type: ignore[arg-type]


def test_mutated_conditions_either_fail_or_render_only_placeholders() -> None:
    """Valid conditions with random tokens inserted, dropped or swapped: whatever is still accepted
    renders to a fixed template, so no input character reaches the SQL text."""
    valid = ["= 1", "IN (1, -2, 3.5)", "NOT IN (1)", "BETWEEN 1 AND 2", "IS NOT NULL", "IS NULL", ">= -2"]
    noise = [
        "=", "!=", "<", ">=", "IN", "NOT", "BETWEEN", "AND", "OR", "IS", "NULL", "(", ")", ",", "1",
        "-2", "3.5", "'a'", "'", ";", "--", "SELECT", "abs", "DROP", "TRUE", "/*", "x", "1=1",
    ]  # fmt: skip
    template = re.compile(
        r'^"agent_id" (?:(?:=|!=|<|>|<=|>=) \?|(?:NOT )?IN \(\?(?:, \?)*\)|(?:NOT )?BETWEEN \? AND \?'
        r"|IS (?:NOT )?NULL)$"
    )
    rng = random.Random(1234)
    accepted = refused = 0
    for _ in range(5000):
        tokens = rng.choice(valid).replace("(", " ( ").replace(")", " ) ").replace(",", " , ").split()
        for _ in range(rng.randint(0, 2)):
            at = rng.randrange(len(tokens) + 1)
            action = rng.choice(["insert", "drop", "swap"])
            if action == "insert" or not tokens:
                tokens.insert(at, rng.choice(noise))
            elif action == "drop":
                del tokens[min(at, len(tokens) - 1)]
            else:
                tokens[min(at, len(tokens) - 1)] = rng.choice(noise)
        text = " ".join(tokens)
        try:
            condition = parse("agent_id", text)
        except FilterError:
            refused += 1
            continue
        accepted += 1
        sql, params = condition.sql()
        assert template.match(sql), (text, sql)
        assert sql.count("?") == len(params)
        assert all(isinstance(p, int | float) and not isinstance(p, bool) for p in params)
        assert not re.search(r"(?i)\b(OR|SELECT|DROP|abs)\b|;|--|/\*", text), text
    assert accepted > 500 and refused > 500  # both paths exercised


# ---------------------------------------------------------------------------------------------------------
# Both renderings select the same rows, and bound values never execute


@pytest.fixture(scope="module")
def rows() -> pa.Table:
    return pa.table(
        {
            "agent_id": pa.array([0, 1, 2, 3, None, 5], pa.int32()),
            "reward": pa.array([0.1, 0.25, -1.0, 0.0, 2.0, None], pa.float32()),
            "episode_id": pa.array(["a", "b'c", "a", None, "x; DROP TABLE victim; --", "b"]),
            "action_success": pa.array([True, False, None, True, False, True]),
            "date": pa.array([dt.date(2025, 10, d) for d in (14, 14, 15, 16, 17, 17)], pa.date32()),
        }
    )


@pytest.mark.parametrize(
    "filters",
    [
        {"agent_id": "= 2"},
        {"agent_id": "!= 2"},
        {"agent_id": "IN (1, 3, 5)"},
        {"agent_id": "NOT IN (1, 3)"},
        {"agent_id": "IN (1.0, 2.5)"},
        {"agent_id": "BETWEEN 1 AND 3"},
        {"agent_id": "NOT BETWEEN 1 AND 3"},
        {"agent_id": "IS NULL"},
        {"agent_id": "IS NOT NULL", "reward": "> 0"},
        {"reward": "= 0.1"},
        {"reward": "IN (0.1, 0.25)"},
        {"reward": "<= 0.25"},
        {"episode_id": "= 'b''c'"},
        {"episode_id": "IN ('a', 'b')"},
        {"episode_id": "< 'b'"},
        {"episode_id": "= 'x; DROP TABLE victim; --'"},
        {"action_success": "= TRUE"},
        {"date": "BETWEEN '2025-10-15' AND '2025-10-16'"},
        {"date": "IN ('2025-10-14', '2025-10-17')", "action_success": "!= FALSE"},
    ],
)
def test_arrow_and_duckdb_renderings_agree(rows: pa.Table, filters: dict[str, str]) -> None:
    conditions = parse_filters(filters, SCHEMA)
    by_arrow = rows.filter(filters_expression(conditions)).to_pylist()
    conn = duckdb.connect()
    conn.register("samples", rows)
    where, params = filters_sql(conditions)
    by_duckdb = conn.execute(f"SELECT * FROM samples WHERE {where}", params).to_arrow_table().to_pylist()
    assert by_arrow == by_duckdb


@pytest.mark.parametrize(
    "payload",
    [
        "x'; DROP TABLE victim; --",
        "'); DROP TABLE victim; --",
        "x' OR '1'='1",
        "\\'; DROP TABLE victim; --",
        'x"; DROP TABLE victim; --',
    ],
)
def test_string_values_are_bound_not_executed(payload: str) -> None:
    literal = "'" + payload.replace("'", "''") + "'"
    condition = parse("episode_id", f"= {literal}")
    assert condition.values == (payload,)
    conn = duckdb.connect()
    conn.execute("CREATE TABLE victim (episode_id VARCHAR)")
    conn.execute("INSERT INTO victim VALUES ('a'), ('b')")
    sql, params = condition.sql()
    assert payload not in sql
    assert conn.execute(f"SELECT count(*) FROM victim WHERE {sql}", params).fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM victim").fetchone() == (2,)  # still there, untouched
