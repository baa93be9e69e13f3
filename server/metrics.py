"""Prometheus metrics: per-RPC series under the go-grpc-prometheus names, Tailor's domain series,
and the HTTP endpoint.

Three places feed them (STYLE 13): `server.rpc.RpcInterceptor` counts and times every RPC, unary
and streaming alike (`RpcSeries`); the domain code counts what it decides (events, decisions,
bundle swaps); the batcher reports its batch sizes and queue depth.

With several worker processes, `PROMETHEUS_MULTIPROC_DIR` is set by the parent before the
workers start: each worker writes its samples to files there and the parent serves the merged
view (counters and histograms summed over workers, gauges as their `multiprocess_mode` says).
"""
from __future__ import annotations

import asyncio
import collections
import errno
import logging
import os
import socket

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    multiprocess,
)

from .errors import FailedPrecondition
from .security.hosts import with_port

__all__ = ["GRPC_STARTED", "GRPC_HANDLED", "GRPC_SECONDS", "GRPC_RECEIVED", "GRPC_SENT",
           "STAGE_LATENCY", "BATCH_SIZE", "QUEUE_DEPTH", "SHED_CALLS", "LOOP_LAG", "MODEL_INFO",
           "MODEL_SWAPS", "BUNDLE_LOAD_FAILING", "BUNDLE_FALLBACK",
           "CAMPAIGN_DECISIONS", "CONTACT_HISTORIES_DAMAGED", "PROFILE_RECORDS_DAMAGED",
           "RECORDS_DAMAGED", "EVENTS",
           "STORE_USED", "STORE_MAP",
           "STORE_MAX_MAP",
           "STORE_FULL_REFUSALS", "USER_CACHE_USERS", "WRITER_EXITS",
           "IMPRESSIONS_WRITTEN", "IMPRESSIONS_DROPPED", "IMPRESSION_JOINS", "MODEL_IMPRESSIONS",
           "MODEL_CTR", "MODEL_CONVERSION", "MODEL_REVENUE_PER_MILLE", "DRIFT_PSI",
           "DRIFT_PSI_NO_VALUE", "DETACHED_HANDOVERS", "HANDOVERS_AT_BOUND",
           "RpcSeries", "count_events", "measure_loop_lag", "forget_worker", "report_drift",
           "report_load_failing",
           "report_model", "report_model_stats",
           "report_store", "serve_metrics"]

disable_created_metrics()  # no `_created` sample beside every counter and histogram

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_RPC = ["grpc_type", "grpc_service", "grpc_method"]

GRPC_STARTED = Counter("grpc_server_started", "RPCs started on the server.", _RPC)
GRPC_HANDLED = Counter("grpc_server_handled", "RPCs completed on the server, by status code.",
                       [*_RPC, "grpc_code"])
GRPC_SECONDS = Histogram("grpc_server_handling_seconds", "Time from an RPC's start to its end "
                         "on the server (whole streams included).", _RPC, buckets=_LATENCY_BUCKETS)
GRPC_RECEIVED = Counter("grpc_server_msg_received", "Request messages received.", _RPC)
GRPC_SENT = Counter("grpc_server_msg_sent", "Response messages sent.", _RPC)

STAGE_LATENCY = Histogram("tailor_recommend_stage_seconds",
                          "Time per Recommend pipeline stage, per batch.", ["stage"],
                          buckets=_LATENCY_BUCKETS)
BATCH_SIZE = Histogram("tailor_batch_size", "Calls per micro-batch.", ["batcher"],
                       buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024))
QUEUE_DEPTH = Gauge("tailor_batch_queue_depth", "Calls waiting for a batch.", ["batcher"],
                    multiprocess_mode="livesum")
SHED_CALLS = Counter("tailor_shed_calls", "Calls refused RESOURCE_EXHAUSTED on arrival because "
                     "the calls queued for their batcher had waited over "
                     "limits.batch_queue_seconds (overload).", ["batcher"])
LOOP_LAG = Histogram("tailor_event_loop_lag_seconds", "How late a worker's event loop ran a "
                     "0.25 s timer, one after the other: the wait every call's next step has "
                     "behind the loop's other work (CPU saturation).",
                     buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5))

MODEL_INFO = Gauge("tailor_model_info", "1 for the bundle a worker serves, 0 for one it served "
                   "before (max over workers).", ["version", "format"], multiprocess_mode="max")
BUNDLE_LOAD_FAILING = Gauge("tailor_bundle_load_failing", "1 while a worker cannot load the "
                            "bundle the store names for a slot ('active': the pointer's, "
                            "'canary': the running canary's) and serves another meanwhile (max "
                            "over live workers).", ["slot"], multiprocess_mode="livemax")
