"""The decision record: built by the handler, written by the writer process as the decision log."""
import itertools
import json
import pickle
import time

from server.campaigns.records import DecisionRecord
from server.campaigns.repository import PENDING, CampaignRepository, writer_functions
from server.campaigns.spec import Campaign, CampaignSpec, Variant
from server.store import Store

# The decision log's JSON keys, in order: stored logs and `export` readers rely on them.
LOGGED_KEYS = ["decision_id", "campaign_id", "user_id", "timestamp", "arm", "propensity", "reward",
               "context", "position", "variant_id", "status", "deadline", "linear", "channel",
               "send_at", "reason", "channel_propensity", "send_at_propensity"]


def _record(i: int, now: float) -> DecisionRecord:
    return DecisionRecord(decision_id=f"d{i}", campaign_id="c", user_id=f"u{i}", timestamp=now,
                          arm=i % 2, propensity=0.25 + i, reward=None, context=[0.5, -1.0 * i],
                          position=0, variant_id="ab"[i % 2], status=PENDING,
                          deadline=now + 60, linear=True)


def test_records_sent_as_tuples_are_logged_as_the_json_of_their_fields(tmp_path):
    store = Store(tmp_path / "store", sync=False)
    spec = CampaignSpec("c", variants=(Variant("a"), Variant("b"))).validated()
    repo = CampaignRepository(store)
    repo.create(Campaign(spec), spec.new_state())
    now = time.time()
    records = [_record(i, now) for i in range(3)]
    wire = pickle.loads(pickle.dumps([tuple(r) for r in records], pickle.HIGHEST_PROTOCOL))
    assert writer_functions(store)["decisions"](wire) == [""] * 3  # none suppressed
    logged = sorted(itertools.chain(*repo.log.export("c", include_pending=True)),  # by user token
                    key=lambda rec: rec["decision_id"])
    assert [list(rec) for rec in logged] == [LOGGED_KEYS] * 3
    stored = [{k: v for k, v in r._asdict().items()
               if k not in ("caps", "transactional", "request", "choices", "recheck")}
              for r in records]
    assert logged == json.loads(json.dumps(stored))
    assert repo.stats_snapshot("c")[2]["decisions"] == [2, 1]
    store.close()


def test_a_record_on_the_wire_is_a_plain_tuple_of_its_fields():
    record = _record(1, 1.7e9)
    data = pickle.dumps(tuple(record), pickle.HIGHEST_PROTOCOL)
    assert b"DecisionRecord" not in data
    assert DecisionRecord._make(pickle.loads(data)) == record


async def test_choose_logs_the_record_of_its_decision(tmp_path):
    from types import SimpleNamespace

    from server.campaigns import Campaigns
    from server.profiles import Profiles
    store = Store(tmp_path / "store", sync=False)
    campaigns = Campaigns(store, Profiles(store, SimpleNamespace(active=None)))
    await campaigns.create(CampaignSpec("c", variants=(Variant("a", {"k": "x"}), Variant("b")),
                                        policy="linucb", reward_window_seconds=90.0,
                                        context_features=("request.age",)))
    before = time.time()
    choice = await campaigns.choose("c", "u7", {"age": 3.5})
    [logged] = itertools.chain(*campaigns.repo.log.export("c", include_pending=True))
    assert logged == {
        "decision_id": choice.decision_id, "campaign_id": "c", "user_id": "u7",
        "timestamp": logged["timestamp"], "arm": choice.arm, "propensity": choice.propensity,
        "reward": None, "context": [3.5], "position": 0, "variant_id": choice.variant_id,
        "status": PENDING, "deadline": logged["timestamp"] + 90.0, "linear": True,
        "channel": "web", "send_at": 0.0, "reason": "", "channel_propensity": 1.0,
        "send_at_propensity": 1.0}
    assert before <= logged["timestamp"] <= time.time() and choice.variant_id in ("a", "b")
    await campaigns.close()
    store.close()
