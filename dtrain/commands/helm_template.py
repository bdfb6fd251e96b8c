"""Renders the Helm chart's templates (launch/helm/dtrain) without a helm binary, so that
`dtrain k8s render` and `helm template` produce the same manifests from ONE set of templates.

It implements the subset of Go text/template + Sprig + Helm the chart uses, with Go's semantics:
actions `{{ }}` with `{{-`/`-}}` whitespace trimming and `{{/* comments */}}`; if / else if /
else, range (lists and maps, map keys sorted, `$k, $v :=`), with, define, include, variables
(`$x := ...`, `$`); pipelines with `|` and parentheses; the functions in FUNCTIONS. Anything
else is an error naming the template and the action, so a chart edit that strays outside the
subset fails the tests (tests/unit/test_helm_chart.py) instead of rendering differently.
Missing map keys are nil and print as nothing, as in Helm.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.DOTALL)
TOKEN = re.compile(r'\s*("(?:[^"\\]|\\.)*"|`[^`]*`|\(|\)|\||:=|=|,|[^\s()|,]+)')


class TemplateError(Exception):
    pass


@dataclass
class Node:
    kind: str  # text | output | if | range | with | define | assign
    text: str = ""  # text, or the action's source
    branches: list[tuple[str | None, list[Node]]] = field(default_factory=list)  # (condition, body)
    names: list[str] = field(default_factory=list)  # range/assign variables


def _head(node: Node) -> str:
    """The pipeline of a `with` or `range` action: the parser always gives its first branch one."""
    pipeline = node.branches[0][0]
    if pipeline is None:
        raise TemplateError(f"{{{{ {node.kind} }}}} has no pipeline")
    return pipeline


# -- parsing -------------------------------------------------------------------------------------


def _lex(source: str) -> list[tuple[str, str]]:
    """[("text", ...), ("action", ...)] with Go's trim markers applied."""
    items: list[tuple[str, str]] = []
    position, trim_next = 0, False
    for match in ACTION.finditer(source):
        text = source[position:match.start()]
        if trim_next:
            text = text.lstrip()
        if match.group(1):
            text = text.rstrip()
        items.append(("text", text))
        body = match.group(2).strip()
        if not (body.startswith("/*") and body.endswith("*/")):
            items.append(("action", body))
        trim_next = bool(match.group(3))
        position = match.end()
    tail = source[position:]
    items.append(("text", tail.lstrip() if trim_next else tail))
    return items


def parse(source: str, name: str) -> tuple[list[Node], dict[str, list[Node]]]:
    """The template's nodes and the `define`d templates it holds."""
    defines: dict[str, list[Node]] = {}
    stack: list[Node] = [Node("root", branches=[(None, [])])]
    for kind, text in _lex(source):
        body = stack[-1].branches[-1][1]
        if kind == "text":
            if text:
                body.append(Node("text", text))
            continue
        word, _, rest = text.partition(" ")
        rest = rest.strip()
        if word in ("if", "with"):
            node = Node(word, text, branches=[(rest, [])])
            body.append(node)
            stack.append(node)
        elif word == "range":
            names, pipeline = [], rest
            if ":=" in rest:
                left, pipeline = (part.strip() for part in rest.split(":=", 1))
                names = [n.strip() for n in left.split(",")]
            node = Node("range", text, branches=[(pipeline, [])], names=names)
            body.append(node)
            stack.append(node)
        elif word == "define":
            node = Node("define", text, branches=[(None, [])])
            defines[_string_literal(rest, name)] = node.branches[0][1]
            stack.append(node)
        elif word == "else":
            if len(stack) < 2 or stack[-1].kind not in ("if", "with", "range"):
                raise TemplateError(f"{name}: {{{{ {text} }}}} outside if/with/range")
            condition = rest[3:].strip() if rest.startswith("if ") else None
            stack[-1].branches.append((condition, []))
        elif word == "end":
            if len(stack) < 2:
                raise TemplateError(f"{name}: unexpected {{{{ end }}}}")
            stack.pop()
        elif re.match(r"^\$\w*\s*:?=", text):
            variable, _, pipeline = text.partition("=")
            body.append(Node("assign", pipeline.strip(), names=[variable.rstrip(":").strip()]))
        else:
            body.append(Node("output", text))
    if len(stack) != 1:
        raise TemplateError(f"{name}: {{{{ {stack[-1].text} }}}} has no {{{{ end }}}}")
    return stack[0].branches[0][1], defines


