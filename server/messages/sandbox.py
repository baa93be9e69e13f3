"""The templates' sandbox, bounded: what one message's render may spend (`Limits`).

Jinja2's `SandboxedEnvironment` keeps templates away from Python internals but not from building
huge values or looping for long: `{{ "x" * 50000000 }}` builds 50 MB, and two nested loops over
`range()` run for seconds on the event loop. `BoundedSandbox` keeps a `Budget` per render
(`spending`, set by `CompiledCampaign.render`):

- steps (`limits.message_render_steps`): every loop item, `range()` element and call spends one,
  a filter one plus the items of the list, tuple or dict it is given (`|sort` of 90,000 items
  costs 90,001), `extend`, `update` and a `|sum` onto a list (`start=[]`) one an item they add
  (a `|sum` onto a string is checked against the characters); loops are counted by wrapping
  each `{% for %}`'s iterable (`bound`, at compile time);
- characters (`limits.message_part_bytes`, in characters: a part of more characters has at least
  as many bytes): no `*`, `**`, `+`, `~` (also rewritten at compile time), call or filter
  returns a longer value, a widening string method or filter given a width past it, or a
  `replace`, `translate` or `|urlize` (its `target` and `rel` in every link) that would build
  one, is refused before it runs (`"x".ljust(10**9)`, `|center(10**9)`), as is a format whose
  width or precision is past it (`"%0*d" % (10**9, 1)`, `|format`,
  `"{:>{}}".format(1, 10**9)`: 400 MB and seconds before the result was checked;
  a constant one was even built when the template compiled) and an integer product of more
  digits (squaring a power twelve times: 20 s of CPU and 200 MB for one message), and what a
  filter or method builds from its arguments alone (`join`'s separators, `wordwrap`'s
  wrapstrings, `tojson`'s indents, `int.to_bytes`; `slice`'s lists and `batch`'s fill spend
  steps: `_check_built`; `|replace`, `|format` and `|urlize` are checked on the text Jinja
  makes of any value: `([1] * 2000) | replace("", s)`), and a list, tuple, set or dict over
  the bound as text (its strings added up: `[s] * 2000` of a 200 kB `s` has a length of 2,000
  and is 400 MB as text) before it is written out (`{{ }}`, `~`, `%`, `str.format`,
  `str.join`, every filter but the structural ones: `_check_text`); and output stops past it.

`lipsum` (paragraphs of filler on demand) is not among the globals.

Over either: `OverRenderBudget`, whose message names the limit only (RenderFailed).
"""
from __future__ import annotations

import functools
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from jinja2 import nodes
from jinja2.filters import make_attrgetter
from jinja2.runtime import markup_join, str_join
from jinja2.sandbox import SandboxedEnvironment, SandboxedEscapeFormatter, SandboxedFormatter
from jinja2.utils import Namespace
from jinja2.visitor import NodeTransformer
from markupsafe import Markup, escape, soft_str

from ..limits import DEFAULT_LIMITS, Limits

__all__ = ["BoundedSandbox", "Budget", "OverRenderBudget", "bound", "spending", "waiting"]

LOOP = "tailor_loop"
"""The global each `{% for %}`'s iterable is passed through (not a context name: templates
cannot write it, `templates.CONTEXT_NAMES`)."""
CONCAT = "tailor_concat"
"""The global each `~` is rewritten to (the same: no template writes it)."""


class OverRenderBudget(Exception):
    """A render spent more than its budget; the message names the limit, never data."""


@dataclass
class Budget:
    """What the render in progress may still spend: steps, characters, and time (`deadline`,
    `time.monotonic()`; `seconds` of it in all)."""

    steps: int
    chars: int
    most_steps: int = 0
    seconds: float = float("inf")
    deadline: float = float("inf")

    @classmethod
    def of(cls, limits: Limits) -> Budget:
        return cls(limits.message_render_steps, limits.message_part_bytes,
                   limits.message_render_steps, limits.message_render_seconds,
                   time.monotonic() + limits.message_render_seconds)

    def spend(self, steps: int) -> None:
        self.steps -= steps
        if self.steps < 0:
            raise OverRenderBudget(f"more than {self.most_steps} loop items, range() elements "
                                   "and calls (limits.message_render_steps)")
        if time.monotonic() > self.deadline:
            raise OverRenderBudget(f"more than {self.seconds:g} s of rendering "
                                   "(limits.message_render_seconds)")

    def check_size(self, size: int, what: str) -> None:
        if size > self.chars:
            raise OverRenderBudget(f"{what} of more than {self.chars} characters "
                                   "(limits.message_part_bytes)")


