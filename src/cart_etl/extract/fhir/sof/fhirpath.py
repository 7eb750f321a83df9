"""A FHIRPath parser for the subset SQL on FHIR v2 view runners use.

The grammar and operator precedence follow the FHIRPath N1 specification
(https://hl7.org/fhirpath/#grammar, "Operator precedence"); the functions a runner
must know are listed in SQL on FHIR v2, *ViewDefinition* "FHIRPath Functionality" and
*ShareableViewDefinition* "Required FHIRPath Expressions/Functions".  This module only
parses: :mod:`cart_etl.extract.fhir.sof.compile` turns the tree into DuckDB SQL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "Binary",
    "Call",
    "FhirPathSyntaxError",
    "Ident",
    "Index",
    "Literal",
    "Member",
    "Node",
    "This",
    "Unary",
    "Var",
    "parse",
]


class FhirPathSyntaxError(ValueError):
    """The expression is not valid FHIRPath (or uses syntax this parser lacks)."""


@dataclass(frozen=True)
class Literal:
    """A literal: ``type`` is string, integer, decimal, boolean, date, dateTime, time
    or ``empty`` (``{}``)."""

    type: str
    value: str | int | float | bool | None


@dataclass(frozen=True)
class Ident:
    """A bare identifier: a member of the focus (or a type name, as an argument)."""

    name: str


@dataclass(frozen=True)
class This:
    """``$this`` (and ``$index``/``$total`` are rejected)."""


@dataclass(frozen=True)
class Var:
    """An external constant ``%name`` (constants, ``%rowIndex``, ``%resource``)."""

    name: str


@dataclass(frozen=True)
class Member:
    """``target.name``."""

    target: Node
    name: str


@dataclass(frozen=True)
class Call:
    """``target.fn(args)``; ``target`` is None for a call on the focus (``exists()``)."""

    target: Node | None
    name: str
    args: tuple[Node, ...]


@dataclass(frozen=True)
class Index:
    """``target[index]``."""

    target: Node
    index: Node


@dataclass(frozen=True)
class Unary:
    """Unary ``+``/``-``."""

    op: str
    operand: Node


@dataclass(frozen=True)
class Binary:
    """An infix operator (FHIRPath §6)."""

    op: str
    left: Node
    right: Node


Node = Literal | Ident | This | Var | Member | Call | Index | Unary | Binary

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+|//[^\n]*|/\*.*?\*/)
  | (?P<str>'(?:[^'\\]|\\.)*')
  | (?P<bq>`(?:[^`\\]|\\.)*`)
  | (?P<dt>@T?[0-9][0-9:\-T.+Z]*)
  | (?P<num>[0-9]+(?:\.[0-9]+)?)
  | (?P<ext>%(?:[A-Za-z_][A-Za-z0-9_]*|`(?:[^`\\]|\\.)*`|'(?:[^'\\]|\\.)*'))
  | (?P<dollar>\$[A-Za-z]+)
  | (?P<id>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op><=|>=|!=|!~|[-+*/&|<>=~.,()\[\]{}])
    """,
    re.VERBOSE | re.DOTALL,
)

# Binding powers, FHIRPath "Operator precedence" (higher binds tighter).
_INFIX: dict[str, int] = {
    "implies": 1,
    "or": 2,
    "xor": 2,
    "and": 3,
    "in": 4,
    "contains": 4,
    "=": 5,
    "~": 5,
    "!=": 5,
    "!~": 5,
    "<": 6,
    ">": 6,
    "<=": 6,
    ">=": 6,
    "|": 7,
    "is": 8,
    "as": 8,
    "+": 9,
    "-": 9,
    "&": 9,
    "*": 10,
    "/": 10,
    "div": 10,
    "mod": 10,
}
_ESCAPES = {
    "'": "'",
    '"': '"',
    "`": "`",
    "\\": "\\",
    "/": "/",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
}