def _string_literal(text: str, name: str) -> str:
    if not (text.startswith('"') and text.endswith('"')):
        raise TemplateError(f"{name}: expected a quoted name, got {text!r}")
    return json.loads(text)


# -- evaluation ----------------------------------------------------------------------------------


class Renderer:
    def __init__(self, chart_dir: Path) -> None:
        self.chart_dir = Path(chart_dir)
        self.defines: dict[str, list[Node]] = {}
        self.templates: dict[str, list[Node]] = {}
        for path in sorted((self.chart_dir / "templates").iterdir()):
            if path.suffix not in (".yaml", ".tpl"):
                continue
            nodes, defines = parse(path.read_text(), path.name)
            self.defines.update(defines)
            if not path.name.startswith("_"):
                self.templates[path.name] = nodes

    def render_all(self, root: dict[str, Any]) -> dict[str, str]:
        """{template file name: rendered text} for every template, as `helm template` renders them."""
        return {name: self._run(nodes, root, {"$": root}, name) for name, nodes in self.templates.items()}

    def _run(self, nodes: list[Node], dot: Any, variables: dict[str, Any], where: str) -> str:
        out: list[str] = []
        variables = dict(variables)
        for node in nodes:
            if node.kind == "text":
                out.append(node.text)
            elif node.kind == "output":
                out.append(_print(self._pipeline(node.text, dot, variables, where)))
            elif node.kind == "assign":
                variables[node.names[0]] = self._pipeline(node.text, dot, variables, where)
            elif node.kind == "if":
                for condition, body in node.branches:
                    if condition is None or truthy(self._pipeline(condition, dot, variables, where)):
                        out.append(self._run(body, dot, variables, where))
                        break
            elif node.kind == "with":
                value = self._pipeline(_head(node), dot, variables, where)
                if truthy(value):
                    out.append(self._run(node.branches[0][1], value, variables, where))
                elif len(node.branches) > 1:
                    out.append(self._run(node.branches[1][1], dot, variables, where))
            elif node.kind == "range":
                out.append(self._range(node, dot, variables, where))
        return "".join(out)

    def _range(self, node: Node, dot: Any, variables: dict[str, Any], where: str) -> str:
        value = self._pipeline(_head(node), dot, variables, where)
        if isinstance(value, dict):
            items = [(key, value[key]) for key in sorted(value)]
        elif isinstance(value, (list, tuple)):
            items = list(enumerate(value))
        elif value is None:
            items = []
        else:
            raise TemplateError(f"{where}: range over {type(value).__name__} in {{{{ {node.text} }}}}")
        if not items:
            return self._run(node.branches[1][1], dot, variables, where) if len(node.branches) > 1 else ""
        out = []
        for key, item in items:
            scope = dict(variables)
            if len(node.names) == 2:
                scope[node.names[0]], scope[node.names[1]] = key, item
            elif node.names:
                scope[node.names[0]] = item
            out.append(self._run(node.branches[0][1], item, scope, where))
        return "".join(out)

    # pipelines: command ( "|" command )*; command: operand | function operand*
    def _pipeline(self, text: str, dot: Any, variables: dict[str, Any], where: str) -> Any:
        tokens = [t for t in TOKEN.findall(text) if t]
        value, rest = self._commands(tokens, dot, variables, where, text)
        if rest:
            raise TemplateError(f"{where}: unexpected {' '.join(rest)!r} in {{{{ {text} }}}}")
        return value

    def _commands(self, tokens: list[str], dot, variables, where, text) -> tuple[Any, list[str]]:
        previous: list[Any] = []
        while True:
            args: list[Any] = []
            function = None
            if tokens and tokens[0] in self._functions():
                function, tokens = tokens[0], tokens[1:]
            while tokens and tokens[0] not in ("|", ")"):
                if tokens[0] == "(":
                    value, tokens = self._commands(tokens[1:], dot, variables, where, text)
                    if not tokens or tokens[0] != ")":
                        raise TemplateError(f"{where}: unbalanced ( in {{{{ {text} }}}}")
                    tokens = tokens[1:]
                    args.append(value)
                else:
                    args.append(self._operand(tokens[0], dot, variables, where, text))
                    tokens = tokens[1:]
            args += previous
            if function is not None:
                result = self._functions()[function](*args)
            elif len(args) == 1:
                result = args[0]
            else:
                raise TemplateError(f"{where}: cannot evaluate {{{{ {text} }}}}")
            if tokens and tokens[0] == "|":
                previous, tokens = [result], tokens[1:]
                continue
            return result, tokens

    def _operand(self, token: str, dot, variables, where, text) -> Any:
        if token.startswith('"'):
            return json.loads(token)
        if token.startswith("`"):
            return token[1:-1]
        if token in ("true", "false"):
            return token == "true"
        if token == "nil":
            return None
        if re.fullmatch(r"-?\d+", token):
            return int(token)
        if re.fullmatch(r"-?\d+\.\d*", token):
            return float(token)
        if token.startswith("$"):
            name, _, path = token.partition(".")
            if name not in variables:
                raise TemplateError(f"{where}: undefined variable {name} in {{{{ {text} }}}}")
            return _field(variables[name], path)
        if token.startswith("."):
            return _field(dot, token[1:])
        raise TemplateError(f"{where}: unknown function or value {token!r} in {{{{ {text} }}}}")

    def _include(self, name: str, data: Any) -> str:
        if name not in self.defines:
            raise TemplateError(f"include of undefined template {name!r}")
        return self._run(self.defines[name], data, {"$": data}, name)

    def _functions(self) -> dict[str, Callable[..., Any]]:
        return {**FUNCTIONS, "include": self._include}


