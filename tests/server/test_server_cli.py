"""`python -m server --help` shows every subcommand, and a bare flag still means `serve`; what the
user got wrong prints one line and exits 2; `--config FILE` (TOML) sits below env and flags."""
import argparse
import base64
import json
import os
import re
import socket
import subprocess
import sys

import pytest

from server.__main__ import build_parser
from tests.conftest import ROOT, run_command, run_module


def _subcommands() -> dict[str, str]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {c.dest: c.help for c in action._choices_actions}


@pytest.fixture(scope="module")
def server_help() -> str:
    """What `python -m server --help` prints (run once for the module's tests that read it)."""
    return run_module("server", "--help").stdout


def test_help_lists_every_subcommand_with_its_help(server_help):
    commands = _subcommands()
    assert {"serve", "compact", "backup", "restore"} <= set(commands)
    out = " ".join(server_help.split())  # unwrap argparse's lines
    for name, text in commands.items():
        assert f" {name} {text}" in out, name


def test_help_shows_how_to_call_every_subcommand(server_help):
    """The usage lines at the top of --help skipped `rotate-key`."""
    lines = server_help.splitlines()
    for name in _subcommands():
        assert any(line.startswith(f"`python -m server {name} ") or
                   (name == "serve" and line.startswith("`python -m server [serve] "))
                   for line in lines), name


def test_flags_without_a_command_are_the_serve_command():
    out = run_module("server", "--port", "x", check=False)
    assert out.returncode == 2 and "serve: error" in out.stderr and "--port" in out.stderr


def secrets_init(secrets_dir) -> None:
    """New keyring files in `secrets_dir`: `python -m server secrets init --secrets-dir`, in
    this process (a test's set-up, not what it checks)."""
    run_command("secrets", "init", "--secrets-dir", str(secrets_dir))


# -- one line, exit 2, for what the user got wrong (issue 18) ------------------------------------
def serve_fails(tmp_path, *args, env=None) -> str:
    """`python -m server ...` that must refuse to serve: its one stderr line."""
    proc = run_module("server", *args, check=False, timeout=120,
                      env={**os.environ, "TAILOR_SECRETS_DIR": str(tmp_path / "secrets"), **(env or {})})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("error: ")]
    return line


def test_refused_settings_name_the_flag_and_the_variable(tmp_path):
    line = serve_fails(tmp_path, "--workers", "0", "--data-dir", str(tmp_path / "d"))
    assert "workers (--workers, TAILOR_WORKERS): Input should be greater than or equal to 1" in line
    line = serve_fails(tmp_path, "--data-dir", str(tmp_path / "d"), env={"TAILOR_PORT": "notanint"})
    assert "port (--port, TAILOR_PORT)" in line and "'notanint'" in line


def test_a_missing_auth_config_names_its_setting_and_how_to_make_one(tmp_path):
    """It said `auth config F: [Errno 2] No such file or directory: 'F'`: not which setting
    named the file, nor what to do."""
    missing = tmp_path / "auth.toml"
    line = serve_fails(tmp_path, "--port", "0", "--data-dir", str(tmp_path / "d"),
                       "--auth-config", str(missing))
    assert line == (f"error: auth config {missing}: no such file (auth_config: --auth-config, "
                    "TAILOR_AUTH_CONFIG or auth_config in the --config file): give the path of "
                    "the auth config, or make one with `python -m server token --auth-config "
                    f"{missing} --name NAME --roles ROLES`")


def test_a_secrets_dir_that_cannot_be_made_is_one_line_naming_the_setting(tmp_path):
    """The OSError of making it (here ENOTDIR: below a file; EACCES, EROFS, ENOSPC alike) was a
    traceback: `_serve` caught only Tailor's own errors."""
    (tmp_path / "file").write_text("")
    secrets = tmp_path / "file" / "secrets"
    line = serve_fails(tmp_path, "--port", "0", "--data-dir", str(tmp_path / "d"),
                       env={"TAILOR_SECRETS_DIR": str(secrets)})
    assert line == (f"error: secrets_dir (TAILOR_SECRETS_DIR): cannot use {secrets}: not a "
                    "directory: a part of the path is a file: point the setting elsewhere")


@pytest.mark.skipif(not os.path.isdir("/sys/kernel"), reason="needs sysfs, where no file is made")
def test_a_store_dir_that_cannot_be_written_is_the_same_line_with_workers(tmp_path):
    """A host error in a worker's start (here the store dir a link into sysfs: EACCES, EROFS
    where /sys is read-only) is the line one process prints, logged by each worker, exit 2:
    with --workers 2 each worker died of it with a traceback, and the server exited 1."""
    from tests.conftest import free_port
    data = tmp_path / "d"
    data.mkdir()
    (data / "store").symlink_to("/sys/kernel")
    line = serve_fails(tmp_path, "--port", "0", "--data-dir", str(data))
    said = re.fullmatch(r"error: (data_dir \(--data-dir, TAILOR_DATA_DIR\): cannot use )(\S+)(: .+)",
                        line)
    assert said and said[2].startswith(f"{data / 'store'}/"), line
    proc = run_module("server", "--port", str(free_port()), "--workers", "2", "--data-dir",
                      str(data), check=False, timeout=120,
                      env={**os.environ, "TAILOR_SECRETS_DIR": str(tmp_path / "secrets")})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    logged = [x for x in proc.stderr.splitlines() if said[1] in x]
    assert logged and all(x.endswith(said[3]) for x in logged), proc.stderr[-2000:]


