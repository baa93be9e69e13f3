"""A descriptor-driven fuzz of every RPC of a real server (issue 14).

Every service and method comes from the generated descriptors; every request is built from the
field descriptors with random and boundary values (empty, ~64 KB strings, NUL and control
characters, NaN/±inf/±1e308, negative and huge integers, long repeated fields, random bytes).
The run is bounded (fixed seed, fixed request count) and asserts: no INTERNAL or UNKNOWN, the
server still answers health and Recommend after, and what was accepted before reads back unchanged.
"""
from __future__ import annotations

import collections
import json
import random
import re
import time

import grpc
import pytest
from google.protobuf import descriptor as d
from google.protobuf import message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protos.tailor.v1 import (
    attribution_pb2,
    audit_pb2,
    campaign_pb2,
    campaign_pb2_grpc,
    catalog_pb2,
    diagnostics_pb2,
    messaging_pb2,
    model_admin_pb2,
    profile_pb2,
    profile_pb2_grpc,
    recommendation_pb2,
    recommendation_pb2_grpc,
)

MODULES = [attribution_pb2, audit_pb2, campaign_pb2, catalog_pb2, diagnostics_pb2, messaging_pb2,
           model_admin_pb2, profile_pb2, recommendation_pb2]
SEED = 1414
PER_METHOD = 100          # 46 methods -> 4,600 requests
BUDGET_SECONDS = 60.0
CALL_TIMEOUT = 10.0
HUGE = 64 * 1024
MAX_REQUEST_BYTES = 4 << 20
FORBIDDEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
RAW_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]").search
"""A character a status message never holds raw (a C0 or C1 control, a line separator, a
bidirectional control): a bad input is echoed as `validation.shown` escapes it, and the log
line that repeats the message began a line of the caller's own at a raw newline."""

KEEP_USER = "fuzz-keeper"
KEEP_CAMPAIGN = "fuzz-keeper-campaign"


def methods() -> list[d.MethodDescriptor]:
    found = []
    for module in MODULES:
        for service in module.DESCRIPTOR.services_by_name.values():
            found.extend(service.methods)
    return found


