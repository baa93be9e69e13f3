"""tailor.v1.ProfileService."""
from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
from google.protobuf import json_format

from protos.tailor.v1 import profile_pb2 as pb
from protos.tailor.v1 import profile_pb2_grpc as pb_grpc

from ..contact.consent import MARKETING
from ..contact.suppression import Suppression, Suppressions
from ..errors import InvalidArgument, grpc_errors
from ..messages.owned import masked_messages
from ..profiles import AccessExport, Profiles, ProfileView, TrackedEvent, TrackResult, track_stream
from ..security.interceptor import current_principal
from ..security.pii import PiiPolicy, mask_value, masked_entries
from ..security.roles import PII_READER
from ..validation import check_count
from .auditing import audit_line
from .streaming import in_chunks

__all__ = ["ProfileServicer", "ProfileConverter"]


class ProfileConverter:
    @staticmethod
    def stored_event(raw: bytes) -> pb.Event:
        """A stored raw event as answered: without the unknown fields a store written before
        `to_events` dropped them may hold (one view kept 5 MB), which no bound or mask saw."""
        event = pb.Event.FromString(raw)
        event.DiscardUnknownFields()
        return event

    @staticmethod
    def to_events(msg: pb.TrackEventsRequest, most: int) -> list[TrackedEvent]:
        """The request's events, at most `most` (`limits.events_per_batch`: more is refused
        before any is converted; counted after, one 59 MiB request of 4.5 million tiny events
        held the event loop over 60 s and the worker past 3 GB); fields this server does not
        know (a newer client's, or bytes sent to get past the limits) are dropped first, so
        the stored raw event holds only the checked fields (`records.raw_event` keeps the
        wire message)."""
        check_count("events", len(msg.events), most)
        msg.DiscardUnknownFields()  # ~0.2 us an event, the whole request at once
        return [TrackedEvent(e.event_id, e.user_id, e.type, e.channel, e.campaign_id, e.item_id,
                             e.value, e.timestamp, dict(a) if (a := e.attributes) else {}, e,
                             e.request_id, e.position)
                for e in msg.events]  # most events have no attributes: skip copying the map

    @staticmethod
    def from_track(res: TrackResult, accepted: int | None = None) -> pb.TrackEventsResponse:
        return pb.TrackEventsResponse(
            accepted=len(res.accepted_ids) if accepted is None else accepted,
            duplicates=res.duplicates, accepted_ids=res.accepted_ids,
            rejected=[pb.RejectedEvent(index=i, event_id=eid, reason=why) for i, eid, why in res.rejected])

    @staticmethod
    def from_view(view: ProfileView, layout) -> pb.Profile:
        out = pb.Profile(user_id=view.user_id, attributes=view.attributes,
                         created_at=view.created_at, updated_at=view.updated_at)
        out.consents.extend(pb.Consent(**c) for c in view.consent)
        for c in out.consents:
            if c.purpose == "marketing":
                out.consent[c.channel].CopyFrom(c)
        out.consent_history.extend(pb.Consent(**c) for c in view.consent_history)
        if view.features is not None:
            ProfileConverter._features(view.features, layout, view.category_names, out.features)
        out.recent_items.extend(pb.RecentItem(item_id=i, weight=w, timestamp=t)
                                for i, w, t in view.recent_items)
        out.events.extend(map(ProfileConverter.stored_event, view.events))
        return out

    @staticmethod
    def to_document(export: AccessExport, profile: pb.Profile | None) -> str:
        """The ExportProfile JSON: the profile as GetProfile shows it (a page of its events),
        then each domain's sections (first page only); sorted keys, so equal holdings give
        equal text."""
        doc = {"user_id": export.user_id, "exported_at": time.time(), "profile": None,
               "events_held": export.events_held, "erased_at": export.erased_at,
               "events_offset": export.events_offset, "events_next": export.events_next}
        if profile is not None:
            doc["profile"] = json_format.MessageToDict(profile, preserving_proto_field_name=True,
                                                       always_print_fields_with_no_presence=True)
            doc["profile"].update(export.profile.extra)  # stored meta entries GetProfile does not show
            doc["events_listed"] = len(profile.events)
        doc.update(export.sections)
        # UTF-8 as is: \u escapes made a page of accented text three times its stored size
        return json.dumps(doc, sort_keys=True, default=_jsonable, ensure_ascii=False)

    @staticmethod
    def to_address(msg: pb.SuppressionAddress) -> tuple[str, str]:
        """(kind, address) of the one field set."""
        kind = msg.WhichOneof("address")
        if kind is None:
            raise InvalidArgument("address", "set email, phone or push_token")
        return kind, getattr(msg, kind)

    @staticmethod
    def from_suppression(entry: Suppression | None) -> pb.Suppression:
        if entry is None:
            return pb.Suppression(suppressed=False)
        return pb.Suppression(suppressed=True, reason=entry.reason, timestamp=entry.timestamp,
                              kind=entry.kind, marketing_only=entry.purpose == MARKETING)

    @staticmethod
    def _features(f: dict, layout, category_names: dict[int, str],
                  msg: pb.Features | None = None) -> pb.Features:
        """`read_features` output as `Features` (filled into `msg` when given): only nonzero
        counts and affinities, keyed by name."""
        msg = pb.Features() if msg is None else msg
        keys = _feature_keys(layout)
        msg.recency_seconds, msg.frequency = _num(f["recency_s"]), f["frequency_all"]
        msg.monetary, msg.n_events = f["monetary_all"], f["n_events"]
        msg.first_seen, msg.last_seen = _num(f["first_ts"]), _num(f["last_ts"])
        msg.hour_of_week.extend(f["hour_of_week"].tolist())
        msg.counts.update(_nonzero(f["counts_all"], keys.counts))
        msg.decayed_counts.update(_nonzero(f["counts_decayed"], keys.decayed))
        msg.monetary_decayed.update(zip(keys.days, f["monetary_decayed"].tolist()))
        affinity = f["category_affinity"]
        at = np.flatnonzero(affinity)
        if at.shape[0]:
            k = affinity.shape[1]
            msg.category_affinity.update(
                (f"{category_names.get(i % k, f'code:{i % k}')}/{keys.days[i // k]}", v)
                for i, v in zip(at.tolist(), affinity.ravel()[at].tolist()))
        for c in np.flatnonzero(f["sends_all"] + f["opens_all"] + f["clicks_all"]).tolist():
            msg.channel_rates[layout.channels[c]].CopyFrom(pb.ChannelRates(
                open_rate=f["open_rate_all"][c], click_rate=f["click_rate_all"][c],
                sends=f["sends_all"][c]))
        return msg


