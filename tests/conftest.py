"""Shared fixtures: a small demo bundle trained by the real training job, and real servers."""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

ROOT = Path(__file__).resolve().parents[1]
# OpenMP threads (LightGBM, FAISS) that wait for work sleep instead of spinning: on a busy 2-core
# machine a spinning thread takes the core its partner needs (a tastes-bundle training: 21-26 s
# wall with spinning, 5-7 s without, the same bundle). Set before any test imports those
# libraries; training and server subprocesses inherit it. Results do not depend on it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# OpenBLAS (numpy's, scipy's) ignores that policy: its threads, one a core, spin while they wait
# for work. With two test processes on two cores, many small BLAS calls (sklearn's reward models
# in tests/training/test_ope.py) spun against each other: that module took 15 s of CPU with
# them, 4.7 s with one thread; the kernels' attribution and bandit tests and the backtests took
# 20% less. Servers' writers already run on one (`server.batching.zygote.ENV`). Where a test is
# about the thread count it sets its own (tests/server/test_writer_process.py).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# Servers the tests start (in process and `python -m server` children) do not import
# scipy.stats in the background once serving (`server.preload`: ~0.6 s of CPU a start, on 2
# cores shared by hundreds of starts); tests/server/test_preload.py turns it on.
os.environ.setdefault("TAILOR_PRELOAD_STATISTICS", "false")
_PORTS = random.Random()
_HANDED_OUT: set[int] = set()
"""Ports `free_port` gave this process: a port is free until its user binds it, so a second call
before then (a server's port and then its metrics port) could otherwise get the same one."""
SMALL_WORLD = ["--users", "1500", "--items", "600", "--days", "30", "--seed", "7"]


def throwaway_crypto():
    """Encryption at rest under a new random keyring and store id (`StoreCrypto`)."""
    from server.security.secrets import Keyring
    from server.store.crypto import StoreCrypto
    return StoreCrypto(Keyring.generate("encryption").keys, os.urandom(32))


@pytest.fixture(autouse=True)
def _umask_as_found():
    """Every test ends with the umask it started with: a `python -m server` command run in
    this process (`run_command`, or `main` itself) sets 077 (`server.files.private_umask`),
    and every later test's files and server processes would inherit it, so a check that
    what a server writes is private would pass whatever the server did."""
    found = os.umask(0o022)
    os.umask(found)
    yield
    os.umask(found)


@pytest.fixture
def sealed_store(tmp_path):
    """A new store with encryption at rest, fsync off, closed after the test."""
    from server.store import Store
    store = Store(tmp_path / "store", sync=False, crypto=throwaway_crypto())
    yield store
    store.close()


def held_amend(registry, version: str):
    """An amender that holds the first install of `version` in its amend (a large catalog's
    takes its time) until `go_on` is set: (`amending`, set once it holds; `go_on`)."""
    import threading
    amending, go_on = threading.Event(), threading.Event()

    def slow_amend(bundle):
        if bundle.version == version and not amending.is_set():
            amending.set()
            go_on.wait(30)
        return bundle
    registry.add_amender(slow_amend)
    return amending, go_on


@contextlib.asynccontextmanager
async def loop_gaps(every: float):
    """A list that holds, once the block ends, the gaps between the turns a ticker every
    `every` seconds got on the running event loop while the block ran (the server's loop, in
    process: how long it stood still); 0.0 first, so `max` of it is defined."""
    gaps, done = [0.0], asyncio.Event()

    async def tick():
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(every)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now
    ticker = asyncio.create_task(tick())
    try:
        yield gaps
    finally:
        done.set()
        await ticker


