"""Message errors: each names what went wrong; `server.errors` maps them to gRPC statuses."""
from __future__ import annotations

from ..errors import FailedPrecondition, InvalidArgument

__all__ = ["TemplateInvalid", "RenderFailed", "OverChannelLimit", "NotAMessageChannel"]


class TemplateInvalid(InvalidArgument):
    """A variant's part does not compile, or names a variable the context never holds."""

    def __init__(self, variant: int, variant_id: str, part: str, line: int | None, problem: str):
        self.variant_id, self.part, self.line = variant_id, part, line
        at = f", line {line}" if line else ""
        super().__init__(f"variants[{variant}].content[{part!r}]",
                         f"template of variant {variant_id!r}, part {part!r}{at}: {problem}")


class RenderFailed(FailedPrecondition):
    """A template compiled but could not render for this user (e.g. an attribute it needs
    without a `default` filter). The message names variable and line, never the user's data."""

    def __init__(self, variant_id: str, part: str, line: int | None, problem: str):
        at = f", line {line}" if line else ""
        super().__init__(f"variant {variant_id!r}, part {part!r}{at}: {problem}")


class OverChannelLimit(FailedPrecondition):
    """A rendered part is longer than its channel allows (`Limits`)."""

    def __init__(self, variant_id: str, part: str, problem: str):
        super().__init__(f"variant {variant_id!r}, part {part!r}: {problem}")


class NotAMessageChannel(FailedPrecondition):
    def __init__(self, campaign_id: str, channel: str):
        super().__init__(f"campaign {campaign_id!r} is on channel {channel!r}: messages are "
                         "composed for email, sms and push campaigns only")
