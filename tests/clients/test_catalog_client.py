"""`TailorClient.upsert_items` / `remove_items` and `python -m clients catalog ...` against a real
server serving the demo bundle."""
import asyncio
import json
from pathlib import Path

from clients import CatalogChange, TailorClient, TailorError
from tests.conftest import run_module

ITEM = {"item_id": "new-kit", "title": "smart kit", "category": "", "price": 19.5,
        "url": "https://shop.example/new-kit"}


def changes(target: str, category: str, items: Path) -> tuple:
    with TailorClient(target, timeout=30) as client:
        added = client.upsert_items([dict(ITEM, category=category)])
        try:
            client.upsert_items([dict(ITEM, item_id="no-cat", category="")])
        except TailorError as err:
            refused = err
    items.write_text(json.dumps(dict(ITEM, item_id="cli-kit", category=category)) + "\n")
    more = json.loads(run_module("clients", "catalog", "upsert", str(items), "--server",
                                 target).stdout)
    removed = json.loads(run_module("clients", "catalog", "remove", "--item", "new-kit",
                                    "--item", "cli-kit", "--server", target).stdout)
    return added, refused, more, removed


async def test_items_are_upserted_and_removed_from_the_client(tailor_server, demo_bundle, tmp_path):
    """CatalogService (UpsertItems, RemoveItems), in the README's services, had no client method
    nor CLI command: an integrator adding the week's new products for their emails'
    `recommend()` wrote raw gRPC."""
    import numpy as np
    with np.load(demo_bundle / "items.npz") as npz:
        category = str(npz["category_names"][0])
    added, refused, more, removed = await asyncio.to_thread(
        changes, f"127.0.0.1:{tailor_server.port}", category, tmp_path / "items.jsonl")
    assert isinstance(added, CatalogChange) and (added.accepted, added.new_items) == (1, 1)
    assert added.sequence > 0 and added.model_version
    assert refused.code.name == "INVALID_ARGUMENT" and "category" in str(refused)
    assert (more["accepted"], more["new_items"]) == (1, 1) and more["sequence"] > added.sequence
    assert removed["accepted"] == 2 and removed["sequence"] > more["sequence"]


async def test_a_catalog_file_is_upserted_in_batches_the_server_takes(tailor_server, demo_bundle,
                                                                      tmp_path):
    """`catalog upsert` sent the whole file in one UpsertItems, which a server refuses past
    `limits.upsert_items` (1000): a week's 1001 new products were refused, none stored. Now
    batches of --batch-size (1000); a batch refused after others went says what was stored."""
    import numpy as np
    with np.load(demo_bundle / "items.npz") as npz:
        category = str(npz["category_names"][0])
    items, refused = tmp_path / "items.jsonl", tmp_path / "refused.jsonl"
    lines = [json.dumps(dict(ITEM, item_id=f"b{i}", category=category)) for i in range(1001)]
    items.write_text("\n".join(lines) + "\n")
    refused.write_text("\n".join(lines[:3] + [json.dumps(dict(ITEM, category="nope"))]) + "\n")
    target = f"127.0.0.1:{tailor_server.port}"
    done, stopped = await asyncio.gather(
        asyncio.to_thread(run_module, "clients", "catalog", "upsert", str(items), "--server",
                          target, check=False),
        asyncio.to_thread(run_module, "clients", "catalog", "upsert", str(refused),
                          "--batch-size", "2", "--server", target, check=False))
    assert done.returncode == 0, done.stderr
    assert (json.loads(done.stdout)["accepted"], json.loads(done.stdout)["new_items"]) == (1001, 1001)
    assert stopped.returncode == 3 and stopped.stderr.startswith("error: INVALID_ARGUMENT: items[1]")
    assert f"{refused}: batch 1 (items 1-2, lines 1-2) was upserted; batch 2 (items 3-4, lines " \
           "3-4), whose items[1] is line 4, was refused whole, and nothing after it was sent" \
           in stopped.stderr


def _upsert(target: str, path: Path, *flags: str):
    return run_module("clients", "catalog", "upsert", str(path), "--server", target, *flags,
                      check=False)


async def test_a_refused_catalog_upload_says_what_was_stored_and_what_not(
        tailor_server, demo_bundle, tmp_path):
    """A one-batch file with a bad item ended 'error: INVALID_ARGUMENT: items[2].category: ...'
    alone, exit 1: a position within the call, not the file's line, and nothing said that none
    of the file was stored (nor, for several batches, which ones were: the count of items
    before). Now the server says its call was refused whole; the CLI maps items[i] to its line
    and says which batches went (exit 3 when some did, 1 when none did)."""
    import numpy as np
    with np.load(demo_bundle / "items.npz") as npz:
        category = str(npz["category_names"][0])
    good = [json.dumps(dict(ITEM, item_id=f"r{i}", category=category)) for i in range(5)]
    bad = json.dumps(dict(ITEM, item_id="r-bad", category="nope"))
    one, many = tmp_path / "one.jsonl", tmp_path / "many.jsonl"
    one.write_text("\n".join([good[0], good[1], "", bad, good[2]]) + "\n")
    many.write_text("\n".join(good[:4] + ["", bad, good[4]]) + "\n")
    target, records = f"127.0.0.1:{tailor_server.port}", tailor_server.catalog.records
    before = records.sequence()
    refused = await asyncio.to_thread(_upsert, target, one)
    assert refused.returncode == 1, refused.stderr
    assert refused.stderr == (
        "error: INVALID_ARGUMENT: items[2].category: unknown category 'nope' (the served bundle "
        f"knows: {', '.join(map(repr, sorted(_categories(demo_bundle))[:20]))}); nothing of the call was "
        "stored (4 entries: a call is stored whole or not at all); nothing of "
        f"{one} was stored; batch 1 (items 1-4, lines 1-5), whose items[2] is line 4, was "
        "refused whole, and nothing after it was sent: upserting the file again is safe (an "
        "item upserted again is replaced)\n")
    assert records.sequence() == before
    partly = await asyncio.to_thread(_upsert, target, many, "--batch-size", "2")
    assert partly.returncode == 3, partly.stderr
    assert f"; {many}: batches 1-2 (items 1-4, lines 1-4) were upserted; batch 3 (items 5-6, " \
           "lines 6-7), whose items[0] is line 6, was refused whole, and nothing after it was " \
           "sent: " in partly.stderr
    assert records.sequence() == before + 4  # one a stored item


def _categories(bundle) -> list[str]:
    import numpy as np
    with np.load(bundle / "items.npz") as npz:
        return [str(c) for c in npz["category_names"]]


async def test_a_catalog_change_whose_answer_was_lost_is_retried(tailor_server):
    """CatalogService was left out of the clients' retry policy (`clients.retry.SERVICES`):
    UpsertItems / RemoveItems whose answer was lost ended UNAVAILABLE where every other
    repeatable call is retried, though a repeat stores the same change again."""
    from tests.clients.proxy import LosingProxy
    proxy = LosingProxy(tailor_server.port)
    try:
        with TailorClient(proxy.target, timeout=30) as client:
            proxy.lose_next()
            removed = await asyncio.to_thread(client.remove_items, ["gone-kit"])
    finally:
        proxy.close()
    assert removed.accepted == 1 and removed.sequence == 2  # stored twice: the retry's too
