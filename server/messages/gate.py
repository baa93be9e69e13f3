"""The contact policy's standing refusals, checked again just before a stored message goes.

A message is composed under the policy's verdict of that moment, and may wait long before it
goes: SendCampaign's rate backlog, a quiet-hours deferral (hours), a resume after a restart, a
dead letter retried days later. Meanwhile the user may opt out, or their address may be put on
the suppression list (a complaint, a bounce). `SendGate.refusal` asks again what may have
changed, from the user's profile meta record and the suppression list: consent for the
message's channel and the campaign's purpose (`contact.consent.consent_reason`), and whether
the address the message goes to is listed; and whether the campaign was archived since
(`archived`: archiving stops every stored message of it). Caps and quiet hours are not asked again: the
decision being delivered is the one they counted and timed. Erasure is the send records'
business (`SendRecords.erased`) and the dead letters' (DeleteProfile drops them); a user whose
profile is gone when the message goes (erased after those checks) is refused `erased` here.
"""
from __future__ import annotations

from collections.abc import Mapping

from ..campaigns.errors import CampaignNotFound
from ..contact.addresses import CHANNEL_KIND
from ..contact.consent import MARKETING, NO_CONSENT, consent_reason
from ..contact.suppression import SUPPRESSED_ADDRESS
from ..errors import TailorError
from ..interfaces import SuppressedAddresses, VariantChooser
from .sends import ARCHIVED, ERASED

__all__ = ["SendGate"]

class SendGate:
    def __init__(self, campaigns: VariantChooser, profiles, suppressions: SuppressedAddresses | None,
                 consent_defaults: Mapping[str, str], store):
        """`profiles`: reads meta records (`states_and_meta`); `consent_defaults`: Settings';
        `store`: both reads of a check share one snapshot of it."""
        self.campaigns, self.profiles, self.suppressions = campaigns, profiles, suppressions
        self.defaults, self.store = dict(consent_defaults), store

    @classmethod
    def from_settings(cls, s, campaigns, profiles, suppressions, store) -> SendGate:
        return cls(campaigns, profiles, suppressions, s.consent_defaults, store)

    def refusal(self, user_id: str, channel: str, purpose: str, to: str) -> str | None:
        """`erased`, `no_consent` or `suppressed_address` when a message of `purpose` on
        `channel` to `to` may no longer go to `user_id`; None when it may. One read snapshot
        (the meta record, the list's keys of `to`), a few µs on the loop like the other
        per-message checks. No meta record: the profile the message was composed from (its
        address came from it) is gone, erased; for a transactional message that needs no
        consent record this is the only refusal."""
        with self.store.read() as txn:
            meta = self.profiles.states_and_meta([user_id], False, txn)[0][1]
            if meta is None:
                return ERASED
            if consent_reason(meta, channel, purpose, self.defaults) is not None:
                return NO_CONSENT
            attribute = CHANNEL_KIND.get(channel)  # the list's kind is the profile attribute
            if attribute and self.suppressions is not None and \
                    self.suppressions.suppressed_channels({"attributes": {attribute: to}},
                                                          [channel], txn, purpose):
                return SUPPRESSED_ADDRESS  # the address it goes to (the profile's may be newer)
        return None

    async def archived(self, campaign_id: str) -> str | None:
        """`archived` when the campaign was archived (or is gone) since its message was
        composed: none of its stored messages goes (a job's, a deferred ComposeMessage's, a
        dead letter retried); None otherwise. One read, its parse memoised on the record's
        bytes (`CampaignRepository.parse`): µs, asked before each stored message."""
        try:
            return ARCHIVED if (await self.campaigns.get(campaign_id)).archived else None
        except CampaignNotFound:
            return ARCHIVED

    async def purpose(self, campaign_id: str) -> str:
        """The campaign's purpose (read once per job: parsing the campaign costs more than
        the checks); marketing, the stricter, when it is gone."""
        try:
            return (await self.campaigns.get(campaign_id)).spec.purpose or MARKETING
        except TailorError:
            return MARKETING
