"""The tokens of erased events stamped after their erasure (a client clock ahead): replays are
refused, new events stored, however many the erasure deleted; the tokens go once the window
has passed (real LMDB)."""
import json

from server.profiles.tombstones import Tombstones
from server.security.secrets import Keyring
from server.store import Store, keys


def _token(i: int) -> bytes:
    return b"%032x" % i


def _dedupe(token: bytes) -> bytes:
    return keys.DEDUPE_PREFIX + token


def test_an_erasure_of_many_events_stamped_ahead_still_stores_the_users_new_events(tmp_path):
    """1,500 erased events stamped after the erasure (a busy shared id, one device 100 s ahead):
    past 1,000 the tombstone kept no token and refused every event of the user up to the
    latest of them, new ones from correct clocks too; now replays alone are refused, those of
    an earlier erasure still after a second one."""
    store, clock = Store(tmp_path / "s", sync=False), [1000.0]
    tombs = Tombstones(store, Keyring.generate("erasure"), clock=lambda: clock[0],
                       future_tolerance_s=300.0)
    ahead = [(1_100_000 + i, _token(i)) for i in range(1500)]  # 1100.000 .. 1101.499
    store.write(lambda txn: tombs.erase_user(txn, "busy", events_until=1101.5, ahead=ahead))

    def refused(ts, tokens):
        return store.write(lambda txn: tombs.before_erasure(
            txn, ["busy"] * len(ts), ts, [_dedupe(t) for t in tokens]))
    assert refused([1100.007, 1101.0, 1101.499, 999.0], [_token(7), b"new", _token(1499), b"x"]) \
        == [0, 2, 3]
    clock[0] = 1001.0  # erased again (nothing left): one more event stamped ahead
    store.write(lambda txn: tombs.erase_user(txn, "busy", events_until=1102.0, found=False,
                                             ahead=[(1_101_900, _token(9999))]))
    assert refused([1100.007, 1101.9, 1101.2, 1101.95], [_token(7), _token(9999), b"n", b"m"]) \
        == [0, 1]
    store.close()


def test_the_tokens_go_once_the_window_has_passed(tmp_path):
    """The tokens stayed in the tombstone for good. Once the server's clock is past the window
    (the latest erased event's time) by `future_tolerance_s`, the retention sweep drops them:
    every event of the user up to the window's end is refused from then on (new events from
    correct clocks are stamped after it), later ones are stored."""
    store, clock = Store(tmp_path / "s", sync=False), [1000.0]
    tombs = Tombstones(store, Keyring.generate("erasure"), clock=lambda: clock[0],
                       future_tolerance_s=300.0)
    ahead = [(1_050_000, _token(1)), (1_090_000, _token(2))]
    store.write(lambda txn: tombs.erase_user(txn, "u", events_until=1090.001, ahead=ahead))
    store.write(lambda txn: tombs.erase_user(txn, "v"))  # nothing stamped ahead

    def refused(ts, tokens):
        return store.write(lambda txn: tombs.before_erasure(
            txn, ["u"] * len(ts), ts, [_dedupe(t) for t in tokens]))

    def stored():
        with store.read() as txn:
            return [v for k, v in store.table("meta").scan_prefix(txn, keys.TOMBSTONE_PREFIX)] + \
                [k for k, _ in store.table("meta").scan_prefix(txn, b"tombstone-late")]
    assert refused([1050.0, 1060.0, 1200.0], [_token(1), b"new", b"later"]) == [0]
    clock[0] = 1390.0  # the window (1090) plus 300 s not passed yet
    assert tombs.sweep_late() == 0
    assert refused([1050.0, 1060.0], [_token(1), b"new"]) == [0]
    clock[0] = 1391.0
    assert tombs.sweep_late() == 2
    assert not any(_token(1) in raw or _token(2) in raw for raw in stored())
    assert refused([1050.0, 1060.0, 1090.001, 1090.01], [_token(1), b"new", b"n2", b"n3"]) \
        == [0, 1, 2]
    assert tombs.sweep_late() == 0
    assert tombs.erasure_times(["u", "v"]) == [1000.0, 1000.0]
    store.close()


