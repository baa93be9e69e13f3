"""The templates' sandbox, bounded: what one message's render may spend (`Limits`).

Jinja2's `SandboxedEnvironment` keeps templates away from Python internals but not from building
huge values or looping for long: `{{ "x" * 50000000 }}` builds 50 MB, and two nested loops over
`range()` run for seconds on the event loop. `BoundedSandbox` keeps a `Budget` per render
(`spending`, set by `CompiledCampaign.render`):

- steps (`limits.message_render_steps`): every loop item, `range()` element and call spends one;
  loops are counted by wrapping each `{% for %}`'s iterable (`count_loops`, at compile time);
- characters (`limits.message_part_bytes`, in characters: a part of more characters has at least
  as many bytes): no `*`, `**` or `+` builds a longer value, and output stops past it.

Over either: `OverRenderBudget`, whose message names the limit only (RenderFailed).
"""
from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from jinja2 import nodes
from jinja2.sandbox import SandboxedEnvironment

from ..config import Limits

__all__ = ["BoundedSandbox", "Budget", "OverRenderBudget", "count_loops", "spending"]

LOOP = "tailor_loop"
"""The global each `{% for %}`'s iterable is passed through (not a context name: templates
cannot write it, `templates.CONTEXT_NAMES`)."""


class OverRenderBudget(Exception):
    """A render spent more than its budget; the message names the limit, never data."""


@dataclass
class Budget:
    """What the render in progress may still spend."""

    steps: int
    chars: int
    most_steps: int = 0

    @classmethod
    def of(cls, limits: Limits) -> Budget:
        return cls(limits.message_render_steps, limits.message_part_bytes,
                   limits.message_render_steps)

    def spend(self, steps: int) -> None:
        self.steps -= steps
        if self.steps < 0:
            raise OverRenderBudget(f"more than {self.most_steps} loop items, range() elements "
                                   "and calls (limits.message_render_steps)")

    def check_size(self, size: int, what: str) -> None:
        if size > self.chars:
            raise OverRenderBudget(f"{what} of more than {self.chars} characters "
                                   "(limits.message_part_bytes)")


_BUDGET: ContextVar[Budget | None] = ContextVar("tailor_render_budget", default=None)


@contextmanager
def spending(budget: Budget):
    """Renders in this block (this task) spend `budget`."""
    token = _BUDGET.set(budget)
    try:
        yield budget
    finally:
        _BUDGET.reset(token)


def _budget() -> Budget:
    """The render's budget (a render outside `spending` gets the default limits)."""
    budget = _BUDGET.get()
    if budget is None:
        budget = Budget.of(Limits())
        _BUDGET.set(budget)
    return budget


def _size(value) -> int:
    return len(value) if isinstance(value, (str, bytes, list, tuple)) else 0


def _check_binop(budget: Budget, operator: str, left, right) -> None:
    """Refuse before computing a `*` or `**` whose result would be over the size bound."""
    if operator == "*":
        for seq, n in ((left, right), (right, left)):
            if isinstance(n, int) and _size(seq):
                budget.check_size(_size(seq) * max(n, 0), "a repeated value")
    elif operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0:
        digits = right * abs(left).bit_length() * 0.302  # decimal digits of the result, about
        budget.check_size(int(digits), "a power")


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

    intercepted_binops = frozenset({"*", "**", "+"})  # also keeps them from constant folding

    def __init__(self, **options):
        super().__init__(**options)
        self.globals.update({"range": _range, LOOP: _loop})

    def call_binop(self, context, operator: str, left, right):
        budget = _budget()
        _check_binop(budget, operator, left, right)
        out = super().call_binop(context, operator, left, right)
        budget.check_size(_size(out), "a value")
        return out

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 - Jinja's signature
        _budget().spend(1)
        return super().call(__context, __obj, *args, **kwargs)

    async def generate(self, template, context) -> str:
        """`template` rendered with `context`, stopped once the output is over the bound."""
        budget, out, size = _budget(), [], 0
        async for piece in template.generate_async(context):
            size += len(piece)
            budget.check_size(size, "output")
            out.append(piece)
        return self.concat(out)


def count_loops(ast: nodes.Template) -> nodes.Template:
    """Pass every `{% for %}`'s iterable through `LOOP` (in place; returns `ast`)."""
    for loop in ast.find_all(nodes.For):
        loop.iter = nodes.Call(nodes.Name(LOOP, "load", lineno=loop.lineno), [loop.iter], [],
                               None, None, lineno=loop.lineno)
    return ast
