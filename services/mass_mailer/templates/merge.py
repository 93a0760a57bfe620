"""Merge tags (``{{ contact.first_name | default("customer") }}``) in a jinja2 sandbox.

Two layers: at save time the template's syntax tree must use only an allowlist of constructs
(names, ``.field`` / ``["field"]`` lookups, a few filters, if/for, comparisons, ``~``) - no calls,
no arithmetic, no ``{% set %}``/macros/imports, no names or fields starting with ``_``; at render
time the environment has no globals, and attribute access only reads keys of mappings, so even
a template that slipped past the first check sees nothing but the given context.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jinja2 import ChainableUndefined, Template, nodes
from jinja2.exceptions import TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment

ALLOWED_FILTERS = frozenset(
    {
        "default", "d", "upper", "lower", "title", "capitalize", "trim", "truncate", "replace",
        "escape", "e", "string", "length", "count", "join", "first", "last", "striptags",
        "wordcount", "int", "float", "round", "abs", "center", "urlencode", "list", "sort",
    }
)  # fmt: skip
ALLOWED_TESTS = frozenset(
    {"defined", "undefined", "none", "number", "string", "mapping", "sequence", "eq", "ne", "in",
     "true", "false", "lower", "upper", "odd", "even"}
)  # fmt: skip
_ALLOWED_NODES = (
    nodes.Template, nodes.Output, nodes.TemplateData, nodes.Name, nodes.Const, nodes.Getattr,
    nodes.Getitem, nodes.Filter, nodes.Test, nodes.If, nodes.For, nodes.CondExpr, nodes.Compare,
    nodes.Operand, nodes.And, nodes.Or, nodes.Not, nodes.Concat, nodes.Keyword, nodes.Tuple, nodes.List,
)  # fmt: skip
MAX_CONST = 1_000
MAX_SOURCE = 400_000


class MergeError(ValueError):
    """A template's merge tags are invalid or use something the sandbox does not allow."""

    def __init__(self, message: str, where: str = "", line: int | None = None) -> None:
        location = f"{where}, line {line}" if where and line else where
        super().__init__(f"{location}: {message}" if location else message)
        self.where = where
        self.line = line


class _Empty(ChainableUndefined):
    """Undefined values render empty and can be chained (``contact.custom.a.b``)."""

    __slots__ = ()


def _blank_none(value: Any) -> Any:
    return "" if value is None else value


class MergeEnvironment(SandboxedEnvironment):
    """Sandbox whose attribute access reads mapping keys only."""

    def __init__(self, *, autoescape: bool) -> None:
        super().__init__(
            autoescape=autoescape, undefined=_Empty, auto_reload=False, cache_size=0, finalize=_blank_none
        )
        self.globals.clear()
        self.filters = {k: v for k, v in self.filters.items() if k in ALLOWED_FILTERS}
        self.tests = {k: v for k, v in self.tests.items() if k in ALLOWED_TESTS}

    def getattr(self, obj: Any, attribute: str) -> Any:
        return self.getitem(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        if isinstance(argument, str) and argument.startswith("_"):
            return self.undefined(obj=obj, name=argument)
        if isinstance(obj, Mapping):
            try:
                return obj[argument]
            except (KeyError, TypeError):
                return self.undefined(obj=obj, name=str(argument))
        if isinstance(obj, list | tuple) and isinstance(argument, int):
            try:
                return obj[argument]
            except IndexError:
                return self.undefined(obj=obj, name=str(argument))
        return self.undefined(obj=obj, name=str(argument))

    def call(self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        from jinja2.sandbox import SecurityError

        raise SecurityError("calls are not allowed in merge tags")


HTML_ENV = MergeEnvironment(autoescape=True)
TEXT_ENV = MergeEnvironment(autoescape=False)


def _check_tree(tree: nodes.Node, where: str) -> None:
    for node in tree.find_all(nodes.Node):
        line = getattr(node, "lineno", None)
        if not isinstance(node, _ALLOWED_NODES):
            raise MergeError(f"'{type(node).__name__}' is not allowed in merge tags", where, line)
        if isinstance(node, nodes.Name) and node.name.startswith("_"):
            raise MergeError(f"name '{node.name}' is not allowed", where, line)
        if isinstance(node, nodes.Name) and node.ctx != "load" and not _loop_target(tree, node):
            raise MergeError(f"assigning '{node.name}' is not allowed", where, line)
        if isinstance(node, nodes.Getattr) and node.attr.startswith("_"):
            raise MergeError(f"field '{node.attr}' is not allowed", where, line)
        if isinstance(node, nodes.Getitem) and not isinstance(node.arg, nodes.Const):
            raise MergeError("only constant keys in [...] lookups", where, line)
        if isinstance(node, nodes.Getitem) and str(node.arg.value).startswith("_"):
            raise MergeError("keys starting with '_' are not allowed", where, line)
        if isinstance(node, nodes.Filter) and node.name not in ALLOWED_FILTERS:
            raise MergeError(f"filter '{node.name}' is not allowed", where, line)
        if isinstance(node, nodes.Test) and node.name not in ALLOWED_TESTS:
            raise MergeError(f"test '{node.name}' is not allowed", where, line)
        if isinstance(node, nodes.Filter | nodes.Test) and (node.dyn_args or node.dyn_kwargs):
            raise MergeError("*args / **kwargs are not allowed", where, line)
        if isinstance(node, nodes.Const) and isinstance(node.value, str) and len(node.value) > MAX_CONST:
            raise MergeError(f"string constants are limited to {MAX_CONST} characters", where, line)
        if isinstance(node, nodes.For) and (node.recursive or any(True for _ in node.find_all(nodes.For))):
            raise MergeError("recursive or nested loops are not allowed", where, line)


def _loop_target(tree: nodes.Node, name: nodes.Name) -> bool:
    return any(
        loop.target is name or any(n is name for n in loop.target.find_all(nodes.Name))
        for loop in tree.find_all(nodes.For)
    )


def compile_merge(source: str, *, html: bool, where: str) -> Template:
    """Check and compile one template; raises MergeError with the line on any problem."""
    if len(source) > MAX_SOURCE:
        raise MergeError(f"longer than {MAX_SOURCE} characters", where)
    env = HTML_ENV if html else TEXT_ENV
    try:
        tree = env.parse(source)
    except TemplateSyntaxError as exc:
        raise MergeError(f"template syntax error: {exc.message}", where, exc.lineno) from exc
    _check_tree(tree, where)
    try:
        return env.from_string(tree)
    except TemplateSyntaxError as exc:
        raise MergeError(f"template syntax error: {exc.message}", where, exc.lineno) from exc
