"""Shared fixtures: a small demo bundle trained by the real training job, and real servers."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

ROOT = Path(__file__).resolve().parents[1]
SMALL_WORLD = ["--users", "1500", "--items", "600", "--days", "30", "--seed", "7"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_module(*args: str, timeout: float = 600, check: bool = True, **kw) -> subprocess.CompletedProcess:
    """Run `python -m ...` from the repo root, as a user would."""
    proc = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"python -m {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


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
    return train_bundle(tmp_path_factory.mktemp("bundles"), demo_data)


@pytest.fixture(scope="session")
def second_bundle(demo_data, tmp_path_factory) -> Path:
    """Another valid version of the same catalog (different factors)."""
    return train_bundle(tmp_path_factory.mktemp("bundles2"), demo_data, "--factors", "24")


@pytest.fixture(scope="session")
def demo_manifest(demo_bundle) -> dict:
    return json.loads((demo_bundle / "manifest.json").read_text())


@pytest.fixture
def settings(tmp_path, demo_bundle):
    from server.config import Settings
    return Settings(port=0, data_dir=tmp_path / "data", bundle=demo_bundle, grace_seconds=1.0,
                    lmdb_sync=False, bundle_poll_seconds=0.1)


@pytest_asyncio.fixture
async def tailor_server(settings):
    from server.app import TailorServer
    server = TailorServer(settings)
    await server.start()
    yield server
    await server.stop(grace=0.5)


@pytest_asyncio.fixture
async def channel(tailor_server):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{tailor_server.port}") as ch:
        yield ch


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
