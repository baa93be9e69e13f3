"""The serving-time prior: fitted from samples of a real profile store, walking it round-robin."""
import time

import numpy as np
import pytest

from protos.tailor.v1 import profile_pb2 as pb
from server.contact.prior import PriorSource
from server.profiles import ProfileSchema, TrackedEvent
from server.profiles.repository import ProfileRepository
from server.store import Store

NOW = time.time()


def tracked(event_id, user, type, channel, ts):
    msg = pb.Event(event_id=event_id, user_id=user, type=type, timestamp=ts)
    return TrackedEvent(msg.event_id, user, type, channel, "", "", 0.0, ts, {}, msg)


@pytest.fixture
def repo(tmp_path):
    store = Store(tmp_path / "store", sync=False)
    repo = ProfileRepository(store, ProfileSchema().layout())
    # 5 users, each 4 email sends, users u0..u3 open 2 of them; all at one time
    events = []
    for u in range(5):
        for j in range(4):
            events.append(tracked(f"s{u}{j}", f"u{u}", "email_sent", "email", NOW - 3600))
        for j in range(2 if u < 4 else 0):
            events.append(tracked(f"o{u}{j}", f"u{u}", "email_open", "email", NOW - 3600))
    repo.ingest(events, [None] * len(events))
    repo.update_meta("u0", lambda meta: {**(meta or {}), "name": "x"})  # a non-feature record
    yield repo
    store.close()


def test_samples_walk_the_store_round_robin(repo):
    first, after = repo.sample_states(3, b"")
    second, end = repo.sample_states(3, after)
    assert first.shape[0] == 3 and second.shape[0] == 2 and end == b""
    sends = [s[repo.layout.offsets["counts"]:].sum() for s in np.concatenate([first, second])]
    assert all(x > 0 for x in sends)


def test_prior_source_starts_uninformed_and_refits_from_the_store(repo):
    source = PriorSource(repo.layout, repo.sample_states, sample_size=10, max_age_s=60)
    before = source.current
    assert before.hour_alpha == 1.0 and (before.hour_p == 1 / 168).all()
    assert (before.channel_a == 1.0).all() and (before.channel_b == 9.0).all()  # rate_prior
    assert source.stale(NOW)
    pop = source.refresh(NOW)
    assert source.current is pop and not source.stale(NOW + 59) and source.stale(NOW + 60)
    # (engaged, not) per user: (2, 2) x 4 and (0, 4); p = (8.5, 12.5) / 21 (smoothing 0.5);
    # sum S = 4 x 0.60 + 10.88 = 13.3 < sum n = 20: rho < 0, users look alike -> alpha_max
    email = pop.channels.index("email")
    mean = pop.channel_a[email] / (pop.channel_a[email] + pop.channel_b[email])
    assert mean == pytest.approx(8.5 / 21)
    assert pop.channel_a[email] + pop.channel_b[email] == pytest.approx(1e6)
