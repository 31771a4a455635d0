"""A subset of Go's text/template, enough for docker's `--format` strings.

Supported: `{{.A.B}}`, `{{.}}`, `{{$}}`, variables (`{{$x := .A}}`, `{{range $k, $v := .M}}`),
`{{range}}`/`{{if}}`/`{{with}}` with `{{else}}`, `{{end}}`, pipelines (`{{.A | json}}`),
parenthesised calls, trim markers `{{-`/`-}}`, and docker's functions: json, index,
join, split, upper, lower, title, len, printf, print, println, truncate, pad, eq, ne,
lt, le, gt, ge, not, and, or, table-free. Values are JSON-decoded data (dict, list,
str, int, float, bool, None) and print the way Go prints them (`map[a:1 b:2]`, `[x y]`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class TemplateError(Exception):
    """The template does not parse or cannot be executed on this data."""


class _Missing:
    """A map key that is not there (Go prints `<no value>`)."""

    def __repr__(self) -> str:
        return "<no value>"


MISSING = _Missing()


# --- printing ---------------------------------------------------------------------------

def go_str(value: Any) -> str:
    """How Go's fmt %v prints decoded JSON values."""
    if value is MISSING:
        return "<no value>"
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e21 else repr(value)
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{go_str(value[k])}" for k in sorted(value)) + "]"
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(go_str(v) for v in value) + "]"
    return str(value)


def _truthy(value: Any) -> bool:
    if value is MISSING or value is None:
        return False
    if isinstance(value, (bool, int, float, str, list, dict, tuple)):
        return bool(value)
    return True


# --- functions --------------------------------------------------------------------------

def _json(value: Any) -> str:
    if value is MISSING:
        value = None
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _index(value: Any, *keys: Any) -> Any:
    for key in keys:
        if isinstance(value, dict):
            value = value.get(key, MISSING)
        elif isinstance(value, (list, tuple)):
            try:
                value = value[int(key)]
            except (IndexError, ValueError) as exc:
                raise TemplateError(f"index out of range: {key}") from exc
        elif value is None or value is MISSING:
            raise TemplateError(f"index of untyped nil (key {key!r})")
        else:
            raise TemplateError(f"can't index item of type {type(value).__name__}")
    return value


def _printf(fmt: str, *args: Any) -> str:
    out, i = [], 0
    conv = re.compile(r"%([-+ 0#]*\d*(?:\.\d+)?)([vsdqfxXt%])")
    pos = 0
    for m in conv.finditer(fmt):
        out.append(fmt[pos:m.start()])
        pos = m.end()
        flags, verb = m.group(1), m.group(2)
        if verb == "%":
            out.append("%")
            continue
        arg = args[i] if i < len(args) else MISSING
        i += 1
        if verb in "vst":
            out.append(("%" + flags + "s") % go_str(arg))
        elif verb == "q":
            out.append(json.dumps(go_str(arg)))
        elif verb in "dxX":
            out.append(("%" + flags + verb) % int(arg))
        elif verb == "f":
            out.append(("%" + flags + "f") % float(arg))
    out.append(fmt[pos:])
    return "".join(out)


def _cmp(op: Callable[[Any, Any], bool]) -> Callable[..., bool]:
    def f(a: Any, *bs: Any) -> bool:
        return any(op(a, b) for b in bs) if op is _eq_op else op(a, bs[0])
    return f


def _eq_op(a: Any, b: Any) -> bool:
    return a == b


FUNCS: dict[str, Callable[..., Any]] = {
    "json": _json,
    "index": _index,
    "join": lambda items, sep: sep.join(go_str(i) for i in (items or [])),
    "split": lambda s, sep: s.split(sep),
    "upper": lambda s: go_str(s).upper(),
    "lower": lambda s: go_str(s).lower(),
    "title": lambda s: go_str(s).title(),
    "len": lambda v: len(v) if v not in (None, MISSING) else 0,
    "printf": _printf,
    "print": lambda *a: "".join(go_str(x) for x in a),
    "println": lambda *a: " ".join(go_str(x) for x in a) + "\n",
    "truncate": lambda s, n: go_str(s)[: int(n)],
    "pad": lambda s, left, right: " " * int(left) + go_str(s) + " " * int(right),
    "eq": _cmp(_eq_op),
    "ne": _cmp(lambda a, b: a != b),
    "lt": _cmp(lambda a, b: a < b),
    "le": _cmp(lambda a, b: a <= b),
    "gt": _cmp(lambda a, b: a > b),
    "ge": _cmp(lambda a, b: a >= b),
    "not": lambda v: not _truthy(v),
    "and": lambda *a: next((x for x in a if not _truthy(x)), a[-1]),
    "or": lambda *a: next((x for x in a if _truthy(x)), a[-1]),
}