class Fuzzer:
    """Random and boundary values for each field, plausible ones half the time so requests get
    past the first check and into the handlers."""

    def __init__(self, rng: random.Random, plausible: list[str]):
        self.rng = rng
        self.plausible = plausible

    def string(self) -> str:
        r = self.rng
        return r.choice([
            lambda: r.choice(self.plausible),
            lambda: r.choice(self.plausible),
            lambda: r.choice(self.plausible),
            lambda: "",
            lambda: "x" * r.choice([255, 257, 1025, HUGE]),
            lambda: "a\x00b",
            lambda: "".join(chr(r.randrange(0, 32)) for _ in range(r.randrange(1, 8))),
            lambda: "/etc",
            lambda: "../" * 5 + "etc/passwd",
            lambda: "é漢🙂" * r.randrange(1, 100),
            lambda: "nan",
            lambda: "-1",
        ])()

    def double(self) -> float:
        r = self.rng
        return r.choice([0.0, -1.0, 1.0, 0.5, float("nan"), float("inf"), float("-inf"), 1e308,
                         -1e308, 1e18, -1e6, 5e-324, time.time(), r.uniform(-1e3, 1e3)])

    def integer(self, field: d.FieldDescriptor) -> int:
        r = self.rng
        unsigned = field.type in (d.FieldDescriptor.TYPE_UINT32, d.FieldDescriptor.TYPE_UINT64,
                                  d.FieldDescriptor.TYPE_FIXED32, d.FieldDescriptor.TYPE_FIXED64)
        wide = field.type in (d.FieldDescriptor.TYPE_INT64, d.FieldDescriptor.TYPE_UINT64,
                              d.FieldDescriptor.TYPE_SINT64, d.FieldDescriptor.TYPE_FIXED64,
                              d.FieldDescriptor.TYPE_SFIXED64)
        bits = 64 if wide else 32
        if unsigned:
            return r.choice([0, 1, 4, 2 ** bits - 1, r.randrange(0, 2 ** bits)])
        return r.choice([0, 1, -1, 3, 20, 2 ** (bits - 1) - 1, -(2 ** (bits - 1)),
                         r.randrange(-1000, 1000)])

    def scalar(self, field: d.FieldDescriptor):
        t = field.type
        if t == d.FieldDescriptor.TYPE_STRING:
            return self.string()
        if t in (d.FieldDescriptor.TYPE_DOUBLE, d.FieldDescriptor.TYPE_FLOAT):
            value = self.double()
            if t == d.FieldDescriptor.TYPE_FLOAT and abs(value) > 3e38 and value == value:
                value = float("inf") if value > 0 else float("-inf")
            return value
        if t == d.FieldDescriptor.TYPE_BOOL:
            return self.rng.random() < 0.5
        if t == d.FieldDescriptor.TYPE_BYTES:
            return self.rng.randbytes(self.rng.choice([0, 1, 100, HUGE]))
        if t == d.FieldDescriptor.TYPE_ENUM:
            values = [v.number for v in field.enum_type.values]
            return self.rng.choice(values + [99, -1])
        return self.integer(field)

    def fill(self, msg, depth: int = 0) -> None:
        r = self.rng
        for field in msg.DESCRIPTOR.fields:
            if r.random() < 0.2:
                continue  # left unset (the proto3 default)
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                value_field = field.message_type.fields_by_name["value"]
                for _ in range(r.choice([0, 1, 3, 3, 50])):
                    key = self.string() if r.random() < 0.5 else r.choice(self.plausible)
                    target = getattr(msg, field.name)
                    if value_field.message_type is not None:
                        self.fill(target[key], depth + 1)
                    else:
                        target[key] = self.scalar(value_field)
                continue
            if field.is_repeated:
                n = r.choice([0, 1, 2, 3, 5, 300]) if depth < 1 else r.choice([0, 1, 2])
                target = getattr(msg, field.name)
                for _ in range(n):
                    if field.message_type is not None:
                        self.fill(target.add(), depth + 1)
                    else:
                        target.append(self.scalar(field))
                continue
            if field.message_type is not None:
                if depth < 4:
                    self.fill(getattr(msg, field.name), depth + 1)
                continue
            setattr(msg, field.name, self.scalar(field))

    def mutate(self, msg) -> None:
        """Set one field (a nested one half the time) of a valid request to a fuzz value."""
        r = self.rng
        while True:
            field = r.choice(msg.DESCRIPTOR.fields)
            nested = field.message_type is not None and not field.message_type.GetOptions().map_entry
            if nested and not field.is_repeated and r.random() < 0.5:
                msg = getattr(msg, field.name)
                continue
            if nested and field.is_repeated and len(getattr(msg, field.name)) and r.random() < 0.5:
                msg = r.choice(getattr(msg, field.name))
                continue
            msg.ClearField(field.name)
            self.fill_one(msg, field)
            return

    def fill_one(self, msg, field) -> None:
        r = self.rng
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            target = getattr(msg, field.name)
            for _ in range(r.choice([1, 3, 50])):
                if value_field.message_type is not None:
                    self.fill(target[self.string()], 2)
                else:
                    target[self.string()] = self.scalar(value_field)
        elif field.is_repeated:
            target = getattr(msg, field.name)
            for _ in range(r.choice([0, 1, 3, 300])):
                if field.message_type is not None:
                    self.fill(target.add(), 1)
                else:
                    target.append(self.scalar(field))
        elif field.message_type is not None:
            self.fill(getattr(msg, field.name), 1)
        else:
            setattr(msg, field.name, self.scalar(field))

    def request(self, cls):
        """A random request under `MAX_REQUEST_BYTES` (the transport's own limit is not fuzzed:
        grpc core answers a too-large message of a client stream with INTERNAL)."""
        for _ in range(5):
            msg = cls()
            if self.rng.random() < 0.05:
                return msg  # empty
            self.fill(msg)
            if msg.ByteSize() <= MAX_REQUEST_BYTES:
                return msg
        return cls()


