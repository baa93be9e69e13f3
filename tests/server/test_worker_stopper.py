"""A stop signal that reaches a worker whose loop is closed (its start refused while another
worker's refusal made the parent forward SIGTERM) has nothing to start: it logged `could not
start the stop` with a traceback (RuntimeError: Event loop is closed) beside the refusal's one
line. One before that still sets the stop."""
import asyncio
import signal

from server.worker import _stopper


def test_a_stop_signal_after_the_loop_closed_raises_nothing():
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    loop.close()
    _stopper(loop, stop, None)(signal.SIGTERM)  # raised RuntimeError, logged as a traceback
    assert not stop.is_set()


def test_a_stop_signal_while_the_loop_runs_sets_the_stop():
    async def main():
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, _stopper(loop, stop, None), signal.SIGTERM)
        await asyncio.wait_for(stop.wait(), 5)
    asyncio.run(main())
