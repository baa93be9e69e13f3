"""Fixtures of the client tests."""
import pytest_asyncio


@pytest_asyncio.fixture
async def target(tmp_path):
    """The address of an in-process server on a free loopback port (no fsync), stopped after."""
    from server.app import TailorServer
    from server.config import Settings
    server = TailorServer(Settings(port=0, data_dir=tmp_path / "data", lmdb_sync=False,
                                   secrets_dir=tmp_path / "secrets"))
    port = await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(grace=0.5)
