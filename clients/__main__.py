"""`python -m clients COMMAND --server HOST:PORT ...` — every command prints JSON (a command
returns a dict or a typed result from `clients.TailorClient`, printed as its dataclass fields)."""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import math
import os
import re
import sys
from datetime import UTC

import grpc
from google.protobuf import descriptor_pool, json_format

from contract.ids import TEXT_CONTROL
from protos.tailor.v1 import catalog_pb2 as cat_pb

from . import _quiet, transport
from .client import (
    DELIVER_TIMEOUT,
    MAX_TIMEOUT,
    TailorClient,
    TailorError,
    event_from_dict,
    new_request_id,
    path_from_dict,
)
from .results import CatalogChange


def _recommend(client: TailorClient, args) -> dict:
    recs = client.recommend(args.user, args.k, channel=args.channel, categories=args.category or (),
                            exclude=args.exclude or ())
    return dataclasses.asdict(recs)


class UsageError(Exception):
    """What the user gave is wrong (a file, a line of it, a flag): one line, exit 2."""


class PartlyStored(Exception):
    """A command stopped after part of what it sends was stored (a `catalog upsert` of several
    batches stopped by a later one): one line saying what was stored and what was not, exit 3."""


IN_DOUBT = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                      grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN,
                      grpc.StatusCode.INTERNAL, grpc.StatusCode.ABORTED})
"""Statuses a call can end with after the server acted on it (its answer lost, a deadline
passed, the server stopped part-way): unlike a refusal, they leave open whether it was done."""


@contextlib.contextmanager
def _in_doubt(note):
    """A call whose answer may never have come: a TailorError of an IN_DOUBT status, or a
    Ctrl-C, raised in the block says `note()` too (what may have been done, how to go on)."""
    try:
        yield
    except (TailorError, KeyboardInterrupt) as err:
        if isinstance(err, KeyboardInterrupt) or err.code in IN_DOUBT:
            err.args = (f"{err}; {note()}" if isinstance(err, TailorError) else note(),)
        raise


class _EventLines:
    """The events of a JSON-lines source (read in binary), each checked before it is sent; the
    stream ends cleanly at the first bad line (`bad` says which and why: a line that is not
    UTF-8 too), so what came before is committed."""

    def __init__(self, source, name: str):
        self.source, self.name, self.bad, self.read = source, name, None, 0

    def __iter__(self):
        for n, line in enumerate(self.source, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line.decode("utf-8"))
                if not isinstance(record, dict):
                    raise ValueError(f"expected a JSON object, got {type(record).__name__}")
                event_from_dict(record)
            except Exception as err:  # noqa: BLE001 - JSON, protobuf ParseError, bad values
                self.bad = f"{self.name} line {n}: {str(err).splitlines()[0] if str(err) else err!r}"
                return
            self.read += 1
            yield record


def _open(path: str, binary: bool = False):
    """The file to read (stdin for '' or '-'); UsageError naming it if it cannot be opened.
    Text skips a UTF-8 byte order mark (a spreadsheet's export starts with one: it was read
    into the first path's first channel, or refused as JSON)."""
    if not path or path == "-":
        return sys.stdin.buffer if binary else sys.stdin
    try:
        return open(path, "rb") if binary else open(path, encoding="utf-8-sig")
    except OSError as err:
        raise UsageError(_file_error(path, err)) from None


class _Out:
    """The --out file of a streaming command, opened before the call (a path that cannot be
    written is refused first) but emptied only at the first line or once the call ended well:
    a call refused before its first answer (a mistyped campaign: NOT_FOUND) leaves a file
    already there as it was, and none where there was none."""

    def __init__(self, path: str):
        self.path, self.new, self.started = path, not os.path.lexists(path), False
        try:
            self.fh = open(path, "a", encoding="utf-8")  # append: nothing emptied yet
        except OSError as err:
            raise UsageError(_file_error(path, err)) from None

    def write(self, text: str) -> None:
        if not self.started:
            self._start()
        self.fh.write(text)

    def _start(self) -> None:
        self.started = True
        if self.fh.seekable():  # a file (not a pipe): appends now land from its start
            self.fh.truncate(0)

    def __enter__(self):
        return self

    def __exit__(self, kind, err, tb) -> None:
        if kind is None and not self.started:  # answered, with nothing: an empty file
            self._start()
        self.fh.close()
        if not self.started and self.new:
            os.unlink(self.path)


