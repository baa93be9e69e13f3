"""The suppression list through a real server: keyed hashes only, E.164 phones, bounce and
complaint events, erasure that leaves it, and no plaintext address anywhere in the data dir."""
import time

import grpc
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from protos.tailor.v1 import profile_pb2 as pb
from protos.tailor.v1 import profile_pb2_grpc as pb_grpc
from server.contact.addresses import legacy_forms, normalize
from server.errors import InvalidArgument
from server.store import keys


@pytest.fixture
def settings(tmp_path):
    """No bundle: the suppression list needs none."""
    from server.config import Settings
    return Settings(port=0, data_dir=tmp_path / "data", grace_seconds=1.0, lmdb_sync=False,
                    secrets_dir=tmp_path / "secrets")


@pytest.fixture
def stub(channel):
    return pb_grpc.ProfileServiceStub(channel)


def email(address: str) -> pb.SuppressionAddress:
    return pb.SuppressionAddress(email=address)


def phone(number: str) -> pb.SuppressionAddress:
    return pb.SuppressionAddress(phone=number)


def event(event_id: str, user: str, type: str) -> pb.Event:
    return pb.Event(event_id=event_id, user_id=user, type=type, timestamp=time.time() - 5)


@pytest.mark.parametrize("kind, given, stored", [
    ("email", "  Carol.Q+News@Example.ORG\n", "carol.q+news@example.org"),
    ("phone", "+1 (555) 010-0199", "+15550100199"),
    ("phone", " +44 7700.900123 ", "+447700900123"),
    ("phone", "0044 7700/900123", "+447700900123"),  # "00": the international prefix
    ("email", "Jose\u0301@Example.org", "jos\u00e9@example.org"),  # one é, however typed (NFC)
    ("email", " <Ann@Example.org> ", "ann@example.org"),  # as a bounce report may quote it
    ("email", "mailto:Ann@Example.org", "ann@example.org"),
    ("phone", "+44 (0)7700 900123", "+447700900123"),  # "(0)": the trunk 0 dialled at home
    ("phone", "0049(0)30 1234567", "+49301234567"),
    # an internationalized domain in its ASCII (xn--) form, as mail servers and ESPs report it
    ("email", "Ann@XN--Bcher-KVA.de", "ann@b\u00fccher.de"),
    ("email", "ann@mail.xn--strae-oqa.de", "ann@mail.stra\u00dfe.de"),  # IDNA 2008's ß
    ("email", "ann@xn--.org", "ann@xn--.org"),  # no valid encoding: kept as written
    # spaces and dashes as word processors and web pages write them (no-break spaces, the
    # narrow ones of French typesetting, non-breaking hyphens, en dashes)
    ("phone", "+44\u00a07700\u00a0900123", "+447700900123"),
    ("phone", "+33\u202f6\u202f12\u202f34\u202f56\u202f78", "+33612345678"),
    ("phone", "+1 555\u2011010\u20130199", "+15550100199"),
    # a push token is opaque: trimmed only, its case kept (APNs/FCM tokens are case-sensitive)
    ("push_token", " APA91b:AbC-dEf_12\n", "APA91b:AbC-dEf_12"),
    ("push_token", "\u00a0f0E1d2\t", "f0E1d2"),
])
def test_addresses_normalize_case_space_and_phone_punctuation_only(kind, given, stored):
    assert normalize(kind, given, 254) == stored


