"""Event validation: byte limits count UTF-8 bytes, whatever the string's length in characters."""
import time

import pytest

from server.profiles import EventRules, TrackedEvent
from server.profiles.events import check_event


def event(event_id="e1", item_id="", attributes=None):
    return TrackedEvent(event_id, "ann", "view", "", "", item_id, 0.0, time.time() - 60, attributes or {})


@pytest.mark.parametrize("value, ok", [("a" * 128, True), ("a" * 129, False), ("€" * 42, True),
                                       ("€" * 43, False), ("😀" * 32, True), ("😀" * 33, False)])
def test_id_limits_are_in_bytes(value, ok):
    assert (check_event(event(event_id=value), EventRules()) is None) == ok
    assert (check_event(event(item_id=value), EventRules()) is None) == ok


def test_default_channel_is_filled_and_attribute_limits_hold():
    ev = event()
    assert check_event(ev, EventRules()) is None and ev.channel == "web"
    too_big = event(attributes={"k": "v" * 2000})
    assert check_event(too_big, EventRules()) == "attributes take 2001 bytes, at most 1024"
