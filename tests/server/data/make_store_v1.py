"""Write tests/server/data/store_v1.json: every table of a small store, as the code of the time
wrote it (run from a checkout of that code: `PYTHONPATH=<checkout> python <this file> OUT`).

The committed store_v1.json was produced from main at 8958156, before record layouts had
versions, so it is a data dir as every server up to then left it. Values and keys are latin-1
strings (lossless for any bytes). Layout stamps (meta `layout␟...`) are left out.
"""
import json
import sys
import tempfile
from types import SimpleNamespace

from server.campaigns.records import RewardRequest
from server.campaigns.repository import CampaignRepository
from server.campaigns.spec import Campaign, CampaignSpec, RewardRule, Variant
from server.models.registry import ModelRegistry
from server.profiles import ProfileSchema, TrackedEvent
from server.profiles.repository import ProfileRepository
from server.store import TABLES, Store

T0 = 1764000000.0


def write(store: Store) -> None:
    profiles = ProfileRepository(store, ProfileSchema().layout())
    events = [TrackedEvent("e1", "ann", "view", "web", "", "i1", 0.0, T0 + 0.123, {}),
              TrackedEvent("e2", "ann", "purchase", "web", "", "i2", 19.9, T0 + 60, {}),
              TrackedEvent("e3", "bo", "click", "email", "c1", "i1", 0.0, T0 + 120, {})]
    profiles.ingest(events, [None, "shoes", None])
    profiles.update_meta("ann", lambda m: (m["attributes"].update(tier="gold"),
                                           m["consent"].update(email=True)))
    campaigns = CampaignRepository(store)
    spec = CampaignSpec("c1", channel="email", variants=(Variant("a", {"subject": "hi"}), Variant("b")),
                        rewards=(RewardRule("email_click", 1.0),)).validated()
    campaigns.create(Campaign(spec), spec.new_state())
    base = {"campaign_id": "c1", "timestamp": T0, "propensity": 0.5, "reward": None, "context": [],
            "position": 0, "status": "pending", "linear": False}
    campaigns.log_decisions([
        {**base, "decision_id": "d1", "user_id": "ann", "arm": 0, "variant_id": "a", "deadline": T0 + 86400},
        {**base, "decision_id": "d2", "user_id": "bo", "arm": 1, "variant_id": "b", "deadline": 4e9}])
    campaigns.apply_rewards([RewardRequest("d1", 1.0)], T0 + 300)
    registry = SimpleNamespace(store=store)
    ModelRegistry._record(registry, "20260101-000000")
    ModelRegistry._report_loaded(registry, "20260101-000000")


def dump(store: Store) -> dict:
    out = {}
    with store.read() as txn:
        for table in TABLES:
            out[table] = [[k.decode("latin-1"), v.decode("latin-1")]
                          for k, v in txn.cursor(db=store.db(table))
                          if not (table == "meta" and k.startswith(b"layout\x1f"))]
    return out


if __name__ == "__main__":
    store = Store(tempfile.mkdtemp(prefix="store-v1-"), sync=False)
    write(store)
    with open(sys.argv[1], "w") as fh:
        json.dump(dump(store), fh, indent=1, sort_keys=True)
        fh.write("\n")
    store.close()