@pytest.mark.parametrize("given, reported", [
    ("+44 07700 900123", "+447700900123"),  # the UK's trunk 0, written bare
    ("0044 07700 900123", "+447700900123"),
    ("+49 030 1234567", "+49301234567"),  # Berlin
    ("+33 06 12 34 56 78", "+33612345678"),
    ("+61 0412 345 678", "+61412345678"),
    ("+31 06 1234 5678", "+31612345678"),
    ("+36 06 1 234 5678", "+3612345678"),  # Hungary's trunk prefix is 06
    ("+7 8 495 123 45 67", "+74951234567"),  # Russia's is 8
    ("+39 06 1234 5678", "+390612345678"),  # Rome: Italy's 0 is the number's own
    ("+39 0549 123456", "+390549123456"),
    ("+44 (0)7700 900123", "+447700900123"),
    ("+44 (0)20 7946 0000", "+442079460000"),  # "(0)": London's trunk 0, dialled at home
    ("+49 (0)30 1234567", "+49301234567"),  # Berlin's
    ("+39 (0)6 1234 5678", "+390612345678"),  # Rome's 0 is the number's: kept (was +3961...)
    ("0039 (0)6 1234 5678", "+390612345678"),
    ("+39 (0)345 678 9012", "+393456789012"),  # a mobile, stray "(0)": 0345... is a number too
    ("+34 (0)91 123 45 67", "+34911234567"),  # no Spanish number starts with 0: a stray "(0)"
    ("+44 00 7700 900123", "+44007700900123"),  # no carrier's either way: as it was
    ("+54 011 15 1234 5678", "+540111512345678"),  # the library rewrites more than the 0
])
def test_a_trunk_prefix_after_the_country_code_is_dropped_where_the_plan_has_one(given, reported):
    """"+44 07700 900123" was +4407700900123, a number no carrier reports: a STOP or bounce
    for +447700900123 did not match the profile's spelling."""
    assert normalize("phone", given, 254) == reported
    assert normalize("phone", reported, 254) == reported


@hsettings(max_examples=60, deadline=None)
@given(st.sampled_from(["+1", "+7", "+31", "+33", "+36", "+39", "+44", "+49", "+54", "+55",
                        "+61", "+353", "+378", "+880"]),
       st.sampled_from(["", "0", "00", "06", "8", "1", "015"]),
       st.from_regex(r"[0-9]{1,12}", fullmatch=True))
def test_a_normalized_number_is_its_own_form_and_its_listed_forms_are_its_alone(code, prefix,
                                                                              rest):
    """What normalize gives it gives again (stored hashes are of it), a number it folded is
    among the forms a list stamped 3 is searched under, and those forms are no other number's."""
    number = code + prefix + rest
    try:
        address = normalize("phone", number, 254)
    except InvalidArgument:
        return
    assert normalize("phone", address, 254) == address
    old = legacy_forms("phone", address, 3)
    assert number == address or number in old
    assert all(normalize("phone", form, 254) == address for form in old)


@pytest.mark.parametrize("kind, given", [
    ("email", "no-at-sign"), ("email", "two@@example.org"), ("email", "a b@example.org"),
    ("phone", "555-0100"), ("phone", "+0123456"), ("phone", "+1234567890123456"),
    ("phone", "+1555x0100"), ("phone", "07700 900123"), ("phone", "030 1234567"),
    ("push_token", "APA91b AbC"), ("push_token", "APA91b\x1bAbC"), ("push_token", "t" * 255)])
def test_what_is_no_address_is_refused_naming_the_field_not_the_value(kind, given):
    with pytest.raises(InvalidArgument) as err:
        normalize(kind, given, 254, f"address.{kind}")
    assert err.value.field == f"address.{kind}" and given.strip() not in str(err.value)


@pytest.mark.parametrize("given, problem", [
    ("", "it is empty"), (" \t ", "it is empty"),
    ("APA91b Tok", "it contains whitespace, U+0020, at character 7"),
    ("APA91b\u2003Tok", "it contains whitespace, U+2003, at character 7"),
    ("APA91b\nTok", "it contains a control character (0x00-0x1F or 0x7F), U+000A, at character 7"),
    ("APA91b\u200bTok", "it contains a format character (U+200B), at character 7")])
def test_a_push_token_is_refused_saying_what_is_wrong_and_where(given, problem):
    """A push token is listed only as one word, as the provider issued it: one with whitespace
    or a control or format character inside is another string than any token pushed to."""
    with pytest.raises(InvalidArgument) as err:
        normalize("push_token", given, 254, "address.push_token")
    assert str(err.value) == f"address.push_token: is not a push token: {problem}" + (
        "" if given.strip() == "" else " (a token is one word, as the push provider issued it)")


