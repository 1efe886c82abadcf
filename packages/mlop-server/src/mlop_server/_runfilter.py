"""The runs table's filter language: ``lr < 0.01 and "baseline" in tags and status == "COMPLETED"``.

Grammar (keywords in any case)::

    expr    := and ("or" and)*
    and     := unary ("and" unary)*
    unary   := "not" unary | "(" expr ")" | test
    test    := value ["not"] "in" "tags"
             | column op value | value op column
             | column ["not"] "in" "(" value ("," value)* ")"
             | column "contains" string
    op      := "==" | "=" | "!=" | "<" | "<=" | ">" | ">="
    value   := string | number | "true" | "false" | "null"
    column  := name ("." name)* | `any text`

A string is in double or single quotes (backslash escapes the next character). A column name is letters,
digits and ``_ . / - :``, starting with a letter or ``_``; backticks quote any other name. A bad expression
raises :class:`FilterError` with the 0-based character position where it went wrong.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Final, TypeAlias

__all__ = [
    "And",
    "Compare",
    "Contains",
    "FilterError",
    "InList",
    "Not",
    "Or",
    "TagIn",
    "Value",
    "columns_of",
    "parse_filter",
]

logger = logging.getLogger(__name__)

#: The longest filter accepted (characters).
MAX_FILTER: Final = 4000
#: The deepest nesting of parentheses and ``not``.
MAX_DEPTH: Final = 64

Value: TypeAlias = "str | float | bool | None"


class FilterError(ValueError):
    """A filter expression that cannot be read; ``position`` is where (0-based), ``message`` says why."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"{message} (at position {position})")
        self.message = message
        self.position = position


@dataclass(frozen=True)
class Compare:
    """``column op value``."""

    column: str
    op: str
    value: Value
    position: int


@dataclass(frozen=True)
class InList:
    """``column in (v, ...)``."""

    column: str
    values: tuple[Value, ...]
    position: int


@dataclass(frozen=True)
class Contains:
    """``column contains "text"``: the column's text holds the string."""

    column: str
    text: str
    position: int


@dataclass(frozen=True)
class TagIn:
    """``"tag" in tags``."""

    tag: str


@dataclass(frozen=True)
class Not:
    item: Node


@dataclass(frozen=True)
class And:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    items: tuple[Node, ...]


Node: TypeAlias = "Compare | InList | Contains | TagIn | Not | And | Or"

_TOKEN: Final = re.compile(
    r"""(?P<space>\s+)
      | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<quoted>`[^`]*`)
      | (?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?![\w.]))
      | (?P<op>==|!=|<=|>=|<|>|=)
      | (?P<punct>[(),])
      | (?P<name>[A-Za-z_][\w./:\-]*)
    """,
    re.VERBOSE,
)
_KEYWORDS: Final = frozenset({"and", "or", "not", "in", "true", "false", "null", "contains"})
_FLIP: Final = {"<": ">", ">": "<", "<=": ">=", ">=": "<=", "==": "==", "!=": "!="}


@dataclass(frozen=True)
class _Tok:
    kind: str  # string, number, op, punct, name, keyword, end
    text: str
    value: Value
    pos: int


def _unescape(body: str) -> str:
    return re.sub(r"\\(.)", r"\1", body)


def _tokens(text: str) -> list[_Tok]:
    out: list[_Tok] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            ch = text[pos]
            if ch in "\"'":
                raise FilterError(f"the string that starts here has no closing {ch}", pos)
            if ch == "`":
                raise FilterError("the `quoted name` that starts here has no closing `", pos)
            raise FilterError(f"unexpected character {ch!r}", pos)
        kind = match.lastgroup
        raw = match.group()
        assert kind is not None
        if kind == "string":
            out.append(_Tok("string", raw, _unescape(raw[1:-1]), pos))
        elif kind == "quoted":
            out.append(_Tok("name", raw, raw[1:-1], pos))
        elif kind == "number":
            out.append(_Tok("number", raw, float(raw), pos))
        elif kind == "name" and raw.lower() in _KEYWORDS:
            out.append(_Tok("keyword", raw.lower(), None, pos))
        elif kind != "space":
            out.append(_Tok(kind, raw, raw, pos))
        pos = match.end()
    out.append(_Tok("end", "", None, len(text)))
    return out


