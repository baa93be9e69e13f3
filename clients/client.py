"""A typed, blocking client: per-call deadlines; gRPC retries UNAVAILABLE (`clients.retry`).

    client = TailorClient("127.0.0.1:50051")
    client = TailorClient("tailor.internal:50051", tls_ca="ca.pem", cert="me.pem", key="me.key",
                          token=os.environ["TAILOR_TOKEN"])  # TLS, mutual TLS, bearer token
    recs = client.recommend("user-42", k=10, categories=["shoes"])
    client.push_bundle("bundles/20261123T120000-abcd1234")

Errors surface as `TailorError` carrying the gRPC status code and the server's message.
"""
from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import grpc
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protos.tailor.v1 import attribution_pb2 as attr_pb
from protos.tailor.v1 import attribution_pb2_grpc as attr_grpc
from protos.tailor.v1 import audit_pb2 as audit_pb
from protos.tailor.v1 import audit_pb2_grpc as audit_grpc
from protos.tailor.v1 import campaign_pb2 as camp_pb
from protos.tailor.v1 import campaign_pb2_grpc as camp_grpc
from protos.tailor.v1 import catalog_pb2 as cat_pb
from protos.tailor.v1 import catalog_pb2_grpc as cat_grpc
from protos.tailor.v1 import diagnostics_pb2 as diag_pb
from protos.tailor.v1 import diagnostics_pb2_grpc as diag_grpc
from protos.tailor.v1 import messaging_pb2 as msg_pb
from protos.tailor.v1 import messaging_pb2_grpc as msg_grpc
from protos.tailor.v1 import model_admin_pb2 as admin_pb
from protos.tailor.v1 import model_admin_pb2_grpc as admin_grpc
from protos.tailor.v1 import profile_pb2 as prof_pb
from protos.tailor.v1 import profile_pb2_grpc as prof_grpc
from protos.tailor.v1 import recommendation_pb2 as rec_pb
from protos.tailor.v1 import recommendation_pb2_grpc as rec_grpc

from .attribution_results import Attribution
from .campaign_results import Campaign, CampaignStats, DeadLetter, Message, SampleSize, SendProgress
from .drift_results import DriftReport
from .model_results import ModelStats
from .profile_results import Profile, Suppression
from .results import CatalogChange, Choice, ModelStatus, Reward, TrackResult
from .retry import RetryPolicy, channel_options
from .transport import Connection

__all__ = ["TailorClient", "TailorError", "Recommendations", "RecommendedItem", "bundle_files"]

CHUNK_BYTES = 1 << 20
MAX_TIMEOUT = 30 * 86_400
"""The longest deadline of a call the CLIs take (seconds): gRPC takes a deadline much further
away (1e10 s), or inf or NaN, as one already past (DEADLINE_EXCEEDED at once)."""
DELIVER_TIMEOUT = 60.0
"""A ComposeMessage `deliver`'s default deadline (seconds): it is answered once the relay or
webhook accepted the message, which the server tries up to `delivery_attempts` times (4), each
up to `smtp_timeout_seconds` / `webhook_timeout_seconds` (10 s), with backoffs between (0.5, 1,
2 s): 43.5 s with the server's defaults. A shorter deadline cuts the hand-over it waits for:
the server stops mid-send, and the repeat of the request id can only answer that whether it
went is not known (measured: a relay answering DATA in 7 s, the CLI's 5 s default; the
message arrived, its repeat answered FAILED_PRECONDITION 'not known')."""
MESSAGE_CHANNELS = ("email", "sms", "push")
"""The channels a send job has rates for (`send_campaign`)."""


_TRANSPORT_BOUNDS = {
    "SERVER: Received message larger than max":
        " (the server's request bound, its grpc_max_request_bytes: send fewer entries a call)",
    "SERVER: Sent message larger than max":
        " (the server's reply bound, its grpc_max_message_bytes: ask for less a call)",
    "CLIENT: Sent message larger than max": " (this client's max_message_bytes)",
    "CLIENT: Received message larger than max": " (this client's max_message_bytes)",
}
"""What gRPC's own refusals of a message's size (RESOURCE_EXHAUSTED `<side>: ... larger than
max (<size> vs. <bound>)`, which name no setting) are bounded by: the hint a TailorError adds."""


class TailorError(Exception):
    """A call ended with a gRPC status other than OK; `str()` is `CODE: message`."""

    def __init__(self, code: grpc.StatusCode, message: str):
        self.code = code
        super().__init__(f"{code.name}: {message}{_TRANSPORT_BOUNDS.get(message.split(' (')[0], '')}")

    @classmethod
    def named(cls, status: str, message: str) -> TailorError:
        """For a status that is not a grpc.StatusCode (a health answer: NOT_SERVING)."""
        err = cls(grpc.StatusCode.UNKNOWN, message)
        err.args = (f"{status}: {message}",)
        return err


@dataclass(frozen=True)
class RecommendedItem:
    item_id: str
    score: float
    retrieval_score: float
    category: str
    title: str
    price: float
    url: str


@dataclass(frozen=True)
class Recommendations:
    items: list[RecommendedItem]
    model_version: str
    request_id: str
    cold_start: bool
    error: str = ""
    """A partial `recommend_batch`'s entry that got no answer: `CODE: message`, as the call
    would have failed with (no items then); "" otherwise."""

    @classmethod
    def from_pb(cls, msg: rec_pb.RecommendResponse) -> Recommendations:
        items = [RecommendedItem(i.item_id, i.score, i.retrieval_score, i.category, i.title,
                                 i.price, i.url) for i in msg.items]
        error = f"{msg.error.code}: {msg.error.message}" if msg.HasField("error") else ""
        return cls(items, msg.model_version, msg.request_id, msg.cold_start, error)

    @property
    def item_ids(self) -> list[str]:
        return [i.item_id for i in self.items]


