"""ExportProfile (right of access, Art. 15/20): everything held about one user as one JSON
document, through `python -m clients export-profile` against a real server with real tokens."""
import asyncio
import json
import logging
import time

import grpc
import pytest
import pytest_asyncio

from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import campaign_pb2_grpc as cpb_grpc
from protos.tailor.v1 import profile_pb2 as pb
from protos.tailor.v1 import profile_pb2_grpc as pb_grpc
from protos.tailor.v1 import recommendation_pb2 as rpb
from protos.tailor.v1 import recommendation_pb2_grpc as rpb_grpc
from tests.conftest import minted, run_module, serving

ROLES = {"tracker": ["tracker"], "decider": ["decider"], "admin": ["admin"],
         "analyst": ["analyst"], "reader": ["pii-reader"]}
USER, EMAIL = "ada-5d1c", "ada-5d1c@example.org"


@pytest.fixture
def auth(tmp_path):
    return minted(tmp_path, ROLES)


@pytest_asyncio.fixture
async def chan(secured):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{secured.port}") as ch:
        yield ch


def bearer(token):
    return (("authorization", f"Bearer {token}"),)


async def _hold_things_about(chan, toks) -> str:
    """Attributes, consent, three events and one campaign decision of USER; the decision's variant."""
    profiles, campaigns = pb_grpc.ProfileServiceStub(chan), cpb_grpc.CampaignServiceStub(chan)
    track = bearer(toks["tracker"])
    await profiles.UpsertAttributes(pb.UpsertAttributesRequest(
        user_id=USER, attributes={"email": EMAIL, "locale": "fr"}), metadata=track)
    await profiles.SetConsent(pb.SetConsentRequest(user_id=USER, channel="email", opted_in=True,
                                                   source="signup"), metadata=track)
    await profiles.TrackEvents(pb.TrackEventsRequest(events=[
        pb.Event(event_id=f"ada-{i}", user_id=USER, type="view", item_id=f"item-{i}",
                 timestamp=time.time() - 100 + i, attributes={"note": f"unique-{i}"})
        for i in range(3)]), metadata=track)
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=cpb.CampaignSpec(
        campaign_id="welcome", channel="email", policy="bernoulli_ts",
        variants=[cpb.Variant(id="a"), cpb.Variant(id="b")])), metadata=bearer(toks["admin"]))
    choice = await campaigns.ChooseVariant(cpb.ChooseVariantRequest(
        campaign_id="welcome", user_id=USER), metadata=bearer(toks["decider"]))
    return choice.variant_id


async def _recommend_to(chan, toks) -> list:
    """Two Recommend answers shown to USER (the impression log holds them); the replies."""
    recs = rpb_grpc.RecommendationServiceStub(chan)
    return [await recs.Recommend(rpb.RecommendRequest(user_id=USER, k=k, channel=channel),
                                 metadata=bearer(toks["decider"]))
            for k, channel in ((3, "web"), (2, "email"))]


def _as_listed(reply) -> dict:
    """What the export must say of one Recommend reply."""
    return {"request_id": reply.request_id, "model_version": reply.model_version,
            "cold_start": reply.cold_start,
            "items": [(p, i.item_id, pytest.approx(i.score, rel=1e-6))
                      for p, i in enumerate(reply.items)]}


def _export_cli(server, token: str, user: str):
    return run_module("clients", "export-profile", "--server", f"127.0.0.1:{server.port}",
                      "--token", token, "--user", user, check=False)