BUNDLE_FALLBACK = Gauge("tailor_bundle_fallback", "1 while the active bundle is one a start "
                        "fell back to, the version the pointer named failing to load (the "
                        "pointer moved, so no load fails after it), until a push, rollback or "
                        "promotion (max over live workers).", ["slot"],
                        multiprocess_mode="livemax")
MODEL_SWAPS = Counter("tailor_model_swaps", "Bundles swapped in (start, push, rollback, or "
                      "following another worker).")
CAMPAIGN_DECISIONS = Counter("tailor_campaign_decisions", "ChooseVariant decisions, by campaign "
                             "and outcome (variant, holdout, or suppressed by the contact policy).",
                             ["campaign", "outcome"])
CONTACT_HISTORIES_DAMAGED = Counter(
    "tailor_contact_histories_damaged", "Users whose contact history (the frequency caps' "
    "record) did not open or decode where it was read, by use: decision (a capped decision "
    "refused contact_history_damaged), send (a <channel>_sent event not counted). Logged "
    "WARNING with the user's keyed hash (docs/operations.md).", ["use"])
PROFILE_RECORDS_DAMAGED = Counter(
    "tailor_profile_records_damaged", "Users whose profile record (state: feature state and "
    "seen-set; meta: attributes and consent) did not open or decode where it was read, by "
    "use: event (their events rejected profile_damaged), decision (suppressed "
    "profile_damaged), recommend (served without their live profile), read (GetProfile, "
    "ExportProfile refused), erase (erased without the keep-out of withdrawn addresses), "
    "prior (left out of the contact policy's population prior), change (left out of a "
    "consent change of several users), backfill (left out of the attribute watchers' walk), "
    "suppress (a bounce or complaint not followed to the profile's address). "
    "Logged WARNING with the user's keyed hash (docs/operations.md).", ["record", "use"])
RECORDS_DAMAGED = Counter(
    "tailor_records_damaged", "Dead letters (dead_letter), send recipients' records (send), "
    "impressions (impression) and address index entries (address_entry) that did not open or "
    "decode where they were read, by use: "
    "list (left out of ListDeadLetters), resume (left out of a send job), export (an "
    "ExportProfile refused), erase (deleted by an erasure: the erased user's, or one naming "
    "no user it can read), retry (RetryDeadLetter refused), cancel (CancelSend refused), "
    "log_export (left out of ExportImpressions), join (an impression passed over by the "
    "feedback join), lookup (an address index entry: its profile "
    "reached by its key's token, or, an older one-user entry, not reached). Logged WARNING, "
    "no user "
    "(docs/operations.md).", ["record", "use"])
EVENTS = Counter("tailor_events", "Tracked events, by type and outcome (accepted, duplicate, "
                 "rejected); types outside the vocabulary count as 'other'.", ["type", "outcome"])
STORE_USED = Gauge("tailor_store_used_bytes", "LMDB pages in use times the page size.",
                   multiprocess_mode="max")
STORE_MAP = Gauge("tailor_store_map_bytes", "Current LMDB map size (grows by doubling).",
                  multiprocess_mode="max")
STORE_MAX_MAP = Gauge("tailor_store_max_map_bytes", "Ceiling of the LMDB map "
                      "(TAILOR_LMDB_MAX_MAP_SIZE).", multiprocess_mode="max")
USER_CACHE_USERS = Gauge("tailor_user_cache_users", "Users whose Recommend inputs the workers' "
                         "user caches hold (summed over workers; refreshed every "
                         "TAILOR_BUNDLE_POLL_SECONDS).", multiprocess_mode="livesum")
STORE_FULL_REFUSALS = Counter("tailor_store_full_refusals", "Calls refused because the store is "
                              "full: the LMDB map at its ceiling (TAILOR_LMDB_MAX_MAP_SIZE), or no "
                              "space left on its disk. "
                              "Other RESOURCE_EXHAUSTED answers (a caller over a limit) are not "
                              "counted.")
WRITER_EXITS = Counter("tailor_writer_exits", "Writer child processes (campaigns, impressions) "
                       "that died while their worker served (killed, crashed: the OOM killer); "
                       "the next batch starts a new one.", ["writer"])
DETACHED_HANDOVERS = Gauge("tailor_detached_handovers", "ComposeMessage hand-overs and "
                           "RetryDeadLetter retries running apart from their call (a caller "
                           "giving up does not cut them), summed over live workers; each worker "
                           "runs at most limits.detached_deliveries.",
                           multiprocess_mode="livesum")
HANDOVERS_AT_BOUND = Counter("tailor_handovers_at_bound", "Hand-overs run as part of their call "
                             "because limits.detached_deliveries were already running apart in "
                             "their worker: a caller giving up cuts one, its outcome not known.")