async def test_the_servers_retention_sweep_drops_the_tokens_of_a_passed_window(tailor_server,
                                                                              channel):
    """Through a real server: the erasure of a user with an event stamped 250 s ahead keeps
    its token (a key of its own); the retention sweep past the window drops it, and a replay
    is still refused, as is a new event stamped in the window, with a reason that does not
    claim it was erased (it said "this event was erased with its user" of a new event)."""
    import time

    from protos.tailor.v1 import profile_pb2 as pb
    from protos.tailor.v1 import profile_pb2_grpc as pb_grpc
    profiles = pb_grpc.ProfileServiceStub(channel)
    skewed = [pb.Event(event_id="ahead-1", user_id="shared", type="view", item_id="i1",
                       timestamp=time.time() + 250)]
    assert (await profiles.TrackEvents(pb.TrackEventsRequest(events=skewed))).accepted == 1
    erased = (await profiles.DeleteProfile(pb.DeleteProfileRequest(user_id="shared"))).erased_at
    store = tailor_server.store

    def late_keys():
        with store.read() as txn:
            return len(store.table("meta").scan_prefix(txn, keys.TOMBSTONE_LATE_PREFIX))
    assert late_keys() == 1
    tolerance = tailor_server.settings.event_future_tolerance_s
    assert (await tailor_server.sweep_retention(erased + 240 + tolerance))["replay_tokens"] == 0
    assert (await tailor_server.sweep_retention(erased + 260 + tolerance))["replay_tokens"] == 1
    assert late_keys() == 0
    new = pb.Event(event_id="new-1", user_id="shared", type="view", item_id="i1",
                   timestamp=erased + 100)  # never sent before, stamped in the window
    answer = await profiles.TrackEvents(pb.TrackEventsRequest(events=[*skewed, new]))
    assert answer.accepted == 0 and [r.event_id for r in answer.rejected] == ["ahead-1", "new-1"]
    # no token is kept any more: the reason says "may be", not "this event was erased"
    assert all("erased with its user" not in r.reason and "may be a replay" in r.reason
               for r in answer.rejected)


def test_a_repeat_erasure_after_the_erasure_key_was_rotated_knows_the_first(tmp_path):
    """The earlier tombstone was looked for under the current key id only: after a rotation of
    the `erasure` keyring, a retried DeleteProfile (its first answer lost) answered its own
    time, not the erasure that removed the data, ExportTombstones then listed two times for the
    user, and the replays of the first erasure's window were no longer refused."""
    store, ring = Store(tmp_path / "s", sync=False), Keyring.generate("erasure")
    first = Tombstones(store, ring, clock=lambda: 1000.0)
    store.write(lambda txn: first.erase_user(txn, "rita", events_until=1200.0,
                                             ahead=[(1_150_000, _token(1))]))
    rotated = ring.rotated()
    again = Tombstones(store, rotated, clock=lambda: 1010.0)
    assert store.write(lambda txn: again.erase_user(txn, "rita", found=False)) == 1000.0
    assert sorted(t.at for t in again.listing()) == [1000.0, 1000.0]  # one a key id
    assert again.erasure_times(["rita"]) == [1000.0] and again.erased_at(["rita"]) == [1010.0]
    refused = store.write(lambda txn: again.before_erasure(
        txn, ["rita"] * 3, [1150.0, 1150.0, 1005.0], [_dedupe(_token(1)), _dedupe(b"new"),
                                                      _dedupe(b"x")]))
    assert refused == [0, 2]
    store.close()


def _as_written_before_token_keys(store, tombs, user, at, until, tokens) -> bytes:
    """The tombstone of `user` as the code before token keys wrote it (its `late` list in the
    record: JSON strings, sorted); returns its key."""
    from contract.erasure import digest
    key = keys.tombstone_key(tombs.ring.kid, digest(tombs.ring.key, user))
    record = {"at": at, "events_until": until, "late": sorted(t.decode() for t in tokens)}
    store.write(lambda txn: store.table("meta").put(txn, key, json.dumps(record).encode()))
    return key