def _seeds(item: str, version: str) -> dict:
    """A valid request of each method that takes one (the fuzz mutates one field of it)."""
    from protos.tailor.v1 import attribution_pb2 as a
    from protos.tailor.v1 import audit_pb2 as t
    from protos.tailor.v1 import campaign_pb2 as c
    from protos.tailor.v1 import messaging_pb2 as g
    from protos.tailor.v1 import model_admin_pb2 as m
    from protos.tailor.v1 import profile_pb2 as p
    from protos.tailor.v1 import recommendation_pb2 as r
    now = time.time()
    spec = c.CampaignSpec(campaign_id="fz-c", name="fz", channel="email", policy="bernoulli_ts",
                          variants=[c.Variant(id="a", content={"s": "A"}), c.Variant(id="b")],
                          rewards=[c.RewardRule(event_type="click", value=1.0)])
    event = p.Event(event_id="fz-e", user_id="fz-u", type="purchase", item_id=item, value=9.5,
                    timestamp=now - 10, attributes={"k": "v"})
    paths = a.AttributeRequest(spec=a.ModelSpec(model=a.MARKOV, order=2),
                               paths=[a.Path(channels=["email", "web"], conversions=1),
                                      a.Path(path="web > push", nulls=2)])
    return {
        "Recommend": r.RecommendRequest(user_id="fz-u", k=5, channel="web"),
        "RecommendBatch": r.RecommendBatchRequest(requests=[r.RecommendRequest(user_id="u1", k=3)]),
        "TrackEvents": p.TrackEventsRequest(events=[event]),
        "TrackEventStream": p.TrackEventsRequest(events=[event]),
        "GetProfile": p.GetProfileRequest(user_id="fz-u", max_events=5),
        "UpsertAttributes": p.UpsertAttributesRequest(user_id="fz-u", attributes={"tier": "x"}),
        "SetConsent": p.SetConsentRequest(user_id="fz-u", channel="email", opted_in=True,
                                          source="form", timestamp=now),
        "DeleteProfile": p.DeleteProfileRequest(user_id="fz-u"),
        "ExportEvents": p.ExportEventsRequest(start=now - 3600, end=now),
        "CreateCampaign": c.CreateCampaignRequest(spec=spec),
        "UpdateCampaign": c.UpdateCampaignRequest(spec=spec),
        "ChooseVariant": c.ChooseVariantRequest(campaign_id="fz-c", user_id="fz-u"),
        "PlanCampaign": c.PlanCampaignRequest(campaign_id="fz-c", user_ids=["fz-u", "u1"]),
        "GetCampaignStats": c.GetCampaignStatsRequest(campaign_id="fz-c"),
        "GetSampleSize": c.GetSampleSizeRequest(baseline_rate=0.1, minimum_detectable_effect=0.02),
        "ExportDecisions": c.ExportDecisionsRequest(campaign_id="fz-c", start=now - 3600),
        "Attribute": paths,
        "AttributeStream": paths,
        "AttributeStored": a.AttributeStoredRequest(spec=a.ModelSpec(model=a.LINEAR),
                                                    start_time=int(now) - 3600, end_time=int(now)),
        "Rollback": m.RollbackRequest(version=version),
        "ComposeMessage": g.ComposeMessageRequest(campaign_id="fz-c", user_id="fz-u"),
        "PreviewMessage": g.PreviewMessageRequest(campaign_id="fz-c",
                                                  sample_attributes={"first_name": "F"}),
        "SendCampaign": g.SendCampaignRequest(campaign_id="fz-c", user_ids=["fz-u", "u1"]),
        "GetSendProgress": g.GetSendProgressRequest(send_id="fz-s"),
        "ListDeadLetters": g.ListDeadLettersRequest(limit=10, channel="email"),
        "RetryDeadLetter": g.RetryDeadLetterRequest(id="fz-d"),
        "TailAudit": t.TailAuditRequest(limit=5),
    }