_BUDGET: ContextVar[Budget | None] = ContextVar("tailor_render_budget", default=None)


@contextmanager
def waiting():
    """Time in this block is not the render's (a `recommend()` call awaiting the pipeline,
    which other tasks share meanwhile)."""
    budget, start = _BUDGET.get(), time.monotonic()
    try:
        yield
    finally:
        if budget is not None:
            budget.deadline += time.monotonic() - start


@contextmanager
def spending(budget: Budget):
    """Renders in this block (this task) spend `budget`."""
    token = _BUDGET.set(budget)
    try:
        yield budget
    finally:
        _BUDGET.reset(token)


def _budget() -> Budget:
    """The render's budget; outside `spending` (constant folding when a template compiles) a
    fresh one of the default limits each time, so nothing outside a render accumulates."""
    budget = _BUDGET.get()
    return Budget.of(DEFAULT_LIMITS) if budget is None else budget


def _size(value) -> int:
    return len(value) if isinstance(value, (str, bytes, list, tuple)) else 0


def _check_binop(budget: Budget, operator: str, left, right) -> None:
    """Refuse before computing a `*`, `**` or `%` whose result would be over the size bound."""
    if operator == "*":
        for seq, n in ((left, right), (right, left)):
            if isinstance(n, int) and _size(seq):
                budget.check_size(_size(seq) * max(n, 0), "a repeated value")
        if _integers(left, right):  # its bits are at most the factors' bits added up
            budget.check_size(int((left.bit_length() + right.bit_length()) * 0.302), "a product")
    elif operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0:
        digits = right * abs(left).bit_length() * 0.302  # decimal digits of the result, about
        budget.check_size(int(digits), "a power")
    elif operator == "%" and isinstance(left, _TEXT):
        _check_printf(budget, left.decode("latin-1") if isinstance(left, bytes) else left, right)


_GROWING = frozenset({"extend", "update"})
"""The methods of a list, dict or set that add a collection's items to it: each item added
spends a step (`l.extend(l)` 30 times in a loop doubled a list to a billion items)."""
_TEXT = (str, bytes)
"""Strings, and the bytes `str.encode` gives, whose methods (`ljust`, `replace`, `join`, ...)
build alike."""


def _one_kind(*values) -> bool:
    """All strings (`Markup` included), or all bytes."""
    return all(isinstance(v, str) for v in values) or all(isinstance(v, bytes) for v in values)


def _integers(*values) -> bool:
    return all(isinstance(v, int) and not isinstance(v, bool) for v in values)


_PRINTF = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d*))?[hlL]?(.)", re.S)
"""One printf-style conversion: its width, precision (`*`: taken from the values) and type."""


def _check_printf(budget: Budget, fmt: str, values) -> None:
    """Refuse, before it runs, a `%` format (the operator, `|format`) whose width or precision
    is over the bound (`"%0*d" % (10**9, 1)`, `"%.999999999f" % 1`)."""
    given = values if isinstance(values, tuple) else (values,)
    _check_text(budget, *given)
    at = 0
    for match in _PRINTF.finditer(fmt):
        if match.group(3) == "%":
            continue
        for width in match.group(1, 2):
            if width == "*":
                width, at = (given[at] if at < len(given) else 0), at + 1
            elif width:
                width = int(width)
            if _integers(width):
                budget.check_size(abs(width), "a width for a formatted value")
        at += 1


def _check_spec(spec: str) -> None:
    """Refuse a `str.format` field whose width or precision (any number in its spec, nested
    fields resolved) is over the bound."""
    for number in re.findall(r"\d+", spec):
        _budget().check_size(int(number), "a width for a formatted value")


