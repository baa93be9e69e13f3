"""One-click unsubscribe over real HTTP (aiohttp client) against a real server."""
import logging
from html.parser import HTMLParser

import aiohttp
import pytest

from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import messaging_pb2 as mpb
from protos.tailor.v1 import profile_pb2 as ppb
from server.store import keys
from tests.conftest import store_mentions

from .conftest import email_spec


class _Form(HTMLParser):
    """The page's form: its method, action and fields, as a browser would submit them."""

    def __init__(self):
        super().__init__()
        self.method, self.action, self.fields, self.buttons = None, None, {}, 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self.method, self.action = a.get("method", "get").lower(), a.get("action", "")
        elif tag == "input" and "name" in a:
            self.fields[a["name"]] = a.get("value", "")
        elif tag == "button" and a.get("type", "submit") == "submit":
            self.buttons += 1


async def consent(profiles, user: str):
    got = await profiles.GetProfile(ppb.GetProfileRequest(user_id=user))
    return got.consent["email"].opted_in if "email" in got.consent else None


@pytest.fixture
async def compose(campaigns, messaging, profiles):
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))

    async def make(user: str) -> mpb.Message:
        await profiles.SetConsent(ppb.SetConsentRequest(user_id=user, channel="email",
                                                        opted_in=True, source="signup"))
        return await messaging.ComposeMessage(mpb.ComposeMessageRequest(campaign_id="mail",
                                                                        user_id=user))
    return make


async def test_the_page_shows_one_button_whose_form_opts_the_user_out(compose, profiles):
    url = (await compose("u1")).unsubscribe_url
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as page:
            assert page.status == 200 and page.content_type == "text/html"
            assert "no-referrer" in page.headers["Referrer-Policy"]
            form = _Form()
            form.feed(await page.text())
        assert (form.method, form.buttons) == ("post", 1)
        assert form.fields == {"List-Unsubscribe": "One-Click"}
        assert await consent(profiles, "u1") is True  # GET changes nothing
        async with http.post(url + form.action, data=form.fields) as done:
            assert done.status == 200 and "unsubscribed" in await done.text()
    assert await consent(profiles, "u1") is False


async def test_one_click_post_is_immediate_and_idempotent(compose, profiles, caplog):
    caplog.set_level("INFO")
    msg = await compose("user-two@example.com")
    url = msg.headers["List-Unsubscribe"].strip("<>")
    assert url == msg.unsubscribe_url
    async with aiohttp.ClientSession() as http:
        for _ in range(2):
            async with http.post(url, data="List-Unsubscribe=One-Click", headers={
                    "Content-Type": "application/x-www-form-urlencoded"}) as res:
                assert res.status == 200
            assert await consent(profiles, "user-two@example.com") is False
    assert any("unsubscribed" in r.getMessage() for r in caplog.records)
    assert not any("user-two" in r.getMessage() for r in caplog.records)  # user_ref only


async def test_a_forged_or_bare_request_gets_400_and_changes_nothing(compose, profiles):
    url = (await compose("u3")).unsubscribe_url
    base, token = url.rsplit("/", 1)
    version, body, tag, kid = token.split(".")
    forged = f"{base}/{version}.{body[:-2] + ('AA' if body[-2:] != 'AA' else 'BB')}.{tag}.{kid}"
    async with aiohttp.ClientSession() as http:
        for bad in (forged, f"{base}/garbage", f"{base}/{version}.{body}.{tag}.nokey"):
            async with http.get(bad) as res:
                assert res.status == 400 and "not valid" in await res.text()
            async with http.post(bad, data={"List-Unsubscribe": "One-Click"}) as res:
                assert res.status == 400
        async with http.post(url, data={"other": "x"}) as res:  # a valid token without the body
            assert res.status == 400
    assert await consent(profiles, "u3") is True


async def test_after_a_one_click_post_the_next_compose_is_suppressed_and_a_forged_one_changes_nothing(
        compose, messaging):
    """Issue 16's acceptance: the unsubscribe POST opts the user out and the next
    ComposeMessage for that user and campaign is suppressed (no_consent); a forged token
    changes nothing."""
    async def again() -> mpb.Message:  # no new opt-in, unlike `compose`
        return await messaging.ComposeMessage(mpb.ComposeMessageRequest(campaign_id="mail",
                                                                        user_id="u4"))

    first = await compose("u4")
    assert not first.suppressed and first.parts["subject"] == "Hi there"
    url = first.headers["List-Unsubscribe"].strip("<>")
    base, token = url.rsplit("/", 1)
    version, body, tag, kid = token.split(".")
    forged = f"{base}/{version}.{body}.{tag[:-2] + ('AA' if tag[-2:] != 'AA' else 'BB')}.{kid}"
    one_click = {"Content-Type": "application/x-www-form-urlencoded"}
    async with aiohttp.ClientSession() as http:
        async with http.post(forged, data="List-Unsubscribe=One-Click", headers=one_click) as res:
            assert res.status == 400
        still = await again()
        assert (still.suppressed, still.reason, still.variant_id) == (False, "", "v1")
        assert still.parts["subject"] == "Hi there" and still.decision_id != first.decision_id
        async with http.post(url, data="List-Unsubscribe=One-Click", headers=one_click) as res:
            assert res.status == 200
    after = await again()
    assert (after.suppressed, after.reason, after.holdout) == (True, "no_consent", False)
    assert after.decision_id and not after.variant_id and not after.parts and not after.headers
    assert not after.unsubscribe_url