class _FeatureKeys(NamedTuple):
    """Map keys of `Features`, flat in the order of `read_features`' arrays."""

    counts: list[str]
    """counts_all [T, C]: "type/channel"."""
    decayed: list[str]
    """counts_decayed [H, T, C]: "type/channel/half_life_days"."""
    days: list[str]
    """Per half-life: "7d"."""


_KEYS: dict[int, _FeatureKeys] = {}


def _feature_keys(layout) -> _FeatureKeys:
    """The layout's `_FeatureKeys`, made once per layout (by fingerprint)."""
    keys = _KEYS.get(layout.fingerprint)
    if keys is None:
        days = [f"{h / 86400:g}d" for h in layout.half_lives_s]
        pairs = [f"{t}/{c}" for t in layout.event_types for c in layout.channels]
        keys = _KEYS[layout.fingerprint] = _FeatureKeys(
            pairs, [f"{p}/{d}" for d in days for p in pairs], days)
    return keys


def _jsonable(x):
    """numpy scalars and arrays in export sections, as JSON numbers and lists."""
    return x.tolist() if hasattr(x, "tolist") else str(x)


def _num(x: float) -> float:
    return 0.0 if not math.isfinite(x) else float(x)


def _nonzero(arr: np.ndarray, keys: list[str]) -> dict[str, float]:
    """{keys[i]: value} of every nonzero entry of `arr`, `keys` in its flat (C) order."""
    flat = arr.ravel()
    at = np.flatnonzero(flat)
    return dict(zip([keys[i] for i in at.tolist()], flat[at].tolist()))