DRIFT_PSI_NO_VALUE = -1.0
"""`tailor_drift_psi` of a feature with fewer live values than `TAILOR_DRIFT_MIN_COUNT` (none
included), or of a version no longer served. Not
NaN: the workers' gauges merge by max, and NaN compares false both ways, so the merged value
would depend on the order prometheus-client reads the workers' files. A PSI is >= 0, so -1 is
below every figure: the max is the largest PSI of the workers that have one, -1 if none has."""
DRIFT_PSI = Gauge("tailor_drift_psi", "PSI of live Recommend traffic against the bundle's training "
                  "reference, per feature, over the rolling drift windows (max over workers; -1 "
                  "with fewer live values than TAILOR_DRIFT_MIN_COUNT, or for a version no "
                  "longer served).",
                  ["version", "feature"], multiprocess_mode="max")

IMPRESSIONS_WRITTEN = Counter("tailor_impressions_written", "Recommend answers written to the "
                              "impression log.")
IMPRESSIONS_DROPPED = Counter("tailor_impressions_dropped", "Recommend answers not logged: the "
                              "worker's buffer was full (writes lagging), or their write failed "
                              "(a full store, the writer process killed).")
IMPRESSION_JOINS = Counter("tailor_impression_joins", "Clicks, add-to-carts and purchases joined "
                           "to an impression, or unmatched.", ["outcome"])
for _use in ("decision", "send"):  # at 0 from the start (`contact.damage`'s uses)
    CONTACT_HISTORIES_DAMAGED.labels(_use)
for _record in ("state", "meta"):  # (`profiles.damage`'s records and uses)
    for _use in ("event", "decision", "recommend", "read", "erase", "prior", "change",
                 "backfill", "suppress"):
        PROFILE_RECORDS_DAMAGED.labels(_record, _use)
for _record, _uses in (("dead_letter", ("list", "export", "erase", "retry")),  # (`store.
                       ("send", ("resume", "export", "erase", "cancel")),  # damaged`'s)
                       ("impression", ("export", "log_export", "join")),
                       ("address_entry", ("lookup", "erase"))):
    for _use in _uses:
        RECORDS_DAMAGED.labels(_record, _use)
for _outcome in ("joined", "unmatched"):  # at 0 from the start, as the docs list them: absent
    IMPRESSION_JOINS.labels(_outcome)      # until the first join, a rate() or absent() alert saw nothing
_MODEL_LABELS = ["version", "channel"]
MODEL_IMPRESSIONS = Gauge("tailor_model_impressions", "Impressions logged per model version and "
                          "channel ('all': every channel).", _MODEL_LABELS, multiprocess_mode="max")
MODEL_CTR = Gauge("tailor_model_ctr", "CTR@k per model version and channel: impressions with a "
                  "joined click at a position < k, over impressions.", [*_MODEL_LABELS, "k"],
                  multiprocess_mode="max")
MODEL_CONVERSION = Gauge("tailor_model_conversion_rate", "Impressions with a joined purchase, "
                         "over impressions.", _MODEL_LABELS, multiprocess_mode="max")
MODEL_REVENUE_PER_MILLE = Gauge("tailor_model_revenue_per_mille", "Joined purchase value per "
                                "1,000 impressions.", _MODEL_LABELS, multiprocess_mode="max")


class RpcSeries:
    """The per-RPC series of one method, with their label children bound once (the
    interceptor builds one per method at its first call)."""

    def __init__(self, method: str, grpc_type: str):
        service, _, name = method.lstrip("/").rpartition("/")
        self._labels = (grpc_type, service, name)
        self.started = GRPC_STARTED.labels(*self._labels)
        self.seconds = GRPC_SECONDS.labels(*self._labels)
        self.received = GRPC_RECEIVED.labels(*self._labels)
        self.sent = GRPC_SENT.labels(*self._labels)
        self._handled = {"OK": GRPC_HANDLED.labels(*self._labels, "OK")}

    def handled(self, code: str, seconds: float) -> None:
        """Count the RPC's end with its status code name and observe its duration."""
        child = self._handled.get(code)
        if child is None:
            child = self._handled[code] = GRPC_HANDLED.labels(*self._labels, code)
        child.inc()
        self.seconds.observe(seconds)


def report_model(version: str, fmt: str, previous: str | None = None, previous_fmt: str = "") -> None:
    """A bundle was swapped in: its info series goes to 1, the one it replaced to 0."""
    if previous is not None and previous != version:
        MODEL_INFO.labels(previous, previous_fmt).set(0)
    MODEL_INFO.labels(version, fmt).set(1)
    MODEL_SWAPS.inc()


def report_load_failing(active: bool, canary: bool, fallback: bool = False) -> None:
    """Whether this worker fails to load what the store names, and whether the store records
    that a start fell back from the active version (`ModelRegistry`, every poll)."""
    BUNDLE_LOAD_FAILING.labels("active").set(float(active))
    BUNDLE_LOAD_FAILING.labels("canary").set(float(canary))
    BUNDLE_FALLBACK.labels("active").set(float(fallback))


