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
    assert stopped.returncode == 1 and stopped.stderr.startswith("error: INVALID_ARGUMENT: items[1]")
    assert f"the 2 items of {refused} before this batch were upserted" in stopped.stderr


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