def new_request_id() -> str:
    """A request's idempotency key (ChooseVariant, ComposeMessage, SendCampaign): 32 random
    hex characters, one per logical call; gRPC's retries resend the request, id included."""
    return uuid.uuid4().hex


def compose_timeout(timeout: float | None, deliver: bool, client_timeout: float) -> float | None:
    """A ComposeMessage's deadline: `timeout` when given; else, for a deliver, the client's
    own or `DELIVER_TIMEOUT`, whichever is longer; else the client's own (None)."""
    return timeout or (max(client_timeout, DELIVER_TIMEOUT) if deliver else None)


def named_request() -> tuple[tuple[str, str]]:
    """Metadata naming a Recommend or RecommendBatch call (`x-request-id`, a new id): gRPC's
    retries resend it, so the server logs one impression for the answer, not one an attempt
    (docs/impressions.md, "Retries")."""
    return (("x-request-id", new_request_id()),)


def _versions_inside(root: Path) -> str:
    """A hint when `root` is a bundles root (`train --out ROOT` writes ROOT/<version>/): the
    newest bundle in it, which a newcomer meant to push."""
    try:
        inside = sorted(p.name for p in root.iterdir() if (p / "manifest.json").is_file())
    except OSError:   # not there, not a directory, not readable: the message says enough
        return ""
    return (f" ({len(inside)} bundle(s) in it, newest {root / inside[-1]}: push one of them)"
            if inside else "")


def bundle_files(bundle_dir: str | Path) -> list[Path]:
    """The files a push of `bundle_dir` sends: manifest.json and the files its `files` lists
    that are there (the server says what is missing). Anything else beside them (a desktop's
    .DS_Store, an editor's swap file, notes) is left out: the server would refuse a hidden name
    and drop the rest. A manifest that is not a JSON object with a `files` object: every file,
    for the server to name what is wrong with it."""
    root = Path(bundle_dir)
    manifest = root / "manifest.json"
    if not manifest.is_file():
        raise FileNotFoundError(f"{root} has no manifest.json: not a bundle directory"
                                + _versions_inside(root))
    present = sorted(p for p in root.iterdir() if p.is_file())
    try:
        listed = json.loads(manifest.read_bytes()).get("files")
    except (ValueError, AttributeError, RecursionError):
        return present
    if not isinstance(listed, dict):
        return present
    return [p for p in present if p.name == "manifest.json" or p.name in listed]


