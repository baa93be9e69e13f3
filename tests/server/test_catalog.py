"""CatalogService through a real server: items upserted between trainings are recommended to
the users of their category without retraining, removed items never are, and both survive a
restart."""
from __future__ import annotations

import grpc
import numpy as np
import pytest

from protos.tailor.v1 import catalog_pb2 as cpb
from protos.tailor.v1 import catalog_pb2_grpc as cgrpc
from protos.tailor.v1 import recommendation_pb2 as rpb
from protos.tailor.v1 import recommendation_pb2_grpc as rgrpc
from server.app import TailorServer
from tests.conftest import loop_gaps

K = 50


@pytest.fixture(scope="module")
def world(demo_bundle):
    """Users whose training history is at least 60% one category (5+ items), by category; the
    median price per category; the most popular item of each category."""
    with np.load(demo_bundle / "users.npz") as npz:
        ids, indptr, items = npz["user_ids"], npz["indptr"], npz["items"]
    with np.load(demo_bundle / "items.npz") as npz:
        item_ids, cats, names = npz["item_ids"], npz["category"], npz["category_names"]
        price, pop = npz["price"], npz["popularity"]
    users: dict[str, list[str]] = {}
    for row, uid in enumerate(ids.tolist()):
        counts = np.bincount(cats[items[indptr[row]:indptr[row + 1]]], minlength=len(names))
        if counts.sum() >= 5 and counts.max() >= 0.6 * counts.sum():
            users.setdefault(str(names[counts.argmax()]), []).append(uid)
    return {"users": {c: u[:8] for c, u in users.items() if len(u) >= 8},
            "price": {str(n): float(np.median(price[cats == c])) for c, n in enumerate(names)},
            "top": {str(n): str(item_ids[cats == c][np.argmax(pop[cats == c])])
                    for c, n in enumerate(names) if (cats == c).any()}}


def _new_items(world) -> list[cpb.CatalogItem]:
    return [cpb.CatalogItem(item_id=f"new-{cat}", title=f"smart {cat} kit", category=cat,
                            price=world["price"][cat], url=f"https://shop.example/new/{cat}")
            for cat in sorted(world["users"])]


async def _lists(server: TailorServer, world) -> dict[str, list[str]]:
    """Each test user's top-K item ids (by `category␟user`), and a cold-start user's."""
    out = {}
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        stub = rgrpc.RecommendationServiceStub(ch)
        for cat, users in world["users"].items():
            for uid in users:
                reply = await stub.Recommend(rpb.RecommendRequest(user_id=uid, k=K))
                out[f"{cat}\x1f{uid}"] = [i.item_id for i in reply.items]
        reply = await stub.Recommend(rpb.RecommendRequest(user_id="nobody-new", k=K))
        out["cold"] = [i.item_id for i in reply.items]
    return out


def _hit_rates(lists: dict[str, list[str]], cats: list[str]) -> tuple[float, float]:
    """(share of users shown their category's new item, share of (user, other category) pairs
    shown that category's new item)."""
    own, other = [], []
    for key, ids in lists.items():
        if key == "cold":
            continue
        cat = key.split("\x1f")[0]
        own.append(f"new-{cat}" in ids)
        other += [f"new-{c}" in ids for c in cats if c != cat]
    return float(np.mean(own)), float(np.mean(other))


async def test_upserted_items_serve_by_category_removed_never_and_both_survive_restart(
        settings, world):
    cats = sorted(world["users"])
    assert len(cats) >= 5, "the demo world has several categories with focused users"
    server = TailorServer(settings)
    await server.start()
    try:
        before = await _lists(server, world)
        assert not any(i.startswith("new-") for ids in before.values() for i in ids)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            stub = cgrpc.CatalogServiceStub(ch)
            change = await stub.UpsertItems(cpb.UpsertItemsRequest(items=_new_items(world)))
            assert (change.accepted, change.new_items) == (len(cats), len(cats))
            after = await _lists(server, world)
            own, other = _hit_rates(after, cats)
            assert own >= 0.5 and other <= 0.05, (own, other)
            # remove one new item and the most popular item of every category
            gone = [f"new-{cats[0]}", *world["top"].values()]
            assert any(g in ids for g in gone for ids in after.values())
            await stub.RemoveItems(cpb.RemoveItemsRequest(item_ids=gone))
        removed = await _lists(server, world)
        assert not {i for ids in removed.values() for i in ids} & set(gone)
        assert all(len(ids) == K for ids in removed.values())
        assert _hit_rates(removed, cats[1:])[0] >= 0.5
    finally:
        await server.stop(grace=0.5)
    restarted = TailorServer(settings)
    await restarted.start()
    try:
        assert await _lists(restarted, world) == removed
    finally:
        await restarted.stop(grace=0.5)