class _Bounded:
    """A sandboxed `str.format` formatter checking each field's spec before it formats."""

    def format_field(self, value, format_spec: str) -> str:
        _check_spec(str(format_spec))
        _check_text(_budget(), value)
        return super().format_field(value, format_spec)


class _Formatter(_Bounded, SandboxedFormatter):
    pass


class _EscapeFormatter(_Bounded, SandboxedEscapeFormatter):
    pass


def _collection_size(value) -> int:
    return len(value) if isinstance(value, (list, tuple, dict)) else 0


_WIDENING = frozenset({"ljust", "rjust", "center", "zfill", "expandtabs", "indent"})
"""String methods and filters whose int arguments are the width of what they build."""


_REPEATING = {"expandtabs": ("\t", 8), "indent": ("\n", 4)}
"""Of those, the ones that add their width at every tab or line: (what, default width)."""


def _repeated_size(name: str, text: str, args) -> int:
    """The most `text.expandtabs(n)` or `text | indent(width)` can build: its width at each tab
    or line (`("\t" * 20000).expandtabs(20000)` built 400 MB, an indent 800 MB, within the
    width bound)."""
    where, width = _REPEATING[name]
    where = where.encode() if isinstance(text, bytes) else where
    given = next((a for a in args if _integers(a) or isinstance(a, str)), width)
    width = len(given) if isinstance(given, str) else max(given, 0)
    return len(text) + (text.count(where) + 1) * width


def _check_widths(budget: Budget, name: str, obj, args) -> None:
    """Refuse, before it runs, a widening string method or filter given a width over the bound
    (`"x".ljust(10**9)`, `|center(10**9)`), and a `str.replace` whose result would be."""
    if name in _WIDENING:
        for arg in args:
            if isinstance(arg, int) and not isinstance(arg, bool):
                budget.check_size(arg, "a width for a string")
        if name in _REPEATING and isinstance(obj, _TEXT):
            budget.check_size(_repeated_size(name, obj, args), "a widened string")
    elif name == "replace" and len(args) >= 2 and _one_kind(obj, *args[:2]):
        _check_replaced(budget, obj, args[0], escape(args[1]) if isinstance(obj, Markup)
                        else args[1])  # (Markup.replace escapes `new`)
    elif name == "translate" and isinstance(obj, str) and args and \
            isinstance(args[0], (dict, list, tuple)):
        budget.check_size(_translated_size(obj, args[0]), "a translated string")


def _check_replaced(budget: Budget, text, old, new) -> None:
    # an empty `old` matches around every character: "".count gives len + 1
    budget.check_size(len(text) + text.count(old) * len(new), "a replaced string")


def _replace_filter(budget: Budget, eval_ctx, value, rest: list, kwargs: dict) -> None:
    """Refuse, before it runs, a `|replace` whose result would be over the bound, on the text
    Jinja's `do_replace` replaces in: any value's (`([1] * 2000) | replace("", "y" * 200000)`
    built 1.2 GB: only a string's was checked), escaped when `old` or `new` is Markup."""
    old, new = _argument(rest, kwargs, 0, "old"), _argument(rest, kwargs, 1, "new")
    if old is None or new is None:
        return
    if not eval_ctx.autoescape:
        text, old, new = str(value), str(old), str(new)
    else:
        html = hasattr(old, "__html__") or hasattr(new, "__html__") and \
            not hasattr(value, "__html__")
        text, old, new = escape(value) if html else soft_str(value), soft_str(old), soft_str(new)
        new = escape(new) if isinstance(text, Markup) else new
    _check_replaced(budget, text, old, new)


