"""Build, start and stop one gRPC server process: services, health, reflection, metrics."""
from __future__ import annotations

import asyncio
import contextvars
import functools
import gc
import logging
import math
import time
from collections.abc import Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from protos.tailor.v1 import (
    attribution_pb2_grpc,
    audit_pb2_grpc,
    campaign_pb2_grpc,
    catalog_pb2_grpc,
    diagnostics_pb2_grpc,
    messaging_pb2_grpc,
    model_admin_pb2_grpc,
    profile_pb2_grpc,
    recommendation_pb2_grpc,
)

from . import durable
from . import http as public_http  # loaded only with a public port (`server.lazy`)
from .attribution import Attributor
from .background import Background
from .campaigns import Campaigns
from .catalog import Catalog
from .config import Settings
from .contact import ContactPolicy, KeepOut, Suppressions
from .contact.prior import PriorSource
from .contact.trunks import load as load_plans
from .drift import DriftMonitor
from .errors import FailedPrecondition
from .impressions import Impressions
from .messages.compose import Composer
from .messages.delivery import Delivery
from .messages.gate import SendGate
from .messages.jobs import SendJobs
from .messages.optout import SharedOptOut
from .messages.phones import AddressIndex, PhoneIndex
from .messages.sends import SendRecords
from .messages.stops import SmsStops
from .messages.unsubscribe import UnsubscribeTokens
from .metrics import USER_CACHE_USERS, measure_loop_lag, report_store
from .models import BundlePusher, ModelRegistry
from .models.guardrails import GuardrailPolicy
from .models.monitor import CanaryMonitor
from .models.scrub import ScrubQueue, scrub_stored
from .preload import STATISTICS, preload
from .profiles import EventRules, Profiles
from .profiles.history import HistoryBlend
from .profiles.outbox import REPLAY_SECONDS
from .profiles.schema import EVENT_TYPES
from .profiles.seen import SEEN_TYPES
from .profiles.tombstones import Tombstones
from .recommend import Recommender
from .retention import retention_cutoffs
from .rpc import RpcInterceptor
from .security.audit import AuditLog
from .security.audit_export import AuditExporter
from .security.guard import AuthGuard
from .security.hosts import with_port
from .security.pii import PiiPolicy
from .security.transport import ServerTls
from .security.userref import bind as bind_refs
from .security.userref import use_key
from .services import register_services
from .services.attribution import AttributionServicer
from .services.audit import AuditServicer
from .services.campaign import CampaignServicer
from .services.catalog import CatalogServicer
from .services.diagnostics import DiagnosticsServicer
from .services.health import HealthServicer
from .services.messaging import MessagingServicer
from .services.model_admin import ModelAdminServicer
from .services.profile import ProfileServicer
from .services.recommendation import RecommendationServicer
from .store import Store, lock_data_dir
from .store.crypto import STORE_ID_RING, check_secrets_outside, secrets_for_store
from .store.sharing import hold_layouts
from .store.tokens import bound_context, forget_ids

__all__ = ["TailorServer"]

logger = logging.getLogger("tailor.app")


