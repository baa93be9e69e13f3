"""Log set-up shared by every process of the server (workers and writer processes), and the
per-RPC context every log line carries: the request id and the W3C trace context.

`TAILOR_LOG_FORMAT=json` writes one JSON object per line (`ts`, `level`, `logger`, `message`,
`pid`, and `request_id`, `trace_id`, `parent_id` inside an RPC, `exc` for a traceback); `text`
(the default) the classic line with `[request id]` after the logger name. `serve` hands the
format and level it runs with to the spawned workers and writer processes (`hand_down`), so they
log the same way. Messages never hold a raw user id (`server.security.userref.user_ref`).
"""
from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import time
from typing import NamedTuple

__all__ = ["CallContext", "Spaced", "bind_call", "configure_logging", "current_call", "hand_down",
           "parse_traceparent", "reset_call", "valid_answer_id", "valid_request_id"]

HANDED_FORMAT, HANDED_LEVEL = "TAILOR_SERVER_LOG_FORMAT", "TAILOR_SERVER_LOG_LEVEL"
"""The variables in which `serve` hands its log format and level down to its processes. Not
TAILOR_LOG_FORMAT and TAILOR_LOG_LEVEL: those are settings, and a SIGHUP's re-read of the
`--config` file (`workers._say_settings`) took the values exported there as variables above the
file, so an edit of its `log_format` or `log_level` was said to be unchanged."""

_TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_ANSWER_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}(?:\.[0-9]{1,9})?")


class CallContext(NamedTuple):
    """What identifies the RPC being handled in its log lines."""

    request_id: str
    trace_id: str = ""
    parent_id: str = ""


_call: contextvars.ContextVar[CallContext | None] = contextvars.ContextVar("tailor_call", default=None)


def current_call() -> CallContext | None:
    """The context of the RPC being handled (None outside one, e.g. in a batch thread)."""
    return _call.get()


def bind_call(request_id: str, traceparent: str = "") -> tuple[CallContext, contextvars.Token]:
    """Make this task's log lines carry `request_id` and the trace of `traceparent`."""
    call = CallContext(request_id, *parse_traceparent(traceparent))
    return call, _call.set(call)


def reset_call(token: contextvars.Token) -> None:
    try:
        _call.reset(token)
    except ValueError:  # a stream closed from another context: its task ends anyway
        pass


def parse_traceparent(value: str) -> tuple[str, str]:
    """(trace id, parent span id) of a W3C `traceparent` header; ("", "") if it is not one
    (an all-zero trace or parent id is invalid too)."""
    match = _TRACEPARENT.fullmatch(value or "")
    if not match or not int(match[1], 16) or not int(match[2], 16) or value.startswith("ff"):
        return "", ""
    return match[1], match[2]


def valid_request_id(value: str) -> bool:
    """A caller's `x-request-id` is kept if it is short and plain (it goes into every log line)."""
    return bool(_REQUEST_ID.fullmatch(value or ""))


def valid_answer_id(value: str) -> bool:
    """A Recommend answer's `request_id` as an event sends it back: a call's request id, with
    `.<i>` after it for answer i of a RecommendBatch (so past 64 characters when the caller's
    `x-request-id` took them all)."""
    return bool(_ANSWER_ID.fullmatch(value or ""))


class Spaced:
    """Which repeats of a warning to log: one per key every `every` seconds (a hot user's
    damaged record is read at each of their calls; the metric beside it counts each). At most
    `kept` keys are remembered (then all are forgotten: a few repeats logged again). Safe from
    several threads (a race logs one repeat more)."""

    def __init__(self, every: float = 60.0, kept: int = 10_000, clock=time.monotonic):
        self.every, self.kept, self._clock = every, kept, clock
        self._said: dict[object, float] = {}

    def due(self, key) -> bool:
        """Whether to log the warning of `key` now (if so, its next is `every` seconds on)."""
        now, said = self._clock(), self._said
        last = said.get(key)
        if last is not None and now - last < self.every:
            return False
        if len(said) >= self.kept:
            said.clear()
        said[key] = now
        return True


class _CallFilter(logging.Filter):
    """Adds `request_id`, `trace_id`, `parent_id` and `call` (" [request id]" or "") to records."""

    def filter(self, record: logging.LogRecord) -> bool:
        call = _call.get()
        record.request_id, record.trace_id, record.parent_id = call or ("", "", "")
        record.call = f" [{call.request_id}]" if call else ""
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line; empty context fields are left out."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
               + f".{int(record.msecs):03d}Z",
               "level": record.levelname, "logger": record.name, "message": record.getMessage(),
               "pid": record.process}
        for key in ("request_id", "trace_id", "parent_id"):
            value = getattr(record, key, "")
            if value:
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def hand_down(log_format: str, level: str) -> None:
    """Set this process's log format and level in its environment, for the processes it starts
    (spawned workers, writer processes) to log the same way (`configure_logging`)."""
    os.environ.update({HANDED_FORMAT: log_format, HANDED_LEVEL: level})


def configure_logging(log_format: str | None = None, level: str | None = None) -> None:
    """Set the root logger up once per process; unset arguments come from the server that
    started this process (`hand_down`), else from `TAILOR_LOG_FORMAT` and `TAILOR_LOG_LEVEL`
    (a command or writer started on its own)."""
    env = os.environ
    log_format = log_format or env.get(HANDED_FORMAT) or env.get("TAILOR_LOG_FORMAT", "text")
    level = level or env.get(HANDED_LEVEL) or env.get("TAILOR_LOG_LEVEL", "INFO")
    handler = logging.StreamHandler()
    handler.addFilter(_CallFilter())
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(
            f"%(asctime)s %(levelname)s [{os.getpid()}] %(name)s%(call)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