async def test_add_check_remove_by_email_and_e164_phone(stub):
    added = await stub.AddSuppression(pb.AddSuppressionRequest(
        address=email("  Carol.Q+News@Example.ORG "), reason="complaint"))
    assert (added.suppressed, added.reason, added.kind) == (True, "complaint", "email")
    found = await stub.CheckSuppression(email("carol.q+news@example.org"))
    assert found.suppressed and found.reason == "complaint" and found.timestamp == added.timestamp
    # Dots and +tags name other mailboxes: not suppressed.
    assert not (await stub.CheckSuppression(email("carolq+news@example.org"))).suppressed
    assert not (await stub.CheckSuppression(email("carol.q@example.org"))).suppressed

    await stub.AddSuppression(pb.AddSuppressionRequest(address=phone("+1 (555) 010-0199")))
    found = await stub.CheckSuppression(phone("+15550100199"))
    assert (found.suppressed, found.reason, found.kind) == (True, "manual", "phone")
    assert (await stub.RemoveSuppression(phone("+1-555-010-0199"))).removed
    assert not (await stub.RemoveSuppression(phone("+15550100199"))).removed
    assert not (await stub.CheckSuppression(phone("+15550100199"))).suppressed


async def test_a_retried_removal_answers_the_address_is_off_the_list(stub):
    """A caller whose RemoveSuppression answer was lost retries: the retry says the address is
    off the list (`unsuppressed`), though not by it (`removed`); one never listed is off too.
    Before, the retry could only answer `removed: false`, as for an address never listed."""
    await stub.AddSuppression(pb.AddSuppressionRequest(address=email("eve@example.org")))
    first = await stub.RemoveSuppression(email("eve@example.org"))
    retry = await stub.RemoveSuppression(email("Eve@Example.org "))
    assert (first.removed, first.unsuppressed) == (True, True)
    assert (retry.removed, retry.unsuppressed) == (False, True)
    assert not (await stub.CheckSuppression(email("eve@example.org"))).suppressed
    never = await stub.RemoveSuppression(phone("+15550100111"))
    assert (never.removed, never.unsuppressed) == (False, True)


async def test_a_number_written_with_its_trunk_zero_is_the_same_number(stub, tailor_server):
    await stub.AddSuppression(pb.AddSuppressionRequest(address=phone("+44 (0)7700 900123")))
    assert (await stub.CheckSuppression(phone("+447700900123"))).suppressed
    meta = {"attributes": {"phone": "+44 7700 900123"}}  # the user's profile, written bare
    assert tailor_server.suppressions.reason(meta, "sms") == "suppressed_address"
    assert (await stub.RemoveSuppression(phone("+447700900123"))).removed
    assert not (await stub.CheckSuppression(phone("+44 (0)7700 900123"))).suppressed


async def test_an_accented_address_is_one_address_however_its_letters_are_composed(
        stub, tailor_server):
    """"josé" as one code point (NFC) or as e + a combining accent (NFD, as macOS and some
    forms send it): the same mailbox."""
    composed, decomposed = "jos\u00e9@ex\u00e4mple.org", "jose\u0301@exa\u0308mple.org"
    await stub.AddSuppression(pb.AddSuppressionRequest(address=email(composed), reason="complaint"))
    assert (await stub.CheckSuppression(email(decomposed))).suppressed
    meta = {"attributes": {"email": decomposed}}
    assert tailor_server.suppressions.reason(meta, "email") == "suppressed_address"
    assert (await stub.RemoveSuppression(email(decomposed))).removed
    assert not (await stub.CheckSuppression(email(composed))).suppressed


async def test_an_address_in_angle_brackets_or_a_mailto_link_is_the_address(stub, tailor_server):
    await stub.AddSuppression(pb.AddSuppressionRequest(address=email("<ann@example.org>"),
                                                       reason="bounce"))
    assert (await stub.CheckSuppression(email("ann@example.org"))).suppressed
    meta = {"attributes": {"email": "Ann@example.org"}}
    assert tailor_server.suppressions.reason(meta, "email") == "suppressed_address"


