"""The loaders' ``filters={"column": "condition"}`` mini-language, parsed, never pasted into SQL.

The original tool glued ``f"{column} {condition}"`` into a query, so ``{"agent_id": "= 5 OR 1=1"}``
ran as SQL. Here each condition goes through a tiny tokenizer and a strict grammar::

    condition := ("=" | "!=" | "<>" | "<" | ">" | "<=" | ">=") literal
               | ["NOT"] "IN" "(" literal ("," literal)* ")"
               | ["NOT"] "BETWEEN" literal "AND" literal
               | "IS" ["NOT"] "NULL"
    literal   := number | 'single-quoted string' ('' escapes a quote) | TRUE | FALSE

Keywords are case-insensitive; anything else (OR, sub-queries, function calls, comments, ``;``,
trailing tokens) is a ``FilterError`` (a ``ValueError``) naming the column and the text. Literals are
checked against the column's type in the schema, then rendered either as a ``pyarrow.compute``
expression or as a SQL fragment with ``?`` placeholders and a parameter list, so the values only
ever travel as bound parameters.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import reduce
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "Condition",
    "FilterError",
    "filters_expression",
    "filters_sql",
    "parse_filter",
    "parse_filters",
]

Value = bool | int | float | str | dt.date
Op = Literal["=", "!=", "<", ">", "<=", ">=", "in", "between", "is_null"]

_COMPARISONS = {"=": "=", "!=": "!=", "<>": "!=", "<": "<", ">": ">", "<=": "<=", ">=": ">="}
_KEYWORDS = frozenset({"IN", "NOT", "BETWEEN", "AND", "IS", "NULL", "TRUE", "FALSE"})
_DIGITS = frozenset("0123456789")  # not str.isdigit: that accepts '²' and other Unicode digits
_WORD_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_WORD_CHARS = _WORD_START | _DIGITS
_WHITESPACE = frozenset(" \t\r\n")
_INT64 = (-(2**63), 2**63 - 1)


class FilterError(ValueError):
    """A filter that is not in the grammar, names an unknown column, or has a value of the wrong type."""

    def __init__(self, column: object, text: object, reason: str) -> None:
        super().__init__(f"invalid filter {column!r}: {text!r}: {reason}")
        self.column = column
        self.text = text
        self.reason = reason


# ---------------------------------------------------------------------------------------------------------
# Tokens


@dataclass(frozen=True)
class _Token:
    kind: Literal["number", "string", "word", "op", "punct"]
    text: str  # the keyword upper-cased, the operator, the punctuation, the number's digits
    value: Value | None = None


class _Reject(Exception):
    """Raised inside the tokenizer/parser; turned into a FilterError that names the filter."""


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in _WHITESPACE:
            i += 1
        elif ch == "'":
            i = _string(text, i, tokens)
        elif ch in _DIGITS or (ch in "-." and i + 1 < n and (text[i + 1] in _DIGITS or text[i + 1] == ".")):
            i = _number(text, i, tokens)
        elif ch in _WORD_START:
            j = i
            while j < n and text[j] in _WORD_CHARS:
                j += 1
            word = text[i:j].upper()
            if word not in _KEYWORDS:
                raise _Reject(f"unexpected word {text[i:j]!r} at position {i}")
            tokens.append(_Token("word", word))
            i = j
        elif text.startswith(("<=", ">=", "!=", "<>"), i):
            tokens.append(_Token("op", text[i : i + 2]))
            i += 2
        elif ch in "=<>":
            tokens.append(_Token("op", ch))
            i += 1
        elif ch in "(),":
            tokens.append(_Token("punct", ch))
            i += 1
        else:
            raise _Reject(f"unexpected character {ch!r} at position {i}")
    return tokens


def _string(text: str, start: int, tokens: list[_Token]) -> int:
    chars: list[str] = []
    i = start + 1
    while i < len(text):
        if text[i] == "'":
            if text.startswith("''", i):
                chars.append("'")
                i += 2
                continue
            tokens.append(_Token("string", text[start : i + 1], "".join(chars)))
            return i + 1
        chars.append(text[i])
        i += 1
    raise _Reject(f"unterminated string starting at position {start}")


def _number(text: str, start: int, tokens: list[_Token]) -> int:
    i = start + 1 if text[start] == "-" else start
    digits_start = i
    while i < len(text) and text[i] in _DIGITS:
        i += 1
    is_float = False
    if i < len(text) and text[i] == ".":
        is_float = True
        i += 1
        while i < len(text) and text[i] in _DIGITS:
            i += 1
    if i < len(text) and text[i] in "eE":
        is_float = True
        i += 1
        if i < len(text) and text[i] in "+-":
            i += 1
        exponent_start = i
        while i < len(text) and text[i] in _DIGITS:
            i += 1
        if i == exponent_start:
            raise _Reject(f"malformed number at position {start}")
    literal = text[start:i]
    if i == digits_start or literal in ("-", ".", "-.") or (i < len(text) and text[i] in _WORD_CHARS | {"."}):
        raise _Reject(f"malformed number at position {start}")
    if is_float:
        value: int | float = float(literal)
        if not math.isfinite(value):
            raise _Reject(f"number out of range: {literal}")
    else:
        value = int(literal)
        if not _INT64[0] <= value <= _INT64[1]:
            raise _Reject(f"integer out of the 64-bit range: {literal}")
    tokens.append(_Token("number", literal, value))
    return i


# ---------------------------------------------------------------------------------------------------------
# Grammar


class _Parser:
    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.pos = 0

    def peek(self) -> _Token | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> _Token:
        token = self.peek()
        if token is None:
            raise _Reject("unexpected end of condition")
        self.pos += 1
        return token

    def keyword(self, word: str) -> bool:
        token = self.peek()
        if token is not None and token.kind == "word" and token.text == word:
            self.pos += 1
            return True
        return False

    def expect(self, kind: str, text: str) -> None:
        token = self.take()
        if token.kind != kind or token.text != text:
            raise _Reject(f"expected {text!r}, found {token.text!r}")

    def literal(self) -> Value:
        token = self.take()
        if token.kind in ("number", "string"):
            assert token.value is not None
            return token.value
        if token.kind == "word" and token.text in ("TRUE", "FALSE"):
            return token.text == "TRUE"
        if token.kind == "word" and token.text == "NULL":
            raise _Reject("NULL is not a value: use IS NULL / IS NOT NULL")
        raise _Reject(f"expected a number, a 'string', TRUE or FALSE, found {token.text!r}")

    def condition(self) -> tuple[Op, tuple[Value, ...], bool]:
        token = self.take()
        if token.kind == "op":
            return _COMPARISONS[token.text], (self.literal(),), False  # type: ignore[return-value]
        if token.kind == "word" and token.text == "IS":
            negated = self.keyword("NOT")
            self.expect("word", "NULL")
            return "is_null", (), negated
        negated = token.kind == "word" and token.text == "NOT"
        if negated:
            token = self.take()
        if token.kind == "word" and token.text == "IN":
            self.expect("punct", "(")
            values = [self.literal()]
            while self.peek() is not None and self.peek() == _Token("punct", ","):
                self.take()
                values.append(self.literal())
            self.expect("punct", ")")
            return "in", tuple(values), negated
        if token.kind == "word" and token.text == "BETWEEN":
            low = self.literal()
            self.expect("word", "AND")
            return "between", (low, self.literal()), negated
        raise _Reject(f"expected a comparison, IN, BETWEEN or IS, found {token.text!r}")

    def end(self) -> None:
        token = self.peek()
        if token is not None:
            raise _Reject(f"unexpected {token.text!r} after the condition")


# ---------------------------------------------------------------------------------------------------------
# Typed condition


@dataclass(frozen=True)
class Condition:
    """One parsed filter: ``column op values``, values already of the column's Python type."""

    column: str
    op: Op
    values: tuple[Value, ...]
    negated: bool  # NOT IN, NOT BETWEEN, IS NOT NULL
    type: pa.DataType

    def expression(self) -> pc.Expression:
        """The condition as a pyarrow compute expression (pushed down to Parquet row-group stats)."""
        field = pc.field(self.column)
        if self.op == "is_null":
            return field.is_valid() if self.negated else field.is_null()
        if self.op == "in":
            # Compare like `=` does: floats (either side) as float64, so `IN (0.1)` == `= 0.1`.
            as_float = pa.types.is_floating(self.type) or any(isinstance(v, float) for v in self.values)
            value_type = pa.float64() if as_float else _arrow_type(self.type)
            subject = field.cast(pa.float64()) if as_float else field
            test = subject.isin(pa.array(self.values, type=value_type))
            # SQL: `NULL NOT IN (...)` is NULL, so the row is dropped; pyarrow's ~isin would keep it.
            return (~test & field.is_valid()) if self.negated else test
        if self.op == "between":
            low, high = (pa.scalar(v) for v in self.values)
            test = (field >= low) & (field <= high)
            return ~test if self.negated else test
        value = pa.scalar(self.values[0])
        return {
            "=": field == value,
            "!=": field != value,
            "<": field < value,
            ">": field > value,
            "<=": field <= value,
            ">=": field >= value,
        }[self.op]

    def sql(self) -> tuple[str, list[Value]]:
        """``('"col" IN (?, ?)', [1, 2])``: a fragment for DuckDB (or any DB-API driver) and its params."""
        column = '"' + self.column.replace('"', '""') + '"'
        not_ = "NOT " if self.negated else ""
        if self.op == "is_null":
            return f"{column} IS {not_}NULL", []
        if self.op == "in":
            marks = ", ".join("?" for _ in self.values)
            return f"{column} {not_}IN ({marks})", list(self.values)
        if self.op == "between":
            return f"{column} {not_}BETWEEN ? AND ?", list(self.values)
        return f"{column} {self.op} ?", list(self.values)


