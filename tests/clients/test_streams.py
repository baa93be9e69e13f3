"""The client's streaming calls read their requests lazily, on gRPC's thread: an error there (a
bad event, the caller's own iterator failing) ended the call as `UNKNOWN: Exception iterating
requests!`, its cause nowhere. The call raises that error instead."""
import asyncio
import time

import pytest

from clients import TailorClient


def track_with_a_bad_fourth_event(target: str):
    now = time.time() - 60
    events = [{"event_id": f"e{i}", "user_id": "u1", "type": "view", "timestamp": now}
              for i in range(3)] + [{"event_id": "e3", "user_id": "u1", "timestamp": "yesterday"}]
    with TailorClient(target, timeout=10) as client:
        client.track(events, batch_size=2)


async def test_a_bad_event_in_a_stream_is_raised_naming_it(target):
    with pytest.raises(ValueError, match=r"events\[3\]: .*'yesterday'"):
        await asyncio.to_thread(track_with_a_bad_fourth_event, target)


def plan_from_a_failing_reader(target: str):
    def users():
        yield "u1"
        raise OSError("audience file: input/output error")
    with TailorClient(target, timeout=10) as client:
        client.create_campaign({"campaign_id": "c1", "channel": "push", "policy": "fixed",
                                "variants": [{"id": "a", "content": {"title": "hi"}}]})
        return list(client.plan_campaign("c1", users()))


async def test_the_callers_own_iterator_error_is_raised_as_it_was(target):
    with pytest.raises(OSError, match="input/output error"):
        await asyncio.to_thread(plan_from_a_failing_reader, target)
