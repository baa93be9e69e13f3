"""An unsubscribe outlives the erasure (`server.contact.keepout`), through one real server whose
email and sms consent default is `opt_out` (push's is by default): the erasure lists the address of a user who
withdrew marketing consent, marketing-only, so a profile coming back at the address (same id
or another one) gets no marketing but still its transactional messages, until an opt-in of a
profile holding the address lifts it. Each test uses its own users and addresses."""
import pytest
import pytest_asyncio

from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import campaign_pb2_grpc as cpb_grpc
from protos.tailor.v1 import profile_pb2 as pb
from protos.tailor.v1 import profile_pb2_grpc as pb_grpc


@pytest_asyncio.fixture(scope="module")
async def stubs(tmp_path_factory):
    """(profile stub, campaign stub, server) of one server, with a marketing campaign and a
    transactional one on email ("m-email", "t-email"), on sms ("m-sms", "t-sms") and on push
    ("m-push", "t-push")."""
    from server.config import Settings
    from tests.conftest import serving
    tmp = tmp_path_factory.mktemp("keepout")
    settings = Settings(port=0, data_dir=tmp / "data", grace_seconds=1.0, lmdb_sync=False,
                        secrets_dir=tmp / "secrets",
                        consent_defaults={"email": "opt_out", "sms": "opt_out"})
    async with serving(settings) as (server, ch):
        campaigns = cpb_grpc.CampaignServiceStub(ch)
        for purpose in ("marketing", "transactional"):
            for channel in ("email", "sms", "push"):
                await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=cpb.CampaignSpec(
                    campaign_id=f"{purpose[0]}-{channel}", channel=channel, purpose=purpose,
                    policy="bernoulli_ts", variants=[cpb.Variant(id="a"), cpb.Variant(id="b")],
                    reward_window_seconds=3600)))
        yield pb_grpc.ProfileServiceStub(ch), campaigns, server


async def verdicts(campaigns, user: str, channel: str = "email") -> tuple[tuple, tuple]:
    """(suppressed, reason) of a marketing and of a transactional ChooseVariant on `channel`."""
    out = []
    for purpose in "mt":
        d = await campaigns.ChooseVariant(cpb.ChooseVariantRequest(
            campaign_id=f"{purpose}-{channel}", user_id=user))
        out.append((d.suppressed, d.reason))
    return tuple(out)


async def upsert(profiles, user: str, **attributes) -> None:
    await profiles.UpsertAttributes(pb.UpsertAttributesRequest(user_id=user, attributes=attributes))


async def consent(profiles, user: str, channel: str, opted_in: bool) -> None:
    await profiles.SetConsent(pb.SetConsentRequest(user_id=user, channel=channel,
                                                   opted_in=opted_in, source="test"))


async def erase(profiles, user: str) -> None:
    await profiles.DeleteProfile(pb.DeleteProfileRequest(user_id=user))


ALLOWED, KEPT_OUT = (False, ""), (True, "suppressed_address")


@pytest.mark.parametrize("again", ["same id", "new id"])
async def test_an_unsubscribe_outlives_the_erasure_for_marketing_until_an_opt_in(stubs, again):
    """Before: the erasure took the withdrawal with the profile, and the profile upserted
    again at the address was mailed marketing (opt_out takes a user without consent)."""
    profiles, campaigns, _ = stubs
    mail = f"leaver.{again[0]}@example.org"
    await upsert(profiles, f"leaver-{again}", email=mail)
    await consent(profiles, f"leaver-{again}", "email", False)
    await erase(profiles, f"leaver-{again}")
    listed = await profiles.CheckSuppression(pb.SuppressionAddress(email=mail.upper()))
    assert (listed.suppressed, listed.reason, listed.kind, listed.marketing_only) == \
        (True, "unsubscribe", "email", True)

    user = f"leaver-{again}" if again == "same id" else f"returner-{again}"
    await upsert(profiles, user, email=f" {mail.upper()} ")  # a CRM sync, spelled its way
    assert await verdicts(campaigns, user) == (KEPT_OUT, ALLOWED)  # a password reset goes

    await consent(profiles, user, "email", True)  # the user subscribes again
    assert await verdicts(campaigns, user) == (ALLOWED, ALLOWED)
    assert not (await profiles.CheckSuppression(pb.SuppressionAddress(email=mail))).suppressed