async def test_an_internationalized_domain_is_one_address_in_either_form(stub, tailor_server):
    """A bounce report (or the delivery-report webhook) names `ann@xn--bcher-kva.de`; the
    profile holds `ann@b\u00fccher.de`, the same mailbox. The two were two addresses: the
    bounced address stayed mailable."""
    await stub.AddSuppression(pb.AddSuppressionRequest(address=email("ann@xn--bcher-kva.de"),
                                                       reason="bounce"))
    assert (await stub.CheckSuppression(email("ann@b\u00fccher.de"))).suppressed
    meta = {"attributes": {"email": "Ann@B\u00fccher.de"}}
    assert tailor_server.suppressions.reason(meta, "email") == "suppressed_address"
    await stub.AddSuppression(pb.AddSuppressionRequest(address=email("bo@b\u00fccher.de")))
    assert (await stub.CheckSuppression(email("bo@xn--bcher-kva.de"))).suppressed
    assert not (await stub.CheckSuppression(email("ann@bucher.de"))).suppressed


async def test_an_ascii_domain_entry_listed_before_the_rule_is_still_found(tailor_server,
                                                                           settings):
    """A list stamped by the Tailor before this rule (spelling 2) may hold an entry hashed
    under the xn-- form: every spelling of the address still finds and removes it."""
    server = await _restarted_with(tailor_server, settings,
                                   [("email", "ann@xn--bcher-kva.de", "bounce")], b"2")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = pb_grpc.ProfileServiceStub(channel)
            for spelling in ("ann@b\u00fccher.de", "ann@xn--bcher-kva.de"):
                assert (await stub.CheckSuppression(email(spelling))).suppressed, spelling
            meta = {"attributes": {"email": "ann@b\u00fccher.de"}}
            assert server.suppressions.reason(meta, "email") == "suppressed_address"
            assert (await stub.RemoveSuppression(email("ann@b\u00fccher.de"))).removed
            assert not (await stub.CheckSuppression(email("ann@xn--bcher-kva.de"))).suppressed
    finally:
        await server.stop(grace=0.1)


async def test_a_number_written_with_unicode_spaces_or_dashes_is_the_number(stub, tailor_server):
    """A STOP listed +447700900123; the profile's `phone`, pasted from a web page, holds
    no-break spaces. It was no number to the list (NotAnAddress: nothing looked up), so the
    user kept being texted; CheckSuppression of that spelling was INVALID_ARGUMENT."""
    await stub.AddSuppression(pb.AddSuppressionRequest(address=phone("+447700900123"),
                                                       reason="unsubscribe"))
    pasted = "+44\u00a07700\u00a0900123"
    assert (await stub.CheckSuppression(phone(pasted))).suppressed
    meta = {"attributes": {"phone": pasted}}
    assert tailor_server.suppressions.reason(meta, "sms") == "suppressed_address"


async def test_a_number_listed_with_its_trunk_prefix_before_the_rule_is_still_found(
        tailor_server, settings):
    """A list stamped by the Tailor before the bare trunk prefix rule (spelling 3) holds
    "+44 07700 900123" as +4407700900123: the carrier's +447700900123 (a STOP, a bounce) and
    the profile's spelling find and remove it; Rome's number is not folded."""
    server = await _restarted_with(tailor_server, settings, [
        ("phone", listed, "unsubscribe") for listed in ("+4407700900123", "+390612345678")], b"3")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = pb_grpc.ProfileServiceStub(channel)
            for spelling in ("+447700900123", "+44 07700 900123", "+44 (0)7700 900123",
                             "+39 06 1234 5678"):
                assert (await stub.CheckSuppression(phone(spelling))).suppressed, spelling
            meta = {"attributes": {"phone": "+447700900123"}}
            assert server.suppressions.reason(meta, "sms") == "suppressed_address"
            assert (await stub.RemoveSuppression(phone("+447700900123"))).removed
            assert not (await stub.CheckSuppression(phone("+44 07700 900123"))).suppressed
            assert not (await stub.CheckSuppression(phone("+39 6 1234 5678"))).suppressed
    finally:
        await server.stop(grace=0.1)