def test_the_sweep_also_drops_the_tokens_kept_in_tombstones_written_before_token_keys(tmp_path):
    """A tombstone written before tokens were keys of their own kept its 800 tokens in its
    record (~29 KB of JSON, read whole by every late-event lookup of the user) for good: the
    sweep walked the token keys alone. It now drops the list of a record whose window has
    passed by `future_tolerance_s`, and moves one whose window has not into token keys, swept
    in their turn; the events each refuses are the same."""
    store, clock = Store(tmp_path / "s", sync=False), [1000.0]
    tombs = Tombstones(store, Keyring.generate("erasure"), clock=lambda: clock[0],
                       future_tolerance_s=300.0)
    store.write(lambda txn: tombs.erase_user(txn, "alice", events_until=1200.0))
    clock[0] = 1500.0
    store.write(lambda txn: tombs.erase_user(txn, "bob", events_until=1600.0))
    tokens = [_token(i) for i in range(800)]
    alice = _as_written_before_token_keys(store, tombs, "alice", 1000.0, 1200.0, tokens)
    bob = _as_written_before_token_keys(store, tombs, "bob", 1500.0, 1600.0, tokens[:3])

    def record(key):
        with store.read() as txn:
            return json.loads(store.table("meta").get(txn, key))

    def refused(user, ts, toks):
        return store.write(lambda txn: tombs.before_erasure(
            txn, [user] * len(ts), ts, [_dedupe(t) for t in toks]))
    assert len(record(alice)["late"]) == 800
    clock[0] = 1501.0  # alice's window (1200) plus 300 s has passed; bob's (1600) has not
    assert tombs.sweep_late() == 800
    assert record(alice) == {"at": 1000.0, "events_until": 1200.0, "late": None}
    assert "late" not in record(bob) and record(bob)["late_ms"] == 1_900_000
    assert refused("alice", [1100.0, 1150.0, 1200.5], [_token(5), b"new", b"later"]) == [0, 1]
    assert refused("bob", [1550.0, 1560.0, 1499.0], [_token(2), b"new", b"old"]) == [0, 2]
    assert tombs.sweep_late() == 0
    clock[0] = 1901.0
    assert tombs.sweep_late() == 3
    assert record(bob) == {"at": 1500.0, "events_until": 1600.0, "late": None}
    assert refused("bob", [1550.0, 1560.0, 1600.5], [_token(2), b"new", b"later"]) == [0, 1]
    store.close()


async def test_a_refused_replay_is_answered_as_the_write_judged_it(tailor_server, channel):
    """TrackEvents judged each event against the tombstones in its write, then read them again
    after the commit to say why: a retention sweep landing in between (the window passed, the
    token dropped) made a replay the write refused by its token read as "may be a replay".
    The answer gives the write's own judgment; no tombstone is read again."""
    import time

    from protos.tailor.v1 import profile_pb2 as pb
    from protos.tailor.v1 import profile_pb2_grpc as pb_grpc
    profiles = pb_grpc.ProfileServiceStub(channel)
    skewed = [pb.Event(event_id="ahead-2", user_id="replayer", type="view", item_id="i1",
                       timestamp=time.time() + 250)]
    assert (await profiles.TrackEvents(pb.TrackEventsRequest(events=skewed))).accepted == 1
    erased = (await profiles.DeleteProfile(pb.DeleteProfileRequest(user_id="replayer"))).erased_at
    repo, tombs = tailor_server.profiles.repo, tailor_server.tombstones
    past = erased + 260 + tailor_server.settings.event_future_tolerance_s
    write_events = repo.write_events

    def then_swept(records, *rest):  # the real write, then the real sweep, before the answer
        stored = write_events(records, *rest)
        assert tombs.sweep_late(now=past) == 1
        return stored
    repo.write_events = then_swept
    try:
        answer = await profiles.TrackEvents(pb.TrackEventsRequest(events=skewed))
    finally:
        del repo.write_events
    assert answer.accepted == 0 and [r.event_id for r in answer.rejected] == ["ahead-2"]
    assert "erased with its user" in answer.rejected[0].reason