def test_a_recommend_k_the_impression_log_cannot_record_is_refused(tmp_path):
    # A position past 32,766 does not fit the log's first-click field: a click naming one
    # failed the join of its whole TrackEvents batch.
    for k in ("40000", "0"):
        line = serve_fails(tmp_path, "--data-dir", str(tmp_path / "d"),
                           env={"TAILOR_LIMITS__RECOMMEND_K": k})
        assert "recommend_k" in line, line


def test_a_port_in_use_and_a_missing_bundle_are_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = serve_fails(tmp_path, "--port", str(port), "--data-dir", str(tmp_path / "d"))
    assert f"could not listen on 127.0.0.1:{port}: the port is in use" in line
    line = serve_fails(tmp_path, "--port", "0", "--data-dir", str(tmp_path / "d"),
                       "--bundle", str(tmp_path / "no-such-bundle"))
    assert "bundle" in line and "manifest.json" in line


def test_ports_out_of_range_and_an_unknown_log_level_are_refused(tmp_path):
    data = str(tmp_path / "d")
    line = serve_fails(tmp_path, "--port", "70000", "--data-dir", data)  # not 70000 - 65536
    assert "port (--port, TAILOR_PORT): Input should be less than or equal to 65535" in line
    line = serve_fails(tmp_path, "--port", "0", "--metrics-port", "65536", "--data-dir", data)
    assert "metrics_port (--metrics-port, TAILOR_METRICS_PORT)" in line
    line = serve_fails(tmp_path, "--port", "0", "--data-dir", data,
                       env={"TAILOR_LOG_LEVEL": "LOUD"})
    assert line.startswith("error: log_level (TAILOR_LOG_LEVEL): ") and "'LOUD'" in line


def test_a_refused_setting_without_a_flag_names_only_its_variable(tmp_path):
    line = serve_fails(tmp_path, "--data-dir", str(tmp_path / "d"),
                       env={"TAILOR_LMDB_MAP_SIZE": "big"})
    assert line.startswith("error: lmdb_map_size (TAILOR_LMDB_MAP_SIZE): ")


def test_a_metrics_or_public_port_in_use_is_one_line(tmp_path):
    from tests.conftest import free_port
    data = str(tmp_path / "d")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = serve_fails(tmp_path, "--port", "0", "--metrics-port", str(port), "--data-dir", data)
        assert f"could not serve metrics on 127.0.0.1:{port}" in line
        assert "give another --metrics-port (TAILOR_METRICS_PORT" in line  # what to change
        line = serve_fails(tmp_path, "--port", "0", "--public-http-port", str(port),
                           "--data-dir", data)
        assert f"could not listen on 127.0.0.1:{port} (public HTTP)" in line
        # with workers, before any of them starts
        line = serve_fails(tmp_path, "--port", str(free_port()), "--workers", "2",
                           "--metrics-port", str(port), "--data-dir", data)
        assert f"could not serve metrics on 127.0.0.1:{port}" in line and "--metrics-port" in line


def test_a_data_dir_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "f").write_text("not a dir")
    line = serve_fails(tmp_path, "--port", "0", "--data-dir", str(tmp_path / "f"))
    assert f"cannot use {tmp_path / 'f'} as a data dir" in line
    line = serve_fails(tmp_path, "--port", "0", "--data-dir", str(tmp_path / "f" / "d"))
    assert f"cannot use {tmp_path / 'f' / 'd'} as a data dir" in line


@pytest.mark.parametrize("name, value", [
    ("batch_max_size", "0"), ("batch_concurrency", "0"), ("batch_max_wait_ms", "-1"),
    ("retention_sweep_seconds", "0"), ("campaign_sweep_seconds", "0"), ("bundle_poll_seconds", "0"),
])
def test_sizes_and_intervals_that_would_crash_or_spin_are_refused(name, value):
    """A batch size or concurrency of 0 was a traceback at start; a sweep or poll interval of 0
    made the server spin a core (measured: 0.7-0.95 CPU s a second, idle)."""
    from pydantic import ValidationError

    from server.config import load_settings, settings_error
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(f"TAILOR_{name.upper()}", value)
        with pytest.raises(ValidationError) as refused:
            load_settings()
    assert settings_error(refused.value).startswith(f"{name} (TAILOR_{name.upper()}): ")