async def test_export_profile_holds_everything_and_only_a_pii_reader_gets_it(secured, chan, auth):
    toks = auth[1]
    variant = await _hold_things_about(chan, toks)
    shown = await _recommend_to(chan, toks)
    proc = await asyncio.to_thread(_export_cli, secured, toks["reader"], USER)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    profile = doc["profile"]
    assert doc["user_id"] == USER and profile["attributes"] == {"email": EMAIL, "locale": "fr"}
    assert profile["consent"]["email"]["opted_in"] and profile["consent"]["email"]["source"] == "signup"
    assert sorted(e["attributes"]["note"] for e in profile["events"]) == ["unique-0", "unique-1", "unique-2"]
    assert doc["events_held"] == doc["events_listed"] == 3
    assert profile["features"]["counts"] == {"view/web": 3.0}
    assert [(d["campaign_id"], d["variant_id"]) for d in doc["decisions"]] == [("welcome", variant)]
    decision = doc["decisions"][0]
    assert doc["contacts"] == [{"timestamp": decision["timestamp"], "channel": "email",
                                "decision_id": decision["decision_id"]}]
    assert doc["suppression"] == []
    assert doc["erased_at"] is None
    listed = doc["impressions"]
    assert [i["channel"] for i in listed] == ["web", "email"]
    assert [{"request_id": i["request_id"], "model_version": i["model_version"],
             "cold_start": i["cold_start"],
             "items": [(e["position"], e["item_id"], e["score"]) for e in i["items"]]}
            for i in listed] == [_as_listed(r) for r in shown]
    assert [len(i["items"]) for i in listed] == [3, 2]
    assert all(0 < i["timestamp"] <= time.time() for i in listed)
    # Not a pii-reader: refused, whoever else it is.
    proc = await asyncio.to_thread(_export_cli, secured, toks["analyst"], USER)
    assert proc.returncode != 0 and "PERMISSION_DENIED" in proc.stdout + proc.stderr


async def test_export_shows_which_of_the_users_own_addresses_are_suppressed(secured, chan, auth):
    toks = auth[1]
    profiles, track = pb_grpc.ProfileServiceStub(chan), bearer(toks["tracker"])
    await profiles.UpsertAttributes(pb.UpsertAttributesRequest(
        user_id=USER, attributes={"email": EMAIL.upper(), "phone": "+1 (555) 010-0000"}),
        metadata=track)
    listed = [(pb.SuppressionAddress(email=f" {EMAIL} "), "complaint", 1_700_000_000.0),
              (pb.SuppressionAddress(phone="+15550100000"), "bounce", 1_700_000_100.0),
              (pb.SuppressionAddress(email="someone-else@example.org"), "manual", 0.0)]
    for address, reason, ts in listed:
        await profiles.AddSuppression(pb.AddSuppressionRequest(address=address, reason=reason,
                                                               timestamp=ts), metadata=track)
    doc = json.loads((await profiles.ExportProfile(pb.ExportProfileRequest(user_id=USER),
                                                   metadata=bearer(toks["reader"]))).document)
    # the same addresses once normalized; the other user's entry is not shown
    assert sorted(doc["suppression"], key=lambda e: e["kind"]) == [
        {"kind": "email", "reason": "complaint", "timestamp": 1_700_000_000.0},
        {"kind": "phone", "reason": "bounce", "timestamp": 1_700_000_100.0}]
    assert "someone-else" not in json.dumps(doc)
    assert doc["contacts"] == [] and doc["decisions"] == []


async def test_export_after_erasure_is_not_found_and_a_return_is_marked(secured, chan, auth, caplog):
    caplog.set_level(logging.DEBUG, logger="tailor")
    toks = auth[1]
    await _hold_things_about(chan, toks)
    await _recommend_to(chan, toks)
    profiles = pb_grpc.ProfileServiceStub(chan)
    await profiles.DeleteProfile(pb.DeleteProfileRequest(user_id=USER), metadata=bearer(toks["admin"]))
    reader = bearer(toks["reader"])
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await profiles.ExportProfile(pb.ExportProfileRequest(user_id=USER), metadata=reader)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    await profiles.TrackEvents(pb.TrackEventsRequest(events=[pb.Event(
        event_id="back", user_id=USER, type="view", item_id="i9", timestamp=time.time())]),
        metadata=bearer(toks["tracker"]))
    doc = json.loads((await profiles.ExportProfile(pb.ExportProfileRequest(user_id=USER),
                                                   metadata=reader)).document)
    assert doc["decisions"] == [] and doc["profile"]["attributes"] == {}
    assert doc["contacts"] == [] and doc["suppression"] == [] and doc["impressions"] == []
    assert [e["event_id"] for e in doc["profile"]["events"]] == ["back"]
    assert doc["erased_at"] is not None and doc["erased_at"] <= time.time()
    assert USER not in caplog.text and EMAIL not in caplog.text  # the log names nobody