def _arrow_type(column_type: pa.DataType) -> pa.DataType:
    if pa.types.is_dictionary(column_type):
        return _arrow_type(column_type.value_type)
    if pa.types.is_integer(column_type):
        return pa.int64()
    if pa.types.is_string(column_type) or pa.types.is_large_string(column_type):
        return pa.string()
    return column_type


def _coerce(value: Value, column_type: pa.DataType) -> Value:
    """Check a literal against the column type; dates arrive as 'YYYY-MM-DD' strings."""
    kind = _arrow_type(column_type)
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Reject(f"{column_type} column needs a number, got {value!r}")
        return value
    if pa.types.is_string(kind):
        if not isinstance(value, str):
            raise _Reject(f"string column needs a 'quoted' value, got {value!r}")
        return value
    if pa.types.is_boolean(kind):
        if not isinstance(value, bool):
            raise _Reject(f"bool column needs TRUE or FALSE, got {value!r}")
        return value
    if pa.types.is_date(kind):
        if not isinstance(value, str):
            raise _Reject(f"date column needs a 'YYYY-MM-DD' value, got {value!r}")
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            raise _Reject(f"date column needs a 'YYYY-MM-DD' value, got {value!r}") from None
    raise _Reject(f"{column_type} columns support only IS NULL / IS NOT NULL")