@pytest.mark.parametrize("name", ["webhook_tolerance_seconds", "audit_failure_seconds"])
def test_protection_intervals_of_inf_are_refused(name):
    """`inf` (TOML and env accept it) made a captured webhook request good for ever after a
    restart, or audited one failed login per peer and reason for the process's life."""
    from pydantic import ValidationError

    from server.config import load_settings, settings_error
    from server.limits import Limits
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(f"TAILOR_{name.upper()}", "inf")
        with pytest.raises(ValidationError) as refused:
            load_settings()
    assert settings_error(refused.value).startswith(f"{name} (TAILOR_{name.upper()}): ")
    with pytest.raises(ValidationError):  # an address's JWT failures counted for ever
        Limits(jwt_failure_seconds=float("inf"))


PATH_FIELDS = ("data_dir", "bundle", "tls_cert", "tls_key", "tls_client_ca", "auth_config",
               "smtp_ca_file", "dkim_key_file", "secrets_dir")
"""Every path setting: empty, each was the working directory (`Path("")` is `.`)."""


def test_an_empty_path_setting_is_refused_not_read_as_the_working_directory(tmp_path):
    """`TAILOR_DATA_DIR=` (or `TAILOR_BUNDLE=`, `data_dir = ""` in the file, `--data-dir ""`)
    read as `.`: a server served and wrote the directory it was started in, a store command
    worked on it. Each is refused, naming the variable, the file's key or the flag; `.` asked
    for is still taken."""
    from pydantic import ValidationError

    from server.config import load_settings, settings_error
    with pytest.MonkeyPatch.context() as mp:
        for name in PATH_FIELDS:
            mp.setenv(f"TAILOR_{name.upper()}", "")
        with pytest.raises(ValidationError) as refused:
            load_settings()
    assert sorted(e["loc"][0] for e in refused.value.errors()) == sorted(PATH_FIELDS)
    line = settings_error(refused.value)
    assert line.startswith("data_dir (TAILOR_DATA_DIR): Value error, an empty path would be the "
                           "working directory"), line
    config = tmp_path / "tailor.toml"
    config.write_text('bundle = ""\n')
    with pytest.raises(ValidationError) as refused:
        load_settings(config)
    line = settings_error(refused.value, config)
    assert line.startswith(f"bundle (TAILOR_BUNDLE, 'bundle' in {config}): "), line
    assert str(load_settings(data_dir=".").data_dir) == "."
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAILOR_")}
    proc = run_module("server", "compact", check=False, env={**env, "TAILOR_DATA_DIR": ""})
    assert proc.returncode == 1 and proc.stderr.startswith(
        "compact: data_dir (--data-dir, TAILOR_DATA_DIR): "), proc.stderr[-2000:]
    proc = run_module("server", "compact", "--data-dir", "", check=False, env=env)
    assert proc.returncode == 2 and "argument --data-dir: an empty path would be the working " \
        "directory" in proc.stderr, proc.stderr[-2000:]


def test_a_store_commands_path_flag_overrides_an_empty_variable(tmp_path):
    """A flag given overrides its variable, as `serve`'s do: `audit verify --data-dir D` (its
    keyrings' dir from the settings) with TAILOR_DATA_DIR= in the environment was refused,
    naming the variable it did not use; so was --secrets-dir with TAILOR_SECRETS_DIR=."""
    data = tmp_path / "data"
    (data / "audit").mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAILOR_")}
    env["TAILOR_SECRET_AUDIT"] = "k1:" + base64.b64encode(bytes(32)).decode()
    for given, empty in (("--data-dir", "TAILOR_DATA_DIR"), ("--secrets-dir", "TAILOR_SECRETS_DIR")):
        other = {"TAILOR_DATA_DIR": str(data), "TAILOR_SECRETS_DIR": str(tmp_path / "secrets")}
        value = str(data) if given == "--data-dir" else str(tmp_path / "secrets")
        proc = run_module("server", "audit", "verify", given, value, check=False,
                          env={**env, **other, empty: ""})
        assert proc.returncode == 0 and json.loads(proc.stdout)["ok"], (given, proc.stderr[-2000:])


def test_workers_on_port_zero_is_one_error_line(tmp_path):
    line = serve_fails(tmp_path, "--port", "0", "--workers", "2", "--data-dir", str(tmp_path / "d"))
    assert "--workers > 1 needs an explicit --port" in line


def test_a_variable_that_is_not_json_names_itself(tmp_path):
    line = serve_fails(tmp_path, "--data-dir", str(tmp_path / "d"),
                       env={"TAILOR_SEEN_EXCLUSION_DAYS": '{"view": 30'})
    assert line.startswith("error: seen_exclusion_days (TAILOR_SEEN_EXCLUSION_DAYS): not valid JSON")
    line = serve_fails(tmp_path, "--data-dir", str(tmp_path / "d"), env={"TAILOR_LIMITS": "{"})
    assert line.startswith("error: limits (TAILOR_LIMITS): not valid JSON")