class TailorServer:
    """One server process. `await start()` returns the bound port; `await stop()` drains."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.port: int | None = None
        self._server: grpc.aio.Server | None = None
        self.background = Background()
        """The periodic passes (sweeps, reports, follows); `stop` waits for those under way."""
        self.audit = None
        """The audit log the auth interceptor reports to (`record(...)`), if any."""
        self.reloaders: list[Callable[[], object]] = []
        """Called in order on SIGHUP (`reload()`): auth config, certificates, ..."""
        self.tls: ServerTls | None = None
        self.public: public_http.PublicHttp | None = None
        """The public HTTP endpoint (unsubscribe, inbound SMS) when `public_http_port` is set."""
        self._context = None
        """Where this server's start, calls and stop run: its store's keys under its own
        `store-id` key (`tokens.bound_context`), another server's in this process apart."""

    @property
    def context(self) -> contextvars.Context:
        """A copy of the context this server's start, calls and stop run in (its keys): where
        a call into its parts made from outside them (an embedding program's, a test's) runs,
        `asyncio.create_task(coro, context=server.context)` or
        `asyncio.to_thread(server.context.run, fn, ...)`. Outside every server's context, tokens
        are under the keys of the store opened last, which with two servers in the process
        may be the other one's."""
        if self._context is None:
            raise RuntimeError("the server has not started")
        return self._context.copy()

    def _options(self) -> list[tuple[str, int]]:
        """grpc.aio.server options from Settings (message sizes, keepalive, connection age)."""
        s = self.settings

        def ms(seconds: float) -> int:
            return int(seconds * 1000)
        options = [("grpc.max_receive_message_length", s.grpc_max_request_bytes),
                   ("grpc.max_send_message_length", s.grpc_max_message_bytes),
                   ("grpc.so_reuseport", 1 if s.workers > 1 else 0),
                   ("grpc.http2.max_pings_without_data", 0),
                   ("grpc.keepalive_time_ms", ms(s.grpc_keepalive_seconds)),
                   ("grpc.keepalive_timeout_ms", ms(s.grpc_keepalive_timeout_seconds)),
                   ("grpc.keepalive_permit_without_calls", int(s.grpc_keepalive_permit_without_calls)),
                   ("grpc.http2.min_ping_interval_without_data_ms",
                    ms(s.grpc_min_ping_interval_seconds)),
                   ("grpc.http2.max_ping_strikes", s.grpc_max_ping_strikes),
                   ("grpc.max_concurrent_streams", s.grpc_max_concurrent_streams),
                   # one limit, not gRPC's soft (8 KiB, refused at random above) and hard ones
                   ("grpc.max_metadata_size", s.limits.metadata_bytes),
                   ("grpc.absolute_max_metadata_size", s.limits.metadata_bytes)]
        if s.grpc_max_connection_age_seconds is not None:
            options += [("grpc.max_connection_age_ms", ms(s.grpc_max_connection_age_seconds)),
                        ("grpc.max_connection_age_grace_ms",
                         ms(s.grpc_max_connection_age_grace_seconds))]
        return options

    def _build_security(self) -> None:
        """Secrets first: log lines that name a user need the `user-id` key (`user_ref`)."""
        s = self.settings
        self.secrets = secrets_for_store(s)  # none generated over a store keyed without them
        use_key(self.secrets["user-id"].key)
        if self.audit is None:  # one given before start() (an embedding app's) is kept
            self.audit = AuditLog(s.audit_dir, self.secrets["audit"], max_bytes=s.audit_max_bytes,
                                  keep_files=s.audit_keep_files)
            durable.check_writable(s.audit_dir)  # refused now, not at each audited call

    def _build_domain(self) -> None:
        s = self.settings
        check_secrets_outside(s.secrets_dir, s.data_dir)
        self.store = Store.from_settings(s, self.secrets)
        self.registry = ModelRegistry(s, self.store)
        rules = EventRules(future_tolerance_s=s.event_future_tolerance_s,
                           retention_s=s.event_retention_days * 86400.0, limits=s.limits,
                           retention_by_type={t: d * 86400.0 for t, d
                                              in s.event_retention_days_by_type.items()},
                           seen_types=SEEN_TYPES | set(s.seen_exclusion_days),
                           seen_first=frozenset(t for t, d in s.seen_exclusion_days.items()
                                                if d == math.inf))
        self.tombstones = Tombstones(self.store, self.secrets["erasure"],
                                     future_tolerance_s=s.event_future_tolerance_s,
                                     impressions=self.secrets["user-id"])
        self.profiles = Profiles(self.store, self.registry, rules=rules,
                                 history=HistoryBlend.from_settings(s), tombstones=self.tombstones,
                                 default_zone=s.contact_default_timezone)
        self.registry.add_check(self.profiles.check_bundle)
        scrub_queue = ScrubQueue(s.bundles_dir, matches=self.tombstones.matches)
        self.profiles.add_eraser(scrub_queue)
        self.registry.add_check(scrub_queue.check_bundle)
        self.registry.add_ids_check(scrub_queue.check_ids)
        self.catalog = Catalog(s, self.store, self.registry)
        self.registry.add_amender(self.catalog.amend_bundle)
        self.impressions = Impressions(s, self.store, self.secrets["user-id"],
                                       erasure=self.tombstones.ring, bundles=self.registry,
                                       user_ids=self.profiles.user_ids)
        # Outcomes per version only while the log writes them: without it the canary's
        # guardrails must not wait for impressions that never come.
        outcomes = self.impressions.stats.counts if s.impression_log else None
        self.pusher = BundlePusher(self.registry, s.compute_threads, outcomes=outcomes)
        self.drift = DriftMonitor.from_settings(s, self.registry)
        self.recommender = Recommender(s, self.registry, history_of=self.profiles.history_of,
                                       live_of=self.profiles.states_and_seen,
                                       impressions=self.impressions.sink,
                                       observe=self.drift.observe if s.drift_enabled else None)
        self.registry.add_check(self.recommender.check_bundle)
        self.canary_monitor = CanaryMonitor(self.registry, self.recommender.tally,
                                            GuardrailPolicy.from_settings(s),
                                            s.canary_check_seconds, audit=self.audit,
                                            outcomes=outcomes, click_window=s.canary_click_window_seconds,
                                            shown_between=self.impressions.stats.shown_between
                                            if s.impression_log else None)
        # The suppression list follows bounce and complaint events (a listener below) and
        # exports whether a user's addresses are listed; it is no eraser: it outlives the
        # profiles whose addresses it holds (by keyed hash only). Its keep-out is one: an
        # erasure lists the addresses whose marketing consent the user withdrew.
        self.suppressions = Suppressions(self.store, self.secrets["suppression"], self.profiles,
                                         s.limits)
        self.campaigns = Campaigns(self.store, self.profiles, sweep_seconds=s.campaign_sweep_seconds,
                                   propensity_refresh_s=s.campaign_propensity_refresh_seconds,
                                   state_refresh_s=s.campaign_state_refresh_seconds,
                                   group_commit=(s.decision_group_commit_ms / 1000.0,
                                                 s.decision_group_commit_from),
                                   limits=s.limits, contact=self._contact_policy(),
                                   suppressions=self.suppressions, erasures=self.tombstones,
                                   erasure_secrets=str(s.secrets_dir or ""))
        self.attributor = Attributor(self.profiles.export, EVENT_TYPES, limits=s.limits,
                                     max_message_bytes=s.grpc_max_message_bytes)
        self.pii = PiiPolicy(s.pii_keys)
        self.tokens = UnsubscribeTokens(self.secrets["unsubscribe"])
        self.phones = PhoneIndex(self.store, self.secrets["unsubscribe"],
                                 s.limits.address_profiles)
        self.emails = AddressIndex(self.store, self.secrets["unsubscribe"], "email",
                                   s.limits.address_profiles)
        self.delivery = Delivery.from_settings(
            s, self.profiles, self.store, self.secrets.get("delivery-webhook"),
            gate=SendGate.from_settings(s, self.campaigns, self.profiles, self.suppressions,
                                        self.store), suppressions=self.suppressions)
        self.delivery.addresses = {"sms": self.phones, "email": self.emails}
        # A STOP reply and a provider's 21610 change the profiles at a number one way.
        self.stops = SmsStops(self.phones, self.profiles, self.profiles, s.consent_defaults)
        self.delivery.stops = self.stops
        self.delivery.profiles = self.profiles  # a push token answered gone is dropped
        self.composer = Composer(s, self.campaigns, self.profiles, self.recommender, self.tokens,
                                 self.phones, self.delivery, self.emails)
        send_records = SendRecords(self.store, s.limits.request_id_window_seconds,
                                   s.limits.profile_export_message_bytes)
        self.sends = SendJobs(s, send_records, self.composer, self.delivery)
        self.composer.later = self.sends  # a deferred ComposeMessage goes as a send job
        # Domains that follow tracked events or keep records about users join the profiles
        # domain here, through `server.interfaces`, and nowhere else.
        self.profiles.campaign_stored = self.campaigns.stored  # an unsubscribe's old campaign
        for domain in (self.campaigns,):
            self.profiles.add_listener(domain)
            self.profiles.add_eraser(domain)
            self.profiles.add_exporter(domain)
        self.profiles.add_listener(self.suppressions)
        self.profiles.add_exporter(self.suppressions)
        keep_out = KeepOut(self.suppressions, self.profiles)
        self.profiles.add_eraser(keep_out)  # reads the meta record: before it goes
        self.profiles.add_opt_in_watcher(keep_out)
        for index in (self.phones, self.emails):
            self.profiles.add_eraser(index)
            self.profiles.add_attribute_watcher(index)
        self.profiles.backfill_watchers()  # the profiles stored before them (once a store)
        self.profiles.add_listener(SharedOptOut(self.store, (self.phones, self.emails),
                                                self.profiles, self.profiles))
        self.profiles.add_listener(self.impressions)
        self.profiles.add_eraser(self.impressions)
        self.profiles.add_eraser(self.recommender)
        self.tombstones.watch(self.recommender.forget_erased)  # another worker's erasures
        self.tombstones.watch(self.impressions.forget_erased)
        self.tombstones.watch(self.suppressions.forget_erased)
        self.tombstones.watch(forget_ids)
        self.profiles.add_exporter(self.impressions)
        self.profiles.add_eraser(self.delivery.dead)
        self.profiles.add_eraser(send_records)
        self.profiles.add_exporter(self.delivery.dead)  # what the access export lists of them
        self.profiles.add_exporter(send_records)
        self.profiles.add_exporter(AuditExporter(s.audit_dir, s.limits.profile_export_audit_bytes,
                                                   self.secrets["user-id"]))

    def _contact_policy(self) -> ContactPolicy:
        """Consent, caps, quiet hours, and send time and channel from the profiles' states."""
        s, layout = self.settings, self.profiles.layout
        prior = PriorSource(layout, self.profiles.sample_states, s.contact_prior_sample,
                            s.contact_prior_refresh_seconds)
        return ContactPolicy.from_settings(s, layout=layout, prior=prior)

    def _servicers(self) -> list:
        return [
            (recommendation_pb2_grpc.add_RecommendationServiceServicer_to_server,
             RecommendationServicer(self.settings, self.recommender)),
            (model_admin_pb2_grpc.add_ModelAdminServiceServicer_to_server,
             ModelAdminServicer(self.registry, self.pusher, self.canary_monitor, self.drift,
                                stats=self.impressions, pii=self.pii,
                                candidates=self.recommender.candidates, audit=self.audit)),
            (profile_pb2_grpc.add_ProfileServiceServicer_to_server,
             ProfileServicer(self.profiles, self.pii, self.suppressions, functools.partial(
                 self.campaigns.mask_decisions, is_pii=self.pii.is_pii), audit=self.audit)),
            (diagnostics_pb2_grpc.add_DiagnosticsServiceServicer_to_server, DiagnosticsServicer()),
            (campaign_pb2_grpc.add_CampaignServiceServicer_to_server,
             CampaignServicer(self.campaigns, self.pii)),
            (attribution_pb2_grpc.add_AttributionServiceServicer_to_server,
             AttributionServicer(self.attributor)),
            (audit_pb2_grpc.add_AuditServiceServicer_to_server, AuditServicer(self.audit)),
            (messaging_pb2_grpc.add_MessagingServiceServicer_to_server,
             MessagingServicer(self.composer, self.sends, self.delivery, self.pii)),
            (catalog_pb2_grpc.add_CatalogServiceServicer_to_server, CatalogServicer(self.catalog)),
        ]

    async def start(self, serving: bool = True) -> int:
        """Bind and start; health reports SERVING now, or at `set_serving()` if not `serving`."""
        self._lock = lock_data_dir(self.settings.data_dir, exclusive=False)
        try:  # refused beside a live Tailor of other record layouts, before any step runs
            self._layouts = hold_layouts(self.settings.store_dir)
        except BaseException:
            self._lock.close()
            raise
        self._build_security()  # secrets and the audit log, which the auth guard reports to
        self._context = bound_context(self.secrets[STORE_ID_RING].key)
        self._context.run(bind_refs, self.secrets["user-id"].key)  # its log and audit refs
        # its tasks (the gRPC server's, whose calls' tasks are made from them) keep the context
        return await asyncio.create_task(self._start(serving), context=self._context)

    async def _start(self, serving: bool) -> int:
        self.auth = AuthGuard(self.settings, self.audit)  # a bad auth config stops here
        self.reloaders.append(self.auth.reload_auth)
        self._build_domain()
        try:
            return await self._start_serving(serving)
        except BaseException:  # a bundle refused, a port in use: no writer process left behind
            await self.background.stop()
            if self._server is not None:  # a step after gRPC had started failed
                await self._server.stop(None)
                self._server = None
            if self.public is not None:  # ... or after the public port listened
                await self.public.stop()
                self.public = None
            await self._close_domain()
            raise

    async def _start_serving(self, serving: bool) -> int:
        await self.registry.start()
        await self.catalog.start()
        # Both writer processes load side by side (a few hundred ms each); both have finished
        # starting, or failed, before the first error goes up to `start` (which closes them).
        # The phone numbering plans load meanwhile, in a thread: the first number read on the
        # loop held it 60-150 ms (`contact.trunks.load`); so does the tombstone list: a
        # process's first read of it (0.7 s of CPU at 100,000) otherwise came with the first
        # poll or Recommend after SERVING, every call of that time slowed by it or paying it.
        failed = [outcome for outcome in await asyncio.gather(
            self.campaigns.start(), self.impressions.start(), asyncio.to_thread(load_plans),
            asyncio.to_thread(self.tombstones.current),
            return_exceptions=True) if isinstance(outcome, BaseException)]
        for other in failed[1:]:
            logger.error("another start-up step failed too: %s", other)
        if failed:
            raise failed[0]
        await self._replay_outbox()  # what a crash left between a commit and its listeners
        # Outermost first: every call is identified, counted and timed, refused ones too.
        # A reply the client leaves unread ends its stream: PlanCampaign's after its own bound.
        limits = self.settings.limits
        unread = {"/tailor.v1.CampaignService/PlanCampaign": (
            limits.plan_unread_seconds, "Limits.plan_unread_seconds")}
        every = (limits.stream_unread_seconds, "Limits.stream_unread_seconds")
        interceptors = [RpcInterceptor(self.settings.access_log, unread, every),
                        self.auth.interceptor]
        server = grpc.aio.server(interceptors=interceptors, options=self._options())
        names = register_services(server, self._servicers())
        self.health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        self._service_names = ["", *names]
        await self.set_serving(serving)
        if self.settings.reflection:
            reflection.enable_server_reflection(
                [*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
        address = with_port(self.settings.host, self.settings.port)
        self.tls = ServerTls.from_settings(self.settings)
        try:
            if self.tls is None:
                self.port = server.add_insecure_port(address)
            else:
                self.port = server.add_secure_port(address, self.tls.credentials())
                self.reloaders.append(self.tls.reload)
        except RuntimeError:
            self.port = 0
        if not self.port:
            raise FailedPrecondition(f"could not listen on {address}: the port is in use, or the "
                                     "host is not an address of this machine")
        # Startup objects (modules, the bundle's lookup tables) live as long as the process:
        # keep them out of every later full GC pass (10+ ms each, on the hot path otherwise).
        gc.collect()
        gc.freeze()
        await server.start()
        self._server = server
        await self._start_public()
        await self.sends.resume()  # unfinished SendCampaign jobs whose process is gone
        self._start_background()
        if self.settings.preload_statistics:  # after SERVING: readiness does not wait for it
            preload(STATISTICS)
        if self.settings.drift_enabled:
            self.drift.start()
        logger.info("serving on %s (%s)", with_port(self.settings.host, self.port), ", ".join(names))
        return self.port

    def _start_background(self) -> None:
        s = self.settings

        def every(seconds, one_pass, failed, first=True):
            self.background.every(seconds, one_pass, failed, first, log=logger)
        every(s.retention_sweep_seconds, self._sweep_retention, "retention sweep failed")
        every(self.campaigns.sweep_seconds, self.campaigns.sweep_due,
              "reward window sweep failed")
        every(s.store_metrics_seconds, self._report_store, "reading the store's size failed")
        self.background.every(0, measure_loop_lag, "measuring the loop's lag failed", log=logger,
                              holds=False)  # a timer always pending, cancelled at a stop
        every(self.canary_monitor.interval, self.canary_monitor.check,
              "canary guardrail check failed", first=False)
        # the bundles lock keeps the scrub (`server.models.scrub`) to one worker at a time
        every(s.bundle_scrub_seconds, lambda: asyncio.to_thread(scrub_stored, s.bundles_dir),
              "bundle scrub failed", first=False)
        every(REPLAY_SECONDS, self.profiles.replay_outbox, "outbox replay failed", first=False)
        every(s.bundle_poll_seconds, self._follow_erasures, "reading the tombstones failed",
              first=False)

    async def _replay_outbox(self) -> None:
        """Apply every listener effect a crash left in the outbox (`server.profiles.outbox`),
        once the listeners' domains are up; a failure is logged (the periodic replay retries)."""
        try:
            await self.profiles.replay_outbox(older_than=0)
        except Exception:  # serve anyway; the entries stay for the next replay
            logger.exception("outbox replay at start failed")

    async def _start_public(self) -> None:
        s = self.settings
        if s.public_http_port is None:
            return
        ctx, reload = public_http.server_ssl_context(self.tls)
        sms, reports = self._signed("sms-webhook"), self._signed("delivery-events")
        sms = sms and public_http.SmsInbound(sms, self.stops, s.event_future_tolerance_s)
        reports = reports and public_http.DeliveryEvents(reports, self.campaigns, self.profiles,
                                                         self.suppressions, s.limits, self.stops)
        self.public = public_http.PublicHttp(
            self.tokens, self.profiles, host=s.host.strip("[]"), port=s.public_http_port, ssl_context=ctx,
            reuse_port=s.workers > 1, sms=sms, delivery_events=reports, limits=s.limits,
            addresses=(self.phones, self.emails), metas=self.profiles)
        try:
            await self.public.start()
        except OSError as err:  # in use, or not an address of this machine: one line, exit 2
            await self.public.stop()
            self.public = None
            raise FailedPrecondition(f"could not listen on {with_port(s.host, s.public_http_port)} "
                                     f"(public HTTP): {err.strerror or err}") from None
        self.reloaders.append(reload)

    def _signed(self, keyring: str):
        """The checker of webhook requests signed under `keyring`; None without the keyring."""
        ring, s = self.secrets.get(keyring), self.settings
        if ring is None:
            return None
        return public_http.SignedRequests(ring, s.webhook_tolerance_seconds,
                                          s.limits.webhook_signatures, s.limits.http_body_seconds)

    def reload(self) -> None:
        """SIGHUP: run every reloader; one failing does not stop the others."""
        for reload in self.reloaders:
            try:
                reload()
            except Exception:  # keep serving with what was loaded before; say why
                logger.exception("reload %s failed", getattr(reload, "__qualname__", reload))

    async def set_serving(self, serving: bool = True) -> None:
        answer = health_pb2.HealthCheckResponse
        status = answer.SERVING if serving else answer.NOT_SERVING
        for name in self._service_names:
            await self.health.set(name, status)

    async def sweep_retention(self, now: float | None = None) -> dict[str, int]:
        """One retention pass as of `now`: raw events (per type), closed decision records,
        impressions, dead letters, audit files, the tokens of erased events whose window has
        passed (`Tombstones.sweep_late`); returns how many of each went."""
        cut = retention_cutoffs(self.settings, time.time() if now is None else now)
        dropped = {"events": await self.profiles.drop_expired_events(cut.events,
                                                                     cut.events_by_type),
                   "decisions": await self.campaigns.drop_expired_decisions(cut.decisions),
                   "impressions": await self.impressions.drop_expired(cut.impressions),
                   "dead_letters": await asyncio.to_thread(self.delivery.dead.drop_before,
                                                           cut.dead_letters),
                   "audit_files": 0,
                   "replay_tokens": await asyncio.to_thread(self.tombstones.sweep_late, now)}
        if cut.audit is not None:
            dropped["audit_files"] = await asyncio.to_thread(self.audit.drop_before, cut.audit)
        return dropped

    async def _sweep_retention(self) -> None:
        dropped = await self.sweep_retention()
        if any(dropped.values()):
            logger.info("retention dropped %s", dropped)

    async def _follow_erasures(self) -> None:
        """Read the tombstone count (one read; the list only when it changed) and tell the
        caches what is new (`Tombstones.watch`), so another worker's erasure reaches this
        worker's caches; report the user cache's size."""
        await asyncio.to_thread(self._tell_erasures)
        cache = self.recommender.cache
        USER_CACHE_USERS.set(len(cache) if cache is not None else 0)

    def _tell_erasures(self) -> None:
        self.tombstones.current()
        self.tombstones.tell_watchers()

    async def _report_store(self) -> None:
        """Refresh the LMDB size gauges (`tailor_store_*_bytes`), and free the reader slots of
        processes that died reading the store (`Store.clear_stale_readers`)."""
        self.store.clear_stale_readers()
        report_store(**self.store.usage())

    async def wait(self) -> None:
        await self._server.wait_for_termination()

    async def stop(self, grace: float | None = None) -> None:
        """Drain: health NOT_SERVING (load balancers and probes look elsewhere), new calls still
        served for `drain_seconds`, then no new call is accepted while those in flight have
        `grace` seconds (default `grace_seconds`) to finish, as have the messages being handed
        over for a ComposeMessage whose caller left (`Handovers.close`); then the background
        passes under way end (`server.background`: their threads may be inside a store
        transaction), the writers flush and the store closes."""
        if self._server is None:
            return
        await asyncio.create_task(self._stop(grace), context=self._context)

    async def _stop(self, grace: float | None) -> None:
        await self.health.enter_graceful_shutdown()
        if self.settings.drain_seconds:
            await asyncio.sleep(self.settings.drain_seconds)
        grace = self.settings.grace_seconds if grace is None else grace
        await asyncio.gather(self._server.stop(grace),  # the calls' hand-overs too, those
                             self.delivery.handovers.close(grace))  # whose caller left as well
        await self.pusher.settled()  # a push cut by it: its thread, then what it stored goes
        await self.auth.close()  # refused calls counted, not yet audited
        if self.public is not None:
            await self.public.stop()
        self._server = None  # the calls are done: a long pass (a retention sweep) cannot
        await self._stop_sends()  # hold them up, nor a service manager's kill cut them or a
        self.store.stopping.set()  # message handed over meanwhile (none starts); a sweep
        await self.background.stop()  # ends after its write under way (`store.sweeps`)
        await self.drift.stop()
        await self._close_domain()

    async def _stop_sends(self) -> None:
        """No message starts once shutting down (a job resumes at the next start); one going
        has `handoff_seconds` (the relay's or webhooks' timeout) to be accepted, else the
        resumed job would send it again: a start refuses a stop bound that would cut it
        (`Settings._stop_outlasts_the_hand_off`)."""
        await self.sends.close(self.settings.handoff_seconds)

    async def _close_domain(self) -> None:
        """Flush the writers and close the store (after the last call, or a failed start)."""
        await self._stop_sends()  # first (stopped already after the last call: nothing left)
        await self.profiles.close()  # then: a batch's effects still reach the other domains
        await self.campaigns.close()
        await self.delivery.close()
        await self.recommender.close()
        await self.impressions.close()
        await self.catalog.stop()
        self.canary_monitor.publish()  # the calls counted since the last check
        await self.registry.stop()
        self.store.close()
        self._layouts.close()
        self._lock.close()
