"""A pushed bundle's arrays are bounded before they are decoded: a small compressed .npz must
not make every worker allocate gigabytes (real server, real push)."""
import asyncio
import hashlib
import json
import resource

import grpc
import numpy as np
import pytest

from clients import TailorClient, TailorError


@pytest.fixture
def client(tailor_server):
    with TailorClient(f"127.0.0.1:{tailor_server.port}", timeout=60) as c:
        yield c


def _compressed(bundle, name: str, change, version: str) -> int:
    """Apply `change(arrays)` to `name`, written compressed (as the server's own copy is), list
    its sha256 under a new `version`; its size in bytes."""
    with np.load(bundle / name, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    change(arrays)
    with open(bundle / name, "wb") as fh:  # a path not ending .npz would get one added
        np.savez_compressed(fh, **arrays)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"][name] = hashlib.sha256((bundle / name).read_bytes()).hexdigest()
    manifest["version"] = version
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return (bundle / name).stat().st_size


def _widened(key: str, width: int):
    def change(arrays):  # a key the file lacks: a new column beside item_ids
        column = (arrays[key] if key in arrays else arrays["item_ids"]).astype(f"U{width}")
        column[0] = "x" * width
        arrays[key] = column
    return change


def _renamed(bundle, key: str, name: str) -> str:
    """Store the file of the manifest's `key` (content, context) as `name` (any plain name:
    the manifest says which file it is); `name`."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    old = manifest[key]["file"]
    (bundle / old).rename(bundle / name)
    manifest[key]["file"] = name
    manifest["files"][name] = manifest["files"].pop(old)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return name


def _padding(arrays):  # 64 MB of zeros: 64 KB compressed
    arrays["padding"] = np.zeros(64 << 20, np.uint8)


async def _refused(client, bundle, demo_manifest) -> TailorError:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(TailorError) as err:
        await asyncio.to_thread(client.push_bundle, bundle)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < 100 << 10  # KiB: < 100 MB
    status = await asyncio.to_thread(client.model_status)
    assert status.active.version == demo_manifest["version"]
    assert list(status.available_versions) == [demo_manifest["version"]]
    return err.value


@pytest.mark.parametrize("name, key, width", [
    ("items.npz", "titles", 200_000),  # 480 MB decoded for 600 items, 0.5 MB on the wire
    ("items.npz", "urls", 2049),
    ("items.npz", "item_ids", 129),
    ("items.npz", "category_names", 100_000),
    ("users.npz", "user_ids", 100_000),
    ("items.npz", "notes", 200_000),  # a column the server does not read is decoded all the same
])
async def test_a_text_column_wider_than_the_api_takes_is_refused_before_it_is_decoded(
        client, tailor_server, copy_bundle, demo_bundle, demo_manifest, name, key, width):
    """Measured before the fix: items.npz with one 500,000-character title, 1.2 MB compressed,
    took 8.2 s to load and grew the worker from 149 MB to 1.33 GB, then served (a title
    UpsertItems would refuse past 2,048 characters)."""
    bad = copy_bundle(demo_bundle)
    _compressed(bad, name, _widened(key, width), f"wide-{key}")
    err = await _refused(client, bad, demo_manifest)
    assert err.code == grpc.StatusCode.FAILED_PRECONDITION
    assert f"{name}: {key}" in str(err) and f"{width} characters wide" in str(err)
    assert "TAILOR_LIMITS__" in str(err)
    assert not any(p.name.startswith(".") for p in tailor_server.settings.bundles_dir.iterdir())


@pytest.fixture
def upload_limit_of_32_mb(settings):
    settings.limits = settings.limits.model_copy(update={"bundle_upload_bytes": 32 << 20})


@pytest.mark.parametrize("name", ["items.npz", "content.npz", "content.bin"])
async def test_a_push_whose_arrays_decode_past_the_upload_limit_is_refused(
        upload_limit_of_32_mb, client, tailor_server, copy_bundle, demo_bundle, demo_manifest,
        name):
    """The upload limit counts a compressed .npz by what its arrays take decoded: before, a
    1 MB file of 1 GiB of zeros passed a 32 MB limit and grew the worker by 1 GiB. The content
    map's file is loaded as an .npz whatever the manifest names it (content.bin passed)."""
    bad = copy_bundle(demo_bundle)
    if name != "items.npz":
        _renamed(bad, "content", name)
    assert _compressed(bad, name, _padding, "decodes-large") < 1 << 20
    err = await _refused(client, bad, demo_manifest)
    assert err.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"{32 << 20}-byte upload limit (TAILOR_LIMITS__BUNDLE_UPLOAD_BYTES)" in str(err)
    assert "bytes once its .npz arrays are decoded" in str(err)
    assert not any(p.name.startswith(".") for p in tailor_server.settings.bundles_dir.iterdir())


def _refused_push(port: int, chunks, timeout: float) -> grpc.RpcError:
    """The error a PushBundle of `chunks` to the server on `port` ends with (it must end with one)."""
    from protos.tailor.v1 import model_admin_pb2_grpc as apb_grpc
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        with pytest.raises(grpc.RpcError) as err:
            apb_grpc.ModelAdminServiceStub(ch).PushBundle(chunks, timeout=timeout)
        return err.value


async def test_a_stream_past_the_upload_limit_is_refused_as_its_bytes_arrive(
        upload_limit_of_32_mb, tailor_server, channel, demo_manifest):
    """Chunks of one file that never end: refused RESOURCE_EXHAUSTED by the chunk that would
    pass the limit (naming the bytes and the setting), nothing of it left on disk once answered,
    the serving bundle unchanged. Measured before: one admin stream staged 1.3 GB in 5 s under
    the 8 GiB default, and went on until its deadline or a full disk."""
    from protos.tailor.v1 import model_admin_pb2 as apb
    from protos.tailor.v1 import model_admin_pb2_grpc as apb_grpc
    chunk, sent = b"\0" * (1 << 20), []

    def endless():
        while len(sent) < 4096:  # a bound for the test only: 4 GiB
            yield apb.BundleChunk(path="index.faiss", offset=len(sent) * len(chunk), data=chunk)
            sent.append(len(chunk))

    err = await asyncio.to_thread(_refused_push, tailor_server.port, endless(), 60)
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.details()
    assert err.details() == (
        f"bundle larger than the {32 << 20}-byte upload limit (TAILOR_LIMITS__BUNDLE_UPLOAD_BYTES): "
        f"{33 << 20} bytes with this chunk of 'index.faiss'; nothing of it was stored and the "
        "serving bundle is unchanged (raise the setting on every server for a larger bundle)")
    assert sum(sent) < 64 << 20  # stopped once refused (what gRPC buffered aside)
    bundles = tailor_server.settings.bundles_dir
    assert [p.name for p in bundles.iterdir()] == [demo_manifest["version"]]
    status = await apb_grpc.ModelAdminServiceStub(channel).GetModelStatus(
        apb.GetModelStatusRequest())
    assert status.active.version == demo_manifest["version"]


async def test_a_compressed_bundle_within_the_bounds_is_served(client, copy_bundle, second_bundle):
    good = copy_bundle(second_bundle)
    _compressed(good, "items.npz", _widened("titles", 2048), "compressed-and-wide")
    status = await asyncio.to_thread(client.push_bundle, good)
    assert status.active.version == "compressed-and-wide"


def test_the_servers_hashed_copy_loads_under_an_id_limit_shorter_than_a_hash(tmp_path, demo_bundle):
    """The stored copy names users by 32-character keyed hashes: an `id_bytes` of 16 (allowed)
    bounds the ids a call names, not those hashes."""
    import shutil

    from server.limits import Limits
    from server.models.bundle import load_bundle
    from server.models.pseudonyms import hash_stored

    stored = tmp_path / "bundles" / demo_bundle.name
    shutil.copytree(demo_bundle, stored)
    hash_stored(stored.parent)
    short = Limits(id_bytes=16)
    assert load_bundle(stored, limits=short).ids_hashed


def test_a_bundle_whose_item_id_no_call_could_name_is_refused_naming_its_class(
        tmp_path, demo_bundle):
    """An item id holding a bidirectional control (refused in ids since they make logs and
    exports show another id) could never be removed or tracked: the load refuses the bundle,
    as for a C0 control, naming the class and not the id."""
    import shutil

    from server.limits import Limits
    from server.models.bundle import BundleInvalid, load_bundle
    copy = tmp_path / "spoofed"
    shutil.copytree(demo_bundle, copy)

    def spoofed(arrays):
        ids = arrays["item_ids"].astype(f"U{arrays['item_ids'].dtype.itemsize // 4 + 1}")
        ids[3] = "\u202e" + ids[3]
        arrays["item_ids"] = ids
    _compressed(copy, "items.npz", spoofed, "spoofed")
    with pytest.raises(BundleInvalid, match=r"item_ids: 1 ids the API cannot name, e\.g\. .* "
                       r"contains a bidirectional control character \(U\+202E\)"):
        load_bundle(copy, limits=Limits())


@pytest.fixture
def chunk_limit_of_2000(settings):
    settings.limits = settings.limits.model_copy(update={"bundle_chunks": 2000})


async def test_a_stream_of_empty_chunks_is_refused_past_the_chunk_bound(
        chunk_limit_of_2000, tailor_server, demo_manifest):
    """Empty chunks of one file pass the byte bound (offset == size, no byte): each cost the
    server an open() and a thread hop, and one stream of them kept it at that until its deadline
    (measured before: 105,238 taken when a 20 s deadline ended it). Refused past
    `limits.bundle_chunks`, nothing left on disk."""
    from protos.tailor.v1 import model_admin_pb2 as apb
    most, sent = 2000, [0]

    def endless():
        while True:
            yield apb.BundleChunk(path="index.faiss", offset=0, data=b"")
            sent[0] += 1

    err = await asyncio.to_thread(_refused_push, tailor_server.port, endless(), 20)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (err.code(), sent)
    assert err.details() == (
        f"chunks: more than {most} chunks, at most {most} a push (limits.bundle_chunks, "
        "TAILOR_LIMITS__BUNDLE_CHUNKS): send larger chunks; nothing of it was stored")
    assert most < sent[0] < 10 * most  # stopped once refused (what gRPC buffered aside)
    assert [p.name for p in tailor_server.settings.bundles_dir.iterdir()] == [
        demo_manifest["version"]]
