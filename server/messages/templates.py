"""Variant parts as Jinja2 templates: compiled and checked once per campaign revision, rendered
per message.

Templates run in Jinja2's `SandboxedEnvironment` (no attribute of Python internals, ranges
capped) with `StrictUndefined`: a variable the context lacks is an error, never an empty string
(`{{ first_name | default("there") }}` gives a fallback). HTML parts are autoescaped. Rendering is
async, so the context's `recommend(...)` helper (a coroutine) is awaited where a template calls it.

Checks at CreateCampaign/UpdateCampaign (`check_variants`): every part of the campaign's channels
must compile and may only name variables the context defines (`CONTEXT_NAMES`); a failure is
INVALID_ARGUMENT naming variant, part and line. A part that fails for one user's data at render
(any error: undefined, `ZeroDivisionError`, `TypeError`...) is RenderFailed naming variant, part,
line and the kind of error, never the user's data (`_problem`).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from jinja2 import StrictUndefined, TemplateSyntaxError, meta, nodes

from ..errors import TailorError
from ..limits import DEFAULT_LIMITS, Limits
from ..validation import script_link_problem
from .channels import HTML_PARTS, LINK_PARTS, PARTS, check_push_lengths, check_sms_length
from .errors import OverChannelLimit, RenderFailed, TemplateInvalid
from .sandbox import BoundedSandbox, Budget, OverRenderBudget, bound, spending

__all__ = ["CONTEXT_NAMES", "ATTRIBUTE_NAMES", "CompiledCampaign", "TemplateCache",
           "check_variants", "compile_variants", "literal_text", "template_parts"]

ATTRIBUTE_NAMES = ("first_name", "last_name", "name", "city", "country", "language")
"""Profile attributes also reachable by their bare name (`{{ first_name }}`); any attribute is
`profile.<key>`. A user without one leaves it undefined: give templates a `default`."""
CONTEXT_NAMES = frozenset({"profile", "interests", "content", "campaign", "recommend", "channel",
                           "unsubscribe_url", *ATTRIBUTE_NAMES})
"""Every top-level name a template may use (`server.messages.context` fills them)."""


class _LookedUp(str):
    """An undefined error's message that remembers the name looked up (`name`), so `_problem`
    can tell a name written in the template from one taken from the user's data."""

    name: object

    def __new__(cls, message: str, name: object):
        out = super().__new__(cls, message)
        out.name = name
        return out


class _Undefined(StrictUndefined):
    """StrictUndefined whose error messages are `_LookedUp`."""

    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        return _LookedUp(super()._undefined_message, self._undefined_name)


_TEXT = BoundedSandbox(undefined=_Undefined, autoescape=False, enable_async=True)
_HTML = BoundedSandbox(undefined=_Undefined, autoescape=True, enable_async=True)


def _env(part: str) -> BoundedSandbox:
    return _HTML if part in HTML_PARTS else _TEXT


def template_parts(channels: Iterable[str]) -> tuple[str, ...]:
    """The content keys that are templates for a campaign on these channels."""
    out: list[str] = []
    for channel in channels:
        out += [p for p in PARTS.get(channel, ()) if p not in out]
    return tuple(out)


def _unknown_name(ast: nodes.Template) -> tuple[str, int] | None:
    """(name, line) of the first variable the context does not define, or None."""
    unknown = meta.find_undeclared_variables(ast) - CONTEXT_NAMES
    if not unknown:
        return None
    found = [(n.lineno, n.name) for n in ast.find_all(nodes.Name) if n.name in unknown]
    line, name = min(found) if found else (0, sorted(unknown)[0])
    return name, line


def _compile(i: int, variant_id: str, part: str, source: str):
    env = _env(part)
    try:
        ast = env.parse(source)
        unknown = _unknown_name(ast)
        if unknown is not None:
            name, line = unknown
            raise TemplateInvalid(i, variant_id, part, line, f"unknown variable {name!r} (known: "
                                  f"{', '.join(sorted(CONTEXT_NAMES))})")
        return _Part(env.from_string(bound(ast)), _literals(ast))
    except TemplateSyntaxError as err:
        raise TemplateInvalid(i, variant_id, part, err.lineno, err.message or "syntax error") \
            from None


_WRITTEN = ((nodes.Name, "name"), (nodes.Getattr, "attr"), (nodes.Const, "value"),
            (nodes.Keyword, "key"))
"""The nodes whose text is a name or key a lookup may use, and the field holding it."""


def _literals(ast: nodes.Template) -> frozenset:
    """Every name, attribute, keyword and str/int constant written in the template's text."""
    found = (getattr(node, field) for kind, field in _WRITTEN for node in ast.find_all(kind))
    return frozenset(v for v in found if isinstance(v, (str, int)))


@dataclass(frozen=True)
class _Part:
    """A compiled part and what its text names (`_literals`)."""

    template: object
    literals: frozenset


@dataclass(frozen=True)
class CompiledCampaign:
    """Per variant id, its compiled parts."""

    parts: Mapping[str, Mapping[str, _Part]]
    limits: Limits = DEFAULT_LIMITS

    async def render(self, variant_id: str, context: Mapping[str, object]) -> dict[str, str]:
        """Every part of the variant rendered with `context`, within one `Budget` of `limits`;
        any error (a template failing on this user's data, recommend()'s bad k or category,
        the budget spent) is RenderFailed naming part and line."""
        out = {}
        with spending(Budget.of(self.limits)):
            for name, part in self.parts.get(variant_id, {}).items():
                try:
                    out[name] = await part.template.environment.generate(part.template, context)
                except Exception as err:  # not CancelledError: that is a BaseException
                    raise RenderFailed(variant_id, name, _template_line(err.__traceback__),
                                       _problem(err, part.literals)) from None
        return out


