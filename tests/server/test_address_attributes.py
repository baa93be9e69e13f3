"""UpsertAttributes refuses an `email` or `phone` the suppression list and the send path could
not read (a CRM sync's bug was found only at the send: FAILED_PRECONDITION `bad email
address`, a failed `bad phone address`), naming the attribute and the form expected; an
address a Tailor before the check stored stays readable, exportable and erasable, and the
server starts over it."""
import asyncio
import json

import grpc
import pytest
import pytest_asyncio

from protos.tailor.v1 import profile_pb2 as pb
from protos.tailor.v1 import profile_pb2_grpc as pb_grpc
from tests.conftest import minted, serving

ROLES = {"crm": ["tracker", "pii-reader", "admin"]}
BAD_EMAIL, BAD_PHONE = "bad address@x", "5550100"


def bare_settings(tmp, auth_config):
    """A server with no bundle (profiles need none) and an auth config (export needs a
    pii-reader)."""
    from server.config import Settings
    return Settings(port=0, data_dir=tmp / "data", grace_seconds=1.0, lmdb_sync=False,
                    secrets_dir=tmp / "secrets", auth_config=auth_config)


@pytest.fixture(scope="module")
def crm(tmp_path_factory):
    """(settings, call metadata of a tracker that reads PII and erases)."""
    tmp = tmp_path_factory.mktemp("addresses")
    path, tokens = minted(tmp, ROLES)
    return bare_settings(tmp, path), (("authorization", f"Bearer {tokens['crm']}"),)


@pytest_asyncio.fixture(scope="module")
async def shared(crm):
    async with serving(crm[0]) as (server, channel):
        yield pb_grpc.ProfileServiceStub(channel)


async def refusal(stub, metadata, user: str, attributes: dict) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.UpsertAttributes(pb.UpsertAttributesRequest(user_id=user, attributes=attributes),
                                    metadata=metadata)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    return err.value.details()


async def attributes_of(stub, metadata, user: str) -> dict:
    got = await stub.GetProfile(pb.GetProfileRequest(user_id=user), metadata=metadata)
    return dict(got.attributes)


async def test_a_malformed_email_or_phone_is_refused_naming_it_and_nothing_is_stored(shared, crm):
    meta = crm[1]
    details = await refusal(shared, meta, "crm-1", {"email": BAD_EMAIL, "tier": "gold"})
    assert details.startswith("attributes[email]: ") and "name@domain" in details, details
    assert "bad address" not in details  # the value is personal data: never echoed
    with pytest.raises(grpc.aio.AioRpcError) as err:  # the call's other attributes neither
        await shared.GetProfile(pb.GetProfileRequest(user_id="crm-1"), metadata=meta)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    await shared.UpsertAttributes(pb.UpsertAttributesRequest(
        user_id="crm-2", attributes={"tier": "gold"}), metadata=meta)
    details = await refusal(shared, meta, "crm-2", {"phone": BAD_PHONE, "tier": "silver"})
    assert details.startswith("attributes[phone]: ") and "E.164" in details, details
    assert "country code" in details and BAD_PHONE not in details
    assert await attributes_of(shared, meta, "crm-2") == {"tier": "gold"}  # nothing of it kept


async def test_a_well_formed_address_is_stored_as_given(shared, crm):
    """Any spelling the suppression list reads is taken, kept as written (the send path
    normalizes it); so is an internationalized address, which the email adapter (SMTP without
    SMTPUTF8) refuses at the send while a client that sends itself can use it."""
    meta, given = crm[1], {"email": " Ann@Example.org", "phone": "+44 (7700) 900-123"}
    await shared.UpsertAttributes(pb.UpsertAttributesRequest(user_id="crm-3", attributes=given),
                                  metadata=meta)
    assert await attributes_of(shared, meta, "crm-3") == given
    await shared.UpsertAttributes(pb.UpsertAttributesRequest(
        user_id="crm-3", attributes={"email": "jos\u00e9@b\u00fccher.de", "phone": ""}),
        metadata=meta)
    assert await attributes_of(shared, meta, "crm-3") == {"email": "jos\u00e9@b\u00fccher.de"}