def test_config_file_is_below_the_environment_and_the_flags(tmp_path):
    from server.config import load_settings
    config = tmp_path / "tailor.toml"
    config.write_text('port = 7001\nworkers = 3\ngrace_seconds = 9.5\nlog_format = "json"\n'
                      '[limits]\nrecommend_k = 50\nid_bytes = 64\n')
    env = {"TAILOR_WORKERS": "2", "TAILOR_LIMITS__ID_BYTES": "100"}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        s = load_settings(config, port=7002)
    assert (s.port, s.workers, s.grace_seconds, s.log_format) == (7002, 2, 9.5, "json")
    assert (s.limits.recommend_k, s.limits.id_bytes) == (50, 100)


def test_a_stop_bound_is_checked_against_the_config_files_grace_and_hand_off(tmp_path):
    """The environment and flags were read (and checked) alone first: a file's grace of 1 s
    and relay timeout of 2 s were taken for the defaults (5 s, 10 s), and an environment's
    stop bound of 5 s, which they hold, refused. The checks across fields now see the
    settings whole, and still refuse a bound the file's values do not hold."""
    from pydantic import ValidationError

    from server.config import load_settings
    config = tmp_path / "tailor.toml"
    config.write_text('grace_seconds = 1\nsmtp_timeout_seconds = 2\nwebhook_timeout_seconds = 2\n')
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TAILOR_STOP_SECONDS", "5")
        assert load_settings(config).stop_seconds == 5  # 1 + 1 < 5: no relay
        mp.setenv("TAILOR_SMTP_HOST", "relay.example")
        assert load_settings(config).stop_seconds == 5  # 1 + 2 + 1 < 5
        mp.setenv("TAILOR_STOP_SECONDS", "4")
        with pytest.raises(ValidationError, match=r"\(3 s\) by more than 1 s"):
            load_settings(config)
        mp.delenv("TAILOR_SMTP_HOST")
        config.write_text('grace_seconds = 3\n')
        with pytest.raises(ValidationError, match=r"grace_seconds \(3 s\) by more than 1 s"):
            load_settings(config)


@pytest.mark.parametrize("text, env, flags, expected", [
    ('[limits]\nfrequency_cap_max = 200\n', {"TAILOR_CONTACT_FREQUENCY_CAPS": '[["*", 150, 86400]]'},
     {}, {"limits.frequency_cap_max": 200, "contact_frequency_caps": (("*", 150, 86400.0),)}),
    ('port = 8080\n', {"TAILOR_PUBLIC_HTTP_PORT": "50051"}, {},
     {"port": 8080, "public_http_port": 50051}),
    ('port = 8080\n', {}, {"public_http_port": 50051}, {"port": 8080, "public_http_port": 50051}),
], ids=["caps-env", "public-port-env", "public-port-flag"])
def test_a_check_across_fields_sees_the_config_files_values(tmp_path, text, env, flags, expected):
    """The environment and flags were read (and checked) alone before the file was merged in:
    a cap of 150 the file's `frequency_cap_max` of 200 allows was held to the default 100, and
    a public port of 50051 was refused as the gRPC port's default, which the file moved to 8080.
    The settings are now checked once, merged."""
    from operator import attrgetter

    from server.config import load_settings
    config = tmp_path / "tailor.toml"
    config.write_text(text)
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        s = load_settings(config, **flags)
    assert {name: attrgetter(name)(s) for name in expected} == expected


@pytest.mark.parametrize("text, env, flags, refused", [
    ('[limits]\nfrequency_cap_max = 50\n', {"TAILOR_CONTACT_FREQUENCY_CAPS": '[["*", 80, 86400]]'},
     {}, r"^contact_frequency_caps \(TAILOR_CONTACT_FREQUENCY_CAPS, .*max in 1\.\.50 "),
    ('metrics_port = 9100\n', {}, {"public_http_port": 9100},
     r"^public_http_port \(--public-http-port, .*9100 is also the metrics_port"),
    ('public_http_port = 8080\n', {"TAILOR_PORT": "8080"}, {},
     r"^public_http_port \(--public-http-port, TAILOR_PUBLIC_HTTP_PORT, 'public_http_port' in "
     r".*8080 is also the port"),
], ids=["caps-file-limits", "public-port-flag", "public-port-env"])
def test_a_check_across_fields_refuses_values_from_different_sources(tmp_path, text, env, flags,
                                                                     refused):
    """What the merged settings do not hold is refused, whichever source each value came from,
    naming the field with its flag, variable and file key."""
    from server.config import settings_error
    err, config = _refused(tmp_path, text, env, flags)
    assert re.search(refused, settings_error(err, config, flags=["public_http_port"]))