# --- lexing -----------------------------------------------------------------------------

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.S)
_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<str>"(?:[^"\\]|\\.)*"|`[^`]*`)
  | (?P<assign>:=|=)
  | (?P<pipe>\|)
  | (?P<lp>\() | (?P<rp>\))
  | (?P<comma>,)
  | (?P<var>\$[A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)
  | (?P<field>(?:\.[A-Za-z0-9_]+)+|\.)
  | (?P<num>-?\d+(?:\.\d+)?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<fieldtail>(?:\.[A-Za-z0-9_]+)+)
""", re.X)


def _tokens(src: str) -> list[tuple[str, str]]:
    out, pos, prev = [], 0, ""
    while pos < len(src):
        m = _TOKEN.match(src, pos)
        if not m:
            raise TemplateError(f"unexpected {src[pos:]!r} in action")
        kind = m.lastgroup or ""
        if kind == "field" and prev == "rp" and m.group() != ".":
            kind = "fieldtail"  # `(pipeline).Field`: a field of the parenthesised value
        if kind != "ws":
            out.append((kind, m.group()))
        prev = kind
        pos = m.end()
    return out


# --- parse tree -------------------------------------------------------------------------

@dataclass
class Pipeline:
    decl: list[str]  # variables declared with := (range may declare two)
    cmds: list[list[Any]]  # each command: list of operands


@dataclass
class Node:
    kind: str  # text | action | range | if | with
    text: str = ""
    pipe: Pipeline | None = None
    body: list[Node] = field(default_factory=list)
    else_body: list[Node] = field(default_factory=list)


class _Parser:
    def __init__(self, src: str):
        self.items = self._split(src)
        self.pos = 0

    @staticmethod
    def _split(src: str) -> list[tuple[str, str]]:
        items: list[tuple[str, str]] = []
        pos = 0
        for m in _ACTION.finditer(src):
            text = src[pos:m.start()]
            if m.group(1):
                text = text.rstrip()
            items.append(("text", text))
            items.append(("action", m.group(2).strip()))
            pos = m.end()
            if m.group(3):
                rest = src[pos:]
                pos += len(rest) - len(rest.lstrip())
        if "{{" in src[pos:]:
            raise TemplateError("unclosed action")
        items.append(("text", src[pos:]))
        return [(k, v) for k, v in items if not (k == "text" and v == "")]

    def parse(self, until: tuple[str, ...] = ()) -> tuple[list[Node], str]:
        nodes: list[Node] = []
        while self.pos < len(self.items):
            kind, value = self.items[self.pos]
            self.pos += 1
            if kind == "text":
                nodes.append(Node("text", text=value))
                continue
            word = value.split(None, 1)[0] if value else ""
            if value.startswith("/*"):
                continue  # comment
            if word in until:
                return nodes, value
            if word in ("range", "if", "with"):
                nodes.append(self._block(word, value[len(word):]))
            elif word in ("end", "else"):
                raise TemplateError(f"unexpected {{{{{word}}}}}")
            else:
                nodes.append(Node("action", pipe=self._pipeline(value)))
        if until:
            raise TemplateError("unexpected EOF: missing {{end}}")
        return nodes, ""

    def _block(self, word: str, rest: str) -> Node:
        node = Node(word, pipe=self._pipeline(rest))
        node.body, stop = self.parse(("else", "end"))
        if stop.startswith("else"):
            tail = stop[4:].strip()
            if tail.startswith(("if ", "with ")):  # {{else if ...}} shares the {{end}}
                kw = tail.split(None, 1)[0]
                node.else_body = [self._block(kw, tail[len(kw):])]
            else:
                node.else_body, _ = self.parse(("end",))
        return node

    def _pipeline(self, src: str) -> Pipeline:
        toks = _tokens(src)
        decl: list[str] = []
        # `$k, $v :=` or `$x :=`
        names: list[str] = []
        i = 0
        while i < len(toks) and toks[i][0] == "var":
            names.append(toks[i][1])
            if i + 1 < len(toks) and toks[i + 1][0] == "comma":
                i += 2
                continue
            if i + 1 < len(toks) and toks[i + 1][0] == "assign":
                decl = names
                toks = toks[i + 2:]
            break
        cmds, rest = self._commands(toks)
        if rest:
            raise TemplateError(f"unexpected {rest[0][1]!r}")
        if not cmds or not cmds[0]:
            raise TemplateError("missing value in action")
        return Pipeline(decl, cmds)

    def _commands(self, toks: list[tuple[str, str]]) -> tuple[list[list[Any]], list]:
        cmds: list[list[Any]] = [[]]
        while toks:
            kind, value = toks[0]
            if kind == "rp":
                break
            toks = toks[1:]
            if kind == "pipe":
                cmds.append([])
            elif kind == "lp":
                inner, toks = self._commands(toks)
                if not toks or toks[0][0] != "rp":
                    raise TemplateError("unclosed parenthesis")
                toks = toks[1:]
                sub: Any = ("pipe", Pipeline([], inner))
                if toks and toks[0][0] == "fieldtail":
                    sub = ("chain", sub, toks[0][1])
                    toks = toks[1:]
                cmds[-1].append(sub)
            elif kind == "str":
                cmds[-1].append(("lit", value[1:-1] if value[0] == "`" else json.loads(value)))
            elif kind == "num":
                cmds[-1].append(("lit", float(value) if "." in value else int(value)))
            elif kind == "ident":
                if value in ("true", "false"):
                    cmds[-1].append(("lit", value == "true"))
                elif value == "nil":
                    cmds[-1].append(("lit", None))
                elif value in FUNCS:
                    cmds[-1].append(("func", value))
                else:
                    raise TemplateError(f'function "{value}" not defined')
            elif kind in ("field", "fieldtail"):
                cmds[-1].append(("field", value))
            elif kind == "var":
                cmds[-1].append(("var", value))
            else:
                raise TemplateError(f"unexpected {value!r}")
        return cmds, toks


# --- execution --------------------------------------------------------------------------

def _field(value: Any, path: str) -> Any:
    for name in [p for p in path.split(".") if p]:
        if isinstance(value, dict):
            value = value.get(name, MISSING)
        elif value is None or value is MISSING:
            return MISSING
        else:
            raise TemplateError(f"can't evaluate field {name} in type {type(value).__name__}")
    return value


class Template:
    def __init__(self, src: str):
        self.src = src
        self.nodes, _ = _Parser(src).parse()

    def render(self, data: Any) -> str:
        out: list[str] = []
        self._exec(self.nodes, data, {"$": data}, out)
        return "".join(out)

    def _exec(self, nodes: list[Node], dot: Any, vars_: dict[str, Any], out: list[str]) -> None:
        for node in nodes:
            if node.kind == "text":
                out.append(node.text)
            elif node.kind == "action":
                assert node.pipe is not None
                value = self._pipe(node.pipe, dot, vars_)
                if node.pipe.decl:
                    vars_[node.pipe.decl[0]] = value
                else:
                    out.append(go_str(value))
            elif node.kind in ("if", "with"):
                assert node.pipe is not None
                value = self._pipe(node.pipe, dot, vars_)
                scope = dict(vars_)
                if node.pipe.decl:
                    scope[node.pipe.decl[0]] = value
                if _truthy(value):
                    self._exec(node.body, value if node.kind == "with" else dot, scope, out)
                else:
                    self._exec(node.else_body, dot, scope, out)
            elif node.kind == "range":
                assert node.pipe is not None
                value = self._pipe(node.pipe, dot, vars_)
                if isinstance(value, dict):
                    pairs = [(k, value[k]) for k in sorted(value)]
                elif isinstance(value, (list, tuple)):
                    pairs = list(enumerate(value))
                elif isinstance(value, int) and not isinstance(value, bool):
                    pairs = [(i, i) for i in range(value)]
                elif value is None or value is MISSING:
                    pairs = []
                else:
                    raise TemplateError(f"range can't iterate over {go_str(value)}")
                if not pairs:
                    self._exec(node.else_body, dot, vars_, out)
                for k, v in pairs:
                    scope = dict(vars_)
                    decl = node.pipe.decl
                    if len(decl) == 1:
                        scope[decl[0]] = v
                    elif len(decl) >= 2:
                        scope[decl[0]], scope[decl[1]] = k, v
                    self._exec(node.body, v, scope, out)

    def _pipe(self, pipe: Pipeline, dot: Any, vars_: dict[str, Any]) -> Any:
        value: Any = MISSING
        for i, cmd in enumerate(pipe.cmds):
            if not cmd:
                raise TemplateError("empty command in pipeline")
            piped = [value] if i > 0 else []
            value = self._command(cmd, dot, vars_, piped)
        return value

    def _operand(self, op: Any, dot: Any, vars_: dict[str, Any]) -> Any:
        kind = op[0]
        if kind == "lit":
            return op[1]
        if kind == "field":
            return dot if op[1] == "." else _field(dot, op[1])
        if kind == "var":
            name, _, tail = op[1].partition(".")
            if name not in vars_:
                raise TemplateError(f"undefined variable: {name}")
            return _field(vars_[name], tail) if tail else vars_[name]
        if kind == "pipe":
            return self._pipe(op[1], dot, vars_)
        if kind == "chain":
            return _field(self._operand(op[1], dot, vars_), op[2])
        if kind == "func":
            return FUNCS[op[1]]()
        raise TemplateError(f"bad operand {op!r}")

    def _command(self, cmd: list[Any], dot: Any, vars_: dict[str, Any], piped: list[Any]) -> Any:
        head = cmd[0]
        if head[0] == "func":
            args = [self._operand(a, dot, vars_) for a in cmd[1:]] + piped
            try:
                return FUNCS[head[1]](*args)
            except TemplateError:
                raise
            except (TypeError, ValueError, KeyError) as exc:
                raise TemplateError(f"error calling {head[1]}: {exc}") from exc
        if len(cmd) > 1 or piped:
            raise TemplateError(f"can't give argument to non-function {head[1]!r}")
        return self._operand(head, dot, vars_)


def render(src: str, data: Any) -> str:
    return Template(src).render(data)