def _problem(err: Exception, literals: frozenset) -> str:
    """The kind of error without the user's data: Jinja's undefined message only when what it
    names is written in the template ('x' is undefined, 'dict object' has no attribute 'x'), an
    InvalidArgument's field, otherwise the exception's type (its message may hold the data)."""
    kind = type(err).__name__
    if isinstance(err, OverRenderBudget):
        return f"{kind}: {err}"
    said = err.args[0] if err.args else None
    if isinstance(said, _LookedUp):
        if said.name is None or _written(said.name, literals):
            return f"{kind}: {said}"
        return f"{kind}: a key or attribute taken from the data is undefined"
    field = getattr(err, "field", None) if isinstance(err, TailorError) else None
    return f"{kind}: {field}" if field else kind


def _written(name: object, literals: frozenset) -> bool:
    try:
        return name in literals
    except TypeError:  # unhashable: not from the template's text
        return False


def _template_line(tb) -> int | None:
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def compile_variants(variants: Sequence[tuple[str, Mapping[str, str]]],
                     channels: Iterable[str], limits: Limits = DEFAULT_LIMITS) -> CompiledCampaign:
    """Compile the template parts of `(variant id, content)` pairs; TemplateInvalid on the first
    bad one. Parts the variant does not have are skipped (rendered as absent). `limits`: the
    bounds of a render (`sandbox.Budget`)."""
    names = template_parts(channels)
    compiled = {}
    for i, (variant_id, content) in enumerate(variants):
        compiled[variant_id] = {part: _compile(i, variant_id, part, content[part])
                                for part in names if part in content}
    return CompiledCampaign(compiled, limits)


def check_variants(variants: Sequence[tuple[str, Mapping[str, str]]],
                   channels: Iterable[str], limits: Limits = DEFAULT_LIMITS) -> None:
    """The creation-time check: raise TemplateInvalid unless every part compiles cleanly
    (`channels`: the campaign's message channels, `CampaignSpec.message_channels`) and a push
    variant's text outside any tag is within the push limits (`literal_text`)."""
    channels = list(channels)
    if channels:
        compile_variants(variants, channels)
    _check_literals(variants, channels, limits)
    links = LINK_PARTS.intersection(template_parts(channels))
    for i, (variant_id, content) in enumerate(variants):
        for part in sorted(links.intersection(content)):
            # its literal start is every render's: a campaign stored before this check is
            # refused at render instead (`channels.check_parts`, FAILED_PRECONDITION)
            if (problem := script_link_problem(content[part])) is not None:
                raise TemplateInvalid(i, variant_id, part, 1, problem)


def literal_text(source: str, part: str) -> str:
    """The text of a part's template outside any tag (`{{ }}`, `{% %}`), in order: every
    render holds it, with what the tags give in between, so its characters and its encoded
    bytes (JSON escapes go character by character) are a floor of every render's."""
    ast = _env(part).parse(source)
    return "".join(node.data for out in ast.body if isinstance(out, nodes.Output)
                   for node in out.nodes if isinstance(node, nodes.TemplateData))


_LENGTHS = {"sms": check_sms_length, "push": check_push_lengths}
"""The channel limits `channels.check_parts` holds a render to, by channel."""


def _check_literals(variants: Sequence[tuple[str, Mapping[str, str]]], channels: list[str],
                    limits: Limits) -> None:
    """A variant over an SMS or push limit by its literal text alone: every message of it on
    that channel would be refused at render (FAILED_PRECONDITION, each recipient of a send
    failed), so CreateCampaign refuses it. Not SMS where the campaign mails too: email's
    `text` part is the same, and may go by email. A campaign stored before is refused at
    render."""
    checked = [c for c in _LENGTHS if c in channels and not (c == "sms" and "email" in channels)]
    for channel in checked:
        for i, (variant_id, content) in enumerate(variants):
            floor = {p: literal_text(content[p], p) for p in PARTS[channel] if p in content}
            try:
                _LENGTHS[channel](variant_id, floor, limits)
            except OverChannelLimit as err:
                raise TemplateInvalid(i, variant_id, err.part, None, "its text outside any tag, "
                                      f"in every message, is already over: {err.problem}") \
                    from None


class TemplateCache:
    """Compiled campaigns keyed by (campaign id, revision): an update makes a new entry."""

    def __init__(self, capacity: int = 256, limits: Limits = DEFAULT_LIMITS):
        self.capacity, self.limits = capacity, limits
        self._compiled: dict[tuple[str, int], CompiledCampaign] = {}

    def get(self, campaign_id: str, revision: int, variants, channels) -> CompiledCampaign:
        key = (campaign_id, revision)
        found = self._compiled.get(key)
        if found is None:
            if len(self._compiled) >= self.capacity:
                self._compiled.pop(next(iter(self._compiled)))
            found = self._compiled[key] = compile_variants(variants, channels, self.limits)
        return found