def _field(value: Any, path: str) -> Any:
    for part in [p for p in path.split(".") if p]:
        value = value.get(part) if isinstance(value, dict) else None
    return value


def truthy(value: Any) -> bool:
    """Go's: false, 0, nil and empty strings, lists and maps are false."""
    return bool(value) if value is not None else False


def _print(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _to_yaml(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=False, sort_keys=True, width=10_000).rstrip("\n")


def _indent(spaces: int, text: str) -> str:
    pad = " " * int(spaces)
    return "\n".join(pad + line for line in str(text).split("\n"))


def _int(value: Any) -> int:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return 0


def _required(message: str, value: Any) -> Any:
    if value is None or value == "":
        raise TemplateError(message)
    return value


def _fail(message: str) -> None:
    raise TemplateError(message)


def _default(fallback: Any, value: Any = None) -> Any:
    return value if truthy(value) else fallback


def _and(*values: Any) -> Any:
    for value in values:
        if not truthy(value):
            return value
    return values[-1]


def _or(*values: Any) -> Any:
    for value in values:
        if truthy(value):
            return value
    return values[-1]


def _go_format(fmt: str, *args: Any) -> str:
    """Go's Printf for the verbs the chart uses: %s %d %v."""
    converted = re.sub(r"%[vd]", "%s", fmt)
    return converted % tuple(_print(a) for a in args)


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "toYaml": _to_yaml,
    "toJson": lambda v: json.dumps(v, separators=(",", ":"), sort_keys=True),
    "nindent": lambda n, text: "\n" + _indent(n, text),
    "indent": _indent,
    "quote": lambda *v: " ".join(json.dumps(_print(x)) for x in v if x is not None),
    "default": _default,
    "required": _required,
    "fail": _fail,
    "empty": lambda v: not truthy(v),
    "eq": lambda a, *b: any(a == x for x in b),
    "ne": lambda a, b: a != b,
    "gt": lambda a, b: a > b,
    "lt": lambda a, b: a < b,
    "ge": lambda a, b: a >= b,
    "and": _and,
    "or": _or,
    "not": lambda v: not truthy(v),
    "int": _int,
    "add": lambda *v: sum(_int(x) for x in v),
    "sub": lambda a, b: _int(a) - _int(b),
    "mul": lambda *v: math.prod(_int(x) for x in v),
    "ternary": lambda if_true, if_false, condition: if_true if truthy(condition) else if_false,
    "printf": _go_format,
    "toString": _print,
    "list": lambda *v: list(v),
    "append": lambda items, v: [*(items or []), v],
    "dict": lambda *kv: {str(kv[i]): kv[i + 1] for i in range(0, len(kv), 2)},
    "hasKey": lambda d, k: isinstance(d, dict) and k in d,
    "kindIs": lambda kind, v: _kind(v) == kind,
    "join": lambda sep, items: sep.join(_print(i) for i in (items or [])),
}


# Python type -> the kind Sprig's kindIs names (bool before int: True is an int in Python).
KINDS: tuple[tuple[type, str], ...] = ((bool, "bool"), (str, "string"), (int, "int64"), (float, "float64"),
                                       (dict, "map"), (list, "slice"))


def _kind(value: Any) -> str:
    return next((kind for python_type, kind in KINDS if isinstance(value, python_type)), "invalid")