async def test_bad_upserts_name_the_field(channel):
    stub = cgrpc.CatalogServiceStub(channel)
    bad = [
        (cpb.UpsertItemsRequest(), "items"),
        (cpb.UpsertItemsRequest(items=[cpb.CatalogItem(item_id="x", category="no-such")]),
         "items[0].category"),
        (cpb.UpsertItemsRequest(items=[cpb.CatalogItem(item_id="", category="books")]),
         "items[0].item_id"),
        (cpb.UpsertItemsRequest(items=[cpb.CatalogItem(item_id="x", category="books",
                                                       price=float("nan"))]), "items[0].price"),
        (cpb.UpsertItemsRequest(items=[cpb.CatalogItem(item_id="x", category="books",
                                                       price=-1.0)]), "items[0].price"),
    ]
    for request, field in bad:
        with pytest.raises(grpc.RpcError) as err:
            await stub.UpsertItems(request)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        await stub.RemoveItems(cpb.RemoveItemsRequest(item_ids=["a"] * 1001))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "item_ids" in err.value.details()


async def test_a_call_refused_for_one_entry_says_nothing_of_it_was_stored(channel):
    """`items[i]` counts within the call: a client sending a file in several calls could not
    tell from the refusal alone whether the entries beside it were stored."""
    stub = cgrpc.CatalogServiceStub(channel)
    whole = "nothing of the call was stored (3 entries: a call is stored whole or not at all)"
    items = [cpb.CatalogItem(item_id=i, category="books") for i in ("ok-1", "", "ok-2")]
    for call, request, field in (
            (stub.UpsertItems, cpb.UpsertItemsRequest(items=items), "items[1].item_id"),
            (stub.RemoveItems, cpb.RemoveItemsRequest(item_ids=["ok-1", "ok-2", ""]),
             "item_ids[2].item_id")):
        with pytest.raises(grpc.RpcError) as err:
            await call(request)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details().startswith(f"{field}: ") and err.value.details().endswith(
            f"; {whole}"), err.value.details()
    reply = await stub.UpsertItems(cpb.UpsertItemsRequest(items=items[:1]))
    assert reply.sequence == 1  # the first change stored: neither refused call stored any


async def test_an_oversized_batch_is_refused_before_it_is_converted(channel):
    """RemoveItems with 10^6 ids (UpsertItems with 10^6 items) built an item per entry on the
    event loop before counting them: 4.15 s in which the worker answered nothing; the count is
    checked first."""
    stub = cgrpc.CatalogServiceStub(channel)
    for call, request, field in (
            (stub.RemoveItems, cpb.RemoveItemsRequest(item_ids=["a"] * 1_000_000), "item_ids"),
            (stub.UpsertItems, cpb.UpsertItemsRequest(
                items=[cpb.CatalogItem(item_id="x", category="books")] * 300_000), "items")):
        async with loop_gaps(0.01) as gaps:
            with pytest.raises(grpc.RpcError) as err:
                await call(request, timeout=60)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details().startswith(f"{field}: ")
        assert max(gaps) < 0.5, (field, max(gaps))


async def test_item_links_are_refused_only_with_a_scheme_that_runs_script(channel):
    # a shop or an email puts url and image in an href or src as they are: a javascript: or
    # data: link stored through UpsertItems would run in the page of every user recommended it
    stub = cgrpc.CatalogServiceStub(channel)
    for field, link in [("url", "javascript:alert(1)"), ("url", " JavaScript:alert(1)"),
                        ("image", "data:image/svg+xml,<svg onload=alert(1)>"),
                        ("url", "vbscript:x"), ("url", "https://shop.example/a b"),
                        ("image", "https://shop.example/a\nb.jpg")]:
        item = cpb.CatalogItem(item_id="x", category="books", **{field: link})
        with pytest.raises(grpc.RpcError) as err:
            await stub.UpsertItems(cpb.UpsertItemsRequest(items=[item]))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, link
        assert err.value.details().startswith(f"items[0].{field}: "), err.value.details()
    ok = [cpb.CatalogItem(item_id=f"link-{i}", category="books", url=url, image=image)
          for i, (url, image) in enumerate([("https://shop.example/p/1", "HTTP://cdn.example/1.jpg"),
                                            ("/p/2", "//cdn.example/2.jpg"), ("p/3?a=b:c", ""),
                                            ("myshop://item/4", ""), ("tel:+33123456789", ""),
                                            ("", "")])]
    change = await stub.UpsertItems(cpb.UpsertItemsRequest(items=ok))
    assert change.accepted == len(ok)
    await stub.RemoveItems(cpb.RemoveItemsRequest(item_ids=[i.item_id for i in ok]))