def _urlize_filter(budget: Budget, value, rest: list, kwargs: dict) -> None:
    """Refuse, before it runs, a `|urlize` whose links would be over the bound: each copies
    `target` and `rel` (`("http://a.bc " * 2000) | urlize(target="y" * 100000)` built 430 MB
    before its size was checked). A link holds a `:` (its scheme's), `www.` or `@`; its URL,
    written twice, and the escaping are at most a few times the text. Each word tried against
    each extra scheme spends a step (10,000 of each: 17 s in one step)."""
    text = str(escape(value))
    target, rel = _argument(rest, kwargs, 2, "target"), _argument(rest, kwargs, 3, "rel")
    schemes = _argument(rest, kwargs, 4, "extra_schemes")
    attributes = 64 + sum(len(escape(a)) for a in (target, rel) if a)  # ' target=""', ...
    links = text.count("@") + text.count("www.") + text.count(":")
    budget.check_size(len(text) + links * attributes, "a linked text")
    if schemes and hasattr(schemes, "__len__"):
        budget.spend(len(schemes) * len(text.split()))


def _translated_size(text: str, table: dict) -> int:
    """The length of `text.translate(table)`: each character its mapped string's length
    (`("x" * 20000).translate({120: "y" * 20000})` built 400 MB before the size check)."""
    counts = Counter(text)  # a list or tuple maps its indexes
    pairs = table.items() if isinstance(table, dict) else enumerate(table)
    return len(text) + sum(counts[chr(k)] * (len(v) - 1) for k, v in pairs
                           if _integers(k) and 0 <= k < 0x110000 and isinstance(v, str))


def _argument(rest: list, kwargs: dict, at: int, name: str):
    """A filter's or method's argument, given by position (`at`, after the value) or name."""
    return rest[at] if len(rest) > at else kwargs.get(name)