async def measure_loop_lag(timer: float = 0.25) -> None:
    """Observe how late the running loop ran a `timer`-second sleep into `LOOP_LAG` (run one
    after the other, a timer is always pending: a loop blocked 1 s shows as >= 0.75 s). Queued
    batches show in the batchers' queue depth, but a loop busy parsing requests, checking
    tokens and answering delays every call without queueing anything there."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    await asyncio.sleep(timer)
    LOOP_LAG.observe(max(0.0, loop.time() - start - timer))


def count_events(outcome: str, types, known: frozenset[str]) -> None:
    """Count tracked events of `types` (an iterable of type names) under `outcome`."""
    counts = collections.Counter(types)  # one labelled series per type, not per event
    for event_type, n in counts.items():
        EVENTS.labels(event_type if event_type in known else "other", outcome).inc(n)


def report_store(used: int, map_size: int, max_map_size: int) -> None:
    """The LMDB sizes (`Store.usage()`), refreshed by each worker every few seconds."""
    STORE_USED.set(used)
    STORE_MAP.set(map_size)
    STORE_MAX_MAP.set(max_map_size)


def report_model_stats(version: str, channel: str, impressions: int, ctr: dict[int, float],
                       conversion: float, revenue_per_mille: float) -> None:
    """The online metrics of one model version and channel (`server.impressions.stats`)."""
    MODEL_IMPRESSIONS.labels(version, channel).set(impressions)
    for k, rate in ctr.items():
        MODEL_CTR.labels(version, channel, str(k)).set(rate)
    MODEL_CONVERSION.labels(version, channel).set(conversion)
    MODEL_REVENUE_PER_MILLE.labels(version, channel).set(revenue_per_mille)


def report_drift(version: str, feature: str, psi: float) -> None:
    """A drift check's PSI of one feature (`server.drift.DriftMonitor`)."""
    DRIFT_PSI.labels(version, feature).set(psi)


def forget_worker(pid: int) -> None:
    """Drop the worker `pid`, gone, from the `livesum` gauges the parent serves: its last
    values (a hand-over it ran apart, its queue depth) stayed in the metrics dir and in every
    scrape while the other workers drained. No-op without a metrics dir (one process)."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        multiprocess.mark_process_dead(pid, path)


def _metrics_hint(err: OSError) -> str:
    """What to change when the metrics port cannot be bound: the line named the address only,
    and a newcomer with a second server (or a node exporter on 9100) had to find the flag. A
    port below 1024 without the privilege to bind it ("Permission denied") and a host name that
    does not resolve ("Name or service not known") named no flag either."""
    if err.errno == errno.EADDRINUSE:
        return ("; stop what listens there or give another --metrics-port (TAILOR_METRICS_PORT; "
                "`ss -ltnp` names the process)")
    if err.errno == errno.EACCES:
        return ("; this process may not bind that port (below 1024, or below the kernel's "
                "net.ipv4.ip_unprivileged_port_start, a port needs CAP_NET_BIND_SERVICE): give a "
                "higher --metrics-port (TAILOR_METRICS_PORT)")
    if err.errno == errno.EADDRNOTAVAIL or isinstance(err, socket.gaierror):
        return "; --metrics-host (TAILOR_METRICS_HOST) must be an address of this machine"
    return ""


def serve_metrics(port: int, host: str = "127.0.0.1", tls=None, limits=None):
    """Expose /metrics on `port` (merging all worker processes in multiprocess mode), over
    HTTPS with `tls` (a `ServerTls`: same certificate and client CA as the gRPC port), at most
    `limits.metrics_connections` at once, each within `limits.metrics_seconds`
    (`metrics_http`). Returns a callable that re-reads the certificate files (SIGHUP)."""
    from .limits import DEFAULT_LIMITS
    from .metrics_http import metrics_server
    from .security.transport import metrics_context
    limits = limits or DEFAULT_LIMITS
    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    ctx = metrics_context(tls) if tls is not None else None
    try:
        metrics_server(host, port, registry, limits.metrics_connections, limits.metrics_seconds,
                       ctx)
    except OSError as err:  # in use, refused, or no address of this machine: one line, exit 2
        raise FailedPrecondition(f"could not serve metrics on {host}:{port}: "
                                 f"{err.strerror or err}{_metrics_hint(err)}") from None
    logging.getLogger("tailor.metrics").info(  # loopback unless `metrics_host` says otherwise
        "metrics on %s://%s/metrics", "http" if tls is None else "https", with_port(host, port))
    if tls is None:
        return lambda: None
    return lambda: tls.reload_context(ctx)
