"""A pushed manifest with a key of the wrong type is refused as FAILED_PRECONDITION naming the
key (it used to surface as INTERNAL), and the served bundle keeps serving."""
import asyncio
import json

import grpc
import pytest

from clients import TailorClient, TailorError


@pytest.fixture
def client(tailor_server):
    with TailorClient(f"127.0.0.1:{tailor_server.port}", timeout=60) as c:
        yield c


@pytest.mark.parametrize("key, value", [
    ("dim", "abc"), ("encoder", "encoder.onnx"), ("history_len", 10 ** 12),
    ("history", {"event_weights": {"purchase": -8}}),
])
async def test_wrongly_typed_manifest_is_a_failed_precondition(client, copy_bundle, demo_bundle,
                                                               demo_manifest, key, value):
    bad = copy_bundle(demo_bundle)
    (bad / "manifest.json").write_text(json.dumps({**demo_manifest, key: value,
                                                   "version": f"bad-{key}"}))
    with pytest.raises(TailorError) as err:
        await asyncio.to_thread(client.push_bundle, bad)
    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert f"manifest.json: {key}" in str(err.value)
    status = await asyncio.to_thread(client.model_status)
    assert status.active.version == demo_manifest["version"]
