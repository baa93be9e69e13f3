"""The locustfiles' option checks, one list for both ways a run starts.

A run starts from the command line (`--headless`, or the web UI with the options given) or from
the web UI's form, which can change every option it shows (`--p99-ms`, `--call-timeout`,
`--host`, a mix's `--weights` and `--slo`, a `--users-file`) just before it starts users. Each
locustfile registers its checks here (`check`); a check takes the environment and the options
and raises ValueError with one line naming the option, or applies what it read (a users file,
a mix table) to the environment.

- At start-up (`events.init`) the command line's options go through every check: a failure
  stops the process before any user starts (`refuse`: one `error:` line, exit 2).
- On every start from the form (`POST /swarm`) the form's values, converted as Locust converts
  them, go through the same checks before Locust sees the request: a failure is answered as
  Locust answers a bad form field (`{"success": false, "message": ...}`, which the page
  shows), and no user starts. Before, the checks ran at start-up only: the form could set
  `--p99-ms nan` (a target no p99 is above: every run passed) or `--call-timeout 0` (every call
  failed at once), a value Locust cannot convert (`abc` for a number) was a 500, and a mix
  table or users file typed into the form was never read (the run used the start-up's).
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from typing import NoReturn

from locust import events

__all__ = ["check", "check_all", "form_options", "refuse"]

Check = Callable[[object, argparse.Namespace], None]
CHECKS: list[Check] = []
"""The registered checks, in the order their modules registered them."""

LOCUST_FIELDS = frozenset({"user_count", "spawn_rate", "user_classes", "run_time", "profile",
                           "shape_class"})
"""Form fields Locust reads itself (its users, rate, classes, run time): not options of ours
(`user_count` is Locust's number of users there, whatever an option of that name holds)."""


def check(fn: Check) -> Check:
    """Register `fn(environment, opts)` as a check of the options (decorator)."""
    CHECKS.append(fn)
    return fn


def check_all(environment, opts: argparse.Namespace) -> None:
    """Every registered check over `opts`; ValueError from the first that fails."""
    for fn in CHECKS:
        fn(environment, opts)


def refuse(message: str) -> NoReturn:
    """Stop a run before any user starts (from an `events.init` listener, where the options
    are checked): one `error:` line and exit 2, as the CLIs' usage errors. Raised from a
    `test_start` listener instead, an error is a traceback Locust logs and the run goes on."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def form_options(opts: argparse.Namespace, form: Mapping[str, str]) -> argparse.Namespace:
    """A copy of `opts` with the form's values, converted as Locust's `/swarm` converts them
    (to the type of the option's current value; "true" for a flag); ValueError naming the field
    for a value of the wrong type (Locust answered it with a 500)."""
    out = argparse.Namespace(**vars(opts))
    for key, value in form.items():
        if key in LOCUST_FIELDS or not hasattr(out, key):
            continue
        current = getattr(out, key)
        if isinstance(current, bool):
            setattr(out, key, value == "true")
        elif isinstance(current, (int, float)):
            try:
                setattr(out, key, type(current)(value))
            except ValueError:
                kind = "a whole number" if isinstance(current, int) else "a number"
                raise ValueError(f"--{key.replace('_', '-')} {value!r}: not {kind}") from None
        elif current is None or isinstance(current, str):
            setattr(out, key, value)
    return out


@events.init.add_listener
def _check_start(environment, web_ui=None, **_):
    opts = environment.parsed_options
    if opts is None:  # an Environment built in code, not by the `locust` command
        return
    try:
        check_all(environment, opts)
    except ValueError as err:
        refuse(str(err))
    if web_ui is not None:
        web_ui.app.before_request(lambda: _check_form(environment))


@events.init.add_listener
def _run_time_from_now(**_):
    """Locust arms `--run-time` (`gevent.spawn_later`) on the gevent loop's cached clock, which
    stands still while the start-up blocks: the locustfile's imports, these checks (a users file
    read, a mix table), a busy machine. A start-up longer than the run time ended the run before
    any call (`-t 3s` made no call at load 9 here), and a shorter one cut the run by as much.
    Registered after `_check_start`, the last listener of `events.init`: the clock is brought to
    now just before the run starts."""
    import gevent
    gevent.get_hub().loop.update_now()


def _check_form(environment):
    """Flask's hook before every request of the web UI: a start whose form fails a check is
    answered here (Locust's own answer to a bad field), else Locust handles it."""
    from flask import jsonify, request
    if request.method != "POST" or request.path != "/swarm":
        return None
    try:
        check_all(environment, form_options(environment.parsed_options, request.form))
    except ValueError as err:
        return jsonify({"success": False, "message": str(err), "host": environment.host})
    return None