def free_port() -> int:
    """A loopback port free now and not handed out recently in this process. Under `make test`
    (two pytest processes) each process draws from its own range below the kernel's ephemeral
    ports (32768 and up), so neither the other process nor an outgoing connection can take the
    port between this check and its use."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    ours = worker.startswith("gw") and worker[2:].isdigit()
    low = 20000 + 6000 * (int(worker[2:]) % 2) if ours else 0
    while True:
        port = _PORTS.randrange(low, low + 6000) if ours else 0
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:  # in use (or lingering): draw again
                continue
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            if len(_HANDED_OUT) >= 4000:  # long since bound or done with: start over
                _HANDED_OUT.clear()
            _HANDED_OUT.add(port)
            return port


def loaded_modules(imports: str, watched: tuple[str, ...]) -> list[str]:
    """The modules of `watched` that a fresh interpreter has loaded after `import <imports>`
    (from the repo root): what a process pays for at start."""
    script = (f"import json, sys, {imports}; "
              f"print(json.dumps(sorted(m for m in sys.modules if m in {tuple(watched)!r})))")
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


AWAIT_GO = "print('ready', flush=True); sys.stdin.readline(); "
"""Goes in a `run_at_once` script after its imports (and `import sys`), before its work."""


def run_at_once(argvs: list[list[str]], timeout: float = 120) -> list[tuple[int, str]]:
    """`python *argv` for each of `argvs` from the repo root, racing: each script says it is
    ready once imported (`AWAIT_GO`) and waits for a line on its stdin, sent to all of them as
    soon as the last is ready (a start time set a fixed 8 s ahead waited ~6 s more than the
    imports take). (returncode, stderr) of each."""
    procs = [subprocess.Popen([sys.executable, *argv], cwd=ROOT, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for argv in argvs]
    try:
        if [p.stdout.readline() for p in procs] != ["ready\n"] * len(procs):
            for p in procs:  # killed before any goes: the others' work never starts
                p.kill()
            raise AssertionError(f"not every process got ready: {[p.communicate()[1] for p in procs]}")
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        errors = [p.communicate(timeout=timeout)[1] for p in procs]
        return [(p.returncode, err) for p, err in zip(procs, errors)]
    finally:
        for p in procs:
            p.kill()
            p.wait()


def run_module(*args: str, timeout: float = 600, check: bool = True, **kw) -> subprocess.CompletedProcess:
    """Run `python -m ...` from the repo root, as a user would."""
    proc = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"python -m {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def store_mentions(store, needle: bytes) -> list[tuple[str, bytes]]:
    """(table, key) of every record of every table whose key or value contains `needle`."""
    from server.store import TABLES
    hits = []
    with store.env.begin() as txn:
        for table in TABLES:
            for key, value in txn.cursor(db=store.db(table)):
                if needle in key or needle in value:
                    hits.append((table, key))
    return hits


def train_bundle(out: Path, data: Path, *extra: str) -> Path:
    """Train a bundle into `out` (a bundles root) and return the new bundle directory."""
    before = set(out.iterdir()) if out.exists() else set()
    run_module("training", "train", "--interactions", str(data / "interactions.csv"),
               "--items", str(data / "items.csv"), "--out", str(out), *extra)
    new = [p for p in out.iterdir() if p not in before and (p / "manifest.json").exists()]
    assert len(new) == 1, f"expected one new bundle in {out}, found {new}"
    return new[0]


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("demo-data")
    run_module("training", "demo-data", "--out", str(data), *SMALL_WORLD)
    return data


@pytest.fixture(scope="session")
def demo_bundle(demo_data, tmp_path_factory) -> Path:
    # No report.html: no test reads this one's (tests/training/test_bundle.py checks the report).
    return train_bundle(tmp_path_factory.mktemp("bundles"), demo_data, "--no-report")


@pytest.fixture(scope="session")
def second_bundle(demo_data, tmp_path_factory) -> Path:
    """Another valid version of the same catalog (different factors)."""
    return train_bundle(tmp_path_factory.mktemp("bundles2"), demo_data, "--factors", "24",
                        "--no-report")


@pytest.fixture(scope="session")
def demo_manifest(demo_bundle) -> dict:
    return json.loads((demo_bundle / "manifest.json").read_text())


def server_settings(tmp: Path, bundle: Path):
    """The tests' server settings: data and secrets under `tmp`, serving `bundle`."""
    from server.config import Settings
    return Settings(port=0, data_dir=tmp / "data", bundle=bundle, grace_seconds=1.0,
                    lmdb_sync=False, bundle_poll_seconds=0.1, secrets_dir=tmp / "secrets")


@contextlib.asynccontextmanager
async def serving(settings):
    """A real in-process server on a free loopback port and a channel to it."""
    from server.app import TailorServer
    server = TailorServer(settings)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            yield server, ch
    finally:
        await server.stop(grace=0.5)


@pytest.fixture
def settings(tmp_path, demo_bundle):
    return server_settings(tmp_path, demo_bundle)


@pytest_asyncio.fixture
async def tailor_server(settings):
    from server.app import TailorServer
    server = TailorServer(settings)
    await server.start()
    yield server
    await server.stop(grace=0.5)


def minted(tmp_path: Path, roles: dict[str, list[str]]) -> tuple[Path, dict[str, str]]:
    """An auth config under `tmp_path` with a token principal for each of `roles` (name ->
    its roles): (its path, the tokens by name)."""
    from server.security import tokens
    path = tmp_path / "auth.toml"
    path.write_text("")
    return path, {name: tokens.mint(path, name, given) for name, given in roles.items()}