class ProfileServicer(pb_grpc.ProfileServiceServicer):
    def __init__(self, profiles: Profiles, pii: PiiPolicy, suppressions: Suppressions,
                 mask_decisions: Callable[[Sequence[dict]], None] = lambda decisions: None,
                 audit=None):
        """`mask_decisions`: an access export's decisions as a caller without `pii-reader`
        reads them (`Campaigns.mask_decisions`); `audit`: where a keep-out lift's line goes
        (`auditing.audit_line`; None: nowhere)."""
        self.profiles = profiles
        self.pii = pii
        self.suppressions = suppressions
        self.mask_decisions = mask_decisions
        self.audit = audit

    @grpc_errors
    async def TrackEvents(self, request: pb.TrackEventsRequest, context) -> pb.TrackEventsResponse:
        events = ProfileConverter.to_events(request, self.profiles.limits.events_per_batch)
        return ProfileConverter.from_track(await self.profiles.track(events))

    @grpc_errors
    async def TrackEventStream(self, request_iterator, context) -> pb.TrackEventsResponse:
        most = self.profiles.limits.events_per_batch
        batches = (ProfileConverter.to_events(batch, most) async for batch in request_iterator)
        total, accepted = await track_stream(self.profiles, batches)
        return ProfileConverter.from_track(total, accepted)

    async def _profile(self, user_id: str, max_events: int, context, parts=(),
                       stored: bool = False) -> pb.Profile:
        view = await self.profiles.get(user_id, max_events, parts, stored)
        if len(view.events) > self.profiles.LOOP_EVENTS:  # so is its message: off the loop
            return await asyncio.to_thread(self._message, view)
        return self._message(view)

    def _message(self, view) -> pb.Profile:
        out = ProfileConverter.from_view(view, self.profiles.layout)
        if not current_principal().has(PII_READER):
            out.pii_masked = self.pii.mask_message(out)
        return out

    @grpc_errors
    async def GetProfile(self, request: pb.GetProfileRequest, context) -> pb.Profile:
        return await self._profile(request.user_id, request.max_events, context, request.parts)

    @grpc_errors
    async def UpsertAttributes(self, request: pb.UpsertAttributesRequest, context) -> pb.Profile:
        await self.profiles.upsert_attributes(request.user_id, dict(request.attributes))
        # stored: the upsert took the id (one stored before the rule only for its profile)
        return await self._profile(request.user_id, 1, context, stored=True)

    @grpc_errors
    async def SetConsent(self, request: pb.SetConsentRequest, context) -> pb.Profile:
        lifted = await self.profiles.set_consent(request.user_id, request.channel,
                                                 request.opted_in, request.source,
                                                 request.timestamp, request.purpose)
        if lifted:  # an erased user's unsubscribe undone: a line of its own (no address)
            await audit_line(self.audit, "keepout/lift", request.user_id,
                             channel=request.channel, entries=lifted)
        return await self._profile(request.user_id, 1, context, stored=not request.opted_in)

    @grpc_errors
    async def DeleteProfile(self, request: pb.DeleteProfileRequest, context) -> pb.DeleteProfileResponse:
        removed, erased_at = await self.profiles.erase(request.user_id)
        return pb.DeleteProfileResponse(records_deleted=removed, erased_at=erased_at)

    @grpc_errors
    async def ExportProfile(self, request: pb.ExportProfileRequest, context) -> pb.ExportProfileResponse:
        export = await self.profiles.export_user(request.user_id, request.events_offset,
                                                 request.impressions_offset)
        profile, masked = None, not current_principal().has(PII_READER)  # a widened role
        if export.profile is not None:
            profile = ProfileConverter.from_view(export.profile, self.profiles.layout)
            if masked:
                profile.pii_masked = self.pii.mask_message(profile)
                if export.profile.extra:  # the document copies them beside the profile
                    export.profile.extra = masked_entries(export.profile.extra)
                    profile.pii_masked = True
        if masked:
            masked_messages(export.sections, mask_value)
            self.mask_decisions(export.sections.get("decisions", ()))
        return pb.ExportProfileResponse(document=ProfileConverter.to_document(export, profile))

    @grpc_errors
    async def ExportTombstones(self, request: pb.ExportTombstonesRequest, context):
        for t in self.profiles.erased():
            yield pb.Tombstone(kid=t.kid, digest=t.digest, erased_at=t.at)

    @grpc_errors
    async def ExportEvents(self, request: pb.ExportEventsRequest, context):
        masked = not current_principal().has(PII_READER)
        # every stored event's key is read past: in a thread, a read snapshot at a time
        async for chunk in in_chunks(self.profiles.export(request.start, request.end)):
            for raw in chunk:
                event = ProfileConverter.stored_event(raw)
                if masked and event.attributes:
                    self.pii.mask_map(event.attributes)
                yield event

    @grpc_errors
    async def AddSuppression(self, request: pb.AddSuppressionRequest, context) -> pb.Suppression:
        kind, address = ProfileConverter.to_address(request.address)
        return ProfileConverter.from_suppression(
            await self.suppressions.add(kind, address, request.reason, request.timestamp))

    @grpc_errors
    async def RemoveSuppression(self, request: pb.SuppressionAddress,
                                context) -> pb.RemoveSuppressionResponse:
        removed, unsuppressed = await self.suppressions.remove(*ProfileConverter.to_address(request))
        return pb.RemoveSuppressionResponse(removed=removed, unsuppressed=unsuppressed)

    @grpc_errors
    async def CheckSuppression(self, request: pb.SuppressionAddress, context) -> pb.Suppression:
        return ProfileConverter.from_suppression(
            await self.suppressions.check(*ProfileConverter.to_address(request)))
