"""A start that fails once the public port listens (the last steps: resuming unfinished send
jobs) leaves no port behind: the public port closes with the gRPC one."""
import asyncio

import pytest

from server.app import TailorServer
from server.messages.jobs import SendJobs


async def test_a_start_failing_after_the_public_port_listens_closes_it(settings, monkeypatch):
    async def failing(jobs):
        raise OSError("the send records could not be read")
    monkeypatch.setattr(SendJobs, "resume", failing)
    server = TailorServer(settings)
    with pytest.raises(OSError, match="send records"):
        await server.start()
    with pytest.raises(OSError):  # refused: nothing listens there any more
        _, writer = await asyncio.open_connection("127.0.0.1", settings.public_http_port)
        writer.close()