@pytest_asyncio.fixture
async def secured(settings, auth):
    """A real server whose auth config is the module's `auth` fixture's (path, tokens)."""
    from server.app import TailorServer
    server = TailorServer(settings.model_copy(update={"auth_config": auth[0]}))
    await server.start()
    yield server
    await server.stop(grace=0.5)


@pytest_asyncio.fixture
async def channel(tailor_server):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{tailor_server.port}") as ch:
        yield ch


@pytest_asyncio.fixture(scope="module")
async def module_server(tmp_path_factory, demo_bundle):
    """(server, channel): one real server serving the demo bundle, shared by a module's tests
    (for modules whose tests do not change settings and do not write to each other's ids)."""
    async with serving(server_settings(tmp_path_factory.mktemp("module-server"), demo_bundle)) as pair:
        yield pair


@pytest_asyncio.fixture(scope="module")
async def module_bare_server(tmp_path_factory):
    """(server, channel): one real server with no bundle, shared by a module's tests whose calls
    are all refused (bad input changes nothing, so each case needs no server of its own)."""
    from server.config import Settings
    tmp = tmp_path_factory.mktemp("bare-server")
    async with serving(Settings(port=0, data_dir=tmp / "data", grace_seconds=1.0, lmdb_sync=False,
                                secrets_dir=tmp / "secrets")) as pair:
        yield pair


@pytest.fixture
def copy_bundle(tmp_path):
    def copy(src: Path) -> Path:
        dst = tmp_path / "copies" / src.name
        shutil.copytree(src, dst)
        return dst
    return copy


@pytest.fixture
def env_with_repo():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


class ServerProcess:
    """`python -m server` in a subprocess on a free loopback port, as a user runs it."""

    def __init__(self, data_dir: Path, bundle: Path | None = None, workers: int = 1, env: dict | None = None,
                 args: tuple[str, ...] = (), connection=None, cwd: Path = ROOT):
        """`args`: more `python -m server` flags; `connection` (a `clients.transport.Connection`):
        how to reach it when they turn TLS on; `cwd`: its working directory (the default
        secrets_dir, var/secrets, is relative to it)."""
        from clients.transport import Connection
        self.port, self.metrics_port = free_port(), free_port()
        self.target = f"127.0.0.1:{self.port}"
        self.connection = connection or Connection()
        args = [sys.executable, "-m", "server", "--port", str(self.port), "--data-dir", str(data_dir),
                "--workers", str(workers), "--metrics-port", str(self.metrics_port), *args]
        if bundle is not None:
            args += ["--bundle", str(bundle)]
        self.proc = subprocess.Popen(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env={**os.environ, **(env or {})})
        # Its output is read as it comes (None: its end), not only at `stop`: a server that
        # logs more than the pipe holds (64 KiB: one INFO line per refused call) froze on a full
        # pipe, answering nothing and stopping only at the 20 s kill.
        self._lines: list[str | None] = []
        self._logged = threading.Condition()
        threading.Thread(target=self._read_lines, daemon=True).start()
        self._wait_ready()

    def _wait_ready(self, timeout: float = 120.0) -> None:
        import time

        from grpc_health.v1 import health_pb2, health_pb2_grpc
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}:\n{self._output()[-3000:]}")
            try:
                with self.connection.channel(self.target) as ch:
                    status = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1)
                if status.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.05)  # a server answers within 0.05 s of SERVING (0.2 s: 0.1 s lost a start)
        raise AssertionError("server did not become ready")

    def wait_logged(self, text: str, timeout: float = 60.0) -> None:
        """Wait until the server has logged a line containing `text` (read from its output,
        which `stop` then returns whole)."""
        def logged() -> bool:
            return any(line is not None and text in line for line in self._lines)
        with self._logged:
            if not self._logged.wait_for(lambda: logged() or self._lines[-1:] == [None], timeout):
                raise AssertionError(f"the server did not log {text!r} in {timeout} s")
            assert logged(), \
                f"the server exited without logging {text!r}:\n{''.join(self._lines[:-1])[-3000:]}"

    def _read_lines(self) -> None:
        for line in iter(self.proc.stdout.readline, ""):
            with self._logged:
                self._lines.append(line)
                self._logged.notify_all()
        with self._logged:
            self._lines.append(None)  # its end
            self._logged.notify_all()

    def kill(self) -> None:
        """SIGKILL the server and every process under it (workers, zygotes, writers)."""
        import signal
        for pid in _descendants(self.proc.pid) + [self.proc.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=30)

    def stop(self) -> str:
        """Stop the server; returns what it logged."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        return self._output()

    def _output(self) -> str:
        """All it logged, once it has exited (the reader reads to the end of the output)."""
        with self._logged:
            self._logged.wait_for(lambda: self._lines[-1:] == [None], 30)
            return "".join(line for line in self._lines if line is not None)


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]


def _descendants(pid: int) -> list[int]:
    """`pid`'s children, theirs, and so on (a writer is a child of its zygote)."""
    found, todo = [], _children(pid)
    while todo:
        found.append(todo.pop())
        todo.extend(_children(found[-1]))
    return found


