"""The one seam where the contact policy's verdict is honoured (issue 15's ChooseVariant
result carries suppressed, reason, channel, send_at)."""
import pytest

from server.campaigns import Campaign, CampaignSpec, Choice, Variant
from server.campaigns.records import NO_ARM
from server.config import Settings
from server.messages.compose import Composer, Verdict, verdict_of
from server.messages.errors import RenderFailed
from server.messages.unsubscribe import UnsubscribeTokens
from server.security.secrets import Keyring


class Decided:
    """A campaigns domain that answers one fixed decision (the contact policy's verdict)."""

    def __init__(self, choice):
        self.choice = choice
        self.campaign = Campaign(CampaignSpec("c", channel="email", policy="fixed", variants=(
            Variant("v", {"subject": "{{ first_name }}"}),)))  # would fail to render: no name

    async def get(self, campaign_id):
        return self.campaign

    async def choose(self, campaign_id, user_id, context):
        return self.choice

    def decide(self, campaign_id, user_id, context, profile=False, seen=False, decision_id="",
               request_id="", caller="", reachable=None, addressed=False):
        return Pending(self.choice, self.choice)

    async def withdraw(self, decision_ids):
        self.withdrawn = list(decision_ids)
        return len(decision_ids)


class Pending:
    """A decision whose commit gives `logged` (which may be the decision capped)."""

    def __init__(self, choice, logged):
        self.choice, self._logged, self.awaited = choice, logged, False
        self.profile = None  # the contact policy read no profile: the composer reads it
        self.request = b""  # no request id

    async def logged(self, on_cancel=None):
        self.awaited = True
        return self._logged

    def cancel(self):
        pass


class NoNames:
    """A profiles domain whose users have no attributes (a `{{ first_name }}` cannot render)."""

    def attributes_and_interests(self, user_id, most):
        return {}, ()


def test_a_decision_without_a_verdict_is_sent_now_on_the_campaigns_channel():
    assert verdict_of(object(), "email") == Verdict(False, "", "email", 0.0)
    got = verdict_of(Choice("d", 0, 1.0, "v", {}, False, "", "sms", 1.7e9), "email")
    assert got == Verdict(False, "", "sms", 1.7e9)


async def test_a_suppressed_decision_comes_back_with_its_reason_and_nothing_rendered():
    composer = Composer(Settings(public_url="https://t.example"),
                        Decided(Choice("d1", 0, 1.0, "v", {}, True, "no_consent", "email")),
                        profiles=None, recommender=None,
                        tokens=UnsubscribeTokens(Keyring.generate("unsubscribe")))
    msg = await composer.compose("c", "u", {})
    assert (msg.suppressed, msg.reason, msg.decision_id) == (True, "no_consent", "d1")
    assert msg.parts == {} and msg.headers == {} and msg.variant_id == "" and not msg.holdout
    composer.campaigns = Decided(Choice("d2", NO_ARM, 0.0, "", {}, True, "suppressed_address",
                                              "email"))  # as Campaigns.choose gives it
    msg = await composer.compose("c", "u", {})
    assert (msg.suppressed, msg.reason, msg.holdout, msg.parts) == (
        True, "suppressed_address", False, {})


async def test_a_decision_the_commit_caps_is_suppressed_and_its_render_dropped():
    """The render runs while the decision's record commits; a cap found in the commit wins over
    what the render did (here: failed), and a render error of a decision that stands is raised
    only once its commit is done."""
    chosen = Choice("d3", 0, 1.0, "v", {}, False, "", "email")
    capped = Choice("d3", NO_ARM, 0.0, "", {}, True, "frequency_cap", "email")
    domain = Decided(chosen)
    composer = Composer(Settings(public_url="https://t.example"), domain, profiles=NoNames(),
                        recommender=None, tokens=UnsubscribeTokens(Keyring.generate("unsubscribe")))
    domain.decide = lambda *args, **kw: Pending(chosen, capped)
    msg = await composer.compose("c", "u", {})
    assert (msg.suppressed, msg.reason, msg.decision_id, msg.variant_id) == (
        True, "frequency_cap", "d3", "")
    assert msg.parts == {} and msg.headers == {} and not msg.unsubscribe_url
    pending = Pending(chosen, chosen)
    domain.decide = lambda *args, **kw: pending
    with pytest.raises(RenderFailed):
        await composer.compose("c", "u", {})
    assert pending.awaited
    assert domain.withdrawn == ["d3"]  # nobody received it
