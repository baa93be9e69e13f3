"""Denied calls in the audit log, against a real server: a principal without the role calling
in a loop writes a bounded number of lines whose counts add up, none of them on the event
loop's thread; an allowed sensitive call keeps its own line, written off the loop too."""
import json
import threading

import grpc
import pytest
import pytest_asyncio

from protos.tailor.v1 import profile_pb2 as pb
from protos.tailor.v1 import profile_pb2_grpc as pb_grpc
from server.security import tokens
from server.security.audit import audit_files, verify_chain
from server.security.userref import user_ref

BURST = 200
DELETE = "/tailor.v1.ProfileService/DeleteProfile"


@pytest_asyncio.fixture
async def secured(settings, tmp_path):
    """(server, {name: token}, threads the audit log's lines were written on)."""
    from server.app import TailorServer
    auth = tmp_path / "auth.toml"
    toks = {name: tokens.mint(auth, name, roles)
            for name, roles in (("ops", ["admin"]), ("viewer", ["analyst"]))}
    server = TailorServer(settings.model_copy(update={"auth_config": auth}))
    await server.start()
    threads, real = [], server.audit.record

    def record(*args, **details):  # the real AuditLog writes each line; note on which thread
        threads.append(threading.get_ident())
        return real(*args, **details)
    server.audit.record = record
    yield server, toks, threads
    await server.stop(grace=0.5)


def audit_lines(server) -> list[dict]:
    return [json.loads(line) for path in audit_files(server.settings.audit_dir)
            for line in path.read_text().splitlines()]


def denied_lines(server) -> list[tuple]:
    return [(e["principal"], e["method"], e["target"], e.get("count"))
            for e in audit_lines(server) if e["status"] == "PERMISSION_DENIED"]


def bearer(token):
    return (("authorization", f"Bearer {token}"),)


async def test_a_burst_of_denied_calls_is_collapsed_counted_and_written_off_the_loop(secured):
    server, toks, threads = secured
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        profiles = pb_grpc.ProfileServiceStub(ch)
        for _ in range(BURST):
            with pytest.raises(grpc.RpcError) as err:
                await profiles.DeleteProfile(pb.DeleteProfileRequest(user_id="alice"),
                                             metadata=bearer(toks["viewer"]))
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        await profiles.DeleteProfile(pb.DeleteProfileRequest(user_id="bob"),
                                     metadata=bearer(toks["ops"]))
        # the first denial at once, with whom it was aimed at; the sensitive call's own line
        assert denied_lines(server) == [("viewer", DELETE, user_ref("alice"), 1)]
        assert [(e["principal"], e["target"], e["status"]) for e in audit_lines(server)
                if e["principal"] == "ops"] == [("ops", user_ref("bob"), "OK")]
    await server.stop(grace=0.5)  # the interval's count is written
    assert denied_lines(server) == [("viewer", DELETE, user_ref("alice"), 1),
                                    ("viewer", DELETE, user_ref("alice"), BURST - 1)]
    assert len(threads) == 3 and threading.get_ident() not in threads  # never on the loop
    assert verify_chain(server.settings.audit_dir, server.secrets["audit"]).ok


async def test_once_the_pairs_are_full_a_new_principals_denials_still_name_it(settings, tmp_path):
    """Other principals' denials filled the interval's pairs: an insider probing DeleteProfile
    still gets a line naming them, the method, the victim and the request id at once."""
    from server.app import TailorServer
    auth = tmp_path / "auth.toml"
    noise, insider = tokens.mint(auth, "noise", []), tokens.mint(auth, "insider", ["analyst"])
    limits = settings.limits.model_copy(update={"audit_failure_pairs": 3})
    server = TailorServer(settings.model_copy(update={"auth_config": auth, "limits": limits}))
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            for method in (DELETE, "/tailor.v1.ProfileService/SetConsent",
                           "/tailor.v1.ProfileService/ExportProfile"):  # fill the 3 pairs
                with pytest.raises(grpc.RpcError):
                    await ch.unary_unary(method)(b"", metadata=bearer(noise), timeout=5)
            profiles = pb_grpc.ProfileServiceStub(ch)
            for n in (1, 2, 3):
                with pytest.raises(grpc.RpcError) as err:
                    await profiles.DeleteProfile(
                        pb.DeleteProfileRequest(user_id=f"victim{n}"), timeout=5,
                        metadata=bearer(insider) + (("x-request-id", f"probe-{n}"),))
                assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
            mine = [(e["principal"], e["method"], e["target"], e["request_id"], e["count"])
                    for e in audit_lines(server) if e["principal"] == "insider"]
            assert mine == [("insider", DELETE, user_ref("victim1"), "probe-1", 1)]
    finally:
        await server.stop(grace=0.5)
    mine = [(e["principal"], e["method"], e["target"], e["count"])
            for e in audit_lines(server) if e["principal"] == "insider"]
    assert mine == [("insider", DELETE, user_ref("victim1"), 1), ("insider", "*", "", 2)]