class TailorClient:
    def __init__(self, target: str, *, timeout: float = 2.0, retry: RetryPolicy | None = None,
                 max_message_bytes: int = 64 << 20, tls_ca: str | Path | None = None,
                 cert: str | Path | None = None, key: str | Path | None = None,
                 token: str | None = None, tls: bool = False, insecure: bool = False):
        """`tls_ca` (or `tls`: system roots) turns TLS on; `cert`+`key` add a client
        certificate (mutual TLS); `token` goes as `authorization: Bearer` on every call, in
        plaintext only to a loopback `target` unless `insecure` (else ValueError, before any
        connection: `Connection.check_token_target`)."""
        self.target = target
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.connection = Connection(*(Path(p) if p else None for p in (tls_ca, cert, key)),
                                     token=token, tls=tls, insecure=insecure)
        self._channel = self.connection.channel(
            target, options=channel_options(self.retry, max_message_bytes))
        self._rec = rec_grpc.RecommendationServiceStub(self._channel)
        self._admin = admin_grpc.ModelAdminServiceStub(self._channel)
        self._diag = diag_grpc.DiagnosticsServiceStub(self._channel)
        self._profiles = prof_grpc.ProfileServiceStub(self._channel)
        self._attribution = attr_grpc.AttributionServiceStub(self._channel)
        self._campaigns = camp_grpc.CampaignServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._audit = audit_grpc.AuditServiceStub(self._channel)
        self._messaging = msg_grpc.MessagingServiceStub(self._channel)
        self._catalog = cat_grpc.CatalogServiceStub(self._channel)

    def __enter__(self):
        return self

    def __exit__(self, kind, err, tb):
        if kind is not None and issubclass(kind, KeyboardInterrupt):
            return  # a Ctrl-C landing inside gRPC's own wait can leave a call's lock held, and
            # closing the channel waits for that call for good: the process's exit closes it
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _call(self, fn, request, timeout: float | None, metadata=None):
        """Call with a deadline (the channel retries UNAVAILABLE within it); a stream's
        requests go as `_Requests`, whose own error is raised rather than gRPC's status."""
        try:
            return fn(request, timeout=timeout or self.timeout, metadata=metadata)
        except grpc.RpcError as err:
            raise _failure(err, request) from None

    # -- recommendations --------------------------------------------------------------------
    @staticmethod
    def _request(user_id: str, k: int, channel: str = "", categories: Sequence[str] = (),
                 exclude: Sequence[str] = (), context: dict[str, str] | None = None):
        return rec_pb.RecommendRequest(user_id=user_id, k=k, channel=channel, categories=categories,
                                       exclude_item_ids=exclude, context=context or {})

    def recommend(self, user_id: str, k: int = 10, *, channel: str = "", categories: Sequence[str] = (),
                  exclude: Sequence[str] = (), context: dict[str, str] | None = None,
                  timeout: float | None = None) -> Recommendations:
        req = self._request(user_id, k, channel, categories, exclude, context)
        return Recommendations.from_pb(self._call(self._rec.Recommend, req, timeout,
                                                  named_request()))

    def recommend_batch(self, requests: Sequence[dict], timeout: float | None = None, *,
                        partial: bool = False) -> list[Recommendations]:
        """`requests`: dicts with the keyword arguments of `recommend` (user_id, k, ...).
        `partial`: an entry that fails on its own comes back with `error` set instead of
        failing the call (`RecommendBatchRequest.partial`)."""
        req = rec_pb.RecommendBatchRequest(requests=[self._request(**r) for r in requests],
                                           partial=partial)
        reply = self._call(self._rec.RecommendBatch, req, timeout, named_request())
        return [Recommendations.from_pb(r) for r in reply.responses]

    # -- model admin ---------------------------------------------------------------------
    def push_bundle(self, bundle_dir: str | Path, *, stage_only: bool = False,
                    timeout: float = 600.0, on_chunk: Callable[[int], object] | None = None,
                    canary_percent: float = 0.0, new_catalog: bool = False) -> ModelStatus:
        """Upload a bundle directory; the server validates it and (unless stage_only) serves it,
        to `canary_percent` of users as a canary when that is given (0 < p < 100).
        `new_catalog`: serve it though it shares no item id with the serving bundle (else
        refused: a bundle trained on another catalog).
        `on_chunk(n)` is called with the size of each chunk sent (a progress bar's `update`)."""
        files = bundle_files(bundle_dir)

        def chunks() -> Iterator[admin_pb.BundleChunk]:
            first = True
            for path in files:
                with open(path, "rb") as fh:
                    offset = 0
                    while True:
                        data = fh.read(CHUNK_BYTES)
                        if not data and offset:
                            break
                        yield admin_pb.BundleChunk(stage_only=stage_only and first, path=path.name,
                                                   offset=offset, data=data,
                                                   canary_percent=canary_percent if first else 0.0,
                                                   new_catalog=new_catalog and first)
                        if on_chunk is not None:
                            on_chunk(len(data))
                        first = False
                        offset += len(data)
                        if not data:
                            break
        return ModelStatus.from_pb(self._call(self._admin.PushBundle, _Requests(chunks()), timeout))

    def model_status(self, timeout: float | None = None) -> ModelStatus:
        req = admin_pb.GetModelStatusRequest()
        return ModelStatus.from_pb(self._call(self._admin.GetModelStatus, req, timeout))

    def drift_report(self, timeout: float | None = None) -> DriftReport:
        """PSI per feature of the served bundle's live traffic (the worker that answers)."""
        req = admin_pb.GetDriftReportRequest()
        return DriftReport.from_pb(self._call(self._admin.GetDriftReport, req, timeout))

    def rollback(self, version: str = "", timeout: float | None = 120.0) -> ModelStatus:
        req = admin_pb.RollbackRequest(version=version)
        return ModelStatus.from_pb(self._call(self._admin.Rollback, req, timeout))

    def promote_canary(self, version: str = "", timeout: float | None = 120.0) -> ModelStatus:
        """Serve the running canary (`version`, if given, must be it) to every user."""
        req = admin_pb.CanaryRequest(version=version)
        return ModelStatus.from_pb(self._call(self._admin.PromoteCanary, req, timeout))

    def abort_canary(self, version: str = "", timeout: float | None = 120.0) -> ModelStatus:
        """Stop the running canary (`version`, if given, must be it)."""
        req = admin_pb.CanaryRequest(version=version)
        return ModelStatus.from_pb(self._call(self._admin.AbortCanary, req, timeout))
    def model_stats(self, model_version: str = "", channel: str = "", ks: Sequence[int] = (),
                    confidence: float = 0.0, timeout: float | None = None) -> ModelStats:
        """Online metrics per model version and channel (impressions, CTR@k, conversion rate,
        revenue per 1,000 impressions, with intervals); "" = every version / channel."""
        req = admin_pb.GetModelStatsRequest(model_version=model_version, channel=channel,
                                            ks=list(ks), confidence=confidence)
        return ModelStats.from_pb(self._call(self._admin.GetModelStats, req, timeout))

    def export_impressions(self, start: float = 0.0, end: float = 0.0, timeout: float = 3600.0):
        """Yield every retained impression (tailor.v1.Impression, outcomes joined) shown with
        start <= timestamp <= end."""
        try:
            yield from self._admin.ExportImpressions(
                admin_pb.ExportImpressionsRequest(start=start, end=end), timeout=timeout)
        except grpc.RpcError as err:
            raise TailorError(err.code(), err.details() or "") from None

    # -- catalog ----------------------------------------------------------------------------
    def upsert_items(self, items: Iterable[dict], timeout: float | None = None) -> CatalogChange:
        """Items that arrived (or changed) since the bundle's training, recommended at once
        (docs/catalog.md; role admin): each a tailor.v1.CatalogItem as a dict (item_id, title,
        category, price, url, image). `new_items`: those the bundle was not trained on."""
        req = cat_pb.UpsertItemsRequest(items=[json_format.ParseDict(i, cat_pb.CatalogItem())
                                               for i in items])
        return CatalogChange.from_pb(self._call(self._catalog.UpsertItems, req, timeout))

    def remove_items(self, item_ids: Iterable[str], timeout: float | None = None) -> CatalogChange:
        """Items never to recommend again (until they are upserted again)."""
        req = cat_pb.RemoveItemsRequest(item_ids=list(item_ids))
        return CatalogChange.from_pb(self._call(self._catalog.RemoveItems, req, timeout))

    def ping(self, timeout: float | None = None) -> None:
        self._call(self._diag.Ping, diag_pb.PingRequest(), timeout)

    def health(self, service: str = "", timeout: float | None = None) -> str:
        """grpc.health.v1 status of `service` ("" = the whole server): "SERVING", "NOT_SERVING"..."""
        try:
            reply = self._call(self._health.Check, health_pb2.HealthCheckRequest(service=service),
                               timeout)
        except TailorError as err:  # gRPC's health service says nothing more
            if err.code != grpc.StatusCode.NOT_FOUND or str(err) != "NOT_FOUND: ":
                raise
            raise TailorError(err.code, f"no health status for service {service!r} (services: "
                                        f"'' for the whole server, or a tailor.v1 service name)") from None
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

    def audit_tail(self, limit: int = 0, timeout: float | None = None) -> list[str]:
        """The newest audit lines (JSON text), oldest first; `limit` 1..1000, 0 = 100."""
        reply = self._call(self._audit.TailAudit, audit_pb.TailAuditRequest(limit=limit), timeout)
        return list(reply.lines)


    # -- profiles ----------------------------------------------------------------------------
    def track(self, events: Iterable[dict], batch_size: int = 500,
              timeout: float = 300.0) -> TrackResult:
        """Stream events (dicts with the Event fields; `timestamp` as epoch seconds or RFC 3339)
        in batches (one TrackEventStream)."""
        def batches():
            batch = []
            for i, ev in enumerate(events):
                try:
                    batch.append(event_from_dict(ev))
                except (ValueError, TypeError, json_format.Error) as err:
                    raise ValueError(f"events[{i}]: {err}; the stream was cancelled (the "
                                     f"batches sent before it may be committed: event ids "
                                     f"dedupe a re-send)") from None
                if len(batch) == batch_size:
                    yield prof_pb.TrackEventsRequest(events=batch)
                    batch = []
            if batch:
                yield prof_pb.TrackEventsRequest(events=batch)
        # Not retried (clients.retry): re-sending is safe, though, ids dedupe.
        return TrackResult.from_pb(self._call(self._profiles.TrackEventStream, _Requests(batches()),
                                              timeout))

    def track_batch(self, events: Sequence[dict], timeout: float | None = None) -> TrackResult:
        req = prof_pb.TrackEventsRequest(events=[event_from_dict(e) for e in events])
        return TrackResult.from_pb(self._call(self._profiles.TrackEvents, req, timeout))

    def get_profile(self, user_id: str, max_events: int = 0, timeout: float | None = None) -> Profile:
        """PII comes back unmasked only for a token whose principal has the `pii-reader` role."""
        req = prof_pb.GetProfileRequest(user_id=user_id, max_events=max_events)
        return Profile.from_pb(self._call(self._profiles.GetProfile, req, timeout))

    def upsert_attributes(self, user_id: str, attributes: dict[str, str],
                          timeout: float | None = None) -> Profile:
        req = prof_pb.UpsertAttributesRequest(user_id=user_id, attributes=attributes)
        return Profile.from_pb(self._call(self._profiles.UpsertAttributes, req, timeout))

    def set_consent(self, user_id: str, channel: str, opted_in: bool, source: str = "",
                    timestamp: float = 0.0, timeout: float | None = None,
                    purpose: str = "") -> Profile:
        """`purpose`: marketing (default) or transactional."""
        req = prof_pb.SetConsentRequest(user_id=user_id, channel=channel, opted_in=opted_in,
                                        source=source, timestamp=timestamp, purpose=purpose)
        return Profile.from_pb(self._call(self._profiles.SetConsent, req, timeout))

    def add_suppression(self, email: str = "", phone: str = "", reason: str = "",
                        timestamp: float = 0.0, timeout: float | None = None, *,
                        push_token: str = "") -> Suppression:
        """List an email address, an E.164 phone number or a push token, one a call (reason:
        bounce, complaint, manual, unsubscribe; default manual)."""
        req = prof_pb.AddSuppressionRequest(address=_address(email, phone, push_token),
                                            reason=reason, timestamp=timestamp)
        return Suppression.from_pb(self._call(self._profiles.AddSuppression, req, timeout))

    def remove_suppression(self, email: str = "", phone: str = "",
                           timeout: float | None = None, *, push_token: str = "") -> bool:
        """Whether this call took the address off the list (False for a retry of a call that
        did: `unsuppress` says whether it is off)."""
        return self.unsuppress(email, phone, timeout, push_token=push_token)["removed"]

    def unsuppress(self, email: str = "", phone: str = "", timeout: float | None = None, *,
                   push_token: str = "") -> dict[str, bool]:
        """RemoveSuppression's whole answer: {"removed": this call took it off, "unsuppressed":
        it is off the list now}. The channel retries UNAVAILABLE, so a first attempt whose
        answer was lost may have removed it: read `unsuppressed`."""
        reply = self._call(self._profiles.RemoveSuppression, _address(email, phone, push_token),
                           timeout)
        return {"removed": reply.removed, "unsuppressed": reply.unsuppressed}

    def check_suppression(self, email: str = "", phone: str = "",
                          timeout: float | None = None, *, push_token: str = "") -> Suppression:
        reply = self._call(self._profiles.CheckSuppression, _address(email, phone, push_token),
                           timeout)
        return Suppression.from_pb(reply)

    def delete_profile(self, user_id: str, timeout: float | None = None) -> int:
        return self.erase_profile(user_id, timeout)[0]

    def erase_profile(self, user_id: str, timeout: float | None = None) -> tuple[int, float]:
        """(records this call removed, unix seconds of the user's erasure): a repeat removes
        nothing and gives the time of the erasure that did it."""
        req = prof_pb.DeleteProfileRequest(user_id=user_id)
        reply = self._call(self._profiles.DeleteProfile, req, timeout)
        return reply.records_deleted, reply.erased_at

    def export_profile(self, user_id: str, timeout: float | None = 60.0) -> dict:
        """Everything the server holds about one user (role pii-reader), as one JSON document:
        the server's pages of events (`events_next`) and of impressions (`impressions_next`)
        joined into the first page's document."""
        def page(offset: int, impressions: int = 0) -> dict:
            req = prof_pb.ExportProfileRequest(user_id=user_id, events_offset=offset,
                                               impressions_offset=impressions)
            return json.loads(self._call(self._profiles.ExportProfile, req, timeout).document)
        doc = page(0)
        listed = {e["event_id"] for e in doc["profile"]["events"]} if doc.get("events_next") else ()
        while doc.get("events_next"):  # an event tracked between pages shifts the offsets:
            more = page(doc["events_next"])  # the next page may repeat one
            new = [e for e in more["profile"]["events"] if e["event_id"] not in listed]
            listed.update(e["event_id"] for e in new)
            doc["profile"]["events"].extend(new)
            doc["events_listed"] += len(new)
            doc["events_next"] = more["events_next"]
        shown = {(i["request_id"], i["timestamp"]) for i in doc.get("impressions", ())}
        while doc.get("impressions_next"):  # newest first: an answer shown between pages
            more = page(0, doc["impressions_next"])  # shifts the offsets, one may repeat
            new = [i for i in more["impressions"] if (i["request_id"], i["timestamp"]) not in shown]
            shown.update((i["request_id"], i["timestamp"]) for i in new)
            doc["impressions"] = new + doc["impressions"]  # each page lists oldest first
            doc["impressions_next"] = more["impressions_next"]
        return doc

    def export_tombstones(self, timeout: float = 600.0):
        """(kid, digest, erased_at) of every erased user (keyed hashes, never ids)."""
        try:
            for t in self._profiles.ExportTombstones(prof_pb.ExportTombstonesRequest(), timeout=timeout):
                yield t.kid, t.digest, t.erased_at
        except grpc.RpcError as err:
            raise TailorError(err.code(), err.details()) from None

    def export_events(self, start: float = 0.0, end: float = 0.0, timeout: float = 3600.0):
        """Yield every retained raw event (tailor.v1.Event) with start <= timestamp <= end."""
        try:
            yield from self._profiles.ExportEvents(prof_pb.ExportEventsRequest(start=start, end=end),
                                                   timeout=timeout)
        except grpc.RpcError as err:
            raise TailorError(err.code(), err.details() or "") from None

    # -- campaigns -----------------------------------------------------------------------------
    def create_campaign(self, spec: dict, timeout: float | None = None) -> Campaign:
        """`spec`: a tailor.v1.CampaignSpec as a dict (campaign_id, variants, policy, ...)."""
        req = camp_pb.CreateCampaignRequest(spec=json_format.ParseDict(spec, camp_pb.CampaignSpec()))
        return Campaign.from_pb(self._call(self._campaigns.CreateCampaign, req, timeout))

    def list_campaigns(self, include_archived: bool = False, page_size: int = 0,
                       timeout: float | None = None) -> Iterator[Campaign]:
        """Every campaign in id order (archived ones if asked), fetched a page at a time
        (`page_size` 0: the server's page size); `timeout` is per page."""
        token = ""
        while True:
            req = camp_pb.ListCampaignsRequest(include_archived=include_archived,
                                               page_size=page_size, page_token=token)
            page = self._call(self._campaigns.ListCampaigns, req, timeout)
            yield from (Campaign.from_pb(c) for c in page.campaigns)
            token = page.next_page_token
            if not token:
                return

    def get_campaign(self, campaign_id: str, timeout: float | None = None) -> Campaign:
        """One campaign, archived or not (NOT_FOUND for an unknown id)."""
        req = camp_pb.GetCampaignRequest(campaign_id=campaign_id)
        return Campaign.from_pb(self._call(self._campaigns.GetCampaign, req, timeout))

    def update_campaign(self, spec: dict, timeout: float | None = None) -> Campaign:
        req = camp_pb.UpdateCampaignRequest(spec=json_format.ParseDict(spec, camp_pb.CampaignSpec()))
        return Campaign.from_pb(self._call(self._campaigns.UpdateCampaign, req, timeout))

    def archive_campaign(self, campaign_id: str, timeout: float | None = None) -> Campaign:
        req = camp_pb.ArchiveCampaignRequest(campaign_id=campaign_id)
        return Campaign.from_pb(self._call(self._campaigns.ArchiveCampaign, req, timeout))

    def choose_variant(self, campaign_id: str, user_id: str, context: dict[str, float] | None = None,
                       timeout: float | None = None) -> Choice:
        """A logged decision. The request carries a new `request_id`, which the channel's
        retries repeat: a retry of a call whose answer was lost gets the decision logged for
        it, not a second one."""
        req = camp_pb.ChooseVariantRequest(campaign_id=campaign_id, user_id=user_id,
                                           context={k: float(v) for k, v in (context or {}).items()},
                                           request_id=new_request_id())
        return Choice.from_pb(self._call(self._campaigns.ChooseVariant, req, timeout))

    def compose_message(self, campaign_id: str, user_id: str,
                        context: dict[str, float] | None = None,
                        timeout: float | None = None, *, deliver: bool = False,
                        request_id: str | None = None) -> Message:
        """A logged decision, rendered (a suppressed decision or the holdout: no parts); its
        `request_id` (default: a new one) makes a retry get the same decision, as
        `choose_variant`'s. `deliver` also sends it (email through the server's SMTP relay,
        SMS and push through the provider's webhook; `delivered`), or schedules it for its
        `send_at` when quiet hours or a send window defer it (`scheduled`, `send_id`). The
        message is handed over once per request id: a call that ended without its answer
        (UNAVAILABLE once the channel's retries are spent, DEADLINE_EXCEEDED) may have sent it;
        to repeat it, give your own `request_id` and call again with it (the default one is
        not told, and a new id sends again). A
        deliver's deadline is at least `DELIVER_TIMEOUT` unless `timeout` is given."""
        req = self._compose_request(campaign_id, user_id, context, deliver, request_id)
        return Message.from_pb(self._call(self._messaging.ComposeMessage, req,
                                          compose_timeout(timeout, deliver, self.timeout)))

    @staticmethod
    def _compose_request(campaign_id: str, user_id: str, context: dict[str, float] | None,
                         deliver: bool, request_id: str | None) -> msg_pb.ComposeMessageRequest:
        return msg_pb.ComposeMessageRequest(
            campaign_id=campaign_id, user_id=user_id,
            context={k: float(v) for k, v in (context or {}).items()}, deliver=deliver,
            request_id=request_id or new_request_id())

    def preview_message(self, campaign_id: str, variant_id: str = "", user_id: str = "",
                        attributes: dict[str, str] | None = None, interests=(), channel: str = "",
                        timeout: float | None = None) -> Message:
        """A variant rendered for a user or a sample profile; no decision is logged."""
        req = msg_pb.PreviewMessageRequest(
            campaign_id=campaign_id, variant_id=variant_id, user_id=user_id,
            sample_attributes=attributes or {}, sample_interests=list(interests), channel=channel)
        return Message.from_pb(self._call(self._messaging.PreviewMessage, req, timeout))

    def send_campaign(self, campaign_id: str, user_ids, rate: float | None = None,
                      context: dict[str, float] | None = None,
                      timeout: float | None = None, request_id: str | None = None) -> SendProgress:
        """Start a send job to `user_ids` (`rate` messages/s on each channel the campaign
        sends on, default the server's); returns its progress (`send_id`, counts). The
        request carries `request_id` (default: a new one), so a retry, the channel's or the
        caller's with the same id, is answered the job it started instead of a second job.
        A call that ends without its answer (UNAVAILABLE once the channel's retries are spent,
        DEADLINE_EXCEEDED) may have started its job: to repeat it, give your own `request_id`
        and call again with it (a new id starts a second job)."""
        rates = {} if rate is None else dict.fromkeys(
            self._message_channels(campaign_id, timeout), float(rate))
        req = msg_pb.SendCampaignRequest(
            campaign_id=campaign_id, user_ids=list(user_ids), rate_per_second=rates,
            context={k: float(v) for k, v in (context or {}).items()},
            request_id=request_id or new_request_id())
        return SendProgress.from_pb(self._call(self._messaging.SendCampaign, req, timeout))

    def _message_channels(self, campaign_id: str, timeout: float | None) -> list[str]:
        """The message channels a campaign may send on (GetCampaign): its channel, then its
        `channels`; none for a web campaign (SendCampaign refuses it)."""
        spec = self._call(self._campaigns.GetCampaign,
                          camp_pb.GetCampaignRequest(campaign_id=campaign_id), timeout).spec
        return [c for c in dict.fromkeys([spec.channel, *spec.channels]) if c in MESSAGE_CHANNELS]

    def send_progress(self, send_id: str, timeout: float | None = None) -> SendProgress:
        """Counts of a send job: total, sent, suppressed (by reason), failed (by reason),
        pending, done."""
        req = msg_pb.GetSendProgressRequest(send_id=send_id)
        return SendProgress.from_pb(self._call(self._messaging.GetSendProgress, req, timeout))

    def cancel_send(self, send_id: str, timeout: float | None = None) -> SendProgress:
        """Stop a send job (a SendCampaign's, or a scheduled message's `send_id`): nothing more
        of it goes; its unsettled recipients are counted suppressed `cancelled`."""
        req = msg_pb.CancelSendRequest(send_id=send_id)
        return SendProgress.from_pb(self._call(self._messaging.CancelSend, req, timeout))

    def dead_letters(self, limit: int = 100, channel: str = "",
                     timeout: float | None = None) -> list[DeadLetter]:
        """Messages no adapter could deliver, newest first (of `channel`, if given)."""
        req = msg_pb.ListDeadLettersRequest(limit=limit, channel=channel)
        reply = self._call(self._messaging.ListDeadLetters, req, timeout)
        return [DeadLetter.from_pb(d) for d in reply.letters]

    def retry_dead_letter(self, letter_id: str, timeout: float | None = None) -> DeadLetter:
        """Send a dead letter again; it is dropped when it goes."""
        req = msg_pb.RetryDeadLetterRequest(id=letter_id)
        return DeadLetter.from_pb(self._call(self._messaging.RetryDeadLetter, req, timeout))

    def report_reward(self, decision_id: str, reward: float, timeout: float | None = None) -> Reward:
        req = camp_pb.ReportRewardRequest(decision_id=decision_id, reward=reward)
        return Reward.from_pb(self._call(self._campaigns.ReportReward, req, timeout))

    def campaign_stats(self, campaign_id: str, timeout: float | None = None) -> CampaignStats:
        req = camp_pb.GetCampaignStatsRequest(campaign_id=campaign_id)
        return CampaignStats.from_pb(self._call(self._campaigns.GetCampaignStats, req, timeout))

    def sample_size(self, minimum_detectable_effect: float, *, baseline_rate: float | None = None,
                    baseline_mean: float | None = None, variance: float = 0.0, alpha: float = 0.0,
                    power: float = 0.0, arms: int = 0, allocation: Sequence[float] = (),
                    timeout: float | None = None) -> SampleSize:
        """Observations per arm of an A/B/n test (GetSampleSize): give `baseline_rate`, or
        `baseline_mean` with `variance`."""
        req = camp_pb.GetSampleSizeRequest(
            minimum_detectable_effect=minimum_detectable_effect, variance=variance, alpha=alpha,
            power=power, arms=arms, allocation=allocation)
        if baseline_rate is not None:
            req.baseline_rate = baseline_rate
        if baseline_mean is not None:
            req.baseline_mean = baseline_mean
        return SampleSize.from_pb(self._call(self._campaigns.GetSampleSize, req, timeout))

    def export_decisions(self, campaign_id: str = "", start: float = 0.0, end: float = 0.0,
                         include_pending: bool = False, timeout: float = 3600.0) -> Iterator[dict]:
        """Decision-log records as dicts in the `training.ope` JSON-lines format, with each
        decision's status and reason, and the contact policy's channel, send time and their
        propensities (`channel_propensity`, `send_at_propensity`)."""
        req = camp_pb.ExportDecisionsRequest(campaign_id=campaign_id, start=start, end=end,
                                             include_pending=include_pending)
        try:
            for rec in self._campaigns.ExportDecisions(req, timeout=timeout):
                yield {"decision_id": rec.decision_id, "campaign_id": rec.campaign_id,
                       "user_id": rec.user_id, "timestamp": rec.timestamp, "arm": rec.arm,
                       "propensity": rec.propensity, "reward": rec.reward,
                       "context": list(rec.context), "position": rec.position,
                       "variant_id": rec.variant_id, "status": rec.status,
                       "reason": rec.reason, "channel": rec.channel, "send_at": rec.send_at,
                       "channel_propensity": rec.channel_propensity,
                       "send_at_propensity": rec.send_at_propensity}
        except grpc.RpcError as err:
            raise TailorError(err.code(), err.details() or "") from None

    def plan_campaign(self, campaign_id: str, user_ids: Iterable[str], *, batch_size: int = 1000,
                      context: dict[str, float] | None = None,
                      timeout: float = 3600.0) -> Iterator[dict]:
        """Decisions for an audience (PlanCampaign), one dict per user in the order of
        `user_ids` (read lazily, sent `batch_size` at a time): {"user_id", "decision_id",
        "variant_id", "arm", "propensity", "holdout", "channel", "send_at", "suppressed",
        "reason", "channel_propensity", "send_at_propensity"}. Not retried: every decision
        answered is already logged."""
        def requests():
            first, batch = True, []
            for user_id in user_ids:
                batch.append(user_id)
                if len(batch) == batch_size:
                    yield _plan_request(campaign_id if first else "", batch, context if first else None)
                    first, batch = False, []
            if batch or first:
                yield _plan_request(campaign_id if first else "", batch, context if first else None)
        sent = _Requests(requests())
        try:
            for answer in self._campaigns.PlanCampaign(sent, timeout=timeout):
                for d in answer.decisions:
                    yield {"user_id": d.user_id, "decision_id": d.decision_id,
                           "variant_id": d.variant_id, "arm": d.arm, "propensity": d.propensity,
                           "holdout": d.holdout, "channel": d.channel, "send_at": d.send_at,
                           "suppressed": d.suppressed, "reason": d.reason,
                           "channel_propensity": d.channel_propensity,
                           "send_at_propensity": d.send_at_propensity}
        except grpc.RpcError as err:
            raise _failure(err, sent) from None

    # -- attribution -------------------------------------------------------------------------
    def attribute(self, paths: Iterable[dict | str | attr_pb.Path], model: str, *,
                  chunk: int = 10_000, timeout: float = 600.0, **options) -> Attribution:
        """Attribute paths, streamed `chunk` at a time (AttributeStream), fewer in a message
        their bytes would take past `CHUNK_BYTES` (under any server's request bound,
        `grpc_max_request_bytes`, at least 2 MiB; a longer path goes alone). A path is a dict
        ({"path": ["a", "b"] | "a > b", "conversions": 1, "value": 0, "nulls": 0,
        "timestamps": [...]}), a tailor.v1.Path, or a ChannelAttribution row
        "a > b;conversions;value;nulls". `options` are ModelSpec fields (order,
        shapley_form="rate", path_credits=True, ...).

        Every dict is checked before the upload starts: a bad one raises ValueError naming its
        position (`paths[i]`) and key, and nothing is sent."""
        spec = attribution_spec(model, **options)
        records = []
        for i, p in enumerate(paths):
            try:
                records.append(path_from_dict(p) if isinstance(p, dict) else p)
            except ValueError as err:
                raise ValueError(f"paths[{i}]: {err}") from None

        def message(part: list, first: bool) -> attr_pb.AttributeRequest:
            return attr_pb.AttributeRequest(
                spec=spec if first else None,
                paths=[p for p in part if isinstance(p, attr_pb.Path)],
                channelattribution_rows=[p for p in part if isinstance(p, str)])

        def requests():
            part, size, first = [], 0, True
            for p in records:
                weight = p.ByteSize() if isinstance(p, attr_pb.Path) else len(p.encode())
                if part and (len(part) == chunk or size + weight > CHUNK_BYTES):
                    yield message(part, first)
                    part, size, first = [], 0, False
                part.append(p)
                size += weight
            yield message(part, first)
        return Attribution.from_pb(self._call(self._attribution.AttributeStream, _Requests(requests()),
                                              timeout))

    def attribute_stored(self, model: str, *, by: str = "channel", start: float = 0,
                         end: float = 0, lookback_days: float = 30.0,
                         touch_types: Sequence[str] = (), exclude_nulls: bool = False,
                         timeout: float = 600.0, **options) -> Attribution:
        """Attribute journeys built by the server from stored events (purchases from `start`
        to `end`, touches at most `lookback_days` before each), by channel or campaign."""
        req = attr_pb.AttributeStoredRequest(
            spec=attribution_spec(model, **options), start_time=int(start), end_time=int(end),
            lookback_seconds=round(lookback_days * 86400),
            group_by=attr_pb.Grouping.Value(by.upper()),
            touch_types=touch_types, exclude_nulls=exclude_nulls)
        return Attribution.from_pb(self._call(self._attribution.AttributeStored, req, timeout))


