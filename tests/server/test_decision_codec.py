"""Decision records packed (layout 2) read back as the JSON records (layout 1) did, and layout-1
records still read."""
import json

from server.campaigns import decision_codec as codec
from server.campaigns.records import DecisionRecord


def record(**changes) -> DecisionRecord:
    rec = DecisionRecord("9f" * 12, "spring-sale", "ünïcode-user", 1764000000.25, 3, 0.125, None,
                         [0.5, -2.0, 1e-300], 0, "v3", "pending", 1764086400.25, True, "email",
                         1764003600.0, "", (("email", 1, 86400.0),), 0.75, 0.5)
    return rec._replace(**changes)


def as_layout1(rec: DecisionRecord) -> dict:
    """What layout 1 stored for the record: the JSON object of its fields but the caps (and
    `transactional`, the request id's digest, the channels to fall back on and the contact
    policy's recheck, which are not stored either)."""
    fields = rec._asdict()
    del fields["caps"], fields["transactional"], fields["request"], fields["choices"]
    del fields["recheck"]
    return json.loads(json.dumps(fields))


def test_a_logged_record_reads_back_as_its_layout1_json_did():
    for rec in (record(), record(arm=-1, variant_id="", linear=False, context=[]),
                record(status="suppressed", arm=-2, propensity=0.0, reason="frequency_cap")):
        raw = rec.to_bytes()
        assert raw[0] == codec.LAYOUT_TAG
        assert codec.decode(raw) == as_layout1(rec)


def test_the_reward_paths_changes_and_unknown_keys_survive():
    rec = as_layout1(record())
    rec.update(reward=1.0, status="rewarded", rewarded_at=1764000100.5, event_reward=0.25,
               note={"from": "a later version"})
    assert codec.decode(codec.encode(rec)) == rec
    rec["status"] = "some-future-status"
    assert codec.decode(codec.encode(rec)) == rec


def test_a_layout1_record_reads_as_is_and_migrates_with_every_key():
    old = {"decision_id": "d1", "campaign_id": "c1", "user_id": "ann", "timestamp": 1.5,
           "arm": 0, "propensity": 0.5, "reward": None, "context": [], "position": 0,
           "variant_id": "a", "status": "pending", "deadline": 2.5, "linear": False}
    raw = json.dumps(old).encode()
    assert codec.decode(raw) == old
    migrated = codec.decode(codec.from_json(raw))
    # layout 2 holds the contact-policy fields always: at the defaults readers used for them
    assert migrated == {**old, "channel": "", "send_at": 0.0, "reason": "",
                        "channel_propensity": 1.0, "send_at_propensity": 1.0}


def test_packed_is_smaller_than_json():
    rec = record()
    assert len(rec.to_bytes()) < len(json.dumps(as_layout1(rec)).encode()) / 2