def _same_file(a: str, b: str) -> bool:
    """Whether the paths name one existing file (links and spellings alike)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return False


def _file_error(path: str, err: OSError) -> str:
    return f"{path}: {(err.strerror or str(err)).lower()}"


def _track(client: TailorClient, args) -> dict:
    """TrackEventStream of a file. Its one summary comes at the end: a stream that ends without
    it (IN_DOUBT: a deadline, a server gone) says how far it read, of which any part may be
    committed, and that sending the file again is safe (event ids dedupe)."""
    with _open(args.file, binary=True) as source:
        lines = _EventLines(source, "stdin" if args.file in ("", "-") else args.file)
        with _in_doubt(lambda: f"the stream ended after {lines.read} events of {lines.name} "
                       "were read, any of them may be committed: tracking it again is safe "
                       "(event ids dedupe: the committed ones count as duplicates)"):
            reply = client.track(lines, batch_size=args.batch_size, timeout=args.timeout)
    if lines.bad:
        raise UsageError(f"{lines.bad}; the {reply.accepted} events before it were committed "
                         f"({reply.duplicates} duplicates, {len(reply.rejected)} rejected)")
    return {"accepted": reply.accepted, "duplicates": reply.duplicates, "rejected": len(reply.rejected),
            "rejections": [dataclasses.asdict(r) for r in reply.rejected[:100]]}


class _UserIds:
    """The user ids of a file read in binary, one a line (blank lines skipped, and `#` comments
    with `comments`); it ends at the first line that is not UTF-8 text, and `bad` says which."""

    def __init__(self, source, name: str, comments: bool = False):
        self.source, self.name, self.comments, self.bad = source, name, comments, None

    def __iter__(self):
        for n, raw in enumerate(self.source, 1):
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                self.bad = f"{self.name} line {n}: not UTF-8 text"
                return
            if line and not (self.comments and line.startswith("#")):
                yield line


def _user_file(path: str) -> list[str]:
    """One user id a line; blank lines and `#` comments skipped."""
    with _open(path, binary=True) as fh:
        ids = _UserIds(fh, path or "stdin", comments=True)
        users = list(ids)
    if ids.bad:
        raise UsageError(ids.bad)
    return users


def _campaign(client: TailorClient, args) -> object:
    if args.action in ("create", "update"):
        with _open(args.file) as fh:
            try:
                spec = json.load(fh)
            except ValueError as err:  # json.JSONDecodeError names the line and column
                raise UsageError(f"{args.file}: {err}") from None
        make = client.create_campaign if args.action == "create" else client.update_campaign
        try:
            with _in_doubt(lambda: f"the campaign may have been {args.action}d: see `campaign "
                           "list` before doing it again (a second create is refused: already "
                           "exists)") if args.action == "create" else contextlib.nullcontext():
                return make(spec)
        except json_format.ParseError as err:  # valid JSON, not a CampaignSpec: it names the field
            raise UsageError(f"{args.file}: {_parse_error(err)}") from None
    if args.action == "list":
        return {"campaigns": [dataclasses.asdict(c) for c in client.list_campaigns(args.archived)]}
    if args.action == "archive":
        return client.archive_campaign(args.campaign)
    if args.action == "get":
        return client.get_campaign(args.campaign)
    if args.action == "choose":
        return dataclasses.asdict(client.choose_variant(args.campaign, args.user,
                                                        dict(_pair(kv) for kv in args.context or ())))
    if args.action == "reward":
        return dataclasses.asdict(client.report_reward(args.decision, args.reward))
    if args.action == "sample-size":
        return client.sample_size(args.mde, baseline_rate=args.baseline_rate,
                                  baseline_mean=args.baseline_mean, variance=args.variance,
                                  alpha=args.alpha, power=args.power, arms=args.arms,
                                  allocation=args.allocation or ())
    if args.action == "plan":
        return _plan(client, args)
    if args.action == "send":
        return _send(client, args)
    if args.action == "progress":
        return client.send_progress(args.send)
    if args.action == "cancel":
        return client.cancel_send(args.send)
    if args.action == "export":
        records = client.export_decisions(
            args.campaign, start=_time_flag("--start", args.start), end=_time_flag("--end", args.end),
            include_pending=args.include_pending, timeout=args.timeout)
        n = 0
        with _Out(args.out) as fh:  # a masked context value is NaN: null in strict JSON
            try:
                for rec in records:
                    fh.write(json.dumps(_finite(rec), allow_nan=False) + "\n")
                    n += 1
            except (TailorError, KeyboardInterrupt) as err:  # what came before is in the
                if n:  # file: say it is partial (a Ctrl-C may land after a write, before n)
                    cut = "at least " if isinstance(err, KeyboardInterrupt) else ""
                    note = f"{args.out} is incomplete: {cut}the {n} decisions before it were written"
                    err.args = (f"{err}; {note}" if isinstance(err, TailorError) else note,)
                raise
        return {"decisions": n, "out": args.out}
    return _finite(dataclasses.asdict(client.campaign_stats(args.campaign)))


_NO_FIELD = re.compile(r'Message type "([\w.]+)" has no field named "([^"]*)" at "([^"]*)"')


def _parse_error(err: json_format.ParseError) -> str:
    """protobuf's ParseError in one line; an unknown field's lists the message's fields as the
    .proto and the docs spell them (protobuf's own list, on a second line, is in camelCase)."""
    first = str(err).splitlines()[0]
    found = _NO_FIELD.search(first)
    if not found:
        return first
    fields = descriptor_pool.Default().FindMessageTypeByName(found[1]).fields
    return (f"{found[3]} has no field {found[2]!r} "
            f"(fields: {', '.join(f.name for f in fields)})")


def _send(client: TailorClient, args):
    """SendCampaign under a request id (--request-id, else a new one). A send that ended
    without its answer may have started its job, and the same command with another id starts
    a second one (every recipient messaged twice): the error names the id that repeats it."""
    request_id = args.request_id or new_request_id()
    users, context = _user_file(args.users), dict(_pair(kv) for kv in args.context or ())
    with _in_doubt(lambda: f"the send may have started: run the command again with "
                   f"--request-id {request_id} to be answered its progress (with another id, "
                   "or none, a second send starts)"):
        return client.send_campaign(args.campaign, users, rate=args.rate, context=context,
                                    request_id=request_id)


def _rollback(client: TailorClient, args) -> dict:
    """Rollback, not retried (`clients.retry`): one that ended without its answer may have been
    made, and the same command again (no --version) goes one version further back."""
    if args.version:  # a repeat goes to the same version
        return dataclasses.asdict(client.rollback(args.version, args.timeout))
    with _in_doubt(lambda: "the rollback may have been made: see `status` before rolling back "
                   "again (a second one goes one version further back)"):
        return dataclasses.asdict(client.rollback(args.version, args.timeout))


def _present(items) -> dict:
    """`dataclasses.asdict`'s dict_factory leaving out what the reply lacks (None)."""
    return {k: v for k, v in items if v is not None}


def _floats(value, fn):
    """`value` (a result's dicts and lists) with `fn` applied to each float in it."""
    if isinstance(value, float):
        return fn(value)
    if isinstance(value, dict):
        return {k: _floats(v, fn) for k, v in value.items()}
    if isinstance(value, list):
        return [_floats(v, fn) for v in value]
    return value


def _finite(value):
    """`value` with NaN and infinite floats as None: JSON has neither (a strict parser refuses
    Python's NaN / Infinity)."""
    return _floats(value, lambda x: x if math.isfinite(x) else None)


def _model(client: TailorClient, args):
    if args.action == "stats":
        # JSON has no Infinity: a revenue interval without an upper bound prints null
        stats = client.model_stats(args.version, args.channel, args.k or (), args.confidence)
        return _finite(dataclasses.asdict(stats, dict_factory=_present))
    if args.action == "drift":
        report = dataclasses.asdict(client.drift_report())
        for f in report["features"]:  # JSON has no NaN: a feature without live values has no PSI
            f["psi"] = None if math.isnan(f["psi"]) else f["psi"]
        return report
    end = client.promote_canary if args.action == "promote" else client.abort_canary
    done = {"promote": "promoted", "abort": "aborted"}[args.action]
    with _in_doubt(lambda: f"the canary may have been {done}: see `status` before "
                   "doing it again (a second one is refused: no canary is running)"):
        return dataclasses.asdict(end(args.version, args.timeout))


def _suppression(client: TailorClient, args) -> object:
    address = {"email": args.email or "", "phone": args.phone or "",
               "push_token": args.push_token or ""}
    if args.action == "add":
        return client.add_suppression(**address, reason=args.reason)
    if args.action == "remove":
        return client.unsuppress(**address)
    return client.check_suppression(**address)


def _plan(client: TailorClient, args) -> dict:
    """Decisions for the user ids of a file (one a line, blank lines and `#` comments skipped,
    as for `send`; '-' = stdin) as JSON lines on stdout or in --out, with a progress bar on
    stderr; returns the counts."""
    name = "stdin" if args.users == "-" else args.users
    total = None
    if args.users != "-" and os.path.isfile(args.users):  # counted for the bar (not a pipe,
        # /dev/stdin or <(cmd): counting would empty it); not text: refused before a call
        with _open(args.users, binary=True) as fh:
            ids = _UserIds(fh, name, comments=True)
            total = sum(1 for _ in ids)
        if ids.bad:
            raise UsageError(ids.bad)
    context = dict(_pair(kv) for kv in args.context or ())  # before --out is opened
    if args.out not in ("", "-") and args.users != "-" and _same_file(args.out, args.users):
        raise UsageError(f"--out {args.out}: is the --users file (it would be emptied before "
                         "it is read)")
    source = _open(args.users, binary=True)
    sink = _Out(args.out) if args.out and args.out != "-" else contextlib.nullcontext(sys.stdout)
    counts = {"decisions": 0, "suppressed": 0, "holdout": 0}
    with source, sink as out, _progress(total, args.quiet) as bar:
        users = _UserIds(source, name, comments=True)  # the file `send` takes, read alike
        try:
            for d in client.plan_campaign(args.campaign, users, batch_size=args.batch_size,
                                          context=context, timeout=args.timeout):
                out.write(json.dumps(d) + "\n")
                counts["decisions"] += 1
                counts["suppressed"] += d["suppressed"]
                counts["holdout"] += d["holdout"]
                bar.update()
        except (TailorError, KeyboardInterrupt) as err:  # the decisions answered are logged
            if counts["decisions"]:  # an error comes after whole batches; Ctrl-C within one
                cut = isinstance(err, KeyboardInterrupt)
                note = (f"{'at least ' if cut else ''}the {counts['decisions']} users before it "
                        f"were planned (decisions logged, written to {args.out or 'stdout'}"
                        f"{'; the rest of the batch answered last was logged too' if cut else ''})"
                        f": planning them again logs second decisions")
                err.args = (f"{err}; {note}" if isinstance(err, TailorError) else note,)
            raise
        if users.bad:  # inside the with: --out not emptied if nobody was planned
            raise UsageError(f"{users.bad}; the {counts['decisions']} users before it were planned")
    return counts | {"out": args.out or "-"}


class _NoBar:
    """A progress bar that shows nothing (`_progress` without tqdm)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None

    def update(self, n: int = 1) -> None:
        return None


def _progress(total: int | None, quiet: bool):
    """A tqdm bar of users on stderr; tqdm comes with the `client` extra, which a server-only
    install (the container image) lacks: then no bar, said once unless `quiet`."""
    try:
        from tqdm import tqdm
    except ImportError:
        if not quiet:
            print("no progress bar: tqdm is not installed (pip install 'tailor[client]')",
                  file=sys.stderr)
        return _NoBar()
    return tqdm(total=total, unit="user", file=sys.stderr, disable=quiet)


def _health(client: TailorClient, args) -> dict:
    """Exit 0 only when the server (or --service) reports SERVING: container health checks."""
    status = client.health(args.service)
    if status != "SERVING":
        raise TailorError.named(status, "health check: not serving")
    return {"status": status}


def _key_value(flag: str, kv: str, shape: str) -> tuple[str, str]:
    """`KEY=VALUE` of `flag` split at its first `=` (the key may not be empty, the `=` may not
    be left out); UsageError saying `shape` otherwise."""
    key, sep, value = kv.partition("=")
    if not key or not sep:
        raise UsageError(f"{flag}: expected {shape}, got {kv!r}")
    return key, value


def _pair(kv: str) -> tuple[str, float]:
    """A `--context KEY=NUMBER`."""
    key, value = _key_value("--context", kv, "KEY=NUMBER")
    try:
        return key, float(value)
    except ValueError:
        raise UsageError(f"--context: expected KEY=NUMBER, got {kv!r}") from None


def _attribute_pair(kv: str) -> tuple[str, str]:
    """A `--attribute KEY=VALUE` (the value may be empty, the `=` may not be left out)."""
    return _key_value("--attribute", kv, "KEY=VALUE")


def _epoch(text: str) -> float:
    """Seconds since the epoch, or an ISO date/time (UTC unless it says otherwise)."""
    try:
        return float(text)
    except ValueError:
        from datetime import datetime
        ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return (ts if ts.tzinfo else ts.replace(tzinfo=UTC)).timestamp()


def _time_flag(flag: str, text: str) -> float:
    """`_epoch` of a flag's value (0 when not given); a usage error naming the flag."""
    try:
        return _epoch(text) if text else 0.0
    except ValueError:
        raise UsageError(f"{flag}: {text!r} is neither epoch seconds nor an ISO date/time") from None


TIMEOUTS = {("track", None): 300.0, ("attribute", None): 600.0, ("campaign", "plan"): 3600.0,
            ("campaign", "export"): 3600.0, ("rollback", None): 120.0,
            ("model", "promote"): 120.0, ("model", "abort"): 120.0, ("export-profile", None): 60.0}
"""--timeout's default by command (else 5 s): a stream's whole run, or a change the server
answers once every worker serves it. Applied after parsing: the subparsers share the one
--timeout action of their common parent, so a subparser's `set_defaults(timeout=...)` set
it for every command (the last one built: 600 s for `ping`)."""


def _default_timeout(args) -> None:
    if args.timeout is None and getattr(args, "deliver", False):  # `message compose --deliver`
        args.timeout = DELIVER_TIMEOUT  # waits for the relay: cut sooner, its repeat says nothing
    if args.timeout is None:
        args.timeout = TIMEOUTS.get((args.command, getattr(args, "action", None)), 5.0)


WIRE_DEFAULTS = {"n": "-n", "order": "--order", "arms": "--arms", "confidence": "--confidence"}
"""Flags whose request field reads 0 as "the server's default" (`audit tail -n`, `attribute
--order`, `campaign sample-size --arms`, `model stats --confidence`): left out, 0 goes; given 0,
the command got that default (100 lines, order 1, 2 arms, 0.95) instead of what was asked."""


def _check_numbers(args) -> None:
    """Flags whose number must be above 0: a zero or negative one is a usage error, not a
    deadline every call misses or a stream sent as one message, nor the server's default in
    its place (`WIRE_DEFAULTS`, 0 when left out); and a --timeout gRPC can wait for
    (`MAX_TIMEOUT`: one further away is a deadline already past)."""
    flags = {"timeout": "--timeout", "batch_size": "--batch-size", **WIRE_DEFAULTS}
    for dest, flag in flags.items():
        value = getattr(args, dest, None)
        if value is not None and not (value > 0 and math.isfinite(value)):
            raise UsageError(f"{flag}: {value:g} is not a number above 0")
    for dest in WIRE_DEFAULTS:
        if hasattr(args, dest) and getattr(args, dest) is None:
            setattr(args, dest, 0)
    if args.timeout is not None and args.timeout > MAX_TIMEOUT:
        raise UsageError(f"--timeout: {args.timeout:g} is above {MAX_TIMEOUT} (30 days)")


def _attribute(client: TailorClient, args) -> object:
    try:
        out = _attribute_call(client, args)
    except ValueError as err:  # a bad model name or file line, before any call
        raise UsageError(f"attribute: {err}") from None
    return _summed(dataclasses.asdict(out, dict_factory=_present))


SUM_DIGITS = 15
"""Significant digits the attribution's numbers are printed with: a double's decimal precision
(DBL_DIG), so the JSON keeps every digit a sum of the values given holds, without the last
bit's noise (credits and totals are float sums: `19.9 + 19.9 + 20.1` printed as
59.89999999999999)."""


def _summed(value):
    """`value` with each finite float at `SUM_DIGITS` significant digits, still a JSON number
    (59.89999999999999 is 59.9; a whole number stays as it was)."""
    return _floats(value, lambda x: float(f"{x:.{SUM_DIGITS}g}") if math.isfinite(x) else x)


def _attribute_call(client: TailorClient, args) -> object:
    spec = {"order": args.order, "shapley_form": args.shapley_form,
            "shapley_samples": args.samples, "path_credits": args.path_credits,
            "transition_matrix": args.transition_matrix}
    if args.stored:
        return client.attribute_stored(args.model, by=args.by, start=_epoch(args.start),
                                       end=_epoch(args.end) if args.end else 0,
                                       lookback_days=args.lookback_days,
                                       touch_types=args.touch_type or (), timeout=args.timeout, **spec)
    if not args.file:
        raise UsageError("attribute: give a path FILE ('-' for stdin) or --stored")
    with _open(args.file) as source:
        paths = _path_lines(source, "stdin" if args.file == "-" else args.file)
    return client.attribute(paths, args.model, timeout=args.timeout, **spec)


def _path_lines(source, name: str) -> list:
    """Every path of a file, or UsageError naming the file and its first bad line."""
    paths = []
    try:
        for n, line in enumerate(source, 1):
            if not line.strip():
                continue
            try:
                paths.append(_path_line(line.strip()))
            except ValueError as err:  # json.JSONDecodeError is a ValueError
                raise UsageError(f"{name} line {n}: {err}") from None
    except UnicodeDecodeError:  # decoded a block at a time: the line is not known
        raise UsageError(f"{name}: not UTF-8 text") from None
    return paths


def _path_line(line: str):
    """One line of a path file, checked before anything is sent: a JSON object becomes a
    tailor.v1.Path, anything else is a ChannelAttribution row (checked by the server)."""
    if not line.startswith("{"):
        return line
    record = json.loads(line)
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    return path_from_dict(record)


def _message(client: TailorClient, args) -> object:
    if args.action == "dead-letters":
        return {"letters": [dataclasses.asdict(d)
                            for d in client.dead_letters(args.limit, args.channel)]}
    if args.action == "retry":  # not retried by the channel (`clients.retry`): a repeat is safe
        with _in_doubt(lambda: "the letter may have been sent: run the command again (a letter "
                       "that went is not sent twice: its repeat answers NOT_FOUND once it is "
                       "dropped, FAILED_PRECONDITION while this retry still holds it)"):
            return client.retry_dead_letter(args.id)
    if args.action == "compose":
        return _compose(client, args)
    attrs = dict(_attribute_pair(kv) for kv in args.attribute or ())
    return client.preview_message(args.campaign, args.variant, args.user or "", attrs,
                                  args.interest or (), args.channel)



def _compose(client: TailorClient, args):
    """ComposeMessage under a request id (--request-id, else a new one). With --deliver, one
    that ended without its answer may have sent the message, and the same command with another
    id sends it again: the error names the id that repeats it."""
    request_id = args.request_id or new_request_id()
    context = dict(_pair(kv) for kv in args.context or ())
    doubt = _in_doubt(lambda: f"the message may have been sent: run the command again with "
                      f"--request-id {request_id} to be answered how it went (with another id, "
                      "or none, it is sent again)") if args.deliver else contextlib.nullcontext()
    with doubt:
        return client.compose_message(args.campaign, args.user, context, args.timeout,
                                      deliver=args.deliver, request_id=request_id)


def _upsert_attributes(client: TailorClient, args):
    """UpsertAttributes of the --set pairs (an empty value deletes the key)."""
    return client.upsert_attributes(args.user, dict(_key_value("--set", kv, "KEY=VALUE")
                                                    for kv in args.set))


MAX_ITEM_LINE = 1 << 20
"""Longest line of a `catalog upsert` file (bytes): an item's texts are a few KiB at most (the
server's `item_text_chars`), so a longer line is no item, and is not read whole."""


class _ItemLines:
    """The items of a JSON-lines source read in binary (blank lines skipped), each checked
    before it is sent; it ends at the first bad line (`bad` says which and why)."""

    def __init__(self, source, name: str):
        self.source, self.name, self.bad = source, name, None
        self.lines: list[int] = []
        """The line of each item yielded."""

    def __iter__(self):
        n = 0
        while line := self.source.readline(MAX_ITEM_LINE + 1):
            n += 1
            if len(line) > MAX_ITEM_LINE and not line.endswith(b"\n"):
                self.bad = f"{self.name} line {n}: longer than {MAX_ITEM_LINE} bytes"
                return
            if line.strip():
                try:
                    item = _item(line)
                except ValueError as err:
                    self.bad = f"{self.name} line {n}: {err}"
                    return
                self.lines.append(n)
                yield item

    def span(self, start: int, end: int) -> str:
        """Items `start` to `end` (0-based, end excluded) and their lines, as the user counts."""
        return f"items {start + 1}-{end}, lines {self.lines[start]}-{self.lines[end - 1]}"


def _item(line: bytes) -> dict:
    """A line as a tailor.v1.CatalogItem's dict; ValueError saying what it is not."""
    try:
        item = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None
    if not isinstance(item, dict):  # json.JSONDecodeError above is a ValueError too
        raise ValueError(f"expected a JSON object, got {type(item).__name__}")
    try:
        json_format.ParseDict(item, cat_pb.CatalogItem())
    except json_format.ParseError as err:
        raise ValueError(_parse_error(err)) from None
    return item


def _catalog(client: TailorClient, args):
    if args.action == "remove":
        return client.remove_items(args.item)
    name = "stdin" if args.file in ("", "-") else args.file
    with _open(args.file, binary=True) as source:
        items = _ItemLines(source, name)
        done = _upsert_batches(client, items, args)
    if items.bad and done is not None:
        raise PartlyStored(f"{items.bad}; {_stored(items, done.accepted, args.batch_size)}; "
                           f"nothing from its batch on was sent: {_SAFE}")
    if items.bad:
        raise UsageError(f"{items.bad}; nothing of {name} was sent")
    if done is None:
        raise UsageError(f"{name}: no items (one JSON object a line)")
    return done


_SAFE = "upserting the file again is safe (an item upserted again is replaced)"


def _upsert_batches(client: TailorClient, items: _ItemLines, args) -> CatalogChange | None:
    """UpsertItems of `items`, --batch-size a call (the server takes at most its
    `limits.upsert_items`, 1000 by default, a call), a batch sent once all its lines were
    read well (a file of one batch is sent whole or not at all); the changes summed, None when
    none went. An error says what was upserted and what not (`_upserted`); after a batch went,
    it is `PartlyStored` (exit 3)."""
    done, source, sending = None, iter(items), 0
    try:
        while (batch := list(itertools.islice(source, args.batch_size))) and not items.bad:
            sending = len(batch)
            change = client.upsert_items(batch, args.timeout)
            sending = 0
            done = change if done is None else dataclasses.replace(
                change, accepted=done.accepted + change.accepted,
                new_items=done.new_items + change.new_items)
    except (TailorError, KeyboardInterrupt) as err:
        stored = 0 if done is None else done.accepted
        err.args = (_upserted(err, items, stored, sending, args.batch_size),)
        if stored and isinstance(err, TailorError):
            raise PartlyStored(str(err)) from None
        raise
    return done


def _upserted(err: BaseException, items: _ItemLines, stored: int, sending: int,
              batch_size: int) -> str:
    """`err`'s line with what a `catalog upsert` stopped by it had upserted (the first `stored`
    items, in batches of `batch_size`) and what not (the batch of `sending` items it was
    sending, 0 when it was reading one, and every line after it)."""
    doubt = isinstance(err, KeyboardInterrupt) or err.code in IN_DOUBT
    parts = [_stored(items, stored, batch_size) if stored else f"nothing of {items.name} was "
             f"{'sent' if doubt and not sending else 'stored'}"]
    if sending:
        this = f"batch {stored // batch_size + 1} ({items.span(stored, stored + sending)})"
        where = None if doubt else re.search(r"\bitems\[(\d+)\]", str(err))
        if where is not None and int(where[1]) < sending:  # the server counts within the call
            this += f", whose items[{where[1]}] is line {items.lines[stored + int(where[1])]},"
        parts = parts[:1] if stored or not doubt else []
        parts.append(f"{this} {'may have been upserted' if doubt else 'was refused whole'}, "
                     "and nothing after it was sent")
    elif stored:
        parts.append("nothing after them was sent")
    note = f"{'; '.join(parts)}: {_SAFE}"
    return note if isinstance(err, KeyboardInterrupt) else f"{err}; {note}"


def _stored(items: _ItemLines, stored: int, batch_size: int) -> str:
    """What the batches of a `catalog upsert` that went stored: the first `stored` items."""
    batches = -(-stored // batch_size)
    which = "batch 1 (" if batches == 1 else f"batches 1-{batches} ("
    return f"{items.name}: {which}{items.span(0, stored)}) {'was' if batches == 1 else 'were'} upserted"


def _audit_line(line: str):
    """An audit line as JSON; one that is not (cut by a crash or a full disk, or edited) as
    `{"unreadable": its text}`, in its place: the auditor sees it, the rest still shows."""
    try:
        return json.loads(line)
    except ValueError:
        return {"unreadable": line}

COMMANDS = {
    "message": _message,
    "catalog": _catalog,
    "attribute": _attribute,
    "campaign": _campaign,
    "track": _track,
    "profile": lambda client, args: client.get_profile(args.user, args.max_events),
    "attributes": _upsert_attributes,
    "consent": lambda client, args: client.set_consent(args.user, args.channel, args.state == "in",
                                                       args.source, purpose=args.purpose),
    "suppression": _suppression,
    "delete": lambda client, args: dict(zip(("records_deleted", "erased_at"),
                                             client.erase_profile(args.user))),
    "export-profile": lambda client, args: client.export_profile(args.user, args.timeout),
    "recommend": _recommend,
    "status": lambda client, args: dataclasses.asdict(client.model_status()),
    "rollback": _rollback,
    "model": _model,
    "ping": lambda client, args: client.ping() or {"ok": True},
    "health": _health,
    "audit": lambda client, args: {"lines": [_audit_line(line) for line in client.audit_tail(args.n)]},
}


def _field_int(low: int, high: int):
    """An argparse type: an integer that fits the request field it goes to. Protobuf refuses
    one that does not (`-n -1` into a uint32, `-k 99999999999` into an int32) with a
    ValueError the command ended on, a traceback; argparse says it in one usage error, exit 2.
    Bounds of meaning (k at most 1000, ...) stay the server's to check and name."""
    def parse(text: str) -> int:
        value = int(text)  # not an integer: argparse's "invalid int value"
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is outside {low}..{high}")
        return value
    parse.__name__ = "int"
    return parse


INT32, UINT32 = _field_int(-2**31, 2**31 - 1), _field_int(0, 2**32 - 1)


class _Parser(argparse.ArgumentParser):
    """No abbreviated long options: `recommend --k 3` would be `--key 3` (the client key of
    TLS), not `-k 3`. Sub-commands' parsers are of this class too."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--server", default="127.0.0.1:50051", help="host:port (default %(default)s)")
    common.add_argument("--timeout", type=float, default=None,
                        help="deadline per call, seconds (default 5; a stream's whole run: "
                             "track 300, attribute 600, campaign plan and export 3600; "
                             "rollback, model promote and abort 120; export-profile 60 a page; "
                             f"message compose --deliver {DELIVER_TIMEOUT:g}; "
                             f"at most {MAX_TIMEOUT}, 30 days)")
    transport.add_arguments(common)
    parser = _Parser(prog="python -m clients", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("recommend", parents=[common], help="top-k items for a user")
    rec.add_argument("--user", required=True)
    rec.add_argument("-k", type=INT32, default=10)
    rec.add_argument("--channel", default="")
    rec.add_argument("--category", action="append", help="only this category (repeatable)")
    rec.add_argument("--exclude", action="append", help="never this item id (repeatable)")
    sub.add_parser("status", parents=[common], help="what the server has loaded (and the canary, "
                   "its share and guardrail figures, while one runs)")
    rb = sub.add_parser("rollback", parents=[common], help="serve the previous bundle version (or --version)")
    rb.add_argument("--version", default="",
                    help="a stored version (`status`: available_versions) to serve instead")
    sub.add_parser("ping", parents=[common], help="an empty RPC")
    he = sub.add_parser("health", parents=[common], help="grpc.health.v1 check; exit 1 unless SERVING")
    he.add_argument("--service", default="", help="one service's status (default: the whole server)")
    tr = sub.add_parser("track", parents=[common], help="send JSON-lines events (file or stdin)")
    tr.add_argument("file", nargs="?", default="-", help="JSON lines, one event each (default "
                    "stdin): a tailor.v1.Event, event_id, user_id, type and timestamp (epoch s or "
                    "RFC 3339) required; channel, campaign_id, item_id, value, attributes (a "
                    "message's reward: {\"decision_id\": ...})")
    tr.add_argument("--batch-size", type=int, default=500)
    pr = sub.add_parser("profile", parents=[common], help="everything stored about a user")
    pr.add_argument("--user", required=True)
    pr.add_argument("--max-events", type=INT32, default=0)
    ua = sub.add_parser("attributes", parents=[common], help="set a user's profile attributes "
                        "(email, phone, timezone, first_name, ...); prints the profile")
    ua.add_argument("--user", required=True)
    ua.add_argument("--set", action="append", required=True, metavar="KEY=VALUE",
                    help="an attribute (repeatable; an empty VALUE deletes the key)")
    co = sub.add_parser("consent", parents=[common], help="opt a user in or out of a channel")
    co.add_argument("--user", required=True)
    co.add_argument("--channel", required=True)
    co.add_argument("--state", choices=("in", "out"), required=True)
    co.add_argument("--source", default="cli",
                    help="where the change came from, kept in the consent history with its time "
                         "(e.g. 'signup form'; default 'cli'); the server's own sources "
                         "('sms reply ...', 'sms carrier STOP (21610) ...', 'unsubscribe "
                         "event ...') are refused")
    co.add_argument("--purpose", choices=("marketing", "transactional"), default="marketing",
                    help="which consent of the channel changes (default marketing; "
                         "transactional campaigns check only a transactional opt-out)")
    _suppression_parser(sub, common)
    de = sub.add_parser("delete", parents=[common], help="erase a user (right to erasure)")
    de.add_argument("--user", required=True)
    ex = sub.add_parser("export-profile", parents=[common],
                        help="everything held about a user as one JSON document (right of access)")
    ex.add_argument("--user", required=True)
    _model_parser(sub, common)
    _campaign_parser(sub, common)
    _message_parser(sub, common)
    _catalog_parser(sub, common)
    _attribute_parser(sub, common)
    au = sub.add_parser("audit", help="the audit log (role auditor)")
    au.add_subparsers(dest="action", required=True).add_parser(
        "tail", parents=[common], help="the newest audit lines, oldest first").add_argument(
        "-n", type=UINT32, help="lines, 1..1000 (default 100)")
    return parser


def _suppression_parser(sub, common) -> None:
    su = sub.add_parser("suppression", help="the global suppression list (addresses never to "
                        "contact; stored as keyed hashes only)")
    acts = su.add_subparsers(dest="action", required=True)
    for name, what in (("add", "list an address"), ("remove", "take an address off the list"),
                       ("check", "is an address listed, why and since when")):
        p = acts.add_parser(name, parents=[common], help=what)
        one = p.add_mutually_exclusive_group(required=True)
        one.add_argument("--email")
        one.add_argument("--phone", help="E.164, e.g. +15550100199")
        one.add_argument("--push-token", help="a device's push token, as the app's push "
                         "provider issued it (case-sensitive)")
        if name == "add":
            p.add_argument("--reason", choices=("bounce", "complaint", "manual", "unsubscribe"),
                           default="manual")


def _attribute_parser(sub, common) -> None:
    at = sub.add_parser("attribute", parents=[common], help="multi-touch attribution of a path "
                        "file (ChannelAttribution rows or JSON lines) or of stored events",
                        description="Prints the credits and totals as JSON, each number at 15 "
                        "significant digits (a double's precision: float sums print as the "
                        "sum, 59.9, not 59.89999999999999).")
    at.add_argument("file", nargs="?", help="path file ('-' for stdin); not with --stored")
    at.add_argument("--model", required=True, help="first, last, last_non_direct, linear, "
                    "position, time_decay, markov or shapley")
    at.add_argument("--order", type=INT32, help="Markov order 1..4 (default 1)")
    at.add_argument("--shapley-form", default="", choices=("", "counts", "rate", "ordered"))
    at.add_argument("--samples", type=INT32, default=0, help="sampled rate Shapley permutations")
    at.add_argument("--path-credits", action="store_true", help="also per-path touch credits")
    at.add_argument("--transition-matrix", action="store_true", help="Markov transition matrix")
    at.add_argument("--stored", action="store_true", help="journeys from stored events")
    at.add_argument("--by", choices=("channel", "campaign"), default="channel")
    at.add_argument("--start", default="0", help="first conversion time (epoch s or ISO date)")
    at.add_argument("--end", default="", help="conversions before this time (default: no limit)")
    at.add_argument("--lookback-days", type=float, default=30.0)
    at.add_argument("--touch-type", action="append", help="touchpoint event type (repeatable)")


def _message_parser(sub, common) -> None:
    me = sub.add_parser("message", help="messages: compose (logged decision, rendered), preview, "
                        "dead-letters, retry")
    acts = me.add_subparsers(dest="action", required=True)
    co = acts.add_parser("compose", parents=[common], help="the message a user gets now")
    co.add_argument("--campaign", required=True)
    co.add_argument("--user", required=True)
    co.add_argument("--context", action="append", metavar="KEY=NUMBER", help="request context (repeatable)")
    co.add_argument("--deliver", action="store_true", help="also send it (the server's SMTP relay "
                    "or webhook), or schedule it past quiet hours: `delivered`, `scheduled`")
    co.add_argument("--request-id", help="idempotency key: with --deliver, running the command "
                    "again with it is answered how the message went instead of sending it again")
    pv = acts.add_parser("preview", parents=[common], help="render a variant; no decision logged")
    pv.add_argument("--campaign", required=True)
    pv.add_argument("--variant", default="", help="default: the first variant")
    pv.add_argument("--user", help="render for this user (default: the sample profile)")
    pv.add_argument("--attribute", action="append", metavar="KEY=VALUE",
                    help="sample profile attribute (repeatable)")
    pv.add_argument("--interest", action="append", metavar="CATEGORY",
                    help="sample profile interest (repeatable)")
    pv.add_argument("--channel", default="", help="default: the campaign's channel")
    dl = acts.add_parser("dead-letters", parents=[common],
                         help="messages no adapter could deliver, newest first")
    dl.add_argument("--limit", type=INT32, default=100)
    dl.add_argument("--channel", default="", help="email, sms or push (default: all)")
    rt = acts.add_parser("retry", parents=[common], help="send a dead letter again")
    rt.add_argument("--id", required=True, metavar="LETTER_ID")


def _catalog_parser(sub, common) -> None:
    ct = sub.add_parser("catalog", help="items that arrive or leave between trainings "
                        "(docs/catalog.md; role admin)")
    acts = ct.add_subparsers(dest="action", required=True)
    up = acts.add_parser("upsert", parents=[common], help="add or update items")
    up.add_argument("file", help="JSON lines, one tailor.v1.CatalogItem each (item_id, title, "
                    "category, price, url, image; '-' for stdin); read as it is sent")
    up.add_argument("--batch-size", type=int, default=1000, help="items per call (default "
                    "%(default)s: the most a server takes by default, limits.upsert_items); a bad "
                    "line stops the upload there, the batches before it upserted")
    rm = acts.add_parser("remove", parents=[common], help="never recommend these items again")
    rm.add_argument("--item", action="append", required=True, metavar="ITEM_ID",
                    help="an item id (repeatable)")


def _model_parser(sub, common) -> None:
    mo = sub.add_parser("model", help="models in production: online metrics per version, drift, "
                        "and the running canary (promote or abort it)")
    acts = mo.add_subparsers(dest="action", required=True)
    acts.add_parser("drift", parents=[common],
                    help="PSI per feature of live traffic against the bundle's training "
                         "reference (exit 0 whatever it says)")
    for name, what in (("promote", "serve the canary to every user"),
                       ("abort", "stop the canary; every user gets the active version")):
        acts.add_parser(name, parents=[common], help=what).add_argument(
            "--version", default="", help="the canary version meant (refused if another runs)")
    st = acts.add_parser("stats", parents=[common], help="impressions, CTR@k, conversion rate and "
                         "revenue per 1,000 impressions per model version and channel, with intervals")
    st.add_argument("--version", default="", help="only this model version (default: every one)")
    st.add_argument("--channel", default="", help="only this channel (web, app, email, sms, push, "
                    "unspecified, all)")
    st.add_argument("-k", type=INT32, action="append", help="a CTR@k cut-off (repeatable; default "
                    "1, 5, 10)")
    st.add_argument("--confidence", type=float, help="of the intervals (default 0.95)")


def _campaign_parser(sub, common) -> None:
    ca = sub.add_parser("campaign", help="campaigns: create/update/get/list/archive, choose, reward, stats, "
                        "sample-size, plan, send, progress, cancel, export")
    acts = ca.add_subparsers(dest="action", required=True)
    for name in ("create", "update"):
        p = acts.add_parser(name, parents=[common], help=f"{name} from a CampaignSpec JSON file")
        p.add_argument("--file", required=True)
    for name, what in (("archive", "no more decisions (stats stay readable)"),
                       ("stats", "decisions, rewards and posteriors per variant"),
                       ("get", "one campaign: its spec, revision and whether it is archived")):
        acts.add_parser(name, parents=[common], help=what).add_argument("--campaign", required=True)
    ls = acts.add_parser("list", parents=[common], help="every campaign, in id order")
    ls.add_argument("--archived", action="store_true", help="archived ones too")
    ch = acts.add_parser("choose", parents=[common], help="a variant for a user (logged decision)")
    ch.add_argument("--campaign", required=True)
    ch.add_argument("--user", required=True)
    ch.add_argument("--context", action="append", metavar="KEY=NUMBER", help="request context (repeatable)")
    rw = acts.add_parser("reward", parents=[common], help="report the reward of a decision")
    rw.add_argument("--decision", required=True)
    rw.add_argument("--reward", type=float, required=True)
    ss = acts.add_parser("sample-size", parents=[common], help="observations per arm an A/B/n test needs")
    metric = ss.add_mutually_exclusive_group(required=True)
    metric.add_argument("--baseline-rate", type=float, help="control conversion rate in (0, 1)")
    metric.add_argument("--baseline-mean", type=float, help="control mean (with --variance)")
    ss.add_argument("--variance", type=float, default=0.0, help="variance of the metric (means)")
    ss.add_argument("--mde", type=float, required=True,
                    help="minimum detectable effect: absolute treatment - control difference")
    ss.add_argument("--alpha", type=float, default=0.05, help="two-sided, over all comparisons")
    ss.add_argument("--power", type=float, default=0.8)
    ss.add_argument("--arms", type=INT32, help="arms including the control (default 2)")
    ss.add_argument("--allocation", type=float, action="append", metavar="WEIGHT",
                    help="traffic weight of each arm, control first (repeat; default equal)")
    pl = acts.add_parser("plan", parents=[common], help="decisions for an audience (PlanCampaign): "
                         "JSON lines, one per user id, with progress on stderr")
    pl.add_argument("--campaign", required=True)
    pl.add_argument("--users", required=True, help="user ids, one a line ('-' for stdin; blank "
                    "lines and # comments skipped)")
    pl.add_argument("--out", default="", help="JSON-lines file (default stdout)")
    pl.add_argument("--batch-size", type=int, default=1000, help="user ids per message")
    pl.add_argument("--context", action="append", metavar="KEY=NUMBER",
                    help="request context for every user (repeatable)")
    pl.add_argument("--quiet", action="store_true", help="no progress bar")
    se = acts.add_parser("send", parents=[common], help="send a message campaign to an audience "
                         "(a background job: prints its send id; see `progress`)")
    se.add_argument("--campaign", required=True)
    se.add_argument("--users", required=True, metavar="FILE", help="one user id a line")
    se.add_argument("--rate", type=float, help="messages per second on each channel the "
                    "campaign sends on (default: the server's)")
    se.add_argument("--context", action="append", metavar="KEY=NUMBER", help="request context (repeatable)")
    se.add_argument("--request-id", help="idempotency key: running the command again with it "
                    "prints the job it started instead of starting another (default: a new "
                    "one, named in the error of a send that ended without its answer)")
    pr = acts.add_parser("progress", parents=[common], help="counts of a send job")
    pr.add_argument("--send", required=True, metavar="SEND_ID")
    cn = acts.add_parser("cancel", parents=[common], help="stop a send job (a `send`'s, or a "
                         "scheduled message's send id); prints its counts")
    cn.add_argument("--send", required=True, metavar="SEND_ID")
    ex = acts.add_parser("export", parents=[common], help="decision log as JSON lines (training ope input)")
    ex.add_argument("--campaign", default="")
    ex.add_argument("--out", required=True)
    ex.add_argument("--start", default="",
                    help="decisions from this time (epoch s or ISO date; default: the first)")
    ex.add_argument("--end", default="",
                    help="decisions before this time (default: no limit)")
    ex.add_argument("--include-pending", action="store_true",
                    help="also decisions whose reward window is still open")


_UNSHOWN = re.compile(f"[{TEXT_CONTROL}\\ud800-\\udfff]")
"""What a terminal acts on or shows out of order: what free text may not hold (`contract.ids`)."""


def _fail(text: object, code: int) -> int:
    """Print `error: <text>` on stderr, with every character `_UNSHOWN` finds escaped as Python
    writes it (`\\x1b`, `\\u202e`), and return `code`. These lines are the only text the CLI
    prints as is (its answers are JSON, ASCII: `json.dumps` escapes the same characters), and
    they carry the server's messages and what a file held: a catalog line's price
    "\\u001b[2J", in protobuf's parse error, cleared the operator's screen."""
    line = _UNSHOWN.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(text))
    print(f"error: {line}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    """Print the command's JSON answer and exit 0; a gRPC status prints `error: CODE: message`
    and exits 1, a mistake in what the user gave `error: <what, where>` and exits 2, either
    after part of what the command sends was stored (`PartlyStored`) exits 3."""
    args = build_parser().parse_args(argv)
    _default_timeout(args)
    try:
        _check_numbers(args)
        client = TailorClient(args.server, timeout=args.timeout, tls_ca=args.tls_ca,
                              cert=args.cert, key=args.key, token=args.token,
                              insecure=args.insecure)
    except (ValueError, UsageError) as err:  # connection flags that do not go together, a
        return _fail(err, 2)  # TLS file not read, a number not above 0
    try:
        with client:
            out = COMMANDS[args.command](client, args)
    except TailorError as err:
        return _fail(_connect_said(_deadline_said(str(err), args), args), 1)
    except UsageError as err:
        return _fail(err, 2)
    except PartlyStored as err:
        return _fail(err, 3)
    # A command writing JSON lines to stdout (campaign plan without --out) reports on stderr.
    lines_on_stdout = args.command == "campaign" and args.action == "plan" and args.out in ("", "-")
    if dataclasses.is_dataclass(out):  # a typed result; a message the reply lacks is left out
        out = dataclasses.asdict(out, dict_factory=_present)
    print(json.dumps(out, indent=2),  # ASCII: a stored title's ESC prints as \u001b
          file=sys.stderr if lines_on_stdout else sys.stdout)
    return 0


def _deadline_said(line: str, args) -> str:
    """gRPC's own 'DEADLINE_EXCEEDED: Deadline Exceeded' with the deadline and the server it
    waited for (a host that takes the connection and never answers says nothing else)."""
    said = "DEADLINE_EXCEEDED: Deadline Exceeded"
    if not line.startswith(said):
        return line
    return f"{said} (no answer from {args.server} within --timeout {args.timeout:g} s)" + \
        line[len(said):]


def _connect_said(line: str, args) -> str:
    """gRPC's 'failed to connect to all addresses' with what to check, from its last error and
    the TLS flags given: a client without --tls-ca reaching a TLS server, or with it a plaintext
    one, read only 'Socket closed' or 'WRONG_VERSION_NUMBER', and one started with the wrong
    --server (`make serve PORT=...`, the CLI's default 127.0.0.1:50051) 'Connection refused'."""
    if not line.startswith("UNAVAILABLE: failed to connect to all addresses"):
        return line
    secure = args.tls_ca is not None or args.cert is not None
    if "Connection refused" in line:
        hint = f"nothing listens at {args.server}: is the server running, on that port (--server)?"
    elif "WRONG_VERSION_NUMBER" in line:
        hint = "the server does not seem to serve TLS: leave out --tls-ca, --cert and --key"
    elif "CERTIFICATE_VERIFY_FAILED" in line or "BAD_SIGNATURE" in line:
        # BAD_SIGNATURE: a CA with the name of the one that signed, but another key
        hint = (f"--tls-ca {args.tls_ca} is not the CA that signed the server's certificate"
                if args.tls_ca is not None else  # --cert alone: the system's roots
                "no --tls-ca: the server's certificate was checked against the system's CAs; "
                "give --tls-ca, the CA that signed it")
    elif "Socket closed" not in line:
        return line
    elif not secure:
        hint = ("the server closed the connection: if it serves TLS, give --tls-ca (the CA of its "
                "certificate), and --cert and --key if it asks for a client certificate")
    elif args.cert is None:
        hint = ("the server closed the TLS connection: if it asks for a client certificate "
                "(mutual TLS), give --cert and --key")
    else:
        hint = (f"the server closed the TLS connection: is --cert {args.cert} signed by the CA "
                "the server trusts (its --tls-client-ca)?")
    return f"{line} ({hint})"


def run() -> int:
    """`main`, with a reader that leaves early (`python -m clients ... | head`) ending the command
    quietly, as Unix tools do, instead of with a traceback; Ctrl-C is one line (and what a
    plan had done), exit 130 as a shell's."""
    _quiet.loaded()  # until here a Ctrl-C exits with the same line (`_quiet`)
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 1
    except KeyboardInterrupt as err:
        return _fail(f"interrupted{'; ' + str(err) if str(err) else ''}", 130)
    return code


if __name__ == "__main__":
    sys.exit(run())