class _Requests:
    """A stream's requests, which gRPC reads on its own thread: an error raised while making
    one (a bad event, the caller's iterator failing) ends the call as `UNKNOWN: Exception
    iterating requests!`, so it is kept here for `_failure` to raise instead."""

    def __init__(self, requests: Iterable):
        self._requests, self.error = iter(requests), None

    def __iter__(self):
        return self

    def __next__(self):
        try:
            return next(self._requests)
        except StopIteration:
            raise
        except Exception as err:
            self.error = err
            raise


def _failure(err: grpc.RpcError, request) -> Exception:
    """What a failed call raises: the error of making its requests, if that ended it, else a
    TailorError with the call's status."""
    if isinstance(request, _Requests) and request.error is not None:
        return request.error
    return TailorError(err.code(), err.details() or "")


ATTRIBUTION_MODELS = {"first": "FIRST_TOUCH", "last": "LAST_TOUCH",
                      "last_non_direct": "LAST_NON_DIRECT", "linear": "LINEAR",
                      "position": "POSITION_BASED", "time_decay": "TIME_DECAY",
                      "markov": "MARKOV", "shapley": "SHAPLEY"}


def attribution_spec(model: str, *, shapley_form: str = "", **fields) -> attr_pb.ModelSpec:
    """A ModelSpec from a model name (`ATTRIBUTION_MODELS` keys or enum names) and its fields."""
    name = ATTRIBUTION_MODELS.get(model, model.upper())
    if name not in attr_pb.AttributionModel.keys() or name.endswith("UNSPECIFIED"):
        raise ValueError(f"unknown attribution model {model!r}; expected one of "
                         f"{', '.join(ATTRIBUTION_MODELS)}")
    form = attr_pb.ShapleyForm.Value(shapley_form.upper()) if shapley_form else 0
    return attr_pb.ModelSpec(model=attr_pb.AttributionModel.Value(name), shapley_form=form,
                             **fields)