async def test_an_erased_users_old_link_does_not_bring_the_profile_back(compose, profiles):
    """An unsubscribe link lives on in old emails. Clicked after DeleteProfile, it opted the
    user out by writing their consent, which re-created a profile under the erased user id
    (the id and a consent history stored again). There is nothing left to opt out of: the page
    says unsubscribed and nothing is written. A user who came back since is opted out."""
    import grpc
    old = (await compose("erased-1")).unsubscribe_url
    await profiles.DeleteProfile(ppb.DeleteProfileRequest(user_id="erased-1"))
    async with aiohttp.ClientSession() as http:
        async with http.post(old, data={"List-Unsubscribe": "One-Click"}) as done:
            assert done.status == 200 and "unsubscribed" in await done.text()
    with pytest.raises(grpc.RpcError) as err:
        await profiles.GetProfile(ppb.GetProfileRequest(user_id="erased-1"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    back = (await compose("erased-2")).unsubscribe_url  # erased, then back (a new profile)
    await profiles.DeleteProfile(ppb.DeleteProfileRequest(user_id="erased-2"))
    await profiles.SetConsent(ppb.SetConsentRequest(user_id="erased-2", channel="email",
                                                    opted_in=True, source="signup again"))
    async with aiohttp.ClientSession() as http:
        async with http.post(back, data={"List-Unsubscribe": "One-Click"}) as done:
            assert done.status == 200
    assert await consent(profiles, "erased-2") is False


async def test_a_malformed_one_click_body_is_400_never_a_server_error(compose, profiles, caplog):
    """Anyone holding a link (or guessing none: the token is checked first, so a real one) sent
    a body aiohttp could not parse as a form (multipart without a boundary or cut short, an
    unknown charset, bytes that are not UTF-8): 500 and an ERROR traceback per request, a log
    any client could flood. Now 400 naming the body, nothing written, nothing logged as an
    error; a well-formed multipart one-click still opts the user out."""
    url = (await compose("u5")).unsubscribe_url
    one_click = b"List-Unsubscribe=One-Click"
    bad = [("multipart/form-data", one_click),
           ("multipart/form-data; boundary=x", b'--x\r\nContent-Disposition: form-data; name="a"'),
           ("application/x-www-form-urlencoded; charset=no-such-charset", one_click),
           ("application/x-www-form-urlencoded", b"\xff\xfe=\xff")]
    async with aiohttp.ClientSession() as http:
        for content_type, body in bad:
            async with http.post(url, data=body, headers={"Content-Type": content_type}) as res:
                assert (res.status, content_type) == (400, content_type)
                assert "body" in await res.text()
        async with http.post(url, data=one_click, headers={  # declared gzip, and not
                "Content-Type": "application/x-www-form-urlencoded",
                "Content-Encoding": "gzip"}) as res:
            assert res.status == 400 and "body" in await res.text()
        assert await consent(profiles, "u5") is True
        form = aiohttp.FormData()
        form.add_field("List-Unsubscribe", "One-Click", content_type="text/plain")  # multipart
        async with http.post(url, data=form) as res:
            assert res.status == 200
    assert await consent(profiles, "u5") is False
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_resending_a_one_click_unsubscribe_keeps_the_consent_history(compose, profiles):
    """"Re-sending is harmless" (docs/messages.md), but each POST appended a consent change: 64
    POSTs of one link (anyone holding the email, a client retrying) pushed the user's signup
    opt-in, the record of when and where they consented, out of the history
    (`limits.consent_history`). A change the current state already says (same choice, same
    source) now adds no history entry; the state keeps the latest time."""
    url = (await compose("u6")).unsubscribe_url
    async with aiohttp.ClientSession() as http:
        for _ in range(70):
            async with http.post(url, data={"List-Unsubscribe": "One-Click"}) as res:
                assert res.status == 200
    got = await profiles.GetProfile(ppb.GetProfileRequest(user_id="u6"))
    assert [(c.opted_in, c.source) for c in got.consent_history] == [
        (True, "signup"), (False, "one-click unsubscribe (mail)")]
    assert got.consent["email"].opted_in is False
    assert got.consent["email"].timestamp >= got.consent_history[-1].timestamp


async def test_a_click_racing_delete_profile_does_not_bring_the_profile_back(
        tailor_server, compose, profiles):
    """The endpoint asked "erased, and no profile since?" in one read and wrote the opt-out in
    another transaction: a DeleteProfile that committed in between had its user re-created by
    the click (the opt-out is dated now, after the erasure). The check is now made in the
    opt-out's write transaction."""
    import grpc
    url = (await compose("racing-1")).unsubscribe_url
    public = tailor_server.public
    writer = public.consent

    class EraseFirst:  # DeleteProfile commits after the endpoint's reads, before its write
        async def set_consent(self, *args, **kw):
            await profiles.DeleteProfile(ppb.DeleteProfileRequest(user_id="racing-1"))
            return await writer.set_consent(*args, **kw)

    public.consent = EraseFirst()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(url, data={"List-Unsubscribe": "One-Click"}) as done:
                assert done.status == 200 and "unsubscribed" in await done.text()
    finally:
        public.consent = writer
    with pytest.raises(grpc.RpcError) as err:
        await profiles.GetProfile(ppb.GetProfileRequest(user_id="racing-1"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def one_click(url: str) -> int:
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data={"List-Unsubscribe": "One-Click"}) as res:
            return res.status


async def test_a_one_click_unsubscribe_stops_marketing_to_every_profile_emailed_at_the_address(
        compose, campaigns, messaging, profiles, tailor_server):
    """Two profiles hold one inbox (a guest checkout and an account; the case differs): both
    were mailed. Its owner clicks one message's link: the other profile stayed opted in, and
    the next campaign mailed the same inbox through it. The owner asked the address to get no
    more marketing email: every profile emailed at it is opted out (as a STOP does for a
    shared number); receipts (transactional) still go, and other addresses are untouched."""
    for user, address in (("guest-1", "Ann@Example.org"), ("account-1", "ann@example.org "),
                          ("other-1", "bob@example.org")):
        await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
            user_id=user, attributes={"email": address}))
    await compose("account-1")
    await compose("other-1")
    link = (await compose("guest-1")).unsubscribe_url
    assert await one_click(link) == 200
    assert [await consent(profiles, u) for u in ("guest-1", "account-1", "other-1")] == \
        [False, False, True]
    again = await messaging.ComposeMessage(mpb.ComposeMessageRequest(campaign_id="mail",
                                                                     user_id="account-1"))
    assert again.suppressed and again.reason == "no_consent"
    got = await profiles.GetProfile(ppb.GetProfileRequest(user_id="account-1"))
    assert got.consent["email"].source == "one-click unsubscribe (mail)"
    spec = email_spec("receipt", subject="Your order")
    spec.purpose = "transactional"
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=spec))
    receipt = await messaging.ComposeMessage(mpb.ComposeMessageRequest(campaign_id="receipt",
                                                                       user_id="account-1"))
    assert not receipt.suppressed and receipt.parts["subject"] == "Your order"
    store = tailor_server.store  # the index holds keyed hashes and sealed ids, and is erased
    assert store_mentions(store, b"ann@example.org") == store_mentions(store, b"guest-1") == []
    assert [len(store.scan("meta", p)) for p in (keys.EMAIL_PREFIX, keys.EMAIL_USER_PREFIX)] \
        == [3, 3]
    await profiles.DeleteProfile(ppb.DeleteProfileRequest(user_id="guest-1"))
    assert [len(store.scan("meta", p)) for p in (keys.EMAIL_PREFIX, keys.EMAIL_USER_PREFIX)] \
        == [2, 2]