def _unescape(body: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            if nxt == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", body[i + 2 : i + 6]):
                out.append(chr(int(body[i + 2 : i + 6], 16)))
                i += 6
                continue
            out.append(_ESCAPES.get(nxt, nxt))
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


@dataclass(frozen=True)
class _Tok:
    kind: str
    text: str
    pos: int


def _tokenize(src: str) -> list[_Tok]:
    toks: list[_Tok] = []
    pos = 0
    while pos < len(src):
        m = _TOKEN.match(src, pos)
        if m is None:
            raise FhirPathSyntaxError(f"unexpected character {src[pos]!r} at {pos} in {src!r}")
        kind = m.lastgroup or ""
        if kind != "ws":
            toks.append(_Tok(kind, m.group(), pos))
        pos = m.end()
    toks.append(_Tok("eof", "", len(src)))
    return toks


class _Parser:
    def __init__(self, src: str) -> None:
        self.src = src
        self.toks = _tokenize(src)
        self.i = 0

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def next(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def expect(self, text: str) -> None:
        tok = self.next()
        if tok.text != text:
            raise FhirPathSyntaxError(f"expected {text!r} at {tok.pos} in {self.src!r}")

    def fail(self, tok: _Tok) -> FhirPathSyntaxError:
        what = repr(tok.text) if tok.text else "end of expression"
        return FhirPathSyntaxError(f"unexpected {what} at {tok.pos} in {self.src!r}")

    def infix_op(self) -> str | None:
        tok = self.peek()
        if tok.kind == "op" and tok.text in _INFIX:
            return tok.text
        if tok.kind == "id" and tok.text in _INFIX:
            return tok.text
        return None

    def expression(self, min_power: int = 0) -> Node:
        left = self.unary()
        while True:
            op = self.infix_op()
            if op is None or _INFIX[op] <= min_power:
                return left
            self.next()
            if op in ("is", "as"):
                right: Node = self.type_specifier()
            else:
                right = self.expression(_INFIX[op])
            left = Binary(op, left, right)

    def type_specifier(self) -> Node:
        tok = self.next()
        if tok.kind not in ("id", "bq"):
            raise self.fail(tok)
        name = tok.text if tok.kind == "id" else _unescape(tok.text[1:-1])
        while self.peek().text == "." and self.toks[self.i + 1].kind == "id":
            self.next()
            name = self.next().text  # FHIR.Patient -> Patient
        return Ident(name)

    def unary(self) -> Node:
        tok = self.peek()
        if tok.kind == "op" and tok.text in ("+", "-"):
            self.next()
            return Unary(tok.text, self.postfix(self.term()))
        return self.postfix(self.term())

    def postfix(self, node: Node) -> Node:
        while True:
            tok = self.peek()
            if tok.text == ".":
                self.next()
                name_tok = self.next()
                if name_tok.kind == "id":
                    name = name_tok.text
                elif name_tok.kind == "bq":
                    name = _unescape(name_tok.text[1:-1])
                else:
                    raise self.fail(name_tok)
                if self.peek().text == "(" and name_tok.kind == "id":
                    node = Call(node, name, self.arguments())
                else:
                    node = Member(node, name)
            elif tok.text == "[":
                self.next()
                idx = self.expression()
                self.expect("]")
                node = Index(node, idx)
            else:
                return node

    def arguments(self) -> tuple[Node, ...]:
        self.expect("(")
        args: list[Node] = []
        if self.peek().text != ")":
            args.append(self.expression())
            while self.peek().text == ",":
                self.next()
                args.append(self.expression())
        self.expect(")")
        return tuple(args)

    def term(self) -> Node:
        tok = self.next()
        if tok.kind == "str":
            return Literal("string", _unescape(tok.text[1:-1]))
        if tok.kind == "num":
            if "." in tok.text:
                return Literal("decimal", float(tok.text))
            return Literal("integer", int(tok.text))
        if tok.kind == "dt":
            return _date_literal(tok.text, self.src)
        if tok.kind == "ext":
            body = tok.text[1:]
            if body[0] in "`'":
                body = _unescape(body[1:-1])
            return Var(body)
        if tok.kind == "dollar":
            if tok.text == "$this":
                return This()
            raise FhirPathSyntaxError(f"{tok.text} is not supported (in {self.src!r})")
        if tok.kind == "bq":
            return Ident(_unescape(tok.text[1:-1]))
        if tok.kind == "id":
            if tok.text in ("true", "false"):
                return Literal("boolean", tok.text == "true")
            if self.peek().text == "(":
                return Call(None, tok.text, self.arguments())
            return Ident(tok.text)
        if tok.text == "(":
            inner = self.expression()
            self.expect(")")
            return inner
        if tok.text == "{":
            self.expect("}")
            return Literal("empty", None)
        raise self.fail(tok)


_DATE = re.compile(r"@\d{4}(-\d{2}(-\d{2})?)?")
_DATETIME = re.compile(r"@\d{4}(-\d{2}(-\d{2})?)?T([0-9:.]*)(Z|[+-]\d{2}:\d{2})?")
_TIME = re.compile(r"@T\d{2}(:\d{2}(:\d{2}(\.\d+)?)?)?")


def _date_literal(text: str, src: str) -> Literal:
    if _TIME.fullmatch(text):
        return Literal("time", text[2:])
    if _DATE.fullmatch(text):
        return Literal("date", text[1:])
    if _DATETIME.fullmatch(text):
        return Literal("dateTime", text[1:].rstrip("T"))
    raise FhirPathSyntaxError(f"bad date/time literal {text!r} in {src!r}")


def parse(src: str) -> Node:
    """Parse a FHIRPath expression; raise :class:`FhirPathSyntaxError` when invalid."""
    if not isinstance(src, str) or not src.strip():
        raise FhirPathSyntaxError(f"a FHIRPath expression must be a non-empty string, not {src!r}")
    parser = _Parser(src)
    node = parser.expression()
    tok = parser.peek()
    if tok.kind != "eof":
        raise parser.fail(tok)
    return node