async def test_a_number_listed_before_the_zero_followed_the_plans_is_still_found(
        tailor_server, settings):
    """A list stamped by the Tailor before the "(0)" followed the numbering plans (spelling 4)
    holds "+39 (0)6 1234 5678" as +39612345678 (Italy's own 0 dropped): Rome's number, in the
    carrier's form or as written, finds and removes it; a London number is one key as ever.
    A mobile's entry (+393456789012) is not taken for the Bergamo fixed line +3903456789012:
    that form is a number of its own, and no "(0)" was ever read as it."""
    server = await _restarted_with(tailor_server, settings, [
        ("phone", "+39612345678", "unsubscribe"), ("phone", "+393456789012", "complaint"),
        ("phone", "+3903421234567", "unsubscribe")], b"4")  # as spelling 5 listed +39 (0)342...
    try:
        assert server.suppressions.legacy
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = pb_grpc.ProfileServiceStub(channel)
            for spelling in ("+390612345678", "+39 (0)6 1234 5678", "+39 06 1234 5678"):
                assert (await stub.CheckSuppression(phone(spelling))).suppressed, spelling
            meta = {"attributes": {"phone": "+39 (0)6 1234 5678"}}
            assert server.suppressions.reason(meta, "sms") == "suppressed_address"
            assert server.suppressions.lookup_keys("phone", "+44 (0)20 7946 0000") == \
                server.suppressions._keys("phone", "+442079460000")
            # a mobile's entry is not a fixed line's whose 0 it lacks: both are numbers
            assert (await stub.CheckSuppression(phone("+39 (0)345 678 9012"))).suppressed
            assert not (await stub.CheckSuppression(phone("+39 0345 678 9012"))).suppressed
            # an entry the spelling-5 Tailor added to this list (it keeps its stamp)
            assert (await stub.CheckSuppression(phone("+39 (0)342 123 4567"))).suppressed
            assert (await stub.RemoveSuppression(phone("+39 06 1234 5678"))).removed
            assert not (await stub.CheckSuppression(phone("+39 (0)6 1234 5678"))).suppressed
    finally:
        await server.stop(grace=0.1)


async def test_a_mobile_listed_with_a_zero_it_does_not_have_is_still_found(tailor_server,
                                                                         settings):
    """A list stamped 5 (the Tailor whose "(0)" kept the 0 wherever the number with it was
    valid) holds "+39 (0)345 678 9012" as +3903456789012; today that is the mobile
    +393456789012 again, and its entry is found in either spelling (a fixed line's entry
    under that form is taken for the mobile's too: never contacting is the safe side)."""
    server = await _restarted_with(tailor_server, settings, [
        ("phone", "+3903456789012", "unsubscribe")], b"5")
    try:
        assert server.suppressions.legacy
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = pb_grpc.ProfileServiceStub(channel)
            for spelling in ("+393456789012", "+39 (0)345 678 9012", "+39 0345 678 9012"):
                assert (await stub.CheckSuppression(phone(spelling))).suppressed, spelling
            assert server.suppressions.lookup_keys("phone", "+44 (0)20 7946 0000") == \
                server.suppressions._keys("phone", "+442079460000")
    finally:
        await server.stop(grace=0.1)

# As listed before the bracket, NFC, "(0)" and IDN rules (hashed in the form given), and the
# spellings a profile or a lookup holds today.
LISTED_BEFORE = [
    ("email", "<bo@example.org>", ["bo@example.org", "Bo@Example.org", "<bo@example.org>"]),
    ("email", "<dee@xn--bcher-kva.de>", ["dee@b\u00fccher.de", "dee@xn--bcher-kva.de"]),
    ("email", "mailto:cy@example.org", ["cy@example.org", "mailto:<cy@example.org>"]),
    ("email", "jose\u0301@x.org", ["jos\u00e9@x.org", "jose\u0301@x.org"]),
    ("phone", "+4407700900123", ["+447700900123", "+44 (0)7700 900123"]),
    ("phone", "+104155550100", ["+14155550100"]),  # a 1-digit country code
    ("phone", "+35301234567", ["+3531234567"]),  # a 3-digit one
]
CHANNEL = {"email": "email", "phone": "sms"}


async def _list_as_an_older_tailor_did(tailor_server, settings):
    """Stop the server, write the entries as a Tailor without the spelling stamp wrote them
    (hashed in the form given, no stamp), and start it again on the same data dir."""
    return await _restarted_with(tailor_server, settings, [
        (kind, listed, "complaint") for kind, listed, _ in LISTED_BEFORE], None)