async def test_a_one_click_unsubscribe_reaches_a_profile_holding_the_address_never_mailed(
        compose, messaging, profiles):
    """A guest checkout holds the account's inbox (UpsertAttributes) and opted in, but was
    never mailed. The owner clicks the account's link: the guest was not in the address index
    (written only when a message was composed), stayed opted in, and the next campaign mailed
    the inbox through it. The index is written with the attribute too."""
    for user in ("account-3", "guest-3"):
        await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
            user_id=user, attributes={"email": "Cy@Example.org"}))
    await profiles.SetConsent(ppb.SetConsentRequest(user_id="guest-3", channel="email",
                                                    opted_in=True, source="signup"))
    assert await one_click((await compose("account-3")).unsubscribe_url) == 200
    assert [await consent(profiles, u) for u in ("account-3", "guest-3")] == [False, False]
    again = await messaging.ComposeMessage(mpb.ComposeMessageRequest(campaign_id="mail",
                                                                     user_id="guest-3"))
    assert again.suppressed and again.reason == "no_consent"


def test_no_mailto_is_offered_that_nothing_would_read(caplog):
    """`unsubscribe_mailto` put `<mailto:...?subject=unsubscribe TOKEN>` in List-Unsubscribe,
    but nothing reads that mailbox: a reader whose mail client unsubscribes by email (many do
    when offered a mailto) sent a request that was silently lost, and the marketing went on.
    Only the https link, which opts out at once, is offered; the setting is ignored, and
    saying so is a warning."""
    from server.config import Settings
    from server.messages.compose import Composer
    from server.messages.unsubscribe import UnsubscribeTokens
    from server.security.secrets import Keyring
    caplog.set_level("WARNING")
    composer = Composer(Settings(public_url="https://t.example",
                                 unsubscribe_mailto="unsubscribe@t.example"),
                        None, profiles=None, recommender=None,
                        tokens=UnsubscribeTokens(Keyring.generate("unsubscribe")))
    url = composer.unsubscribe_url("u1", "email", "mail")
    headers = composer.email_headers("d1", url)
    assert headers["List-Unsubscribe"] == f"<{url}>"
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert [r.getMessage() for r in caplog.records if "unsubscribe_mailto" in r.getMessage()]