def _refused(tmp_path, text: str, env: dict, flags: dict | None = None):
    """The ValidationError of `load_settings` with `text` as the config file, `env` set and
    `flags` given, and the file's path."""
    from pydantic import ValidationError

    from server.config import load_settings
    config = tmp_path / "tailor.toml"
    config.write_text(text)
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        with pytest.raises(ValidationError) as err:
            load_settings(config, **(flags or {}))
    return err.value, config


def test_refused_values_of_the_file_and_the_environment_are_named_together(tmp_path):
    """The environment was checked alone first: its refused value stopped the start, and the
    file's, in the same start, was only named at the next one."""
    from pydantic import ValidationError

    from server.config import load_settings, settings_error
    config = tmp_path / "tailor.toml"
    config.write_text('workers = 0\n')
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TAILOR_BATCH_MAX_SIZE", "0")
        with pytest.raises(ValidationError) as err:
            load_settings(config)
    line = settings_error(err.value, config)
    assert line.startswith("workers (TAILOR_WORKERS, 'workers' in ") and "; batch_max_size (" in line


@pytest.mark.parametrize("text, env, loc", [
    ('[limits]\nfrequency_cap_max = 0\n', {"TAILOR_CONTACT_FREQUENCY_CAPS": '[["*", 150, 86400]]'},
     ("limits", "frequency_cap_max")),
    ('grace_seconds = -1\n', {"TAILOR_STOP_SECONDS": "1"}, ("grace_seconds",)),
], ids=["caps", "stop"])
def test_a_check_across_fields_is_not_made_against_a_refused_value(tmp_path, text, env, loc):
    """With the value a check reads refused, the check read the default in its place: a cap of
    150 was refused as over a limit of 100 the file never set, a bound of 1 s as under a grace
    of 0 s. Only the refused value is named."""
    err, _ = _refused(tmp_path, text, env)
    assert [e["loc"] for e in err.errors()] == [loc]


def test_a_variable_replaces_the_config_files_table_of_the_same_field(tmp_path):
    """Precedence is per field: a dict setting from the environment replaces the file's whole
    (the channels it leaves out at their defaults), as a scalar does; only `[limits]` is merged
    key by key with `TAILOR_LIMITS__*`."""
    from server.config import DEFAULT_CONSENT, load_settings
    config = tmp_path / "tailor.toml"
    config.write_text('consent_defaults = {push = "opt_in"}\nseen_exclusion_days = {view = 3}\n')
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TAILOR_CONSENT_DEFAULTS", '{"email": "opt_out"}')
        mp.setenv("TAILOR_SEEN_EXCLUSION_DAYS__CLICK", "5")
        s = load_settings(config)
    assert s.consent_defaults == {**DEFAULT_CONSENT, "email": "opt_out"}
    assert s.seen_exclusion_days == {"click": 5.0}