async def test_a_stop_outlives_the_erasure_on_sms_and_an_opt_in_elsewhere_lifts_nothing(stubs):
    profiles, campaigns, _ = stubs
    await upsert(profiles, "texter", phone="+447700900111", email="texter@example.org")
    await consent(profiles, "texter", "sms", False)
    await erase(profiles, "texter")
    await upsert(profiles, "texter", phone="+44 7700 900111", email="texter@example.org")
    assert await verdicts(campaigns, "texter", "sms") == (KEPT_OUT, ALLOWED)
    assert await verdicts(campaigns, "texter", "email") == (ALLOWED, ALLOWED)  # never withdrawn
    await consent(profiles, "texter", "email", True)  # another channel's opt-in
    await upsert(profiles, "other", email="o@example.org")
    await consent(profiles, "other", "sms", True)  # a profile without the number
    assert await verdicts(campaigns, "texter", "sms") == (KEPT_OUT, ALLOWED)
    removed = await profiles.RemoveSuppression(pb.SuppressionAddress(phone="+447700900111"))
    assert removed.removed  # the operator may take it off as any other entry
    assert await verdicts(campaigns, "texter", "sms") == (ALLOWED, ALLOWED)


@pytest.mark.parametrize("again", ["same id", "new id"])
async def test_a_push_opt_out_outlives_the_erasure_until_a_push_opt_in(stubs, again):
    """Push's marketing default is `opt_out`. Before: push tokens were not on the list at all,
    so the mobile backend upserting the token of an erased user who had opted out of push
    marketing (the app opened again) had them pushed marketing again."""
    profiles, campaigns, _ = stubs
    token = f"APA91b:Opted-Out_{again[0]}"
    await upsert(profiles, f"pusher-{again}", push_token=token)
    await consent(profiles, f"pusher-{again}", "push", False)
    await erase(profiles, f"pusher-{again}")

    user = f"pusher-{again}" if again == "same id" else f"push-returner-{again}"
    await upsert(profiles, user, push_token=f" {token}\n")
    assert await verdicts(campaigns, user, "push") == (KEPT_OUT, ALLOWED)
    listed = await profiles.CheckSuppression(pb.SuppressionAddress(push_token=token))
    assert (listed.suppressed, listed.reason, listed.kind, listed.marketing_only) == \
        (True, "unsubscribe", "push_token", True)
    other = pb.SuppressionAddress(push_token=token.lower())  # tokens are case-sensitive
    assert not (await profiles.CheckSuppression(other)).suppressed

    await consent(profiles, user, "push", True)  # the user allows marketing pushes again
    assert await verdicts(campaigns, user, "push") == (ALLOWED, ALLOWED)
    assert not (await profiles.CheckSuppression(pb.SuppressionAddress(push_token=token))).suppressed


async def test_a_user_who_never_withdrew_is_not_listed_at_erasure(stubs):
    profiles, campaigns, _ = stubs
    await upsert(profiles, "stayer", email="stayer@example.org", phone="+447700900222")
    await upsert(profiles, "joiner", email="joiner@example.org")
    await consent(profiles, "joiner", "email", True)
    for user in ("stayer", "joiner"):
        await erase(profiles, user)
    for address in (pb.SuppressionAddress(email="stayer@example.org"),
                    pb.SuppressionAddress(phone="+447700900222"),
                    pb.SuppressionAddress(email="joiner@example.org")):
        assert not (await profiles.CheckSuppression(address)).suppressed, address
    await upsert(profiles, "stayer", email="stayer@example.org")
    assert await verdicts(campaigns, "stayer") == (ALLOWED, ALLOWED)


