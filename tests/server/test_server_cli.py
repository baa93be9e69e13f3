"""`python -m server --help` shows every subcommand, and a bare flag still means `serve`."""
import argparse

from server.__main__ import build_parser
from tests.conftest import run_module


def _subcommands() -> dict[str, str]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {c.dest: c.help for c in action._choices_actions}


def test_help_lists_every_subcommand_with_its_help():
    commands = _subcommands()
    assert {"serve", "compact", "backup", "restore"} <= set(commands)
    out = " ".join(run_module("server", "--help").stdout.split())  # unwrap argparse's lines
    for name, text in commands.items():
        assert f" {name} {text}" in out, name


def test_flags_without_a_command_are_the_serve_command():
    out = run_module("server", "--port", "x", check=False)
    assert out.returncode == 2 and "serve: error" in out.stderr and "--port" in out.stderr
