"""Spellings of a flag's value that meant something else than they say: `--secrets-dir NONE`
was a directory ./NONE (where `secrets init` wrote development keys), and `token --auth-config
nodir/` wrote a file named `nodir`. Real commands in a scratch working directory."""
import argparse
import os
import subprocess
import sys

from tests.conftest import ROOT

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def server_cli(cwd, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "server", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120, env=ENV)


def test_none_in_any_case_is_the_environment_only(tmp_path, monkeypatch):
    out = server_cli(tmp_path, "secrets", "init", "--secrets-dir", "NONE")
    assert out.returncode == 1 and "secrets_dir is none (the environment only)" in out.stderr, (
        out.stdout + out.stderr)
    assert not (tmp_path / "NONE").exists()
    from server.config import load_settings
    monkeypatch.setenv("TAILOR_SECRETS_DIR", "None")
    assert load_settings().secrets_dir is None
    from training.cli.options import add_secrets_dir
    parser = argparse.ArgumentParser()
    add_secrets_dir(parser)
    assert parser.parse_args(["--secrets-dir", "NONE"]).secrets_dir is None


def test_an_auth_config_ending_in_a_slash_is_refused_naming_the_flag(tmp_path):
    out = server_cli(tmp_path, "token", "--auth-config", "nodir/", "--name", "a", "--roles",
                     "decider")
    assert out.returncode == 2
    assert ("argument --auth-config: nodir/ names a directory (it ends in /): give the file, "
            "e.g. nodir/auth.toml") in out.stderr, out.stderr
    assert list(tmp_path.iterdir()) == []
