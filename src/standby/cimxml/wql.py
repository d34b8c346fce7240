"""The WQL subset WMI scripts use, for ``ExecQuery``: parse, check against a class, filter, project.

Grammar (keywords case-insensitive)::

    query      := SELECT ( "*" | name ("," name)* ) FROM classname [ WHERE or_expr ]
    or_expr    := and_expr ( OR and_expr )*
    and_expr   := unary ( AND unary )*
    unary      := NOT unary | "(" or_expr ")" | name IS [NOT] NULL | name op literal | literal op name
    op         := "=" | "<>" | "!=" | "<" | ">" | "<=" | ">="
    literal    := 'text' | "text" | number | TRUE | FALSE | NULL

Strings compare case-insensitively, as WMI does; a comparison with NULL is false (use ``IS [NOT] NULL``);
numbers compare numerically, also against a string property holding a number.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pywbem import CIMInstance


class WqlError(ValueError):
    """The query is not in the supported subset or names something the class does not have."""


@dataclass(frozen=True, slots=True)
class Comparison:
    """``prop op literal`` (a reversed ``literal op prop`` is normalised to this form)."""

    prop: str
    op: str
    value: Any


@dataclass(frozen=True, slots=True)
class NullTest:
    """``prop IS [NOT] NULL``."""

    prop: str
    negated: bool


@dataclass(frozen=True, slots=True)
class BoolOp:
    """``AND`` / ``OR`` over two or more terms."""

    op: str
    terms: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Not:
    """``NOT term``."""

    term: Expr


Expr = Comparison | NullTest | BoolOp | Not


@dataclass(frozen=True, slots=True)
class Query:
    """A parsed query; ``properties`` is None for ``SELECT *``."""

    classname: str
    properties: tuple[str, ...] | None
    where: Expr | None

    def referenced_properties(self) -> set[str]:
        """Every property name the query mentions (select list and WHERE), as written."""
        names = set(self.properties or ())
        if self.where is not None:
            names |= _expr_props(self.where)
        return names


_TOKEN = re.compile(
    r"""\s*(?:
        (?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
      | (?P<num>[-+]?(?:0[xX][0-9a-fA-F]+|(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?))
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<op><>|!=|<=|>=|=|<|>)
      | (?P<punct>[(),*])
    )""",
    re.VERBOSE,
)
_OPS = frozenset({"=", "<>", "!=", "<", ">", "<=", ">="})
_REVERSED = {"<": ">", ">": "<", "<=": ">=", ">=": "<=", "=": "=", "<>": "<>", "!=": "!="}
_KEYWORDS = frozenset({"SELECT", "FROM", "WHERE", "AND", "OR", "NOT", "IS", "NULL", "TRUE", "FALSE"})
_MAX_QUERY = 8192


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # str, num, name, kw, op, punct, end
    text: str
    value: Any = None


def _tokenize(text: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if m is None:
            raise WqlError(f"Unexpected character {text[pos:].lstrip()[:1]!r} at position {pos}")
        pos = m.end()
        kind = m.lastgroup or ""
        raw = m.group(kind)
        if kind == "str":
            tokens.append(_Tok("str", raw, re.sub(r"\\(.)", r"\1", raw[1:-1])))
        elif kind == "num":
            tokens.append(_Tok("num", raw, _number(raw)))
        elif kind == "name" and raw.upper() in _KEYWORDS:
            tokens.append(_Tok("kw", raw.upper()))
        else:
            tokens.append(_Tok(kind, raw))
    tokens.append(_Tok("end", "end of query"))
    return tokens


def _number(raw: str) -> int | float:
    body = raw.lstrip("+-")
    sign = -1 if raw.startswith("-") else 1
    if body.lower().startswith("0x"):
        return sign * int(body, 16)
    if any(c in body for c in ".eE"):
        return sign * float(body)
    return sign * int(body)


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.pos = 0

    def peek(self) -> _Tok:
        return self.tokens[self.pos]

    def take(self) -> _Tok:
        tok = self.tokens[self.pos]
        if tok.kind != "end":
            self.pos += 1
        return tok

    def accept(self, kind: str, text: str | None = None) -> _Tok | None:
        tok = self.peek()
        if tok.kind == kind and (text is None or tok.text == text):
            return self.take()
        return None

    def expect(self, kind: str, text: str | None = None, what: str = "") -> _Tok:
        tok = self.accept(kind, text)
        if tok is None:
            raise WqlError(f"Expected {what or text or kind} but found {self.peek().text!r}")
        return tok

    def query(self) -> Query:
        self.expect("kw", "SELECT")
        props: tuple[str, ...] | None
        if self.accept("punct", "*"):
            props = None
        else:
            names = [self.expect("name", what="a property name").text]
            while self.accept("punct", ","):
                names.append(self.expect("name", what="a property name").text)
            props = tuple(names)
        self.expect("kw", "FROM")
        classname = self.expect("name", what="a class name").text
        where = self.or_expr() if self.accept("kw", "WHERE") else None
        if self.peek().kind != "end":
            raise WqlError(f"Unexpected {self.peek().text!r} after the query")
        return Query(classname=classname, properties=props, where=where)

    def or_expr(self) -> Expr:
        terms = [self.and_expr()]
        while self.accept("kw", "OR"):
            terms.append(self.and_expr())
        return terms[0] if len(terms) == 1 else BoolOp("OR", tuple(terms))

    def and_expr(self) -> Expr:
        terms = [self.unary()]
        while self.accept("kw", "AND"):
            terms.append(self.unary())
        return terms[0] if len(terms) == 1 else BoolOp("AND", tuple(terms))

    def unary(self) -> Expr:
        if self.accept("kw", "NOT"):
            return Not(self.unary())
        if self.accept("punct", "("):
            inner = self.or_expr()
            self.expect("punct", ")")
            return inner
        if self.peek().kind == "name":
            prop = self.take().text
            if self.accept("kw", "IS"):
                negated = self.accept("kw", "NOT") is not None
                self.expect("kw", "NULL")
                return NullTest(prop, negated)
            op = self.expect("op", what="a comparison operator").text
            return Comparison(prop, op, self.literal())
        value = self.literal()
        op = self.expect("op", what="a comparison operator").text
        prop = self.expect("name", what="a property name").text
        return Comparison(prop, _REVERSED[op], value)

    def literal(self) -> Any:
        tok = self.take()
        if tok.kind in ("str", "num"):
            return tok.value
        if tok.kind == "kw" and tok.text in ("TRUE", "FALSE"):
            return tok.text == "TRUE"
        if tok.kind == "kw" and tok.text == "NULL":
            return None
        raise WqlError(f"Expected a value but found {tok.text!r}")


def parse(text: str) -> Query:
    """Parse a WQL query; raise :class:`WqlError` with a readable reason."""
    if len(text) > _MAX_QUERY:
        raise WqlError("The query is too long")
    return _Parser(text).query()


def check_properties(query: Query, known: Iterable[str]) -> None:
    """Raise :class:`WqlError` when the query names a property the class does not have."""
    lower = {k.lower() for k in known}
    unknown = sorted(p for p in query.referenced_properties() if p.lower() not in lower)
    if unknown:
        raise WqlError(f"Class {query.classname} has no property {', '.join(unknown)}")


def matches(expr: Expr | None, inst: CIMInstance) -> bool:
    """Whether the instance satisfies the WHERE clause (None matches everything)."""
    if expr is None:
        return True
    if isinstance(expr, BoolOp):
        results = (matches(t, inst) for t in expr.terms)
        return all(results) if expr.op == "AND" else any(results)
    if isinstance(expr, Not):
        return not matches(expr.term, inst)
    value = inst.get(expr.prop)
    if isinstance(expr, NullTest):
        return (value is not None) if expr.negated else (value is None)
    return _compare(value, expr.op, expr.value)


def project(inst: CIMInstance, properties: tuple[str, ...] | None) -> CIMInstance:
    """A copy of the instance reduced to the selected properties (all for ``*``), path kept."""
    if properties is None:
        return inst.copy()
    keep = {p.lower() for p in properties}
    reduced = inst.copy()
    for name in list(reduced.properties):
        if name.lower() not in keep:
            del reduced.properties[name]
    return reduced


_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: bool(a == b),
    "<>": lambda a, b: bool(a != b),
    "!=": lambda a, b: bool(a != b),
    "<": lambda a, b: bool(a < b),
    ">": lambda a, b: bool(a > b),
    "<=": lambda a, b: bool(a <= b),
    ">=": lambda a, b: bool(a >= b),
}


def _compare(actual: Any, op: str, literal: Any) -> bool:
    if actual is None or literal is None or isinstance(actual, list):
        return False
    left, right = _comparable(actual, literal)
    if left is None or right is None:
        return False
    try:
        return _ORDER[op](left, right)
    except TypeError:
        return False


def _comparable(actual: Any, literal: Any) -> tuple[Any, Any]:
    """Bring both sides to one Python type, or (None, None) when they cannot be compared."""
    if isinstance(literal, bool) or isinstance(actual, bool):
        return (_as_bool(actual), _as_bool(literal))
    if isinstance(literal, (int, float)):
        return (_as_number(actual), literal)
    if isinstance(actual, (int, float)):
        return (actual, _as_number(literal))
    return (str(actual).casefold(), str(literal).casefold())


def _as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.upper() in ("TRUE", "FALSE"):
        return value.upper() == "TRUE"
    return None


def _as_number(value: Any) -> int | float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    try:
        return _number(str(value).strip())
    except ValueError:
        return None


def _expr_props(expr: Expr) -> set[str]:
    if isinstance(expr, BoolOp):
        return set().union(*(_expr_props(t) for t in expr.terms))
    if isinstance(expr, Not):
        return _expr_props(expr.term)
    return {expr.prop}