def _shown(tok: _Tok) -> str:
    return "the end" if tok.kind == "end" else repr(tok.text)


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0
        self.depth = 0

    @property
    def tok(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def keyword(self, *words: str) -> bool:
        if self.tok.kind == "keyword" and self.tok.text in words:
            self.i += 1
            return True
        return False

    def expect(self, what: str, ok: bool) -> None:
        if not ok:
            raise FilterError(f"expected {what}, found {_shown(self.tok)}", self.tok.pos)

    def parse(self) -> Node:
        node = self.expr()
        self.expect("'and', 'or' or the end", self.tok.kind == "end")
        return node

    def expr(self) -> Node:
        items = [self.conj()]
        while self.keyword("or"):
            items.append(self.conj())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def conj(self) -> Node:
        items = [self.unary()]
        while self.keyword("and"):
            items.append(self.unary())
        return items[0] if len(items) == 1 else And(tuple(items))

    def unary(self) -> Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise FilterError(f"nested deeper than {MAX_DEPTH}", self.tok.pos)
        try:
            if self.keyword("not"):
                return Not(self.unary())
            if self.tok.kind == "punct" and self.tok.text == "(":
                self.take()
                node = self.expr()
                self.expect("')'", self.tok.kind == "punct" and self.tok.text == ")")
                self.take()
                return node
            return self.test()
        finally:
            self.depth -= 1

    def value(self) -> tuple[bool, Value]:
        tok = self.tok
        if tok.kind in ("string", "number"):
            self.take()
            return True, tok.value
        if tok.kind == "keyword" and tok.text in ("true", "false", "null"):
            self.take()
            return True, {"true": True, "false": False, "null": None}[tok.text]
        return False, None

    def test(self) -> Node:
        start = self.tok
        if start.kind == "name":
            self.take()
            return self.after_column(start)
        is_value, value = self.value()
        self.expect("a column name, a value or '('", is_value)
        negate = self.keyword("not")
        if self.keyword("in"):
            tags = self.tok
            self.expect("'tags' after 'in'", tags.kind == "name" and tags.text == "tags")
            self.take()
            if not isinstance(value, str):
                raise FilterError('a tag is a string: write "name" in tags', start.pos)
            node: Node = TagIn(value)
            return Not(node) if negate else node
        self.expect("'in tags' or a comparison", not negate and self.tok.kind == "op")
        op = self.take().text
        column = self.tok
        self.expect("a column name after the comparison", column.kind == "name")
        self.take()
        return Compare(str(column.value), _FLIP[_norm(op)], value, start.pos)

    def after_column(self, column: _Tok) -> Node:
        name = str(column.value)
        if self.tok.kind == "op":
            op = _norm(self.take().text)
            is_value, value = self.value()
            self.expect('a value (a number, a "string", true, false or null)', is_value)
            return Compare(name, op, value, column.pos)
        if self.keyword("contains"):
            text = self.tok
            self.expect("a \"string\" after 'contains'", text.kind == "string")
            self.take()
            return Contains(name, str(text.value), column.pos)
        negate = self.keyword("not")
        if self.keyword("in"):
            self.expect("'(' and a list of values", self.tok.kind == "punct" and self.tok.text == "(")
            self.take()
            values: list[Value] = []
            while True:
                is_value, value = self.value()
                self.expect("a value in the list", is_value)
                values.append(value)
                if self.tok.kind == "punct" and self.tok.text == ",":
                    self.take()
                    continue
                self.expect("',' or ')'", self.tok.kind == "punct" and self.tok.text == ")")
                self.take()
                break
            node: Node = InList(name, tuple(values), column.pos)
            return Not(node) if negate else node
        self.expect("a comparison (==, !=, <, <=, >, >=), 'in' or 'contains' after the column", False)
        raise AssertionError("unreachable")


def _norm(op: str) -> str:
    return "==" if op == "=" else op


def parse_filter(text: str) -> Node | None:
    """The filter's syntax tree, or None for an empty filter.

    Raises:
        FilterError: the expression cannot be read; the message names the position.
    """
    if len(text) > MAX_FILTER:
        raise FilterError(f"the filter is longer than {MAX_FILTER} characters", MAX_FILTER)
    if not text.strip():
        return None
    return _Parser(text).parse()


def columns_of(node: Node | None) -> list[tuple[str, int]]:
    """Every column the filter names, with its position, in order."""
    out: list[tuple[str, int]] = []

    def walk(n: Node | None) -> None:
        if isinstance(n, (Compare, InList, Contains)):
            out.append((n.column, n.position))
        elif isinstance(n, Not):
            walk(n.item)
        elif isinstance(n, (And, Or)):
            for item in n.items:
                walk(item)

    walk(node)
    return out