async def _restarted_with(tailor_server, settings, listed, spelling: bytes | None):
    """Write `listed` ((kind, address as an older Tailor hashed it, reason) each) and the
    list's spelling stamp (None: none, as before stamps), stop the server and start another
    on the same data dir: the server."""
    from server.app import TailorServer
    sup, store = tailor_server.suppressions, tailor_server.store
    for kind, address, reason in listed:
        store.put("suppression", sup._keys(kind, address)[0],
                  b'{"kind": "%s", "reason": "%s", "timestamp": 1.0}' % (kind.encode(),
                                                                          reason.encode()))
    if spelling is None:
        store.delete("meta", keys.SUPPRESSION_SPELLING)
    else:
        store.put("meta", keys.SUPPRESSION_SPELLING, spelling)
    await tailor_server.stop(grace=0.1)
    server = TailorServer(settings)
    await server.start()
    return server


async def test_entries_listed_before_the_spelling_rules_are_found_by_todays_spellings(
        tailor_server, settings):
    """An upgraded list: each old entry is found (and removed) through every spelling of its
    address, the profile's canonical one included (the decision path's lookup)."""
    assert not tailor_server.suppressions.legacy  # a new list: no older entries to look for
    server = await _list_as_an_older_tailor_did(tailor_server, settings)
    try:
        sup = server.suppressions
        assert sup.legacy
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = pb_grpc.ProfileServiceStub(channel)
            for kind, listed, spellings in LISTED_BEFORE:
                address = pb.SuppressionAddress(**{kind: spellings[0]})
                for spelling in spellings:
                    found = await stub.CheckSuppression(pb.SuppressionAddress(**{kind: spelling}))
                    assert (found.suppressed, found.reason) == (True, "complaint"), (listed, spelling)
                    meta = {"attributes": {kind: spelling}}
                    assert sup.reason(meta, CHANNEL[kind]) == "suppressed_address", (listed, spelling)
                assert (await stub.RemoveSuppression(address)).removed
                assert not (await stub.CheckSuppression(address)).suppressed
            # Other people's numbers and mailboxes stay contactable.
            for kind, other in [("email", "bo@example.com"), ("phone", "+447700900124")]:
                assert not (await stub.CheckSuppression(pb.SuppressionAddress(**{kind: other}))).suppressed
    finally:
        await server.stop(grace=0.1)


def test_a_list_is_stamped_once_and_an_older_lists_stamp_stays(tmp_path):
    from server.contact.suppression import Suppressions
    from server.security.secrets import Keyring
    from server.store import Store
    ring = Keyring.generate("suppression")
    store = Store(tmp_path / "data")
    try:
        assert not Suppressions(store, ring).legacy
        store.put("suppression", b"k", b'{"kind": "email", "reason": "manual", "timestamp": 1.0}')
        assert not Suppressions(store, ring).legacy  # stamped when empty: entries are new
        store.delete("meta", keys.SUPPRESSION_SPELLING)
        assert Suppressions(store, ring).legacy
        store.delete("suppression", b"k")
        assert Suppressions(store, ring).legacy  # an older list's stamp is kept
    finally:
        store.close()


@pytest.mark.parametrize("request_, field", [
    (pb.AddSuppressionRequest(address=phone("555-0100")), "address.phone"),
    (pb.AddSuppressionRequest(address=email("nobody")), "address.email"),
    (pb.AddSuppressionRequest(), "address"),
    (pb.AddSuppressionRequest(address=email("a@b.org"), reason="spite"), "reason"),
    (pb.AddSuppressionRequest(address=email("a" * 300 + "@b.org")), "address.email"),
    (pb.AddSuppressionRequest(address=pb.SuppressionAddress(push_token="555-0100 x")),
     "address.push_token"),
    (pb.AddSuppressionRequest(address=pb.SuppressionAddress(push_token="5" * 1025)),
     "address.push_token"),
])
async def test_bad_suppression_requests_are_invalid_naming_the_field(module_bare_server, request_,
                                                                    field):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await pb_grpc.ProfileServiceStub(module_bare_server[1]).AddSuppression(request_)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(field + ":")
    assert "555-0100" not in err.value.details()