def _bundle_chunks(fuzzer: Fuzzer, manifest: dict) -> list:
    """PushBundle: a few small chunks (never a gigabyte): a mutated manifest and junk files."""
    r = fuzzer.rng
    mutated = json.loads(json.dumps(manifest))
    for _ in range(r.randrange(1, 3)):
        key = r.choice(list(mutated))
        mutated[key] = r.choice([fuzzer.string(), fuzzer.double() if r.random() < 0.5 else 0,
                                 None, [], {}, -1, 2 * 10 ** 7, "abc", {"nprobe": 8}])
    text = json.dumps(mutated).encode()
    chunks = [model_admin_pb2.BundleChunk(path="manifest.json", offset=0, data=text,
                                          stage_only=True)]
    for _ in range(r.randrange(0, 3)):
        chunk = model_admin_pb2.BundleChunk()
        fuzzer.fill(chunk)
        chunk.data = chunk.data[:4096]
        chunks.append(chunk)
    r.shuffle(chunks)
    return chunks


@pytest.fixture
def settings(tmp_path, demo_bundle):
    from server.config import Settings
    from tests.conftest import free_port
    return Settings(port=0, data_dir=tmp_path / "data", bundle=demo_bundle, grace_seconds=1.0,
                    lmdb_sync=False, bundle_poll_seconds=0.1,
                    public_http_port=free_port())  # messages need unsubscribe links


async def _seed(channel, item: str):
    profiles = profile_pb2_grpc.ProfileServiceStub(channel)
    campaigns = campaign_pb2_grpc.CampaignServiceStub(channel)
    now = time.time()
    await profiles.TrackEvents(profile_pb2.TrackEventsRequest(events=[
        profile_pb2.Event(event_id="keep-e1", user_id=KEEP_USER, type="view", item_id=item,
                          timestamp=now - 60),
        profile_pb2.Event(event_id="keep-e2", user_id=KEEP_USER, type="purchase", item_id=item,
                          value=12.5, timestamp=now - 30)]))
    await profiles.UpsertAttributes(profile_pb2.UpsertAttributesRequest(
        user_id=KEEP_USER, attributes={"tier": "gold"}))
    spec = campaign_pb2.CampaignSpec(
        campaign_id=KEEP_CAMPAIGN, name="kept", channel="email", policy="bernoulli_ts",
        variants=[campaign_pb2.Variant(id="a", content={"subject": "A"}),
                  campaign_pb2.Variant(id="b", content={"subject": "B"})],
        rewards=[campaign_pb2.RewardRule(event_type="click", value=1.0)])
    await campaigns.CreateCampaign(campaign_pb2.CreateCampaignRequest(spec=spec))
    return await _snapshot(channel)


async def _snapshot(channel):
    profiles = profile_pb2_grpc.ProfileServiceStub(channel)
    campaigns = campaign_pb2_grpc.CampaignServiceStub(channel)
    profile = await profiles.GetProfile(profile_pb2.GetProfileRequest(user_id=KEEP_USER,
                                                                      max_events=10))
    campaign = await campaigns.GetCampaign(campaign_pb2.GetCampaignRequest(
        campaign_id=KEEP_CAMPAIGN))
    events = sorted((e.event_id, e.type, e.item_id, e.value) for e in profile.events)
    return events, dict(profile.attributes), campaign.SerializeToString(deterministic=True)