async def test_export_lists_the_audit_lines_naming_the_user_and_no_one_elses(secured, chan, auth):
    """Who read or changed the user's data, when (Art. 15(1)(c)): the audit lines whose target is
    the user's keyed hash, without the chain's fields; another user's lines are not listed."""
    toks = auth[1]
    profiles = pb_grpc.ProfileServiceStub(chan)
    await _hold_things_about(chan, toks)
    await profiles.SetConsent(pb.SetConsentRequest(user_id="someone-else", channel="email",
                                                   opted_in=True, source="signup"),
                              metadata=bearer(toks["tracker"]))
    await profiles.GetProfile(pb.GetProfileRequest(user_id=USER), metadata=bearer(toks["reader"]))
    doc = json.loads((await profiles.ExportProfile(pb.ExportProfileRequest(user_id=USER),
                                                   metadata=bearer(toks["reader"]))).document)
    assert [(a["principal"], a["method"].rsplit("/", 1)[1], a["status"]) for a in doc["audit"]] == [
        ("tracker", "SetConsent", "OK"), ("reader", "GetProfile", "OK")]
    assert all(set(a) == {"ts", "principal", "method", "target", "status", "request_id"}
               and a["target"] == doc["audit"][0]["target"] for a in doc["audit"])
    assert doc["audit_left_out"] == 0


async def test_the_audit_lines_from_before_a_user_id_key_rotation_are_listed(settings, auth):
    """A line written before `secrets rotate user-id` names the user under the key then current
    (`audit ref` prints a target per key): the export still lists it, in order with the newer."""
    from server.security.secrets import Secrets
    toks, settings = auth[1], settings.model_copy(update={"auth_config": auth[0]})
    async with serving(settings) as (_, chan):
        await pb_grpc.ProfileServiceStub(chan).SetConsent(pb.SetConsentRequest(
            user_id=USER, channel="email", opted_in=True, source="signup"),
            metadata=bearer(toks["tracker"]))
    Secrets.load(settings.secrets_dir, generate=False).rotate("user-id")
    async with serving(settings) as (_, chan):
        profiles = pb_grpc.ProfileServiceStub(chan)
        await profiles.GetProfile(pb.GetProfileRequest(user_id=USER), metadata=bearer(toks["reader"]))
        doc = json.loads((await profiles.ExportProfile(pb.ExportProfileRequest(user_id=USER),
                                                       metadata=bearer(toks["reader"]))).document)
    assert [(a["principal"], a["method"].rsplit("/", 1)[1]) for a in doc["audit"]] == [
        ("tracker", "SetConsent"), ("reader", "GetProfile")]
    assert doc["audit"][0]["target"] != doc["audit"][1]["target"]  # one under each key


def test_the_audit_section_keeps_the_newest_lines_that_fit_and_counts_the_rest(tmp_path):
    from server.security.audit import AuditLog
    from server.security.audit_export import AuditExporter
    from server.security.secrets import Keyring
    log = AuditLog(tmp_path, Keyring.generate("audit"), max_bytes=600)  # a few files
    for i in range(12):
        log.record("p", f"/m/{i}", "ann" if i % 2 else "bob", "OK", f"r{i}")
    one = len(json.dumps(AuditExporter(tmp_path, 1 << 20).export_user("ann")["audit"][0]).encode())
    section = AuditExporter(tmp_path, 3 * one + 10).export_user("ann")
    assert [a["method"] for a in section["audit"]] == ["/m/7", "/m/9", "/m/11"]
    assert section["audit_left_out"] == 3


def test_the_audit_section_with_its_separators_stays_within_its_bytes(tmp_path):
    """`profile_export_audit_bytes` bounds the section as the document writes it: the list's
    brackets and the `, ` between lines count too (each line alone summed to the bound)."""
    from server.security.audit import AuditLog
    from server.security.audit_export import AuditExporter
    from server.security.secrets import Keyring
    log = AuditLog(tmp_path, Keyring.generate("audit"))
    for i in range(40):
        log.record("p", f"/m/{i}", "ann", "OK", f"r{i}")
    every = AuditExporter(tmp_path, 1 << 20).export_user("ann")["audit"]
    bound = sum(len(json.dumps(a, ensure_ascii=False).encode()) for a in every[-12:]) + 1
    section = AuditExporter(tmp_path, bound).export_user("ann")
    listed = len(section["audit"])
    assert 0 < listed < 40 and section["audit_left_out"] == 40 - listed
    assert section["audit"] == every[-listed:]
    assert len(json.dumps(section["audit"], ensure_ascii=False).encode()) <= bound