async def test_an_address_stored_before_the_check_is_read_exported_erased_and_started_over(
        tmp_path):
    path, tokens = minted(tmp_path, ROLES)
    settings, meta = bare_settings(tmp_path, path), (("authorization", f"Bearer {tokens['crm']}"),)
    stored = {"email": BAD_EMAIL, "phone": BAD_PHONE, "tier": "gold"}
    async with serving(settings) as (server, channel):  # written as a Tailor before the check did
        await asyncio.to_thread(server.profiles.repo.update_meta, "old-1",
                                lambda m: m["attributes"].update(stored))
        stub = pb_grpc.ProfileServiceStub(channel)
        await stub.UpsertAttributes(pb.UpsertAttributesRequest(  # another attribute still changes
            user_id="old-1", attributes={"tier": "silver"}), metadata=meta)
    async with serving(settings) as (server, channel):  # the server starts over it
        stub = pb_grpc.ProfileServiceStub(channel)
        assert await attributes_of(stub, meta, "old-1") == {**stored, "tier": "silver"}
        export = await stub.ExportProfile(pb.ExportProfileRequest(user_id="old-1"), metadata=meta)
        document = json.loads(export.document)
        assert (document["profile"]["attributes"]["email"],
                document["profile"]["attributes"]["phone"]) == (BAD_EMAIL, BAD_PHONE)
        erased = await stub.DeleteProfile(pb.DeleteProfileRequest(user_id="old-1"), metadata=meta)
        assert erased.records_deleted > 0
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetProfile(pb.GetProfileRequest(user_id="old-1"), metadata=meta)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("attribute,value", [
    ("email", "Ann.Lee+crm@Mail.Example.CO.UK"), ("email", "  "), ("phone", "+1 (415) 555-0100"),
    ("phone", "0044 20-7946-0958"), ("phone", " \t ")])
async def test_every_value_the_send_path_takes_is_taken(shared, crm, attribute, value):
    """The check refuses only what the send path refuses: plus tags, subdomains, capitals,
    punctuated numbers, and a blank value, which the send path reads as no address at all (a
    CRM's empty cell holding a space; refusing it refused the call's other attributes too)."""
    from server.contact.policy import ADDRESS_ATTRIBUTES
    from server.messages.delivery import address_of
    channel = {v: k for k, v in ADDRESS_ATTRIBUTES.items()}[attribute]
    address_of(channel, {attribute: value})  # the sender takes it (BadAddress otherwise)
    given = {attribute: value, "tier": "gold"}
    await shared.UpsertAttributes(pb.UpsertAttributesRequest(user_id=f"crm-take-{attribute}",
                                                             attributes=given), metadata=crm[1])
    assert await attributes_of(shared, crm[1], f"crm-take-{attribute}") == given


async def test_a_push_token_with_whitespace_inside_is_refused_naming_it(shared, crm):
    """A `push_token` is an address the suppression list holds (the erasure's keep-out of a
    push opt-out): one word, as the provider issued it, at most `limits.push_token_chars`. One
    with a space inside was taken before, and could be listed as no token pushed to. A Web Push
    subscription's JSON (600 characters here) is a token too: the email bound (254) refused it."""
    meta = crm[1]
    for value, problem in (("APA91b Tok", "contains whitespace, U+0020, at character 7"),):
        details = await refusal(shared, meta, "crm-push", {"push_token": value, "tier": "gold"})
        assert details.startswith("attributes[push_token]: ") and problem in details, details
        assert "APA91b" not in details
    web_push = '{"endpoint":"https://push.example/' + "e" * 480 + '","keys":{"auth":"a"}}'
    for token in (" APA91b:Tok\n", web_push):  # trimmed by the send path
        given = {"push_token": token, "tier": "gold"}
        await shared.UpsertAttributes(pb.UpsertAttributesRequest(user_id="crm-push",
                                                                 attributes=given), metadata=meta)
        assert await attributes_of(shared, meta, "crm-push") == given


@pytest.mark.parametrize("value", ["ann@example.com.", " Ann@Example.COM. ", "ann@example..com",
                                   "ann@.example.com", "<ann@example.com.>"])
async def test_a_domain_with_an_empty_label_is_refused_as_the_send_path_refuses_it(
        shared, crm, value):
    """`ann@example.com.` was taken (the suppression list's parser reads it) and refused at
    every send (`bad email address`): a CRM sync's slip was found far from it. UpsertAttributes
    and the email adapter take one rule now (`contact.addresses.labelled_domain`)."""
    from server.messages.delivery import address_of
    from server.messages.errors import BadAddress
    with pytest.raises(BadAddress):
        address_of("email", {"email": value})
    details = await refusal(shared, crm[1], "crm-dots", {"email": value, "tier": "gold"})
    assert details.startswith("attributes[email]: ") and "domain" in details, details
    assert "ann@" not in details.lower()  # never echoed
    with pytest.raises(grpc.aio.AioRpcError) as err:  # nothing of the call stored
        await shared.GetProfile(pb.GetProfileRequest(user_id="crm-dots"), metadata=crm[1])
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