def _check_built(budget: Budget, name: str, value, rest: list, kwargs: dict):
    """Refuse, before it runs, a filter that builds by its arguments more than its input
    holds: `join`'s separators, `wordwrap`'s wrapstrings, `tojson`'s indents, `slice`'s lists,
    `batch`'s fill (`range(3000) | join("y" * 200000)` built 600 MB, `range(1) | batch(10**8,
    0)` 1.5 GB, `tojson(indent=10**8)` 800 MB, before the result's size was checked). Returns
    the value to filter: an iterable without a length is counted as the filter reads it."""
    if name == "join":
        return _separated(budget, value, _argument(rest, kwargs, 0, "d"))
    if name == "wordwrap":
        wrap, width = _argument(rest, kwargs, 2, "wrapstring"), _argument(rest, kwargs, 0, "width")
        if isinstance(value, str) and isinstance(wrap, str) and _integers(width):
            lines = 2 * len(value) // max(width, 1) + value.count("\n") + 1  # a line is at
            budget.check_size(len(value) + lines * len(wrap), "a wrapped string")  # least half full
    if name == "wordwrap" and isinstance(value, str) and _integers(width := _argument(
            rest, kwargs, 0, "width")):  # a step a line: textwrap's are quadratic at width 1
        budget.spend(2 * len(value) // max(width, 1))  # (200 kB: 2.7 s in one call)
    elif name == "tojson":
        indent = _argument(rest, kwargs, 0, "indent")
        width = len(indent) if isinstance(indent, str) else indent if _integers(indent) else 0
        if width > 0:
            budget.check_size(_indentation(value, width, budget.chars), "an indented value")
    elif name == "groupby" and hasattr(value, "__len__"):  # each item's key is a new string
        default = _argument(rest, kwargs, 1, "default")  # (lower-cased): the default's too
        budget.check_size(len(value) * _text_size(default, budget.chars) if default is not None
                          else 0, "a grouped value")
    elif name == "slice" and _integers(count := _argument(rest, kwargs, 0, "slices")):
        budget.spend(max(count, 0))  # one list a slice, however few the items
    elif name == "batch" and _argument(rest, kwargs, 1, "fill_with") is not None and \
            _integers(count := _argument(rest, kwargs, 0, "linecount")):
        budget.spend(max(count, 0))  # the last batch filled up to `linecount` items
    return value


def _separated(budget: Budget, items, separator):
    """`items` to be joined by `separator`: refused when the separators alone are over the
    bound; an iterable without a length is counted, items and separators, as it is read."""
    each = 0 if separator is None else _text_size(separator, budget.chars)  # (as text: `d`
    # may be any value, a dict too)
    if hasattr(items, "__len__"):
        budget.check_size((len(items) - 1) * each, "a joined value")
        return items
    return (_acounted if hasattr(items, "__aiter__") else _counted)(items, each, budget)


def _counted(items, each: int, budget: Budget) -> Iterator:
    size = 0
    for n, item in enumerate(items):
        size += (each if n else 0) + _text_size(item, budget.chars)
        budget.check_size(size, "a joined value")
        yield item


async def _acounted(items, each: int, budget: Budget) -> AsyncIterator:
    size, n = 0, 0
    async for item in items:
        size += (each if n else 0) + _text_size(item, budget.chars)
        budget.check_size(size, "a joined value")
        n += 1
        yield item


def _sum_filter(budget: Budget, environment, items, rest: list, kwargs: dict):
    """`|sum`'s iterable, counted as it is added up when `start` is not a number (a list, a
    string): what each item adds to it, a step an item (as `extend`) or its characters against
    the bound (`([big] * 1000) | select | sum(start=[])` built 200 million items, 1.5 GB,
    before the result's size was checked)."""
    start = _argument(rest, kwargs, 1, "start")
    if start is None or isinstance(start, (int, float)):
        return items
    attribute = _argument(rest, kwargs, 0, "attribute")
    part = _itself if attribute is None else make_attrgetter(environment, attribute)
    size = len(start) if isinstance(start, _TEXT) else 0
    return (_asummed if hasattr(items, "__aiter__") else _summed)(items, part, size, budget)


def _itself(item):
    return item


def _adding(budget: Budget, size: int, added) -> int:
    """Spend what `added` adds to a sum: its characters (the sum's `size` so far, returned)
    or its items."""
    if isinstance(added, _TEXT):
        size += len(added)
        budget.check_size(size, "a summed value")
    elif hasattr(added, "__len__"):
        budget.spend(len(added))
    return size


def _summed(items, part, size: int, budget: Budget) -> Iterator:
    for item in items:
        size = _adding(budget, size, part(item))
        yield item


async def _asummed(items, part, size: int, budget: Budget) -> AsyncIterator:
    async for item in items:
        size = _adding(budget, size, part(item))
        yield item


def _indentation(value, width: int, most: int) -> int:
    """The characters of indentation `json.dumps(value, indent=width)` writes (every item of
    a container on a line of its own, indented by its depth), counted up to past `most`."""
    total, todo = 0, [(value, 1)]
    while todo and total <= most:
        node, depth = todo.pop()
        items = node.values() if isinstance(node, dict) else \
            node if isinstance(node, (list, tuple)) else ()
        for item in items:
            total += width * depth
            todo.append((item, depth + 1))
    return total


_COLLECTIONS = (list, tuple, dict, set, frozenset, type({}.keys()), type({}.values()),
                type({}.items()))
"""What is written out as the text of its items (a dict's views too: `{{ d.items() }}`)."""


class _Left:
    """Marks, on `_text_size`'s walk, the end of a container's items (`node`: kept alive, so
    its id stays its own while it is on the path)."""

    __slots__ = ("node",)

    def __init__(self, node):
        self.node = node


def _text_size(value, most: int) -> int:
    """About the characters a list, tuple, set or dict is as text (`str(value)`: its strings'
    lengths, 2 a collection and 2 an item in it, 1 anything else), counted up to past `most`:
    a list holding one 200 kB string 2,000 times has a length of 2,000 and is 400 MB as text.
    A container inside itself is 5 (`[...]`), as `str` writes it; one met again elsewhere is
    counted again, as `str` writes it again. Every item walked counts, so the walk ends after
    about `most` items however the containers share (a list holding itself 3,000 times was
    walked for ever: 3 GB)."""
    total, todo, inside = 0, [value], set()
    while todo and total <= most:
        node = todo.pop()
        if isinstance(node, _TEXT):
            total += len(node)
        elif type(node) is _Left:
            inside.discard(id(node.node))
        elif isinstance(node, (*_COLLECTIONS, Namespace)):
            if id(node) in inside:
                total += 5
                continue
            inside.add(id(node))
            todo.append(_Left(node))
            if isinstance(node, Namespace):  # written out as `<Namespace {its attributes}>`
                todo.append(node._Namespace__attrs)
                total += 12
                continue
            items = [*node.keys(), *node.values()] if isinstance(node, dict) else node
            total += 2 + 2 * len(items)  # and a ", " each
            if total <= most:
                todo += items
        else:
            total += 1
    return total


def _check_text(budget: Budget, *values) -> None:
    """Refuse, before it is written out as text, a collection over the bound as text (its
    items' strings added up: `_text_size`)."""
    for value in values:
        if isinstance(value, (*_COLLECTIONS, Namespace)):
            budget.check_size(_text_size(value, budget.chars), "a collection's text")


_STRUCTURAL = frozenset({"length", "count", "first", "last", "random", "list", "sort", "unique",
                         "reverse", "map", "select", "reject", "selectattr", "rejectattr",
                         "batch", "slice", "min", "max", "dictsort", "items", "attr",
                         "default", "d"})
"""Filters that never write their value out as text (the others may: `string`, `join`, `sum`,
`pprint`, `tojson`, `escape`, `upper`, ... call `str` on a collection)."""

_BUILDING = frozenset({"join", "wordwrap", "tojson", "slice", "batch", "groupby"})
"""Filters whose arguments size what they build (`_check_built`)."""


def _bounded_filter(name: str, function):
    """Filter `name` spending its steps (one, and one an item of a list, tuple or dict it is
    given) and checking its widths and its result's size."""
    skip = 0 if getattr(function, "jinja_pass_arg", None) is None else 1  # context, env first
    widening = name in _WIDENING
    printf = name == "format"  # `"%*d" | format(width, n)`: the `%` operator's widths
    replacing, linking = name == "replace", name == "urlize"  # on any value's text
    summing = name == "sum"
    building = name in _BUILDING
    textual = name not in _STRUCTURAL
    maybe_async = getattr(function, "jinja_async_variant", False)  # join, sum, map, ...

    @functools.wraps(function)  # keeps `jinja_pass_arg`
    def bounded(*args, **kwargs):
        budget = _budget()
        value = args[skip] if len(args) > skip else None
        budget.spend(1 + _collection_size(value))
        if textual:
            _check_text(budget, value, *args[skip + 1:], *kwargs.values())
        if widening:
            _check_widths(budget, name, value, list(args[skip + 1:]) + list(kwargs.values()))
        elif printf:  # on the value's text (`["%0*d"] | format(10**8, 1)`: 400 MB)
            _check_printf(budget, soft_str(value), kwargs or tuple(args[skip + 1:]))
        elif replacing:
            _replace_filter(budget, args[0], value, list(args[skip + 1:]), kwargs)
        elif linking:
            _urlize_filter(budget, value, list(args[skip + 1:]), kwargs)
        elif building or summing:
            rest = list(args[skip + 1:])
            checked = _check_built(budget, name, value, rest, kwargs) if building else \
                _sum_filter(budget, args[0], value, rest, kwargs)
            if checked is not value:
                args = (*args[:skip], checked, *args[skip + 1:])
        out = function(*args, **kwargs)
        if maybe_async and hasattr(out, "__await__"):
            return _checked(out, budget)
        if _size(out) > budget.chars:
            budget.check_size(_size(out), "a filter's value")
        return out
    return bounded


async def _checked(pending, budget: Budget):
    out = await pending
    budget.check_size(_size(out), "a filter's value")
    return out


def _concat(items) -> str:
    """A `~` chain, joined as Jinja joins it, its result under the size bound."""
    _check_text(_budget(), *items)
    joined = (markup_join if any(hasattr(x, "__html__") for x in items) else str_join)(items)
    _budget().check_size(len(joined), "a joined value")
    return joined


def _finalized(value):
    """A `{{ value }}` about to be written out: a collection over the bound as text is refused
    first (`{{ [s] * 2000 }}` wrote 400 MB, then the output was found over the bound)."""
    _check_text(_budget(), value)
    return value


def _range(*args) -> range:
    out = range(*args)
    _budget().spend(len(out))
    return out


def _loop(iterable):
    """A `{% for %}`'s iterable, each item spending one step."""
    budget = _budget()
    return _aitems(iterable, budget) if hasattr(iterable, "__aiter__") else \
        _items(iterable, budget)


def _items(iterable, budget: Budget) -> Iterator:
    for item in iterable:
        budget.spend(1)
        yield item


async def _aitems(iterable, budget: Budget) -> AsyncIterator:
    async for item in iterable:
        budget.spend(1)
        yield item


class BoundedSandbox(SandboxedEnvironment):
    """SandboxedEnvironment whose values, loops and calls spend the render's `Budget`."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})  # also keeps them from constant
    # folding (a constant `"%0400000000d" % 1` was built when the template compiled: 1.5 GB)

    def __init__(self, **options):
        super().__init__(finalize=_finalized, **options)
        self.globals.pop("lipsum", None)
        self.globals.update({"range": _range, LOOP: _loop, CONCAT: _concat})
        self.filters = {name: _bounded_filter(name, f) for name, f in self.filters.items()}

    def call_binop(self, context, operator: str, left, right):
        budget = _budget()
        _check_binop(budget, operator, left, right)
        out = super().call_binop(context, operator, left, right)
        budget.check_size(_size(out), "a value")
        return out

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 - Jinja's signature
        budget = _budget()
        budget.spend(1)
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, _TEXT) and __obj.__name__ == "join" and args:  # sep.join(items)
            _check_text(budget, args[0])
            args = (_separated(budget, args[0], owner), *args[1:])
        elif isinstance(owner, _TEXT):  # a string's (or bytes') method
            _check_widths(budget, __obj.__name__, owner, list(args) + list(kwargs.values()))
        elif isinstance(owner, (list, dict, set)) and __obj.__name__ in _GROWING and args:
            budget.spend(len(args[0]) if hasattr(args[0], "__len__") else 0)  # each item added
        elif _integers(owner) and __obj.__name__ == "to_bytes":  # (1).to_bytes(10**9)
            length = _argument(list(args), kwargs, 0, "length")
            if _integers(length):
                budget.check_size(length, "a width for bytes")
        out = super().call(__context, __obj, *args, **kwargs)
        budget.check_size(_size(out), "a value")
        return out

    def wrap_str_format(self, value):
        """Jinja's sandboxed `str.format` / `format_map`, its formatter checking each field's
        width and precision before it formats (`_Bounded`)."""
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        owner = value.__self__
        formatter = (_EscapeFormatter(self, escape=owner.escape) if isinstance(owner, Markup)
                     else _Formatter(self))
        mapping = value.__name__ == "format_map"

        def bounded(*args, **kwargs):
            if mapping:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one argument")
                args, kwargs = (), args[0]
            return type(owner)(formatter.vformat(owner, args, kwargs))
        return functools.update_wrapper(bounded, value)

    async def generate(self, template, context) -> str:
        """`template` rendered with `context` (as `render_async`), stopped once the output is
        over the bound."""
        budget, out, size = _budget(), [], 0
        most = budget.chars
        try:
            async for piece in template.root_render_func(template.new_context(context)):
                size += len(piece)
                if size > most:
                    budget.check_size(size, "output")
                out.append(piece)
        except Exception:  # noqa: BLE001 - Jinja's own: the traceback points at template lines
            self.handle_exception()
        return self.concat(out)


def bound(ast: nodes.Template) -> nodes.Template:
    """Pass every `{% for %}`'s iterable through `LOOP` and every `~` chain through `CONCAT`
    (returns the rewritten `ast`)."""
    return _Bound().visit(ast)


class _Bound(NodeTransformer):
    def visit_For(self, node: nodes.For) -> nodes.For:
        self.generic_visit(node)
        node.iter = _call(LOOP, node.iter, node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Call:
        self.generic_visit(node)
        return _call(CONCAT, nodes.List(node.nodes, lineno=node.lineno), node.lineno)


def _call(name: str, arg: nodes.Expr, lineno: int) -> nodes.Call:
    return nodes.Call(nodes.Name(name, "load", lineno=lineno), [arg], [], None, None,
                      lineno=lineno)