@pytest.mark.parametrize("content_type, body", [
    ("text/plain", b"List-Unsubscribe=One-Click"), (None, b"List-Unsubscribe=One-Click\r\n"),
    (None, b""), ("application/x-www-form-urlencoded", b"")])
async def test_a_one_click_post_without_a_form_type_or_body_still_opts_out(
        compose, profiles, content_type, body):
    """Mail clients that POST the one-click link with the pair as text/plain or with no
    Content-Type (what fetch() or XHR send by default), or with no body at all (seen in the
    wild: a Thunderbird add-on, CiviCRM's report), got 400 "must be
    List-Unsubscribe=One-Click": the reader clicked Unsubscribe and stayed subscribed. The POST
    is what RFC 8058 keeps from link scanners (they GET); its body may be the pair or nothing."""
    url = (await compose("u7")).unsubscribe_url
    headers = {} if content_type is None else {"Content-Type": content_type}
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=body, headers=headers,
                             skip_auto_headers=["Content-Type"]) as res:
            assert res.status == 200
    assert await consent(profiles, "u7") is False


async def test_a_one_click_post_saying_something_else_changes_nothing(compose, profiles):
    url = (await compose("u8")).unsubscribe_url
    async with aiohttp.ClientSession() as http:
        for headers, body in (({"Content-Type": "text/plain"}, b"List-Unsubscribe=Other"),
                              ({}, b"hello")):
            async with http.post(url, data=body, headers=headers,
                                 skip_auto_headers=["Content-Type"]) as res:
                assert res.status == 400
    assert await consent(profiles, "u8") is True


async def test_the_link_of_a_profile_stored_under_an_id_refused_since_opts_it_out(
        compose, tailor_server, caplog):
    """A user whose id holds a bidirectional control, stored and mailed before such ids were
    refused, clicks their link: the opt-out is theirs to make, so it is recorded (the id's
    check refused it: a 400 page, the user still opted in). A link of a campaign stored
    under such an id (mailed before) is logged with the id escaped: its raw bidirectional
    control reordered the log line, what the rule keeps such ids out of logs for."""
    import asyncio
    caplog.set_level("INFO")

    from server.contact.consent import record_consent
    old = "u-\u202elink"
    await asyncio.to_thread(tailor_server.profiles.repo.update_meta, old, lambda meta: record_consent(
        meta, "email", "marketing", True, "signup", 1.0, 10))
    url = (await compose("u-link")).unsubscribe_url
    token = tailor_server.tokens.issue(old, "email", "mail")
    assert await one_click(url.rsplit("/", 1)[0] + "/" + token) == 200
    meta = (await asyncio.to_thread(tailor_server.profiles.repo.states_and_meta, [old], True))[0][1]
    assert meta["consent"]["email"]["marketing"]["opted_in"] is False
    token = tailor_server.tokens.issue("u-link", "email", "promo\u202e")
    assert await one_click(url.rsplit("/", 1)[0] + "/" + token) == 200
    # (its source names the campaign: SetConsent's check of a client's source refused it)
    meta = (await asyncio.to_thread(tailor_server.profiles.repo.states_and_meta, ["u-link"],
                                    True))[0][1]
    assert meta["consent"]["email"]["marketing"]["opted_in"] is False
    assert meta["consent"]["email"]["marketing"]["source"] == "one-click unsubscribe (promo\u202e)"
    logged = [r.getMessage() for r in caplog.records if "unsubscribed" in r.getMessage()]
    assert not any("\u202e" in line for line in logged)
    assert any("promo\\u202e" in line for line in logged)