async def test_a_bounce_listed_before_stays_an_entry_of_every_purpose(stubs):
    """The erasure of a user who unsubscribed leaves an address listed for every purpose (a
    bounce) as it is, and their opt-in after coming back lifts nothing of it."""
    profiles, campaigns, _ = stubs
    mail = "bounced@example.org"
    await profiles.AddSuppression(pb.AddSuppressionRequest(
        address=pb.SuppressionAddress(email=mail), reason="bounce"))
    await upsert(profiles, "bouncer", email=mail)
    await consent(profiles, "bouncer", "email", False)
    await erase(profiles, "bouncer")
    await upsert(profiles, "bouncer", email=mail)
    await consent(profiles, "bouncer", "email", True)
    listed = await profiles.CheckSuppression(pb.SuppressionAddress(email=mail))
    assert (listed.suppressed, listed.reason, listed.marketing_only) == (True, "bounce", False)
    assert await verdicts(campaigns, "bouncer") == (KEPT_OUT, KEPT_OUT)


async def test_the_access_export_names_the_entry_marketing_only(stubs):
    profiles, _, server = stubs
    await upsert(profiles, "exported", email="exported@example.org")
    await consent(profiles, "exported", "email", False)
    await erase(profiles, "exported")
    await upsert(profiles, "exported", email="exported@example.org")
    assert server.suppressions.export_user("exported")["suppression"] == [
        {"kind": "email", "reason": "unsubscribe", "purpose": "marketing",
         "timestamp": pytest.approx(
             (await profiles.CheckSuppression(pb.SuppressionAddress(
                 email="exported@example.org"))).timestamp)}]


async def test_an_opt_in_naming_no_source_lifts_nothing(stubs):
    """The lift stands in for the address owner's new consent: an opt-in that says not where
    it came from (source "") leaves no record of it, so the keep-out stays. Before: it lifted."""
    profiles, campaigns, _ = stubs
    mail = "unsourced@example.org"
    await upsert(profiles, "unsourced", email=mail)
    await consent(profiles, "unsourced", "email", False)
    await erase(profiles, "unsourced")
    await upsert(profiles, "unsourced", email=mail)
    await profiles.SetConsent(pb.SetConsentRequest(user_id="unsourced", channel="email",
                                                   opted_in=True))
    assert await verdicts(campaigns, "unsourced") == (KEPT_OUT, ALLOWED)
    assert (await profiles.CheckSuppression(pb.SuppressionAddress(email=mail))).marketing_only
    await consent(profiles, "unsourced", "email", True)  # source "test"
    assert await verdicts(campaigns, "unsourced") == (ALLOWED, ALLOWED)


async def test_a_lift_is_logged_without_the_address_nor_the_id(stubs, caplog):
    """Before: the unsubscribe undone by an opt-in left no trace but the SetConsent call."""
    profiles, _, _ = stubs
    await upsert(profiles, "lifted", email="lifted@example.org")
    await consent(profiles, "lifted", "email", False)
    await erase(profiles, "lifted")
    await upsert(profiles, "lifted", email="lifted@example.org")
    with caplog.at_level("INFO", logger="tailor.profiles"):
        await consent(profiles, "lifted", "email", True)
    [line] = [r.getMessage() for r in caplog.records if "keep-out" in r.getMessage()]
    assert "lifted 1 keep-out entry" in line and " on email " in line
    assert "lifted@" not in line and "lifted " not in line.split(" on ")[0]


async def test_a_lift_writes_an_audit_line_of_its_own(stubs):
    """Before: the audit log held the SetConsent call only, not that it undid an erased user's
    unsubscribe. The line names the user by keyed hash, the channel and how many entries; no
    address, no id."""
    import json
    profiles, _, server = stubs
    await upsert(profiles, "lift-audit-user", email="lift-audit@example.org")
    await consent(profiles, "lift-audit-user", "email", False)
    await erase(profiles, "lift-audit-user")
    await upsert(profiles, "lift-audit-user", email="lift-audit@example.org")

    def lifts() -> list[str]:  # the module's other tests lift too
        return [line for line in server.audit.tail(200) if '"keepout/lift"' in line]
    before = lifts()
    await consent(profiles, "lift-audit-user", "email", True)
    after = lifts()
    assert len(after) == len(before) + 1, after
    entry = json.loads(after[-1])
    assert (entry["channel"], entry["entries"], entry["status"]) == ("email", 1, "OK")
    assert entry["target"].startswith("u:") and "lift-audit" not in after[-1]