PATH_KEYS = ("path", "conversions", "value", "nulls", "timestamps")


def path_from_dict(p: dict) -> attr_pb.Path:
    """A tailor.v1.Path from {"path": list | "a > b", "conversions" (default 1), "value",
    "nulls", "timestamps"} (the `python -m training attribute` JSON Lines format).

    Raises ValueError naming the key at fault (unknown, missing or of the wrong type)."""
    unknown = [k for k in p if k not in PATH_KEYS]
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r}; a path record has the keys "
                         f"{', '.join(PATH_KEYS)} (channels go in \"path\": [\"a\", \"b\"])")
    if "path" not in p:
        raise ValueError("missing key 'path' (a list of channel names or \"a > b > c\")")
    path = p["path"]
    if isinstance(path, list) and all(isinstance(c, str) for c in path):
        channels, text = path, ""
    elif isinstance(path, str):
        channels, text = (), path
    else:
        raise ValueError(f"key 'path': expected a list of channel names or \"a > b > c\", "
                         f"got {path!r}")
    stamps = p.get("timestamps") or []
    if not isinstance(stamps, list):
        raise ValueError(f"key 'timestamps': expected a list of numbers, got {stamps!r}")
    return attr_pb.Path(channels=channels, path=text, conversions=_count(p, "conversions", 1),
                        value=_count(p, "value", 0), nulls=_count(p, "nulls", 0),
                        timestamps=[_number(t, "timestamps") for t in stamps])