async def test_denials_of_several_targets_are_counted_without_one_and_pairs_are_bounded():
    from server.security.failures import DeniedDigest

    class Rows:
        def __init__(self):
            self.rows = []

        def record(self, principal, method, target, status, request_id, **details):
            self.rows.append((principal, method, target, status, request_id, details["count"]))

    rows = Rows()
    digest = DeniedDigest(rows, interval=3600, max_pairs=2)
    for principal, method, target in [("p", "/m", "alice"), ("p", "/m", "bob"), ("p", "/m", "alice"),
                                       ("q", "/m", "x"), ("r", "/m", "y"), ("s", "/n", "z")]:
        await digest.denied(principal, method, target, f"{principal}-{target}")
    await digest.close()
    d = "PERMISSION_DENIED"
    assert rows.rows == [
        ("p", "/m", "alice", d, "p-alice", 1), ("q", "/m", "x", d, "q-x", 1),
        ("r", "/m", "y", d, "r-y", 1),  # a third pair: its own line, then counted under r
        ("s", "/n", "z", d, "s-z", 1),
        ("p", "/m", "", d, "", 2)]      # bob and alice again: no one target


async def test_past_the_bound_a_principals_denials_are_counted_under_it_then_under_star():
    from server.security.failures import DeniedDigest

    class Rows:
        def __init__(self):
            self.rows = []

        def record(self, principal, method, target, status, request_id, **details):
            self.rows.append((principal, method, target, request_id, details["count"]))

    rows = Rows()
    digest = DeniedDigest(rows, interval=3600, max_pairs=1)
    for principal, method in [("p", "/m"), ("q", "/m"), ("q", "/n"), ("r", "/m"), ("s", "/n"),
                              ("p", "/m")]:
        await digest.denied(principal, method, "t", principal)
    assert len(digest._pairs) == 3  # (p, /m), (q, *), (*, *): at most 2 x max_pairs + 1
    await digest.close()
    assert rows.rows == [("p", "/m", "t", "p", 1), ("q", "/m", "t", "q", 1),
                         ("r", "/m", "t", "r", 1),  # past both bounds: its own line, once
                         ("p", "/m", "t", "", 1), ("q", "*", "t", "", 1), ("*", "*", "t", "", 1)]



async def test_denials_of_a_user_and_a_campaign_of_one_spelling_are_not_one_target():
    """PreviewMessage aims at a user (user_id) or, without one, at a campaign: a user "x" and a
    campaign "x" are equal as text, and their denials' count line named one of them (the
    last's label, `userref.CampaignKey`) for both. Now they are two targets: none."""
    from server.security.failures import DeniedDigest
    from server.security.userref import CampaignKey, target_ref

    class Rows:
        def __init__(self):
            self.targets = []

        def record(self, principal, method, target, status, request_id, **details):
            self.targets.append(target_ref(target) if target else "")

    rows = Rows()
    digest = DeniedDigest(rows, interval=3600, max_pairs=8)
    for target in ("x", "x", CampaignKey("x")):
        await digest.denied("p", "/m", target, "")
    await digest.close()
    assert rows.targets == [target_ref("x"), ""]
    rows.targets = []
    for target in (CampaignKey("x"), CampaignKey("x"), CampaignKey("x")):
        await digest.denied("p", "/m", target, "")
    await digest.close()
    assert rows.targets == [target_ref(CampaignKey("x"))] * 2  # one target: kept, labelled