@contextlib.contextmanager
def _server_processes(tmp: Path):
    """`start(data_dir=None, **ServerProcess's)`: each server it starts (data under `tmp` by
    default) is stopped at the end, its log printed if it crashed."""
    started = []

    def start(data_dir: Path | None = None, **kw) -> ServerProcess:
        proc = ServerProcess(data_dir or tmp / "data", **kw)
        started.append(proc)
        return proc
    try:
        yield start
    finally:
        for proc in started:
            crashed = proc.proc.poll() not in (None, 0, -9, -15)
            log = proc.stop()
            if crashed:
                print(f"server on {proc.target} exited with {proc.proc.returncode}:\n{log[-5000:]}")


@pytest.fixture
def server_process(tmp_path):
    with _server_processes(tmp_path) as start:
        yield start


@pytest.fixture(scope="module")
def module_server_process(tmp_path_factory):
    """`server_process` for servers a module's tests share (started once, stopped after the
    module): for tests that do not change what the others read."""
    with _server_processes(tmp_path_factory.mktemp("module-served")) as start:
        yield start


@pytest.fixture
def small_disk(tmp_path):
    """A 12 MiB filesystem of its own (a tmpfs: mounting it needs root, skipped otherwise)."""
    path = tmp_path / "disk"
    path.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(path)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item):
    """Locust (loadtests.grpc_user, the locustfiles) stays in child processes: imported here it
    brings gevent's monkey-patching into the worker, whose later threaded and asyncio tests
    then fail far from the cause (gevent LoopExit in xdist's own loop, servers that never stop).
    The test that imported it fails instead."""
    if "locust" in sys.modules:
        pytest.fail(f"{item.nodeid} imported locust into the test process: run Locust and "
                    "loadtests.grpc_user in a child process (run_module, subprocess)",
                    pytrace=False)


# --- suite3a: shared helpers (added at the end, in one block) ---


def run_command(*argv: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """`python -m server COMMAND ...` for a command other than `serve`, run in this process
    (`server.__main__.main`): what its process would print and exit with, without paying for a
    new interpreter and its imports (~1 s of CPU each) where a test is about what the command
    does, not about its process. As the process: `SystemExit("msg")` is `msg` on stderr, exit
    1; any other exception propagates (a traceback: the test fails); WARNING and above of a
    logger go to stderr (Python's last-resort handler, the commands configure none); `env`
    adds variables for the call. What the call changes in this process is put back: the
    environment, SIGHUP's handler, the root logger, the keys of `server.store.tokens` and
    `server.security.userref`."""
    import io
    import logging
    import signal
    from contextlib import redirect_stderr, redirect_stdout

    from server.__main__ import main
    from server.security import userref
    from server.store import tokens
    out, err = io.StringIO(), io.StringIO()
    root, saved_env = logging.getLogger(), dict(os.environ)
    handlers, level, hup = root.handlers[:], root.level, signal.getsignal(signal.SIGHUP)
    keys = (tokens._key, userref._key)
    to_stderr = logging.StreamHandler(err)
    to_stderr.setLevel(logging.WARNING)
    os.environ.update(env or {})
    root.addHandler(to_stderr)
    code: int | str | None = 0
    try:
        with redirect_stdout(out), redirect_stderr(err):
            main(list(argv))
    except SystemExit as exit_:
        code = exit_.code
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        root.handlers[:], root.level = handlers, level
        if hup is not None:  # None: a handler not set from Python, left as it is
            signal.signal(signal.SIGHUP, hup)
        tokens.use_key(keys[0])
        userref.use_key(keys[1])
    if isinstance(code, str):
        err.write(code + "\n")
        code = 1
    proc = subprocess.CompletedProcess(["server", *argv], code or 0, out.getvalue(), err.getvalue())
    if check and proc.returncode != 0:
        raise AssertionError(f"server {' '.join(argv)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc
