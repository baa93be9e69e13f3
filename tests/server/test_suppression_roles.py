"""Who may ask the suppression list about an address, through a real server with real tokens:
an answer says that an address a caller names bounced, complained or unsubscribed, and when,
which is a fact about a person; so only `pii-reader` (access requests, support) and `admin`
(who lifts entries) may ask, not `analyst` (masked reads), and every question is in the audit
log (its address as a keyed hash, never as given)."""
import json

import grpc
import pytest
import pytest_asyncio

from protos.tailor.v1 import audit_pb2 as apb
from protos.tailor.v1 import audit_pb2_grpc as apb_grpc
from protos.tailor.v1 import profile_pb2 as pb
from protos.tailor.v1 import profile_pb2_grpc as pb_grpc
from server.security.interceptor import address_target
from server.security.userref import target_ref, user_ref
from tests.conftest import minted

ROLES = {"tracker": ["tracker"], "analyst": ["analyst"], "decider": ["decider"],
         "admin": ["admin"], "reader": ["pii-reader"], "auditor": ["auditor"]}
LISTED = "complained-7f31@example.org"


@pytest.fixture
def auth(tmp_path):
    return minted(tmp_path, ROLES)


@pytest_asyncio.fixture
async def profiles(secured):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{secured.port}") as ch:
        yield pb_grpc.ProfileServiceStub(ch), apb_grpc.AuditServiceStub(ch)


def bearer(token):
    return (("authorization", f"Bearer {token}"),)


@pytest.mark.parametrize("role", ["analyst", "decider", "tracker"])
async def test_only_a_pii_reader_or_an_admin_may_ask_about_an_address(profiles, auth, role):
    stub, _ = profiles
    toks = auth[1]
    await stub.AddSuppression(pb.AddSuppressionRequest(
        address=pb.SuppressionAddress(email=LISTED), reason="complaint"),
        metadata=bearer(toks["tracker"]))
    with pytest.raises(grpc.RpcError) as err:
        await stub.CheckSuppression(pb.SuppressionAddress(email=LISTED),
                                    metadata=bearer(toks[role]))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    for allowed in ("reader", "admin"):
        found = await stub.CheckSuppression(pb.SuppressionAddress(email=LISTED),
                                            metadata=bearer(toks[allowed]))
        assert (found.suppressed, found.reason) == (True, "complaint")


async def test_each_question_is_audited_by_a_keyed_hash_of_the_address(profiles, auth, secured):
    """Labelled `a:`, an address: it was `u:`, the label of a user, so an auditor read the
    question as one about a user (the 16 hex characters are the same)."""
    stub, audit = profiles
    toks = auth[1]
    for address in (LISTED, "never-listed@example.org"):
        await stub.CheckSuppression(pb.SuppressionAddress(email=address),
                                    metadata=bearer(toks["reader"]))
    lines = [json.loads(line) for line in (await audit.TailAudit(
        apb.TailAuditRequest(limit=20), metadata=bearer(toks["auditor"]))).lines]
    asked = [line for line in lines if line["method"].endswith("/CheckSuppression")]
    assert [(line["principal"], line["status"]) for line in asked] == [("reader", "OK")] * 2
    assert asked[0]["target"] == target_ref(address_target("email", LISTED))
    assert [line["target"][:2] for line in asked] == ["a:", "a:"]  # never a user's "u:"
    assert asked[0]["target"][2:] == user_ref(address_target("email", LISTED))[2:]
    assert "example.org" not in json.dumps(lines)