async def test_a_denied_calls_target_past_any_id_is_not_held():
    """The denied request was never validated: a user_id of megabytes is not kept for the
    interval (one per pair, principal x method), nor hashed into the line."""
    from server.security.failures import DeniedDigest

    class Rows:
        def __init__(self):
            self.targets = []

        def record(self, principal, method, target, status, request_id, **details):
            self.targets.append(target)

    rows = Rows()
    digest = DeniedDigest(rows, interval=3600, max_pairs=8)
    for _ in range(3):
        await digest.denied("p", "/m", "x" * (1 << 20), "")
    assert [p.varying for p in digest._pairs.values()] == [""]
    await digest.close()
    assert rows.targets == ["", ""]


async def test_a_line_whose_call_is_cancelled_while_it_waits_is_still_written():
    """A call's task cancelled while its audit line waits behind another (a server stopping
    past its grace, a client gone mid-write) must not take the line with it: it was written on
    the event loop before, whatever happened to the task."""
    import asyncio
    import time

    from server.security.audit_writer import AuditWriter

    class SlowLog:
        def __init__(self):
            self.lines = []

        def record(self, principal, method, target, status, request_id, **details):
            time.sleep(0.2)  # a slow disk
            self.lines.append(principal)

    log = SlowLog()
    writer = AuditWriter(log, interval=3600, max_pairs=8)
    first = asyncio.create_task(writer.record("a", "/m", "", "OK", ""))
    second = asyncio.create_task(writer.record("b", "/m", "", "OK", ""))
    await asyncio.sleep(0.05)  # a's line is being written, b's waits for the thread
    second.cancel()
    await first
    await writer.close()
    assert log.lines == ["a", "b"]


async def test_sensitive_calls_denied_mid_stream_keep_a_line_each(settings, tmp_path):
    """A role taken away (SIGHUP) while PushBundle streams ends it PERMISSION_DENIED: a call
    its caller was allowed to start, sensitive, so each keeps its own line and request id at
    once, as the docs say, rather than being counted as a denial."""
    import asyncio

    from protos.tailor.v1 import model_admin_pb2 as mpb
    from server.app import TailorServer

    def set_roles(roles):
        doc = tokens._read(auth)
        doc["principals"]["deployer"]["roles"] = roles
        tokens._write(auth, doc)
        assert server.auth.reload_auth()

    auth = tmp_path / "auth.toml"
    token = tokens.mint(auth, "deployer", ["admin"])
    server = TailorServer(settings.model_copy(update={"auth_config": auth}))
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            push = ch.stream_unary("/tailor.v1.ModelAdminService/PushBundle",
                                   request_serializer=mpb.BundleChunk.SerializeToString,
                                   response_deserializer=mpb.ModelStatus.FromString)
            for n in (1, 2):
                set_roles(["admin"])

                async def chunks():
                    yield mpb.BundleChunk(path="manifest.json", data=b'{"x": ')
                    await asyncio.sleep(0.3)
                    set_roles(["analyst"])
                    yield mpb.BundleChunk(path="manifest.json", offset=6, data=b"1}")

                with pytest.raises(grpc.RpcError) as err:
                    await push(chunks(), timeout=10,
                               metadata=bearer(token) + (("x-request-id", f"push-{n}"),))
                assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
            # the status goes out at the abort, the line just after it: wait for it, bounded
            for _ in range(50):
                mine = [(e["method"], e["status"], e["request_id"], e.get("count"))
                        for e in audit_lines(server) if e["principal"] == "deployer"]
                if len(mine) == 2:
                    break
                await asyncio.sleep(0.1)
            assert mine == [("/tailor.v1.ModelAdminService/PushBundle", "PERMISSION_DENIED",
                             f"push-{n}", None) for n in (1, 2)]
    finally:
        await server.stop(grace=0.5)