def _count(p: dict, key: str, default: float) -> float:
    x = _number(p.get(key, default), key)
    if not (math.isfinite(x) and x >= 0):
        raise ValueError(f"key {key!r}: must be finite and >= 0, got {x}")
    return x


def _number(x, key: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise ValueError(f"key {key!r}: expected a number, got {x!r}")
    return float(x)


def _plan_request(campaign_id: str, user_ids: list[str],
                  context: dict[str, float] | None) -> camp_pb.PlanCampaignRequest:
    return camp_pb.PlanCampaignRequest(campaign_id=campaign_id, user_ids=user_ids,
                                       context={k: float(v) for k, v in (context or {}).items()})


def event_from_dict(ev: dict) -> prof_pb.Event:
    """A tailor.v1.Event from a JSON-lines record (timestamp: epoch seconds or RFC 3339; an ISO
    time without an offset is UTC, as everywhere in Tailor, never the local time zone)."""
    ev = dict(ev)
    ts = ev.get("timestamp", 0)
    if isinstance(ts, str):
        try:
            ts = float(ts)
        except ValueError:
            when = datetime.fromisoformat(ts.replace("Z", "+00:00"))
            ts = (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
    ev["timestamp"] = float(ts or 0)
    if "value" in ev and ev["value"] is not None:
        ev["value"] = float(ev["value"])
    ev["attributes"] = {str(k): str(v) for k, v in (ev.get("attributes") or {}).items()}
    return json_format.ParseDict(ev, prof_pb.Event(), ignore_unknown_fields=False)


def _address(email: str, phone: str, push_token: str = "") -> prof_pb.SuppressionAddress:
    """The one of `email`, `phone` and `push_token` given (none: the server names the missing
    field; more: ValueError, as the request holds one address and the others would go
    unlisted)."""
    given = {k: v for k, v in (("email", email), ("phone", phone), ("push_token", push_token))
             if v}
    if len(given) > 1:
        raise ValueError(f"a suppression call takes one address, not {' and '.join(given)} "
                         "(one call each)")
    return prof_pb.SuppressionAddress(**given)