def test_a_bad_config_file_is_named_with_its_line(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('port = 7001\nwokers = 2\n[limits]\nrecomend_k = 3\n')
    line = serve_fails(tmp_path, "--config", str(config))
    assert line == f"error: {config}: unknown setting wokers, limits.recomend_k"
    config.write_text('port = 7001\nworkers = = 2\n')
    assert "(at line 2, column" in serve_fails(tmp_path, "--config", str(config))
    config.write_text('workers = 0\n')
    assert f"'workers' in {config}" in serve_fails(tmp_path, "--config", str(config))
    config.write_text('limits = 5\n')  # was a TypeError's traceback
    assert serve_fails(tmp_path, "--config", str(config)) == \
        f"error: {config}: limits is a table ([limits], its settings on the lines under it), not int"


def test_serve_reads_its_config_file(tmp_path):
    from tests.conftest import free_port
    port = free_port()
    config = tmp_path / "tailor.toml"
    config.write_text(f'port = {port}\ndata_dir = "{tmp_path / "data"}"\nsecrets_dir = "{tmp_path / "s"}"\n')
    proc = subprocess.Popen([sys.executable, "-m", "server", "--config", str(config)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = ""
        while "serving on" not in line and proc.poll() is None:
            line = proc.stdout.readline()
        assert f"serving on 127.0.0.1:{port}" in line
        assert (tmp_path / "data" / "store").is_dir()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_bundle_that_does_not_validate_is_one_line(tmp_path, demo_bundle):
    """`--bundle` names a bundle that fails validation: the server does not start serving
    nothing (health SERVING, Recommend FAILED_PRECONDITION); it names the file, exits 2, and
    keeps no copy of it, so the corrected bundle of the same version is read next time."""
    import shutil
    bad = tmp_path / "bad-bundle"
    shutil.copytree(demo_bundle, bad)
    data = bytearray((bad / "index.faiss").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bad / "index.faiss").write_bytes(bytes(data))
    line = serve_fails(tmp_path, "--port", "0", "--data-dir", str(tmp_path / "d"),
                       "--bundle", str(bad))
    assert "index.faiss" in line and "sha256" in line
    assert not [p for p in (tmp_path / "d" / "bundles").iterdir() if not p.name.startswith(".")]


def test_a_bundle_whose_version_is_not_a_directory_name_is_refused(tmp_path, demo_bundle):
    """`--bundle` of a bundle whose manifest version climbs out of the bundles directory (a
    tool's version string): refused as a push refuses it, nothing written outside the data
    dir. It used to be copied to `<data dir>/../escaped`, then fail as 'version not found'."""
    import json
    import shutil
    bad = tmp_path / "bad-bundle"
    shutil.copytree(demo_bundle, bad)
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["version"] = "../../escaped"
    (bad / "manifest.json").write_text(json.dumps(manifest))
    data = tmp_path / "srv" / "d"
    line = serve_fails(tmp_path, "--port", "0", "--data-dir", str(data), "--bundle", str(bad))
    assert "--bundle" in line and "version" in line and "not a bundle version" in line, line
    assert not (tmp_path / "srv" / "escaped").exists() and not (data / "escaped").exists()
    assert not [p for p in (data / "bundles").iterdir() if not p.name.startswith(".")]


def test_a_store_that_does_not_open_is_one_line(tmp_path):
    """A data.mdb that is not an LMDB file (damaged, or something else copied there) was a
    traceback from serve and every store command; one line naming the store."""
    store = tmp_path / "d" / "store"
    store.mkdir(parents=True)
    (store / "data.mdb").write_bytes(os.urandom(100_000))
    line = serve_fails(tmp_path, "--port", "0", "--data-dir", str(tmp_path / "d"))
    assert line.startswith(f"error: cannot open the store at {store}: ") and "LMDB" in line
    secrets_init(tmp_path / "secrets")
    keys = ["--secrets-dir", str(tmp_path / "secrets")]
    for command in (["compact"], ["migrate", *keys], ["rotate-key", *keys],
                    ["backup", "--out", str(tmp_path / "b.tar")]):
        proc = run_module("server", *command, "--data-dir", str(tmp_path / "d"), check=False)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert proc.stderr.startswith(f"{command[0]}: cannot open the store at {store}: "), proc.stderr


def test_a_compute_thread_count_past_the_bound_is_refused_not_started(tmp_path):
    """Each bundle load starts ONNX Runtime's and FAISS's pools of that many threads: a typo
    (100000) started them until the machine gave up."""
    line = serve_fails(tmp_path, "--data-dir", str(tmp_path / "d"),
                       env={"TAILOR_COMPUTE_THREADS": "100000"})
    assert "TAILOR_COMPUTE_THREADS" in line and "less than or equal to 256" in line, line


def test_a_flag_over_a_refused_variable_serves_campaigns(server_process, tmp_path):
    """Flags override the environment (docs/operations.md): `--workers 1` over TAILOR_WORKERS=0
    serves. The campaigns writer child read its settings again from the environment alone, so
    the refused variable stopped the start with its traceback ("the campaigns writer process
    exited ... before it was ready"); it takes the server's limits as they were handed over."""
    from clients import TailorClient
    served = server_process(env={"TAILOR_WORKERS": "0", "TAILOR_SECRETS_DIR": str(tmp_path / "s")})
    spec = {"campaign_id": "c1", "channel": "web", "policy": "fixed",
            "variants": [{"id": "a", "weight": 1.0}]}
    with TailorClient(served.target) as client:
        client.create_campaign(spec)
        assert client.choose_variant("c1", "u1").variant_id == "a"


def test_a_limit_of_inf_reaches_the_campaigns_writer(server_process, tmp_path):
    """A float limit that takes inf (no bound: `message_render_seconds`, `send_rate_per_second`,
    ...) went to the campaigns writer child as JSON the child could not read back: the start
    died with its traceback. Infinity is handed over as itself."""
    from clients import TailorClient
    served = server_process(env={"TAILOR_LIMITS__REWARD_WINDOW_SECONDS": "inf",
                                 "TAILOR_SECRETS_DIR": str(tmp_path / "s")})
    spec = {"campaign_id": "c1", "channel": "web", "policy": "fixed",
            "variants": [{"id": "a", "weight": 1.0}]}
    with TailorClient(served.target) as client:
        client.create_campaign(spec)
        assert client.choose_variant("c1", "u1").variant_id == "a"


def test_a_public_http_port_equal_to_the_grpc_or_metrics_port_is_refused(tmp_path):
    """`--workers 2 --port P --public-http-port P` started: both listeners bind with
    SO_REUSEPORT in each worker, so the kernel spread connections over the gRPC server and the
    HTTP one (gRPC clients answered UNAVAILABLE "Trying to connect an http1.x server", some
    unsubscribe links 400). With one worker the HTTP bind failed only after the store was
    opened. Refused up front, naming both settings."""
    from tests.conftest import free_port
    port = free_port()
    env = {**os.environ, "TAILOR_SECRETS_DIR": str(tmp_path / "secrets")}
    for same in (["--port", str(port)], ["--port", str(free_port()), "--metrics-port", str(port)]):
        refused = subprocess.run(
            [sys.executable, "-m", "server", *same, "--public-http-port", str(port),
             "--public-url", f"http://127.0.0.1:{port}", "--workers", "2",
             "--data-dir", str(tmp_path / "data")],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert refused.returncode == 2, refused.stderr[-3000:]
        line = refused.stderr.strip().splitlines()[-1]
        assert line.startswith("error: public_http_port (--public-http-port, "
                               "TAILOR_PUBLIC_HTTP_PORT): "), line
        assert "port of its own" in line, line
        assert not (tmp_path / "data").exists()  # refused before anything was opened


def test_migrate_finds_the_data_dir_the_servers_config_names(tmp_path):
    """`migrate --config` took the servers' settings from the file but its data dir from
    `--data-dir` alone (default ./data): a file naming `data_dir` had ./data migrated instead,
    or "no Tailor store under data". Without `--data-dir` it is the file's, as `serve` reads it."""
    from server.security.secrets import Secrets
    from server.store import Store
    from server.store.crypto import StoreCrypto
    secrets_dir, data_dir = tmp_path / "secrets", tmp_path / "theirs"
    secrets_init(secrets_dir)
    config = tmp_path / "tailor.toml"
    config.write_text(f'data_dir = "{data_dir}"\nsecrets_dir = "{secrets_dir}"\n')
    crypto = StoreCrypto.from_secrets(Secrets.load(secrets_dir, generate=False))
    Store(data_dir / "store", sync=False, crypto=crypto).close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAILOR_")}
    proc = run_module("server", "migrate", "--config", str(config), env=env)
    assert json.loads(proc.stdout.splitlines()[-1])["store"] == str(data_dir / "store")


def test_migrate_reads_the_servers_config_file(tmp_path):
    """`migrate` read the environment alone: servers whose TOML file (`serve --config`) turns
    encryption at rest off had their store encrypted by it (`encrypted 1 per-user records at
    rest`), and refused it from then on ("open it with encryption on"). With the servers'
    `--config`, it keeps their encryption setting and finds their keyrings (`secrets_dir`)."""
    from server.security.secrets import Secrets
    from server.store import Store
    from server.store.backup import read_value
    from server.store.crypto import StoreCrypto
    from server.store.rekey import SEALED_KEY
    secrets_dir, store_dir = tmp_path / "secrets", tmp_path / "d" / "store"
    secrets_init(secrets_dir)
    config = tmp_path / "tailor.toml"
    config.write_text(f'encrypt_at_rest = false\nsecrets_dir = "{secrets_dir}"\n')
    crypto = StoreCrypto.from_secrets(Secrets.load(secrets_dir, generate=False), encrypt=False)
    Store(store_dir, sync=False, crypto=crypto).close()  # as those servers left it
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAILOR_")}
    proc = run_module("server", "migrate", "--config", str(config), "--data-dir",
                      str(tmp_path / "d"), env=env)
    assert '"command": "migrate"' in proc.stdout
    assert read_value(store_dir, "meta", SEALED_KEY) is None  # not encrypted: the servers open it
    Store(store_dir, sync=False, crypto=crypto).close()
    config.write_text("encrypt_at_rest = 3\n")
    proc = run_module("server", "migrate", "--config", str(config), "--data-dir",
                      str(tmp_path / "d"), check=False, env=env)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.startswith("migrate: encrypt_at_rest (TAILOR_ENCRYPT_AT_REST, "), proc.stderr


def test_every_store_command_finds_the_dirs_the_servers_settings_name(tmp_path):
    """compact, backup, restore, rotate-key and audit verify took their data dir from
    `--data-dir` alone (default ./data) and had no `--config`: with the servers' TOML file
    naming `data_dir` (or TAILOR_DATA_DIR set), `backup --out F` archived ./data, or failed
    "no Tailor store under data". Each reads them as `serve` and `migrate` do."""
    from server.security.secrets import Secrets
    from server.store import Store
    from server.store.crypto import StoreCrypto
    secrets_dir, data_dir = tmp_path / "secrets", tmp_path / "theirs"
    secrets_init(secrets_dir)
    config = tmp_path / "tailor.toml"
    config.write_text(f'data_dir = "{data_dir}"\nsecrets_dir = "{secrets_dir}"\n')
    crypto = StoreCrypto.from_secrets(Secrets.load(secrets_dir, generate=False))
    Store(data_dir / "store", sync=False, crypto=crypto).close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAILOR_")}
    out = run_module("server", "compact", "--config", str(config), env=env).stdout
    assert out.startswith(f"compacted {data_dir / 'store'}: "), out
    rotated = run_module("server", "rotate-key", "--config", str(config), env=env).stdout
    assert json.loads(rotated.splitlines()[-1])["remaining"] == 0
    archive = tmp_path / "b.tar"
    run_module("server", "backup", "--out", str(archive),
               env={**env, "TAILOR_DATA_DIR": str(data_dir)})
    other = tmp_path / "other.toml"
    other.write_text(f'data_dir = "{tmp_path / "restored"}"\n')
    run_module("server", "restore", "--from", str(archive), "--config", str(other), env=env)
    assert (tmp_path / "restored" / "store" / "data.mdb").exists()
    verify = run_module("server", "audit", "verify", "--config", str(config), env=env, check=False)
    assert verify.returncode == 1 and f"no audit log in {data_dir} " in verify.stderr, verify.stderr


@pytest.mark.parametrize("workers", [1, 2])
def test_a_sighup_says_which_config_file_settings_take_a_restart(server_process, tmp_path, workers):
    """A SIGHUP re-reads only the auth config and the TLS files: a `--config` file edited since
    the start was silently not applied, and one broken since was found only at the next start
    (a crash's restart too, exit 2). The server now says which settings take a restart, or why
    the file would be refused; the running values stay.

    `limits = 5` in the file raised a TypeError out of the SIGHUP's re-read: with 2 workers
    in the parent's signal handler, which ended its supervision (a worker killed then went
    unnoticed, the port served one short, the stop exited 1 with the traceback; 1 worker: a
    traceback). It is an ERROR line naming the file, as at start; the server supervises on.
    (Both on one server per worker count: each case is a SIGHUP of its own.)"""
    import signal
    import time

    from clients import TailorClient
    from tests.conftest import _children
    config = tmp_path / "tailor.toml"
    config.write_text("event_retention_days = 365.0\n[limits]\nevents_per_batch = 10000\n")
    served = server_process(tmp_path / "data", workers=workers, args=("--config", str(config)),
                            env={"TAILOR_SECRETS_DIR": str(tmp_path / "secrets")})
    config.write_text("event_retention_days = 30.0\n[limits]\nevents_per_batch = 5\n")
    os.kill(served.proc.pid, signal.SIGHUP)
    served.wait_logged("SIGHUP: settings changed since the start take a restart")
    with TailorClient(served.target, timeout=30) as client:
        events = [{"event_id": f"e{i}", "user_id": "u", "type": "view", "item_id": "i",
                   "timestamp": time.time()} for i in range(8)]
        assert client.track_batch(events).accepted == 8  # the running limit stays
    config.write_text("event_retention_days = [\n")
    os.kill(served.proc.pid, signal.SIGHUP)
    served.wait_logged("SIGHUP: the settings do not load now")
    config.write_text("limits = 5\n")
    os.kill(served.proc.pid, signal.SIGHUP)
    served.wait_logged(f"{config}: limits is a table")
    if workers == 2:  # the parent still watches its workers
        worker = next(pid for pid in _children(served.proc.pid)
                      if b"spawn_main" in open(f"/proc/{pid}/cmdline", "rb").read())
        os.kill(worker, signal.SIGKILL)
        served.proc.wait(timeout=60)
    log = served.stop()
    assert ("SIGHUP: settings changed since the start take a restart (the running values stay): "
            "limits.events_per_batch, event_retention_days") in log
    assert ("SIGHUP: the settings do not load now, and a restart would refuse them (the running "
            f"ones stay): {config}: ") in log
    assert log.count("SIGHUP: settings changed") == 1  # once per server, not once per worker
    assert ("SIGHUP: the settings do not load now, and a restart would refuse them (the running "
            f"ones stay): {config}: limits is a table") in log
    assert "Traceback" not in log
    if workers == 2:
        assert "exited with -9; stopping the others" in log and served.proc.returncode == 1
    else:
        assert served.proc.returncode == 0


def test_a_sighup_sees_the_log_settings_edited_in_the_config_file(server_process, tmp_path):
    """The server exports its log format and level as TAILOR_LOG_FORMAT and TAILOR_LOG_LEVEL for
    its writer processes; a SIGHUP's re-read took them as variables above the file, so a file
    that changed `log_format` or `log_level` since the start was said to be unchanged."""
    import signal

    config = tmp_path / "tailor.toml"
    config.write_text('log_format = "json"\nevent_retention_days = 365.0\n')
    served = server_process(tmp_path / "data", args=("--config", str(config)),
                            env={"TAILOR_SECRETS_DIR": str(tmp_path / "secrets")})
    config.write_text('log_format = "text"\nlog_level = "warning"\nevent_retention_days = 30.0\n')
    os.kill(served.proc.pid, signal.SIGHUP)
    served.wait_logged("SIGHUP: settings changed since the start take a restart")
    assert ("take a restart (the running values stay): log_format, log_level, "
            "event_retention_days") in served.stop()
