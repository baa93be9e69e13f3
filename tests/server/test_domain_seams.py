"""A domain joins profiles only through `server.interfaces`: here an audit-like domain that
follows tracked events and keeps one record per user outside the `<user>␟` key space."""
import time
from types import SimpleNamespace

from server.interfaces import EventListener, UserEraser
from server.profiles import Profiles, TrackedEvent
from server.store import Store


class SeenCounter:
    """Counts each user's accepted events under `seen␟<user>` in the meta table."""

    def __init__(self, store: Store):
        self.store = store
        self.batches = []

    def key(self, user_id: str) -> bytes:
        return b"seen\x1f" + user_id.encode()

    async def on_events(self, events) -> None:
        self.batches.append([ev.event_id for ev in events])
        for ev in events:
            old = int(self.store.get("meta", self.key(ev.user_id)) or b"0")
            self.store.put("meta", self.key(ev.user_id), str(old + 1).encode())

    def erase_user(self, txn, user_id: str) -> int:
        return int(txn.delete(self.key(user_id), db=self.store.db("meta")))


def event(event_id: str, user_id: str) -> TrackedEvent:
    return TrackedEvent(event_id, user_id, "click", "", "", "", 0.0, time.time() - 5)


async def test_a_new_domain_plugs_in_as_listener_and_eraser(tmp_path):
    store = Store(tmp_path / "store", sync=False)
    profiles = Profiles(store, SimpleNamespace(active=None))  # a BundleSource with no bundle
    counter = SeenCounter(store)
    listener: EventListener = counter
    eraser: UserEraser = counter
    profiles.add_listener(listener)
    profiles.add_eraser(eraser)
    await profiles.track([event("e1", "ann"), event("e2", "ann"), event("e3", "bob")])
    await profiles.track([event("e1", "ann"), event("bad", "")])  # a duplicate, a rejected one
    assert counter.batches == [["e1", "e2", "e3"], []]
    assert store.get("meta", counter.key("ann")) == b"2"
    removed = await profiles.delete("ann")
    assert store.get("meta", counter.key("ann")) is None
    assert removed == 6  # 2 events, their 2 dedupe keys, the feature state, the counter's record
    assert store.get("meta", counter.key("bob")) == b"1"
    await profiles.close()
    store.close()
