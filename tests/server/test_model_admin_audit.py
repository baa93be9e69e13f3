"""A push and a rollback write, beside the auth interceptor's line of the call, an audit line
naming the version they served (and, for a push, how): before, the audit log said that
someone pushed or rolled back, not what. A real server and client on loopback."""
import asyncio
import json

from clients import TailorClient


async def test_a_push_and_a_rollback_are_audited_with_their_version(tailor_server, second_bundle,
                                                                    demo_manifest):
    second = json.loads((second_bundle / "manifest.json").read_text())["version"]
    with TailorClient(f"127.0.0.1:{tailor_server.port}", timeout=60) as client:
        await asyncio.to_thread(client.push_bundle, second_bundle)
        await asyncio.to_thread(client.rollback)
        lines = [json.loads(line) for line in await asyncio.to_thread(client.audit_tail)]
    [push] = [ln for ln in lines if ln["method"] == "models/push"]
    assert (push["version"], push["mode"], push["new_catalog"]) == (second, "active", 0)
    assert push["status"] == "OK" and push["principal"]
    [back] = [ln for ln in lines if ln["method"] == "models/rollback"]
    assert back["version"] == demo_manifest["version"] != second