@pytest_asyncio.fixture
async def paged(settings, auth):
    """A server whose ExportProfile pages hold three events."""
    from server.app import TailorServer
    limits = settings.limits.model_copy(update={"profile_export_events": 3})
    server = TailorServer(settings.model_copy(update={"limits": limits, "auth_config": auth[0]}))
    await server.start()
    yield server
    await server.stop(grace=0.5)


async def test_events_that_do_not_fit_one_document_come_in_pages_the_client_joins(paged, auth):
    from clients import TailorClient
    now, toks = time.time(), auth[1]
    reader = bearer(toks["reader"])
    async with grpc.aio.insecure_channel(f"127.0.0.1:{paged.port}") as ch:
        profiles = pb_grpc.ProfileServiceStub(ch)
        await profiles.TrackEvents(pb.TrackEventsRequest(events=[pb.Event(
            event_id=f"e{i}", user_id=USER, type="view", item_id="i1", timestamp=now - 100 + i)
            for i in range(7)]), metadata=bearer(toks["tracker"]))
        first = json.loads((await profiles.ExportProfile(pb.ExportProfileRequest(
            user_id=USER), metadata=reader)).document)
        assert (first["events_held"], first["events_listed"], first["events_next"]) == (7, 3, 3)
        assert [e["event_id"] for e in first["profile"]["events"]] == ["e6", "e5", "e4"]
        last = json.loads((await profiles.ExportProfile(pb.ExportProfileRequest(
            user_id=USER, events_offset=6), metadata=reader)).document)
        assert ([e["event_id"] for e in last["profile"]["events"]], last["events_next"]) == (["e0"], None)
        assert "decisions" in first and "decisions" not in last  # other sections: first page only
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await profiles.ExportProfile(pb.ExportProfileRequest(user_id=USER, events_offset=-1),
                                         metadata=reader)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "events_offset" in err.value.details()
    with TailorClient(f"127.0.0.1:{paged.port}", timeout=30, token=toks["reader"]) as client:
        doc = await asyncio.to_thread(client.export_profile, USER)
    assert [e["event_id"] for e in doc["profile"]["events"]] == [f"e{i}" for i in range(6, -1, -1)]
    assert (doc["events_listed"], doc["events_next"]) == (7, None)