def _category_lists(target: str, cat: str, n: int = 10) -> list[set[str]]:
    """A new user's whole-category list (popularity order, every item of `cat`) over `n`
    separate connections, which land on the different worker processes."""
    out = []
    for _ in range(n):
        with grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
            reply = rgrpc.RecommendationServiceStub(ch).Recommend(
                rpb.RecommendRequest(user_id="someone-new", k=1000, categories=[cat]))
            out.append({i.item_id for i in reply.items})
    return out


def _followed(seen: set[str]) -> bool:
    return "fresh-1" in seen and "fresh-2" not in seen


def test_every_worker_serves_upserts_and_removals_and_after_restart(server_process, demo_bundle,
                                                                    tmp_path):
    import time
    env = {"TAILOR_BUNDLE_POLL_SECONDS": "0.2"}
    server = server_process(tmp_path / "data", bundle=demo_bundle, workers=2, env=env)
    with grpc.insecure_channel(server.target) as ch:
        stub = cgrpc.CatalogServiceStub(ch)
        stub.UpsertItems(cpb.UpsertItemsRequest(items=[
            cpb.CatalogItem(item_id="fresh-1", title="eco books set", category="books", price=9.0),
            cpb.CatalogItem(item_id="fresh-2", title="mini books kit", category="books", price=5.0)]))
        stub.RemoveItems(cpb.RemoveItemsRequest(item_ids=["fresh-2"]))
    # Wait on the check itself: 10 connections (all on one of the 2 workers: 2 in 1,024). A
    # wait on 4 of them (all on one worker: 1 in 8) let a lagging worker through under load.
    deadline = time.monotonic() + 5.0  # 25 poll intervals
    while not all(map(_followed, _category_lists(server.target, "books"))):
        assert time.monotonic() < deadline, "a worker did not follow the catalog within 5 s"
        time.sleep(0.1)
    server.stop()
    again = server_process(tmp_path / "data", bundle=demo_bundle, workers=2, env=env)
    for seen in _category_lists(again.target, "books"):
        assert "fresh-1" in seen and "fresh-2" not in seen


def test_removed_items_leave_the_search_rather_than_deepen_it(demo_bundle):
    """Removals pile up between trainings: a search leaves them out (a FAISS selector) instead of
    going deeper by their number for every request, and never returns one."""
    from server.catalog.overlay import amend
    from server.catalog.records import CatalogItem
    from server.models.bundle import load_bundle
    from server.recommend.handler import bundle_histories
    from server.recommend.pipeline import RecQuery, recommend_batch
    from server.recommend.user_cache import UserCache
    trained = load_bundle(demo_bundle)
    user = str(trained.users["user_ids"][0])
    first = recommend_batch(trained, [RecQuery(user, 10)], bundle_histories)[0]
    rows = sorted(set(first.rows.tolist()) | set(trained.popular[:300].tolist()))
    gone = [str(trained.items["item_ids"][r]) for r in rows]
    served = amend(trained, [CatalogItem(item_id=i, removed=True, seq=j + 1)
                             for j, i in enumerate(gone)], len(gone))
    cache = UserCache(4)
    got = recommend_batch(served, [RecQuery(user, 10)], bundle_histories, cache=cache,
                          ranker_candidates=100)[0]
    assert not got.cold_start and len(got.rows) == 10
    assert not set(served.items["item_ids"][got.rows].tolist()) & set(gone)
    found = cache.lookup(served, [user], *_encoder_input(served, user))[0].candidates(100)
    assert found is not None  # searched 100 deep, as with nothing removed
    assert len(found[0]) == 100 and not set(found[0].tolist()) & set(rows)


def _encoder_input(bundle, user: str) -> tuple[np.ndarray, np.ndarray]:
    items, weights = bundle.history(user)
    out = np.zeros((1, bundle.history_len), np.int64), np.zeros((1, bundle.history_len), np.float32)
    n = min(len(items), bundle.history_len)
    out[0][0, :n], out[1][0, :n] = items[-n:], weights[-n:]
    return out