def parse_filter(column: str, text: str, schema: pa.Schema) -> Condition:
    """Parse one ``column -> condition`` pair against ``schema``; raise ``FilterError`` on anything else."""
    if not isinstance(column, str) or not isinstance(text, str):
        raise FilterError(column, text, "column and condition must both be strings")
    index = schema.get_field_index(column)
    if index < 0:
        raise FilterError(column, text, f"unknown column (known: {', '.join(schema.names)})")
    column_type = schema.field(index).type
    try:
        parser = _Parser(_tokenize(text))
        op, values, negated = parser.condition()
        parser.end()
        values = tuple(_coerce(value, column_type) for value in values)
    except _Reject as exc:
        raise FilterError(column, text, str(exc)) from None
    return Condition(column=column, op=op, values=values, negated=negated, type=column_type)


def parse_filters(filters: Mapping[str, str] | None, schema: pa.Schema) -> list[Condition]:
    """Every condition of a ``filters`` dict; they combine with AND."""
    if filters is None:
        return []
    if not isinstance(filters, Mapping):
        raise FilterError(filters, "", 'filters must be a dict like {"agent_id": "= 5"}')
    return [parse_filter(column, text, schema) for column, text in filters.items()]


def filters_expression(conditions: list[Condition]) -> pc.Expression | None:
    """All conditions ANDed as one pyarrow expression, or None when there are none."""
    if not conditions:
        return None
    return reduce(lambda left, right: left & right, (c.expression() for c in conditions))


def filters_sql(conditions: list[Condition]) -> tuple[str, list[Value]]:
    """All conditions ANDed as ``(sql_with_placeholders, params)``; ``("TRUE", [])`` when there are none."""
    if not conditions:
        return "TRUE", []
    fragments, params = [], []
    for condition in conditions:
        fragment, values = condition.sql()
        fragments.append(f"({fragment})")
        params.extend(values)
    return " AND ".join(fragments), params