async def test_decision_path_reason_reads_the_users_address_attribute(stub, tailor_server):
    await stub.AddSuppression(pb.AddSuppressionRequest(address=email("eve@example.org")))
    await stub.AddSuppression(pb.AddSuppressionRequest(address=phone("+33612345678")))
    reason = tailor_server.suppressions.reason
    meta = {"attributes": {"email": " EVE@example.org", "phone": "+33 6 12 34 56 78"}}
    assert reason(meta, "email") == "suppressed_address"
    assert reason(meta, "sms") == "suppressed_address"
    assert reason(meta, "push") is None and reason(None, "email") is None  # no push_token
    await stub.AddSuppression(pb.AddSuppressionRequest(
        address=pb.SuppressionAddress(push_token="fcm:Tok-1")))
    assert reason({"attributes": {"push_token": " fcm:Tok-1\n"}}, "push") == "suppressed_address"
    assert reason({"attributes": {"push_token": "fcm:tok-1"}}, "push") is None  # another token
    assert reason({"attributes": {"email": "other@example.org"}}, "email") is None
    assert reason({"attributes": {"phone": "06 12 34 56 78"}}, "sms") is None  # not E.164
    with tailor_server.store.read() as txn:  # the caller's snapshot
        assert reason(meta, "email", txn) == "suppressed_address"


async def test_bounces_and_complaints_suppress_the_address_and_outlive_erasure(
        stub, tailor_server, settings):
    given = {"frank": ("Frank.Bounce+1@Example.net", "+49 151 2345 6789"),
             "gina": ("gina.complains@example.com", "")}
    for user, (mail, tel) in given.items():
        await stub.UpsertAttributes(pb.UpsertAttributesRequest(
            user_id=user, attributes={"email": mail, **({"phone": tel} if tel else {})}))
    added = "Added.Only@Example.org"
    await stub.AddSuppression(pb.AddSuppressionRequest(address=email(added), reason="bounce"))
    reply = await stub.TrackEvents(pb.TrackEventsRequest(events=[
        event("b1", "frank", "email_bounce"), event("b2", "frank", "sms_bounce"),
        event("c1", "gina", "email_complaint"), event("c2", "gina", "sms_bounce")]))
    assert reply.accepted == 4 and not reply.rejected  # gina has no phone: nothing to list
    profile = await stub.GetProfile(pb.GetProfileRequest(user_id="frank"))
    assert profile.features.counts["email_bounce/email"] == 1
    assert profile.features.counts["sms_bounce/sms"] == 1
    for user in given:
        await stub.DeleteProfile(pb.DeleteProfileRequest(user_id=user))

    checks = [(email("frank.bounce+1@example.net"), "bounce"), (phone("+4915123456789"), "bounce"),
              (email("gina.complains@example.com"), "complaint"), (email(added), "bounce")]
    for address, reason in checks:
        found = await stub.CheckSuppression(address)
        assert found.suppressed and found.reason == reason, address

    await tailor_server.stop(grace=0.1)
    from server.store.compaction import compact
    compact(settings.data_dir)  # freed pages of the erased profiles go
    texts = [t for mail, tel in given.values() for t in (mail, mail.lower(), tel) if t]
    texts += [added, added.lower(), "+4915123456789", "151 2345 6789"]
    needles = {t.encode(enc) for t in texts
               for enc in ("utf-8", "utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be")}
    files = [p for p in settings.data_dir.rglob("*") if p.is_file()]
    assert any(p.name == "data.mdb" for p in files)
    for path in files:
        raw = path.read_bytes()
        assert not [n for n in needles if n in raw], path


async def test_a_restarted_server_still_finds_the_address(settings):
    from server.app import TailorServer
    for expected in (False, True):
        server = TailorServer(settings)
        await server.start()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            s = pb_grpc.ProfileServiceStub(ch)
            if not expected:
                await s.AddSuppression(pb.AddSuppressionRequest(address=email("kept@example.org")))
            else:
                assert (await s.CheckSuppression(email("kept@example.org"))).suppressed
        await server.stop(grace=0.1)