def test_a_page_stops_at_its_byte_budget_but_always_holds_one_event(tmp_path):
    from server.profiles.events import TrackedEvent
    from server.profiles.repository import ProfileRepository
    from server.profiles.schema import ProfileSchema
    from server.store import Store
    store = Store(tmp_path / "store", sync=False)
    repo = ProfileRepository(store, ProfileSchema().layout())
    now = time.time() - 100
    repo.ingest([TrackedEvent(f"e{i}", "u", "view", "web", "", "i1", 0.0, now + i,
                              {"note": "x" * 500}) for i in range(5)], [None] * 5)
    size = len(repo.read("u", max_events=1)[2][0])  # (about 530 bytes each)
    page = repo.read_page("u", skip=0, most=10, max_bytes=2 * size + size // 2)
    assert [json_id(e) for e in page[2]] == ["e4", "e3"] and page[3] == 5  # two fit
    assert [json_id(e) for e in repo.read_page("u", 4, 10, 2 * size)[2]] == ["e0"]
    assert [json_id(e) for e in repo.read_page("u", 0, 10, 1)[2]] == ["e4"]  # one at least
    assert repo.read_page("u", 5, 10, 1)[2:] == ([], 5) and repo.read_page("v", 0, 10, 1)[2:] == ([], 0)
    store.close()


@pytest_asyncio.fixture
async def paged_impressions(settings, auth):
    """A server whose ExportProfile pages hold about 1 KiB of stored impressions."""
    from server.app import TailorServer
    limits = settings.limits.model_copy(update={"profile_export_impression_bytes": 1024})
    server = TailorServer(settings.model_copy(update={"limits": limits, "auth_config": auth[0]}))
    await server.start()
    yield server
    await server.stop(grace=0.5)


async def test_impressions_that_do_not_fit_one_document_come_in_pages_the_client_joins(
        paged_impressions, auth):
    """The impressions section listed every answer shown to the user: a shared id such as
    "anonymous" with 100,000 made a 90 MB document, over the 64 MiB message limit, and
    ExportProfile failed (RESOURCE_EXHAUSTED) for that user at all. It comes in pages, newest
    first (`impressions_next`, `impressions_offset`), which the client joins."""
    from clients import TailorClient
    toks = auth[1]
    reader = bearer(toks["reader"])
    async with grpc.aio.insecure_channel(f"127.0.0.1:{paged_impressions.port}") as ch:
        recs, profiles = rpb_grpc.RecommendationServiceStub(ch), pb_grpc.ProfileServiceStub(ch)
        shown = []
        for _ in range(12):
            shown.append((await recs.Recommend(rpb.RecommendRequest(user_id=USER, k=5),
                                               metadata=bearer(toks["decider"]))).request_id)
            await asyncio.sleep(0.002)  # distinct milliseconds: newest first is well defined
        first = json.loads((await profiles.ExportProfile(pb.ExportProfileRequest(
            user_id=USER), metadata=reader)).document)
        listed = [i["request_id"] for i in first["impressions"]]
        assert 0 < len(listed) < 12 and first["impressions_next"] == len(listed)
        assert listed == shown[-len(listed):]  # the newest, oldest first within the page
        page = json.loads((await profiles.ExportProfile(pb.ExportProfileRequest(
            user_id=USER, impressions_offset=first["impressions_next"]), metadata=reader)).document)
        assert [i["request_id"] for i in page["impressions"]] == \
            shown[-len(listed) - len(page["impressions"]):-len(listed)]
        assert "decisions" not in page and page["profile"] is None  # that section only
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await profiles.ExportProfile(pb.ExportProfileRequest(
                user_id=USER, impressions_offset=-1), metadata=reader)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "impressions_offset" in err.value.details()
    with TailorClient(f"127.0.0.1:{paged_impressions.port}", timeout=30,
                      token=toks["reader"]) as client:
        doc = await asyncio.to_thread(client.export_profile, USER)
    assert [i["request_id"] for i in doc["impressions"]] == shown
    assert doc["impressions_next"] is None


def test_a_page_of_events_opens_only_its_own_events(tmp_path):
    """Every ExportProfile page read and decrypted every event of the user, then kept one page:
    200,000 events of one id took 3.6-5.8 s and 220 MB per page (about 2 pages), and an export
    of n events cost n²/page. A page now walks the keys past its offset and opens only its own;
    it still says how many are held."""
    from types import SimpleNamespace

    from server.profiles.events import TrackedEvent
    from server.profiles.handler import Profiles
    from server.store import Store
    store = Store(tmp_path / "store", sync=False)
    profiles = Profiles(store, SimpleNamespace(active=None))
    repo = profiles.repo
    now = time.time() - 1000
    repo.ingest([TrackedEvent(f"e{i}", "heavy", "view", "web", "", "i1", 0.0, now + i, {})
                 for i in range(50)], [None] * 50)
    class Counting:  # the real table, its reads counted
        def __init__(self, table):
            self.table, self.opened = table, []

        def __getattr__(self, name):
            return getattr(self.table, name)

        def get(self, txn, key):
            self.opened.append(key)
            return self.table.get(txn, key)
    repo._events = counting = Counting(repo._events)
    state, meta, page, held = repo.read_page("heavy", skip=40, most=5, max_bytes=1 << 20)
    assert held == 50 and [json_id(raw) for raw in page] == [f"e{i}" for i in range(9, 4, -1)]
    assert len(counting.opened) == 5 and state is not None
    store.close()


def json_id(raw: bytes) -> str:
    return pb.Event.FromString(raw).event_id


def test_an_impressions_page_is_cut_by_the_json_it_makes_in_the_document(tmp_path):
    """The impressions page was cut at `profile_export_impression_bytes` of stored records,
    said to be "about five times" that as JSON: with 128-byte item ids it is 15 times, and the
    first ExportProfile page of "anonymous" made 74 MiB, over the 64 MiB message limit. The
    budget is now the JSON the page makes; the pages still list every answer once."""
    import numpy as np

    from server.impressions.export import user_impressions_page
    from server.impressions.log import ImpressionLog
    from server.impressions.records import encode
    from server.security.secrets import Keyring
    from server.store import Store, keys
    store = Store(tmp_path / "store", sync=False)
    log = ImpressionLog(store, Keyring.generate("user-id"))
    codes = np.arange(20, dtype=np.int64) + 1000
    catalog = {int(c): f"sku-{'x' * 118}{c:06d}" for c in codes}  # 128-byte ids
    prefix, start = log.user_prefix("anonymous"), time.time() - 3600

    def put(txn):
        for j in range(400):
            store.table("impressions").put(txn, keys.impression_key(prefix, start + j, f"r{j:04d}"),
                                           encode(start + j, "v1", "web", [], codes,
                                                  np.full(20, 0.3, np.float32), False))
    store.write(put)
    budget, offset, listed = 64 << 10, 0, []
    while offset is not None:
        page, offset = user_impressions_page(log, "anonymous", catalog, offset, budget)
        assert len(json.dumps(page, sort_keys=True, ensure_ascii=False).encode()) <= budget
        listed = [i["request_id"] for i in page] + listed
    assert listed == [f"r{j:04d}" for j in range(400)]
    store.close()


@pytest_asyncio.fixture
async def widened(settings, tmp_path):
    """(a server whose auth config widened ExportProfile to a `support` role, not a
    pii-reader; the tokens of ROLES and of `support`)."""
    from server.app import TailorServer
    from server.security import tokens
    path = tmp_path / "widened" / "auth.toml"
    path.parent.mkdir()
    path.write_text('[roles]\nsupport = ["/tailor.v1.ProfileService/ExportProfile"]\n')
    toks = {name: tokens.mint(path, name, given)
            for name, given in {**ROLES, "support": ["support"]}.items()}
    server = TailorServer(settings.model_copy(update={"auth_config": path}))
    await server.start()
    try:
        yield server, toks
    finally:
        await server.stop(grace=0.5)


async def _exports(server, toks, who=("support", "reader")) -> dict:
    """The ExportProfile document of USER as each of `who` reads it."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        profiles = pb_grpc.ProfileServiceStub(ch)
        return {w: json.loads((await profiles.ExportProfile(pb.ExportProfileRequest(
            user_id=USER), metadata=bearer(toks[w]))).document) for w in who}


async def test_a_widened_role_gets_the_decisions_context_masked_as_export_decisions(widened):
    """A role the auth config widened to ExportProfile (not a pii-reader) reads the profile
    masked: the decisions section must not hand it the request context logged under PII keys,
    which ExportDecisions hides from it (NaN)."""
    server, toks = widened
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        campaigns = cpb_grpc.CampaignServiceStub(ch)
        await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=cpb.CampaignSpec(
            campaign_id="c-pii", channel="push", policy="egreedy",
            context_features=["request.phone", "request.basket"],
            variants=[cpb.Variant(id="a"), cpb.Variant(id="b")])),
            metadata=bearer(toks["admin"]))
        await campaigns.ChooseVariant(cpb.ChooseVariantRequest(
            campaign_id="c-pii", user_id=USER, context={"phone": 33612.0, "basket": 3.0}),
            metadata=bearer(toks["decider"]))
    docs = await _exports(server, toks)
    [masked], [full] = docs["support"]["decisions"], docs["reader"]["decisions"]
    assert full["context"] == [33612.0, 3.0]
    assert masked["context"][1] == 3.0 and masked["context"][0] is None


async def test_a_widened_role_gets_the_other_stored_meta_entries_masked(widened):
    """The stored meta entries no field declares (`ProfileView.extra`: no code writes one
    today, the layout allows them) are copied into the export's profile: a widened role reads
    each of them masked, as it reads the PII attributes; a pii-reader reads them as stored."""
    server, toks = widened
    held = {"backup_email": EMAIL, "devices": [{"ip": "203.0.113.9"}], "score": 0.25}

    def change(meta):
        meta.update(held)
    await asyncio.to_thread(server.profiles.repo.update_meta, USER, change)
    docs = await _exports(server, toks)
    assert {k: docs["reader"]["profile"][k] for k in held} == held
    masked = docs["support"]["profile"]
    assert {k: masked[k] for k in held} == {"backup_email": "a***@example.org",
                                            "devices": "***", "score": "***"}
    assert masked["pii_masked"] is True
    assert "203.0.113.9" not in json.dumps(docs["support"]) and EMAIL not in json.dumps(docs["support"])