async def test_a_canary_serves_the_catalog_updates_too(tailor_server, second_bundle):
    """Removals and new items, made before the canary starts and while it runs, hold for the
    canary's users as for everyone else's."""
    import asyncio

    from clients import TailorClient
    users = [str(u) for u in range(300)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{tailor_server.port}") as ch:
        rec, cat = rgrpc.RecommendationServiceStub(ch), cgrpc.CatalogServiceStub(ch)

        async def answers(user_ids, **kw):
            reply = await rec.RecommendBatch(rpb.RecommendBatchRequest(
                requests=[rpb.RecommendRequest(user_id=u, **kw) for u in user_ids]))
            return reply.responses
        tops = sorted({r.items[0].item_id for r in await answers(users, k=10)})
        before, during = tops[::2], tops[1::2]
        await cat.RemoveItems(cpb.RemoveItemsRequest(item_ids=before))
        await cat.UpsertItems(cpb.UpsertItemsRequest(items=[cpb.CatalogItem(
            item_id="new-before", title="smart books kit", category="books", price=10.0)]))
        with TailorClient(f"127.0.0.1:{tailor_server.port}", timeout=60) as client:
            status = await asyncio.to_thread(client.push_bundle, second_bundle, canary_percent=50)
        canary = status.canary.version
        await cat.RemoveItems(cpb.RemoveItemsRequest(item_ids=during))
        await cat.UpsertItems(cpb.UpsertItemsRequest(items=[cpb.CatalogItem(
            item_id="new-during", title="smart books kit", category="books", price=10.0)]))
        got = await answers(users, k=10)
        assert {r.model_version for r in got} == {status.active.version, canary}
        assert not {i.item_id for r in got for i in r.items} & set(tops)
        books = await answers([f"nobody-{n}" for n in range(40)], k=1000, categories=["books"])
        assert {r.model_version for r in books} == {status.active.version, canary}
        for r in books:
            assert {"new-before", "new-during"} <= {i.item_id for i in r.items}, r.model_version


def _retrained(copy_bundle, src, version: str, created_at: str):
    """A copy of bundle `src` as a later training of the same catalog: another version,
    created at `created_at` (the files, and so the items, are the same)."""
    import json
    bundle = copy_bundle(src)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest.update(version=version, created_at=created_at)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return bundle.rename(bundle.parent / version)


async def test_a_full_catalog_takes_updates_again_once_trainings_include_them(
        settings, demo_bundle, copy_bundle):
    """`limits.catalog_items` bounds the updates kept between trainings: at the bound
    UpsertItems is RESOURCE_EXHAUSTED until a training absorbs them (the error says so).
    Updates that every stored bundle includes (trained after them, with the item) no longer
    change what any bundle serves and make room; before, the records were kept for ever, so
    the catalog refused new items for good once it had taken `catalog_items` of them."""
    import asyncio
    from datetime import UTC, datetime, timedelta

    from clients import TailorClient
    settings = settings.model_copy(update={
        "bundles_kept": 2, "limits": settings.limits.model_copy(update={"catalog_items": 3})})
    with np.load(demo_bundle / "items.npz") as npz:
        trained = [str(i) for i in npz["item_ids"][:4]]
    server = TailorServer(settings)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            stub = cgrpc.CatalogServiceStub(ch)

            def item(item_id: str) -> cpb.CatalogItem:
                return cpb.CatalogItem(item_id=item_id, title="renamed", category="books", price=5.0)
            await stub.UpsertItems(cpb.UpsertItemsRequest(items=[item(i) for i in trained[:3]]))
            with pytest.raises(grpc.RpcError) as err:
                await stub.UpsertItems(cpb.UpsertItemsRequest(items=[item("brand-new")]))
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            # two trainings after the updates (the older bundle leaves the disk: bundles_kept)
            later = (datetime.now(UTC) + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
            with TailorClient(f"127.0.0.1:{server.port}", timeout=60) as client:
                for version in ("29990101T000000-00000001", "29990101T000000-00000002"):
                    await asyncio.to_thread(client.push_bundle,
                                            _retrained(copy_bundle, demo_bundle, version, later))
            assert server.registry.available_versions() == ["29990101T000000-00000002",
                                                            "29990101T000000-00000001"]
            change = await stub.UpsertItems(cpb.UpsertItemsRequest(items=[item("brand-new")]))
            assert (change.accepted, change.new_items) == (1, 1)
            reply = await rgrpc.RecommendationServiceStub(ch).Recommend(rpb.RecommendRequest(
                user_id="someone-new", k=1000, categories=["books"]))
            assert "brand-new" in {i.item_id for i in reply.items}
    finally:
        await server.stop(grace=0.5)


async def test_an_upsert_made_while_a_push_installs_serves_with_the_new_bundle(
        settings, second_bundle):
    """The registry amends a new bundle with the stored updates, then swaps it in. An
    UpsertItems committed between the two (applied to the bundle being replaced) was lost with
    it until the next poll, though the call had returned. The interleaving is forced: an
    amender that runs after the catalog's holds the install until the upsert is stored."""
    import asyncio
    import json
    import shutil

    from tests.conftest import held_amend, serving
    settings.bundle_poll_seconds = 60.0  # no follower repairs it meanwhile
    new_version = json.loads((second_bundle / "manifest.json").read_text())["version"]
    async with serving(settings) as (server, ch):
        cat, registry = cgrpc.CatalogServiceStub(ch), server.registry
        shutil.copytree(second_bundle, settings.bundles_dir / new_version)
        amended, go_on = held_amend(registry, new_version)
        push = asyncio.create_task(registry.activate(new_version))
        assert await asyncio.to_thread(amended.wait, 30)  # amended (no update yet), not swapped
        upsert = asyncio.ensure_future(cat.UpsertItems(cpb.UpsertItemsRequest(items=[
            cpb.CatalogItem(item_id="new-mid-push", title="kit", category="books", price=1.0)])))
        seq = server.catalog.records.sequence
        for _ in range(600):  # until the update is stored (committed) while the install waits
            if await asyncio.to_thread(seq) == 1:
                break
            await asyncio.sleep(0.05)
        assert await asyncio.to_thread(seq) == 1
        await asyncio.sleep(0.2)  # (main: the call returns here, applied to the old bundle)
        go_on.set()
        reply = await upsert
        await push
        served = registry.current()
        assert served.version == new_version and reply.sequence == 1
        assert served.catalog_seq == 1 and "new-mid-push" in served.item_row


async def test_an_item_upserted_under_an_id_refused_since_can_still_be_removed(
        tailor_server, channel):
    """An item upserted before ids with a bidirectional control were refused (stored here
    through the catalog's records) is served until removed: RemoveItems takes its id (it was
    INVALID_ARGUMENT, so the operator could not take it down); an id the catalog does not
    serve is refused as before."""
    import asyncio

    from server.catalog.records import CatalogItem
    old, stranger = "gpj.\u202eexe", "gpj.\u202eexe2"
    category = next(iter(tailor_server.registry.current().category_code))
    await asyncio.to_thread(tailor_server.catalog.records.write, [CatalogItem(
        old, "old kit", category, 1.0, "https://shop.example/old")])
    await tailor_server.catalog.refresh()
    assert old in tailor_server.registry.current().item_row
    stub = cgrpc.CatalogServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.RemoveItems(cpb.RemoveItemsRequest(item_ids=[stranger]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "bidirectional control character (U+202E)" in err.value.details()
    assert (await stub.RemoveItems(cpb.RemoveItemsRequest(item_ids=[old]))).accepted == 1
    assert old not in tailor_server.registry.current().item_row


async def test_an_item_upserted_under_an_id_refused_since_is_served_and_can_be_excluded(
        tailor_server, channel, world):
    """Such an item (stored through the catalog's records) is still served, and a client that
    passes it back in exclude_item_ids was refused the whole Recommend (INVALID_ARGUMENT
    'exclude_item_ids[0]: contains a bidirectional control character'); it is excluded now."""
    import asyncio

    from server.catalog.records import CatalogItem
    category = sorted(world["users"])[0]
    old = "kit.\u202egpj"
    await asyncio.to_thread(tailor_server.catalog.records.write, [CatalogItem(
        old, "old kit", category, world["price"][category], "https://shop.example/old")])
    await tailor_server.catalog.refresh()
    stub = rgrpc.RecommendationServiceStub(channel)
    for user_id in world["users"][category]:
        reply = await stub.Recommend(rpb.RecommendRequest(user_id=user_id, k=K))
        if old in [i.item_id for i in reply.items]:
            break
    else:
        pytest.fail(f"no user of {category} was served the item")
    reply = await stub.Recommend(rpb.RecommendRequest(user_id=user_id, k=K,
                                                      exclude_item_ids=[old, "x"]))
    assert len(reply.items) == K and old not in [i.item_id for i in reply.items]
