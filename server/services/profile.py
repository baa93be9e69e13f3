"""tailor.v1.ProfileService."""
from __future__ import annotations

import json
import math
import time

import numpy as np
from google.protobuf import json_format

from protos.tailor.v1 import profile_pb2 as pb
from protos.tailor.v1 import profile_pb2_grpc as pb_grpc

from ..contact.suppression import Suppression, Suppressions
from ..errors import InvalidArgument, grpc_errors
from ..profiles import AccessExport, Profiles, ProfileView, TrackedEvent, TrackResult, track_stream
from ..security.interceptor import current_principal
from ..security.pii import PiiPolicy
from ..security.roles import PII_READER

__all__ = ["ProfileServicer", "ProfileConverter"]


class ProfileConverter:
    @staticmethod
    def to_events(msg: pb.TrackEventsRequest) -> list[TrackedEvent]:
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
            out.features.CopyFrom(ProfileConverter._features(view.features, layout,
                                                              view.category_names))
        out.recent_items.extend(pb.RecentItem(item_id=i, weight=w, timestamp=t)
                                for i, w, t in view.recent_items)
        out.events.extend(pb.Event.FromString(raw) for raw in view.events)
        return out

    @staticmethod
    def to_document(export: AccessExport, profile: pb.Profile | None) -> str:
        """The ExportProfile JSON: the profile as GetProfile shows it (every event, up to the
        limit), then each domain's sections; sorted keys, so equal holdings give equal text."""
        doc = {"user_id": export.user_id, "exported_at": time.time(), "profile": None,
               "events_held": export.events_held, "erased_at": export.erased_at}
        if profile is not None:
            doc["profile"] = json_format.MessageToDict(profile, preserving_proto_field_name=True,
                                                       always_print_fields_with_no_presence=True)
            doc["profile"].update(export.profile.extra)  # stored meta entries GetProfile does not show
            doc["events_listed"] = len(profile.events)
        doc.update(export.sections)
        return json.dumps(doc, sort_keys=True, default=_jsonable)

    @staticmethod
    def to_address(msg: pb.SuppressionAddress) -> tuple[str, str]:
        """(kind, address) of the one field set."""
        kind = msg.WhichOneof("address")
        if kind is None:
            raise InvalidArgument("address", "set email or phone")
        return kind, getattr(msg, kind)

    @staticmethod
    def from_suppression(entry: Suppression | None) -> pb.Suppression:
        if entry is None:
            return pb.Suppression(suppressed=False)
        return pb.Suppression(suppressed=True, reason=entry.reason, timestamp=entry.timestamp,
                              kind=entry.kind)

    @staticmethod
    def _features(f: dict, layout, category_names: dict[int, str]) -> pb.Features:
        days = [f"{h / 86400:g}d" for h in layout.half_lives_s]
        T, C = layout.event_types, layout.channels
        msg = pb.Features(recency_seconds=_num(f["recency_s"]), frequency=f["frequency_all"],
                          monetary=f["monetary_all"], first_seen=_num(f["first_ts"]),
                          last_seen=_num(f["last_ts"]), n_events=f["n_events"],
                          hour_of_week=f["hour_of_week"].tolist())
        for (t, c), v in _nonzero(f["counts_all"]):
            msg.counts[f"{T[t]}/{C[c]}"] = v
        for (h, t, c), v in _nonzero(f["counts_decayed"]):
            msg.decayed_counts[f"{T[t]}/{C[c]}/{days[h]}"] = v
        for h, v in enumerate(f["monetary_decayed"].tolist()):
            msg.monetary_decayed[days[h]] = v
        for (h, k), v in _nonzero(f["category_affinity"]):
            msg.category_affinity[f"{category_names.get(k, f'code:{k}')}/{days[h]}"] = v
        for c, name in enumerate(C):
            if f["sends_all"][c] or f["opens_all"][c] or f["clicks_all"][c]:
                msg.channel_rates[name].CopyFrom(pb.ChannelRates(
                    open_rate=f["open_rate_all"][c], click_rate=f["click_rate_all"][c],
                    sends=f["sends_all"][c]))
        return msg


def _jsonable(x):
    """numpy scalars and arrays in export sections, as JSON numbers and lists."""
    return x.tolist() if hasattr(x, "tolist") else str(x)


def _num(x: float) -> float:
    return 0.0 if not math.isfinite(x) else float(x)


def _nonzero(arr):
    """((index tuple), value) for every nonzero entry of `arr`."""
    idx = np.nonzero(arr)
    return zip(zip(*(i.tolist() for i in idx)), arr[idx].tolist())


class ProfileServicer(pb_grpc.ProfileServiceServicer):
    def __init__(self, profiles: Profiles, pii: PiiPolicy, suppressions: Suppressions):
        self.profiles = profiles
        self.pii = pii
        self.suppressions = suppressions

    @grpc_errors
    async def TrackEvents(self, request: pb.TrackEventsRequest, context) -> pb.TrackEventsResponse:
        return ProfileConverter.from_track(await self.profiles.track(ProfileConverter.to_events(request)))

    @grpc_errors
    async def TrackEventStream(self, request_iterator, context) -> pb.TrackEventsResponse:
        batches = (ProfileConverter.to_events(batch) async for batch in request_iterator)
        total, accepted = await track_stream(self.profiles, batches)
        return ProfileConverter.from_track(total, accepted)

    async def _profile(self, user_id: str, max_events: int, context, parts=()) -> pb.Profile:
        view = await self.profiles.get(user_id, max_events, parts)
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
        return await self._profile(request.user_id, 1, context)

    @grpc_errors
    async def SetConsent(self, request: pb.SetConsentRequest, context) -> pb.Profile:
        await self.profiles.set_consent(request.user_id, request.channel, request.opted_in,
                                        request.source, request.timestamp, request.purpose)
        return await self._profile(request.user_id, 1, context)

    @grpc_errors
    async def DeleteProfile(self, request: pb.DeleteProfileRequest, context) -> pb.DeleteProfileResponse:
        return pb.DeleteProfileResponse(records_deleted=await self.profiles.delete(request.user_id))

    @grpc_errors
    async def ExportProfile(self, request: pb.ExportProfileRequest, context) -> pb.ExportProfileResponse:
        export = await self.profiles.export_user(request.user_id)
        profile = None
        if export.profile is not None:
            profile = ProfileConverter.from_view(export.profile, self.profiles.layout)
            if not current_principal().has(PII_READER):  # a role the auth config widened
                profile.pii_masked = self.pii.mask_message(profile)
        return pb.ExportProfileResponse(document=ProfileConverter.to_document(export, profile))

    @grpc_errors
    async def ExportTombstones(self, request: pb.ExportTombstonesRequest, context):
        for t in self.profiles.erased():
            yield pb.Tombstone(kid=t.kid, digest=t.digest, erased_at=t.at)

    @grpc_errors
    async def ExportEvents(self, request: pb.ExportEventsRequest, context):
        masked = not current_principal().has(PII_READER)
        for raw in self.profiles.export(request.start, request.end):
            event = pb.Event.FromString(raw)
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
        return pb.RemoveSuppressionResponse(
            removed=await self.suppressions.remove(*ProfileConverter.to_address(request)))

    @grpc_errors
    async def CheckSuppression(self, request: pb.SuppressionAddress, context) -> pb.Suppression:
        return ProfileConverter.from_suppression(
            await self.suppressions.check(*ProfileConverter.to_address(request)))