async def _call(channel, method: d.MethodDescriptor, fuzzer: Fuzzer, manifest: dict,
                seeds: dict):
    path = f"/{method.containing_service.full_name}/{method.name}"
    req_cls = message_factory.GetMessageClass(method.input_type)
    resp_cls = message_factory.GetMessageClass(method.output_type)
    kw = dict(request_serializer=lambda m: m.SerializeToString(),
              response_deserializer=resp_cls.FromString)
    def one():
        seed = seeds.get(method.name)
        if seed is None or fuzzer.rng.random() < 0.4:
            return fuzzer.request(req_cls)
        msg = req_cls.FromString(seed.SerializeToString())
        for _ in range(fuzzer.rng.choice([1, 1, 2])):
            fuzzer.mutate(msg)
        return msg if msg.ByteSize() <= MAX_REQUEST_BYTES else req_cls()
    if method.client_streaming:
        if method.name == "PushBundle":
            requests = _bundle_chunks(fuzzer, manifest)
        else:
            requests = [one() for _ in range(fuzzer.rng.randrange(0, 4))]
    else:
        requests = one()
    if method.client_streaming and method.server_streaming:
        n = 0
        async for _ in channel.stream_stream(path, **kw)(iter(requests), timeout=CALL_TIMEOUT):
            n += 1
            if n >= 200:
                break
    elif method.client_streaming:
        await channel.stream_unary(path, **kw)(iter(requests), timeout=CALL_TIMEOUT)
    elif method.server_streaming:
        n = 0
        async for _ in channel.unary_stream(path, **kw)(requests, timeout=CALL_TIMEOUT):
            n += 1
            if n >= 200:
                break
    else:
        await channel.unary_unary(path, **kw)(requests, timeout=CALL_TIMEOUT)


async def test_fuzz_every_rpc(channel, demo_bundle, demo_manifest):
    all_methods = methods()
    assert len(all_methods) >= 46, [m.full_name for m in all_methods]
    rng = random.Random(SEED)
    import numpy as np
    with np.load(demo_bundle / "items.npz") as npz:
        item = str(npz["item_ids"][0])
    before = await _seed(channel, item)
    plausible = ["u1", "u2", "fuzz-user", item, "email", "push", "web", "view", "click",
                 "purchase", "bernoulli_ts", "fixed", "linucb", "c1", "a", "b",
                 "linear", "markov", "shapley", "first_touch", "last_touch", "position",
                 demo_manifest["version"], "manifest.json", "index.faiss", "3"]
    fuzzer = Fuzzer(rng, plausible)
    seeds = _seeds(item, demo_manifest["version"])
    plan = [m for m in all_methods for _ in range(PER_METHOD)]
    rng.shuffle(plan)
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    failures = []
    started = time.monotonic()
    for method in plan:
        if time.monotonic() - started > BUDGET_SECONDS:
            break
        try:
            await _call(channel, method, fuzzer, demo_manifest, seeds)
            code = grpc.StatusCode.OK
        except grpc.aio.AioRpcError as err:
            code = err.code()
            if code in FORBIDDEN or (code == grpc.StatusCode.RESOURCE_EXHAUSTED
                                     and "Stream removed" in (err.details() or "")):
                failures.append((method.name, code.name, (err.details() or "")[:200]))
            if RAW_CONTROL(err.details() or ""):
                failures.append((method.name, "raw control character", repr(err.details()[:200])))
        counts[method.name][code.name] += 1
    elapsed = time.monotonic() - started
    total = sum(sum(c.values()) for c in counts.values())
    print(f"\nfuzz: {total} requests in {elapsed:.1f}s")
    for name in sorted(counts):
        print(f"  {name:22s} {sum(counts[name].values()):4d}  {dict(counts[name])}")
    assert not failures, failures[:20]
    assert total >= len(plan) * 0.9, f"only {total} of {len(plan)} requests within the budget"
    assert set(counts) == {m.name for m in all_methods}

    # The server still answers, and what was accepted before is unchanged.
    health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                             timeout=5)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    rec = await recommendation_pb2_grpc.RecommendationServiceStub(channel).Recommend(
        recommendation_pb2.RecommendRequest(user_id=KEEP_USER, k=5), timeout=5)
    assert len(rec.items) == 5
    assert await _snapshot(channel) == before
