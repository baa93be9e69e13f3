"""A PlanCampaign cancelled by its client leaves no "Task exception was never retrieved" ERROR
in the server log (server/campaigns/plan.py `_Idle.next`). The client's cancel ends the request
stream (gRPC's reader sees its end) in the same turn of the loop as the reader task is cancelled:
the read-ahead task then finished with StopAsyncIteration that nobody retrieved, and asyncio
logged it at ERROR when the task was collected (walked: a real 2-worker TLS server, 25 s of
cancelled PlanCampaign streams, 2,756 to 4,805 such lines). The same turn, reproduced with a
request stream that ends as its reader is cancelled."""
import asyncio
import gc
import logging

from server.campaigns.plan import _Idle


async def test_a_stream_ending_as_its_reader_is_cancelled_logs_nothing(caplog):
    last = asyncio.Event()

    async def messages():  # the client's stream: ends when it cancels
        await last.wait()
        return
        yield

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        reader = asyncio.create_task(_Idle(60).next(messages()))
        await asyncio.sleep(0.01)  # waiting for the next message
        last.set()  # the client cancels: the stream ends...
        reader.cancel()  # ...and the call's reader is cancelled, in the same turn
        await asyncio.wait({reader})
        assert reader.cancelled()
        del reader  # its CancelledError's traceback holds the read-ahead task
        gc.collect()  # the read-ahead task, done: what it ended with was retrieved
        await asyncio.sleep(0.01)
    assert "never retrieved" not in caplog.text


async def test_the_end_of_the_stream_is_still_read_as_its_end():
    async def messages():
        yield "first"

    idle, stream = _Idle(60), messages()
    assert await idle.next(stream) == "first"
    assert await idle.next(stream) is None
