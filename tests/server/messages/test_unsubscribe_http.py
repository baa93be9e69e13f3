"""One-click unsubscribe over real HTTP (aiohttp client) against a real server."""
from html.parser import HTMLParser

import aiohttp
import pytest

from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import messaging_pb2 as mpb
from protos.tailor.v1 import profile_pb2 as ppb

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
