"""One settings object for the server: CLI flags override `TAILOR_*` environment variables, which
override a `--config` TOML file; the three are merged first and validated once (`load_settings`),
so a check across fields never sees one source's values beside another's defaults."""
from __future__ import annotations

import functools
import logging
import math
import re
import tomllib
import zoneinfo
from collections.abc import Collection
from pathlib import Path
from typing import Literal, get_args

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

from contract.keyring import environment_only

from .limits import DEFAULT_LIMITS, Limits

__all__ = ["DEFAULT_CONSENT", "Settings", "load_settings",
           "settings_error", "variable_error"]

STOP_KILL_SECONDS = 1.0
"""How long before the end of `stop_seconds` what still stops is killed (`server.stop_bound`: the
workers of `--workers N`, one worker's writers and zygote): what is left of the bound is for
reaping them and what they left."""

GRPC_INT_MAX = 2**31 - 1
"""Largest value a gRPC channel argument of integer type takes (its C `int`)."""

WORKER_HANG_FLOOR_SECONDS = 3.0
"""Least `worker_hang_seconds` but 0: three of the workers' one-second heartbeats
(`server.heartbeats`), so a worker busy for a moment (a GC pass, a slow page-in) is not taken
for hung and the whole server stopped."""

MAX_RANKER_CANDIDATES = 10_000
"""Most candidates per request the ranker may re-score (`ranker_candidates`, a bundle's
trained count): each is a row of ranker features in every Recommend."""

DEFAULT_CONSENT = {"email": "opt_in", "sms": "opt_in", "push": "opt_out", "web": "none",
                   "app": "none"}
"""Settings `consent_defaults` (also the contact policy of domain objects built without one)."""




class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TAILOR_", extra="ignore", env_nested_delimiter="__")

    host: str = "127.0.0.1"
    """Address to listen on for gRPC."""
    port: int = Field(50051, ge=0, le=65535)
    """gRPC port. 0 picks a free port (tests); the chosen one is logged and returned by `start`."""
    data_dir: Path = Path("data")
    """Root of everything the server keeps: `store/` (LMDB) and `bundles/<version>/`."""
    bundle: Path | None = None
    """A bundle directory to serve at start (copied under data_dir/bundles if it is elsewhere)."""
    workers: int = Field(1, ge=1, le=64)
    """Server processes sharing the port (SO_REUSEPORT)."""
    log_format: Literal["text", "json"] = "text"
    """`json`: one JSON object per log line (ts, level, logger, message, pid, request_id, trace_id,
    parent_id, exc); `text`: a plain line with the request id in brackets."""
    log_level: str = "INFO"
    """Level of the root logger (DEBUG, INFO, WARNING, ...)."""
    access_log: bool = False
    """Log one line per RPC on `tailor.access`: method, status code and milliseconds (with the
    request id and trace of the call, like every line logged during it)."""
    metrics_port: int | None = Field(None, ge=0, le=65535)
    """HTTP port for Prometheus metrics, on `metrics_host`; None disables the endpoint. Served
    over HTTPS with the gRPC port's certificate (and client CA) when TLS is on."""
    metrics_host: str = "127.0.0.1"
    """Address the metrics endpoint listens on: this machine only by default, whatever `host`
    is. Its figures name campaigns, model versions and counts, and it asks no credential but a
    client certificate (`tls_client_ca`): set it (e.g. 0.0.0.0) for a scraper elsewhere; the
    start then warns, unless a client CA is set, that anyone reaching the port reads them.
    Without TLS a non-loopback one is refused at start unless `insecure` (as `host` is)."""

    tls_cert: Path | None = None
    """PEM certificate chain of the gRPC port; with `tls_key`, TLS is on. Re-read on SIGHUP."""
    tls_key: Path | None = None
    """PEM private key of `tls_cert`. Re-read on SIGHUP."""
    tls_client_ca: Path | None = None
    """PEM CA bundle: mutual TLS, clients without a certificate it signed fail the handshake.
    Re-read on SIGHUP."""
    insecure: bool = False
    """Serve a non-loopback `host` without TLS or an auth config anyway, send email in plain
    SMTP to a relay off this host (`smtp_security` none), serve metrics in plain HTTP on a
    non-loopback `metrics_host`, and build unsubscribe links on an http:// `public_url`;
    otherwise refused. The start logs a warning naming each it allowed."""

    grpc_max_message_bytes: int = 64 * 1024 * 1024
    """Transport limit per reply message: an export page, a RecommendBatch answer, a profile
    (`server.limits` sizes each of those under 64 MiB). Requests have their own,
    `grpc_max_request_bytes`."""
    grpc_max_request_bytes: int = Field(24 * 1024 * 1024, ge=2 << 20, le=GRPC_INT_MAX)
    """Transport limit per request message: gRPC refuses a longer one RESOURCE_EXHAUSTED
    (`Received message larger than max (<size> vs. <this>)`) unparsed, while it parses
    a shorter one whole on the worker's event loop before any handler or `limits` check, every
    other call of that worker waiting meanwhile (one 64 MiB TrackEvents of empty events held
    it 12.8 s on 2 cores; 16 MiB, 1.3 s). The largest request the default limits admit is a
    TrackEvents of `limits.events_per_batch` events each at every id and attribute bound
    (17.9 MiB), then a RecommendBatch at `limits.batch_request_bytes` (16 MiB) and a SendCampaign
    of `limits.send_audience` ids (12.5 MiB); a PushBundle chunk of the clients takes 1 MiB.
    24 MiB admits those with a third to spare (fields a newer client adds). Raising one of those
    limits may need it raised too (`limits.request_bytes` and `limits.batch_request_bytes` above it
    are refused at start); lower it where callers with a role are not all trusted and send less
    (below 16 MiB, with `limits.batch_request_bytes`).
    At least 2 MiB (the clients' PushBundle chunks); at most 2 GiB - 1 (gRPC's C `int`). A
    unary Attribute over it fails: AttributeStream (which the clients use) takes the paths in
    as many messages as needed."""
    grpc_keepalive_seconds: float = Field(60.0, gt=0)
    """How long a connection may stay silent before the server pings the client (a dead
    peer is then found within `grpc_keepalive_timeout_seconds`)."""
    grpc_keepalive_timeout_seconds: float = Field(20.0, gt=0)
    """How long the server waits for the answer to its keepalive ping before closing."""
    grpc_keepalive_permit_without_calls: bool = True
    """Accept client keepalive pings on connections with no call in flight (pooled idle
    connections behind a load balancer ping that way)."""
    grpc_min_ping_interval_seconds: float = Field(1.0, ge=0)
    """Shortest interval between client pings the server accepts; pings more frequent than this
    count as strikes, and past `grpc_max_ping_strikes` the connection gets GOAWAY
    `too_many_pings`. gRPC's own default is 300 s, which refuses a client pinging every 10 s."""
    grpc_max_ping_strikes: int = Field(2, ge=0)
    """Too-frequent pings tolerated before GOAWAY (0: any number)."""
    grpc_max_connection_age_seconds: float | None = Field(300.0, gt=0)
    """Connections older than this (±10% jitter) get GOAWAY and the client reconnects: with
    several workers on one port (SO_REUSEPORT) and behind load balancers, long-lived connections
    are spread again. None: connections live forever."""
    grpc_max_connection_age_grace_seconds: float = Field(60.0, ge=0)
    """How long calls in flight on a connection past its age may still finish (a long
    PushBundle or export) before it is closed."""
    grpc_max_concurrent_streams: int = Field(1000, ge=1)
    """Most calls in flight on one connection; more wait for a free slot on the client."""
    limits: Limits = DEFAULT_LIMITS
    """Bounds on what one request may carry (see `Limits`)."""

    batch_max_size: int = Field(64, ge=1)
    """Most Recommend calls grouped into one ONNX run and one FAISS search."""
    batch_max_wait_ms: float = Field(0.0, ge=0)
    """How long the first request of a batch may wait for company when a compute slot is free.
    0: never; calls that arrive while a batch runs still share the next one. Measured on the 100k
    bench with 2 workers (one run each): 1 ms gave 10% more max QPS, but at half of that max
    Recommend's p99 was 20.2 ms against 15.2 ms with 0."""
    batch_concurrency: int = Field(1, ge=1)
    """Batches computed at once (threads; ONNX Runtime and FAISS release the GIL). One per
    worker process: on 2 cores a second batch thread only fights the event loop (-25% QPS)."""
    ranker_candidates: int | None = Field(None, ge=1, le=MAX_RANKER_CANDIDATES)
    """Candidates retrieved per request for the ranker to re-score, for every bundle. Unset
    (the default): each bundle's own trained count (its manifest's
    `params.ranker.n_candidates`, `train --candidates`: what its ranker was trained, evaluated
    and given its drift reference on; 100 for a bundle that names none), so a canary and the
    active version each serve with theirs. Set it (1 to 10,000) to serve every bundle with
    that count instead."""
    bundle_smoke_users: int = Field(8, ge=0, le=1000)
    """Users with the longest histories a bundle must answer Recommend for, with finite scores,
    before it is served (pushed, imported, loaded at start): each without a channel and with
    each channel, and an unknown user (`server.recommend.smoke`). 0: no such check."""
    user_cache_size: int = Field(20_000, ge=0)
    """Users per worker whose encoder output and retrieval candidates are kept and reused while
    their encoder input is unchanged, bit for bit (a new event refreshes an entry at once, the
    decay clock's next step, `history_clock_seconds`, every entry); about 2 KB each. 0: encode
    and search on every call."""
    exclude_history: bool = True
    """Drop items the user has seen from recommendations, as `seen_exclusion_days` and
    `repeatable_categories` say (bundle seen-set and live events, not only the history window)."""
    compute_threads: int = Field(1, ge=1, le=256)
    """Threads ONNX Runtime and FAISS may use per call (each bundle load starts its pools: a
    typo such as 100000 would start that many threads, so at most 256)."""
    gil_switch_interval_ms: float = Field(0.5, gt=0)
    """`sys.setswitchinterval` of each worker (Python's default is 5 ms): how long a thread
    holding the GIL may keep it from one that waits. The batch thread waits for it after every
    ONNX Runtime, FAISS and LMDB call, while the event loop runs gRPC. 100k bench, 2 workers,
    runs alternated: Recommend p99 at half max 12.6-17.1 ms (median 13.3, 8 runs) against
    13.9-15.5 (median 14.1, 4 runs) with 5 ms; max QPS the same."""
    preload_statistics: bool = True
    """Import `scipy.stats` (what GetCampaignStats and SampleSize compute with) in a thread of
    each worker once it serves (`server.preload`), not in the first such call: that call took
    0.8-1.8 s, the next ones 4-16 ms. It costs ~60 MB of RSS per worker (129 to 190 MB
    measured) and ~0.6 s of CPU after each start; off, the first call pays it instead."""

    lmdb_map_size: int = 1 << 30
    """Initial LMDB map size in bytes; grows by doubling up to lmdb_max_map_size."""
    lmdb_max_map_size: int = 1 << 40
    """Ceiling for LMDB growth; past it writes get RESOURCE_EXHAUSTED."""
    lmdb_sync: bool = True
    """fsync every commit (power-loss safe). Without it, commits survive a process crash."""

    event_retention_days: float = Field(365.0, gt=0)
    """Raw events older than this are dropped (features keep their decayed values); `inf`:
    kept for good."""
    event_retention_days_by_type: dict[str, float] = {}
    """Retention of raw events of these types, in days, instead of `event_retention_days` (e.g.
    `{"view": 90}`); older events of the type are refused at ingestion too. Env:
    `TAILOR_EVENT_RETENTION_DAYS_BY_TYPE='{"view": 90}'`."""
    decision_retention_days: float = Field(365.0, gt=0)
    """Campaign decision records (with their variant and context) closed longer ago than this
    are dropped; campaign counters and posteriors, which hold no user, stay."""
    dead_letter_retention_days: float = Field(30.0, gt=0)
    """Dead letters (messages no adapter could deliver, kept with their address and bytes for
    RetryDeadLetter) first failed longer ago than this are dropped by the retention sweep
    (`inf`: kept until retried or their user erased)."""
    audit_retention_days: float = Field(0.0, ge=0)
    """Closed audit files whose newest line is older than this are dropped (the chain's
    `audit.head` moves on); 0: only `audit_keep_files` bounds the audit log."""
    event_future_tolerance_s: float = Field(300.0, ge=0, le=86400)
    """Events (and consent changes) stamped further in the future than this are rejected; at
    most a day."""
    retention_sweep_seconds: float = Field(3600.0, gt=0)
    """How often a worker drops expired raw events, decision records, impressions and audit
    files."""
    retention_sweep_chunk_keys: int = Field(10_000, ge=1, le=1_000_000)
    """Keys a retention sweep of raw events, decision records or impressions reads in one read
    snapshot before deleting what it picked (`store.sweeps`): a longer snapshot keeps LMDB from
    reusing the pages written meanwhile for longer (the map grows), a shorter one takes more
    snapshots for the same pass."""
    retention_sweep_write_records: int = Field(1_000, ge=1, le=100_000)
    """Most records one write transaction of a retention sweep deletes. Every other writer
    (ingestion, decisions, impressions) waits for it: one write of 10,000 expired events held
    the lock 220-500 ms on the shared 2-core box (docs/privacy.md, "Retention")."""
    retention_sweep_rest: float = Field(1.0, ge=0.0, le=100.0, allow_inf_nan=False)
    """How long a retention sweep rests after each write, in multiples of the time the write
    took: at 1 it holds the writer lock at most about half the time; 0 runs the writes back to
    back (the shortest pass: back to back, ChooseVariant's p50 went from ~30 to 250-540 ms for
    the whole pass, measured on 300,000 expired events); more leaves other writers more room
    and makes the pass longer."""
    bundle_scrub_seconds: float = Field(30.0, gt=0, le=60)
    """How often one worker removes the users erased since the last pass from the stored
    bundles' users.npz (their hash, history, seen-set; `server.models.scrub`): the bound on
    how long a copy of the data dir still holds them."""

    impression_log: bool = True
    """Log every Recommend and RecommendBatch answer (request id, time, model version, keyed
    hash of the user, channel, context, items with positions and scores, cold start) in the
    `impressions` table, and join clicks, add-to-carts and purchases to it (`server.impressions`,
    docs/impressions.md). Off: nothing is logged and GetModelStats has nothing new to count."""
    impression_retention_days: float = Field(90.0, gt=0)
    """Impressions older than this are dropped by the retention sweep (`inf`: kept for good);
    the per-version counters behind GetModelStats, which hold no user, stay."""
    impression_flush_seconds: float = Field(2.0, gt=0)
    """How often a worker writes the impressions it buffered (one write transaction per group,
    off the Recommend path); a group is also written as soon as `impression_flush_records`
    are waiting, and whenever a join, an export or GetModelStats needs it. Fewer, larger
    groups cost the writer less per answer (its commit's fsync and upper tree pages shared),
    which is what moves Recommend's tail at half of max (docs/performance.md, stop 21); an
    answer still buffered is lost if the worker crashes, and with several workers a click
    that reaches another worker first joins on a retry two intervals later."""
    impression_flush_records: int = Field(2048, ge=1)
    """Buffered impressions that start a write before `impression_flush_seconds` is up."""
    impression_writer_nice: int = Field(10, ge=0, le=19)
    """Niceness the impressions writer process runs with above the server's: when the 2 cores
    are busy, serving gets them before the log's writes (nobody waits for those; a group that
    waits grows). Above 0 the writer also runs under `SCHED_BATCH`, so its wake-ups do not
    preempt serving. 0: the same priority and policy as serving."""
    impression_repeat_seconds: float = Field(120.0, ge=0.0, le=86400.0)
    """How long a caller's `x-request-id` on a Recommend or RecommendBatch is remembered by
    the impression log: an answer showing the same user the same items (same order, channel
    and context) under an id remembered within this time is a repeat (a client's retry of a
    call whose answer was lost) and is not logged or counted again, whichever worker answers
    it. Ids the server draws are never repeated and not remembered. Each id costs the log
    ~120 bytes for one to two windows; 0: every answer is logged."""
    impression_buffer_max: int = Field(100_000, ge=1)
    """Most impressions a worker holds while its writes lag (the store full or slow): buffered,
    or sent to its writer process and not committed yet; past it new ones are dropped and
    counted (`tailor_impressions_dropped`), never waited for."""
    attribution_window_seconds: float = Field(86400.0, gt=0)
    """An event without `request_id` joins the user's latest impression containing its item
    shown at most this long before it."""

    campaign_sweep_seconds: float = Field(1.0, gt=0)
    """How often a worker gives the default reward to decisions whose reward window closed
    (not those that ended after a tracked batch whose rewards wait in the outbox for a replay:
    docs/privacy.md, the outbox)."""
    campaign_propensity_refresh_seconds: float = 0.25
    """Thompson campaigns re-estimate their cached propensities at most this often per worker."""
    campaign_state_refresh_seconds: float = Field(0.1, ge=0)
    """How old a worker's copy of a campaign (definition and posterior) may be when it decides.
    Changes made through the same worker apply at once; other workers see them within this
    time. 0 reads the store on every ChooseVariant."""
    decision_group_commit_ms: float = Field(8.0, ge=0, le=100)
    """Group commit of the decision log (ChooseVariant, ComposeMessage, SendCampaign and suppressed
    decisions alike, and, counted apart, ReportReward's rewards, which close decisions; rewards from
    tracked events come a batch at a time and never wait): under load (on average
    `decision_group_commit_from` calls or more had queued by the time the writer could take the
    next commit) the oldest queued call may wait this long, from its arrival, for others to share
    its commit; at quiet times none waits. What the wait gathers does not count as load, so the
    wait ends with the queue that started it. With `lmdb_sync` each commit costs the writer two
    fsyncs, most of its CPU. ChooseVariant, 1 worker, TLS + token, server CPU a call at max
    against Ping's, in one run: x1.53-1.68 a round with 8 ms from 2 against x1.68-1.74 with the
    earlier 4 ms from 4 (docs/performance.md, stop 66). 0: commit whatever is queued at once."""
    decision_group_commit_from: int = Field(2, ge=1)
    """Average calls queued when the decision log's writer could start a commit (what waiting
    gathered left out; a call arriving to an idle writer counts 1), from which the log waits for
    company (see `decision_group_commit_ms`). 1 waits at almost any load."""

    bundle_poll_seconds: float = Field(0.5, gt=0)
    """How often a worker checks the store for a bundle activated by another worker."""
    bundles_kept: int = Field(5, ge=0)
    """Most bundle versions kept on disk, the newest first; the active one, the previous one
    (the plain rollback's target), a running canary's and any a push under way holds are kept
    even past it (0: only those)."""

    # -- canary guardrails (issue 19; server/models/guardrails.py) -------------------------------
    canary_check_seconds: float = Field(5.0, gt=0)
    """How often each worker checks the running canary's guardrails (and publishes its counts)."""
    canary_auto_promote: bool = True
    """Promote a canary that is no worse after the minimum sample; off: wait for PromoteCanary.
    A failing guardrail always aborts at once."""
    canary_min_requests: int = Field(1000, ge=1)
    """Recommend calls each version (active and canary) must serve before a promotion."""
    canary_guard_min_requests: int = Field(50, ge=1)
    """Canary calls (and impressions, for the CTR) before a guardrail may abort it."""
    canary_max_error_rate_increase: float = Field(0.01, ge=0, le=1)
    """Abort when the canary's server-error rate exceeds the active version's by more than this."""
    canary_max_p99_ratio: float = Field(1.5, ge=1)
    """Abort when the canary's p99 latency exceeds the active one's times this plus the slack."""
    canary_p99_slack_ms: float = Field(5.0, ge=0)
    """Milliseconds added to the p99 threshold (short calls jitter by more than any ratio)."""
    canary_min_impressions: int = Field(1000, ge=1)
    """Impressions each version must show before a promotion, when the impression log reports
    outcomes."""
    canary_ctr_alpha: float = Field(0.05, gt=0, lt=1)
    """Level of the always-valid (mSPRT) CTR test: abort when the canary's CTR is below at this
    level; promotion needs the lower confidence bound above -`canary_ctr_margin`."""
    canary_ctr_tau: float = Field(0.0, ge=0)
    """Standard deviation of the mSPRT mixture (the CTR difference you care about); 0: 10% of
    the pooled CTR of both versions, as the campaigns' tests use."""
    canary_ctr_margin: float = Field(0.005, ge=0)
    """Largest CTR loss (absolute) still called "not worse" for a promotion."""
    canary_click_window_seconds: float = Field(60.0, ge=0, le=86400)
    """An impression counts in the canary's CTR test (abort and promotion) once this long has
    passed since it was shown, with every click joined to it whenever it came; impressions shown
    before the canary started never count. Clicks come after their impressions: counted at once,
    a version's CTR reads low early and the test (which keeps its smallest p-value) could abort a
    good canary on an early dip. Counted per 10 s of showing time (to within those 10 s)."""
    grace_seconds: float = Field(5.0, ge=0)
    """How long in-flight calls may finish at shutdown (SIGTERM/SIGINT), once no new call is
    accepted; calls still running then are cancelled."""
    drain_seconds: float = Field(0.0, ge=0)
    """At shutdown, how long health answers NOT_SERVING while new calls are still served, before
    the listener closes (for load balancers that follow health checks; Kubernetes' preStop
    sleep in deploy/k8s does the same for its Service endpoints)."""
    stop_seconds: float = Field(25.0, gt=0, le=86400)
    """The longest the whole stop may take, from the stop signal (or, with `--workers N`, a
    worker's own exit) until the server exits. What still stops 1 s before that end is
    SIGKILLed and reaped: with `--workers N`, a worker still draining and what workers left
    (their zygote and writers); with one worker, or a worker whose parent is gone (SIGKILLed),
    its writers and their zygote, the process exiting at once. The exit is then 1. Keep it
    below the service manager's stop timeout (Kubernetes' terminationGracePeriodSeconds less
    the preStop sleep, 30 s by default;
    systemd's TimeoutStopSec, 90 s; `docker stop`'s 10 s), and more than 1 s above
    `drain_seconds` + `grace_seconds`, plus, with a relay or webhook to send through, the
    larger of `smtp_timeout_seconds` and `webhook_timeout_seconds`: the hand-off of a message
    being sent, which a kill sooner cuts, and its job, resumed, sends it again (checked at
    start). At most a day (86400 s): the bound is a sleep (`stop_bound.StopWatch`), which `inf`
    or 1e10 would overflow."""
    worker_hang_seconds: float = Field(60.0, ge=0, le=86400)
    """With `--workers N`, how long a serving worker's event loop may go without running
    before the parent takes the worker for hung (stopped: `kill -STOP`, a debugger; stuck in C
    code holding the GIL) and SIGKILLs it, which stops the others and exits the server 1 for
    its service manager to restart, as a worker that crashed does (`server.heartbeats`): half
    the new connections otherwise hung on it while health, answered by the other worker, said
    SERVING. 0: never; else at least 3 s (`WORKER_HANG_FLOOR_SECONDS`: a worker stamps its
    heartbeat every second). Not checked while a worker starts or once the server stops (the
    stop has its own bound, `stop_seconds`), nor counted while the parent itself did not run
    (the whole server paused: Ctrl-Z, `docker pause`). Well above the longest a loop is held by work it
    was given, as a caller must not be able to restart the server: gRPC parses a request of up
    to `grpc_max_request_bytes` on it before any limit (24 MiB ones of empty entries: 0.9 s in
    process, up to 6.1 s with 2 cores under a load of 4.6; 13-15 s for the 64 MiB ones let in
    before that bound), and a handler that converts a request before counting it holds the loop
    longer (RecommendBatch and CreateCampaign did, up to 15 s). Lower it only with those
    figures measured on your machine, and that bound."""
    store_metrics_seconds: float = Field(5.0, gt=0)
    """How often each worker refreshes the LMDB size gauges (`tailor_store_*_bytes`)."""

    # -- security (issue 14) ---------------------------------------------------------------------
    auth_config: Path | None = None
    """Auth config (TOML): principals (bearer token hashes, client-certificate names), JWT
    issuer/audience/keys, role overrides (`server/security/principals.py`). Re-read on SIGHUP.
    Without it every call is allowed (all roles but `pii-reader`: PII stays masked); serve
    that way on loopback only."""
    reflection: bool = True
    """Serve gRPC reflection (`grpcurl ... list`): with `auth_config`, to any caller it
    authenticates (a token of any role), never an anonymous one (UNAUTHENTICATED: it names
    every service and method); without one, to everyone (`--insecure` aside, on loopback)."""
    pii_keys: tuple[str, ...] = (
        "email", "*email*", "*e_mail*", "phone", "*phone*", "mobile", "*mobile*", "name",
        "first_name", "last_name", "middle_name", "full_name", "given_name", "family_name",
        "firstname", "lastname", "fullname", "surname", "*username*", "*user_name*",
        "display_name", "screen_name", "nickname", "nick_name", "customer_name", "contact_name",
        "*address*", "street", "city", "zip", "zip_*", "zipcode", "postcode", "postal_code", "ip",
        "ip_*", "*_ip", "*ipv4*", "*ipv6*", "birth*", "date_of_birth", "dob", "ssn",
        "*push_token*", "*device_token*")
    """Attribute keys that hold PII, as case-insensitive `fnmatch` patterns (addresses a message
    goes to included: email, phone, the `push_token` of push messages), each matched against
    the key as written and in snake case (`firstName`, `first-name` are `first_name`): their
    values are masked in profiles, events and exports for callers without the `pii-reader`
    role, and in a Recommend request's context before the impression log stores it (for every
    caller)."""

    # -- messages and the public HTTP endpoint (issue 16) ----------------------------------------
    public_http_port: int | None = Field(None, ge=0, le=65535)
    """Port of the public HTTP endpoint on `host` (one-click unsubscribe `/u/<token>`, inbound
    SMS `/sms/inbound`); None disables it. HTTPS with the gRPC port's certificate when TLS is on
    (no client certificate asked: mail providers and browsers call it). Workers share it. A port
    of its own: the gRPC or metrics port's number is refused."""
    public_url: str = ""
    """Externally visible base URL of the public endpoint, used in unsubscribe links (e.g.
    `https://tailor.example.com`); https unless the server listens on loopback only. Empty:
    `http(s)://<host>:<public_http_port>`."""
    unsubscribe_mailto: str = ""
    """Ignored (a warning at start): it put a `mailto:` alternative in List-Unsubscribe, but
    nothing reads that mailbox, so an unsubscribe sent by email was lost. List-Unsubscribe
    offers the one-click https link only (RFC 8058)."""
    webhook_tolerance_seconds: float = Field(300.0, gt=0, le=3600)
    """How far the signed `X-Tailor-Timestamp` of an inbound webhook request (`/sms/inbound`,
    `/delivery/events`) may be from now; older (a captured request sent again) or further ahead
    is 401. A replay within it is refused by its signature (remembered per process)."""
    message_id_domain: str = "tailor.invalid"
    """Right-hand side of the Message-ID of composed emails (`<decision id>@<domain>`)."""

    smtp_host: str = ""
    """SMTP relay that `ComposeMessage(deliver=true)` sends email through; empty: no delivery."""
    smtp_port: int = 587
    """Port of the relay (587 submission with STARTTLS, 465 implicit TLS)."""
    smtp_security: str = "starttls"
    """`starttls` (upgrade, refused if the relay cannot), `tls` (implicit TLS) or `none`
    (plain; a relay on loopback only: another `smtp_host` refuses to start without
    `--insecure`)."""
    smtp_username: str = ""
    """Login at the relay (empty: none)."""
    smtp_password: str = ""
    """Password of `smtp_username`; set it through `TAILOR_SMTP_PASSWORD`."""
    smtp_from: str = "Tailor <no-reply@tailor.invalid>"
    """The From header of delivered email."""
    smtp_timeout_seconds: float = Field(10.0, gt=0)
    """Connect and command timeout at the relay."""
    smtp_ca_file: Path | None = None
    """PEM CA bundle the relay's certificate is checked against (default: the system's)."""
    send_rate_per_second: dict[str, float] = {"email": 50.0, "sms": 10.0, "push": 100.0}
    """SendCampaign's delivery rate per channel (messages per second, a token bucket) when the
    request names none for the channel."""
    send_compose_ahead: int = Field(128, ge=1, le=1024)
    """How many users a send job composes at once, ahead of delivery."""
    send_connections: int = Field(4, ge=1, le=64)
    """SMTP connections a send job delivers over at once (each one message at a time); also
    how many deferred ComposeMessages (`deliver`, each a job of its own) go at once in a
    process."""
    send_bounce_breaker_share: float = Field(0.5, gt=0, le=1)
    """A send job stops when the relay hard-bounces (550 5.1.1 and the like; the SMS provider:
    a code saying the number is gone; the push webhook: 410, the token gone) more than this
    share of the last `send_bounce_breaker_min` emails (texts, pushes) it handed over: a relay
    refusing most of an audience so is taken for misconfigured, and the addresses that stretch
    bounced are not listed, nor their push tokens dropped (`server.messages.breaker`). 1: never
    (and the bounces are listed at once)."""
    send_bounce_breaker_min: int = Field(20, ge=1, le=10_000)
    """How many of a send job's last emails (texts, pushes) `send_bounce_breaker_share` is judged over (from
    the job's first that many on); a hard bounce is listed once that many more were handed
    without a trip, or when the job ends (so at most this many listings are held in memory)."""
    sms_webhook_url: str = ""
    """The SMS provider's webhook that SMS are POSTed to as signed JSON (`server.messages.webhook`;
    needs the `delivery-webhook` keyring); empty: no SMS delivery."""
    push_webhook_url: str = ""
    """The push provider's webhook (as `sms_webhook_url`); empty: no push delivery."""
    webhook_timeout_seconds: float = Field(10.0, gt=0)
    """Longest wait for a webhook's reply (a timeout is retried)."""
    delivery_attempts: int = Field(4, ge=1, le=10)
    """Attempts per message (SMTP and webhooks) before it becomes a dead letter; only transient
    failures (SMTP 4xx, HTTP 5xx/408/429, timeouts, connection errors) are retried."""
    delivery_backoff_seconds: float = Field(0.5, gt=0, le=60)
    """Wait after the first transient failure; doubled after each further one."""
    delivery_backoff_max_seconds: float = Field(30.0, gt=0, le=600)
    """Longest wait between two attempts."""
    dkim_key_file: Path | None = None
    """PEM RSA private key that outgoing email is DKIM-signed with (with `dkim_selector` and
    `dkim_domain`); unset: no signature."""
    dkim_selector: str = ""
    """DKIM selector: the public key is the TXT record `<selector>._domainkey.<dkim_domain>`."""
    dkim_domain: str = ""
    """The signing domain (`d=`), normally the domain of `smtp_from`."""

    # -- secrets and the audit log (issue 14) ---------------------------------------------------
    secrets_dir: Path | None = Path("var/secrets")
    """Directory of the keyring files `<name>.keys` (`user-id`, `audit`, `unsubscribe`,
    `encryption`, `erasure`, `suppression`, `store-id`; optional: `sms-webhook`,
    `delivery-webhook`, `delivery-events`), one `kid:base64key` line per key, the signing key
    first; it must be outside the data dir (the server refuses to start otherwise: the data dir
    must reveal nothing without the keys). `TAILOR_SECRET_<NAME>` (e.g. `TAILOR_SECRET_USER_ID`)
    overrides a file. A missing keyring is generated here only when `host` is a loopback
    address; any other host refuses to start without it (an optional one is never generated:
    without it its feature is off). `none` (exactly): no directory, the environment only:
    every keyring from its variable, none read from a file or generated (a directory of that
    name is `./none`)."""
    encrypt_at_rest: bool = True
    """Encrypt profile attributes, consent, events, features, decisions and contacts at rest
    (AES-GCM under per-user data keys wrapped by the `encryption` master key; docs/privacy.md).
    Off exists to measure its cost (`loadtests.bench_profiles --encryption both`); a store once
    encrypted refuses to open with it off. Ids in store keys are keyed hashes either way."""
    audit_max_bytes: int = Field(16 << 20, ge=1)
    """Size at which the audit log moves on to its next file (`data_dir/audit/audit-NNNNNN.jsonl`);
    the new file's first line chains to the last line of the previous one."""
    audit_failure_seconds: float = Field(60.0, gt=0, le=3600)
    """Failed authentication is audited once per (peer, reason) at once, the rest of this
    interval's failures of that pair as one line with their `count` (anyone can fail
    authentication: one line each would let them fill the disk). Denied calls likewise per
    (principal, method)."""
    audit_keep_files: int = Field(0, ge=0)
    """Audit files kept, oldest dropped first (`audit.head` records where the chain continues).
    0 keeps every file."""

    # -- seen items and long-term interest (issue 21) -------------------------------------------
    seen_exclusion_days: dict[str, float] = {
        "purchase": math.inf, "rating": math.inf, "view": 30.0, "click": 30.0, "add_to_cart": 30.0}
    """How long an item stays out of a user's recommendations after an event of each type on
    it, in days since the user's latest event on that item (`inf`: for good). Types not listed
    never exclude. Applies to the bundle's seen-set and the live one alike; off with
    `exclude_history=False`. Events of default weight 0 (messages sent, unsubscribes, bounces:
    no interaction of the user; training drops them) enter neither seen-set nor move that time;
    a type listed here enters the live one (never training's). Env:
    `TAILOR_SEEN_EXCLUSION_DAYS='{"purchase": "inf", ...}'`."""
    seen_unknown_type_days: float = Field(math.inf, gt=0)
    """The same for seen items whose event type is unknown: histories of bundles without seen
    arrays (counted from the bundle's data cutoff) and profiles written before seen records.
    `inf`, as `exclude_history` always treated the history window."""
    repeatable_categories: tuple[str, ...] = ("grocery", "groceries", "consumables")
    """Categories whose items come back whatever the user did (bought again as a habit)."""
    seen_overfetch_max: int = Field(50, ge=0)
    """At most this many extra FAISS candidates per request to make up for excluded seen items
    (requested exclusions always add their count); the ranker then sees fewer candidates, and
    a list shorter than k is filled with popular unseen items. 50, the old history window,
    keeps the search as deep as before: on 20k items a depth of +400 cost +25% CPU per call
    (`python -m loadtests.bench_exclusion`)."""
    history_long_half_life_days: float = Field(365.0, gt=0)
    """Half-life of the long-term part of the encoder's history, added to the recent part
    (the half-life the bundle's manifest declares); both decay against the request time, not the user's latest
    event, so one new event cannot age a whole profile (server/profiles/history.py)."""
    history_session_minutes: float = Field(30.0, ge=0)
    """Events this recent are the current session: never scaled down by
    `history_background_mass`."""
    history_background_mass: float = Field(16.0, ge=0)
    """Most total weight the history before the session may carry in the encoder's input (a
    view weighs 1, a click 2, a purchase 8); heavier histories are scaled down to it, so a
    session's new interest is not drowned. 0: no cap."""
    history_clock_seconds: int = Field(3600, ge=1, le=86_400)
    """Step of the clock the encoder's history decays against in Recommend: the request time
    floored to the user's step (steps start at multiples of it since the epoch, plus one of 16
    phases per user), so every worker, batch and path, and the user cache's entries, encode the
    same stored history into the same vector, bit for bit, until the user's next step; each
    step's end re-encodes a sixteenth of the cached users. The session
    (`history_session_minutes`) still counts back from the request itself. The recent part's
    30-day half-life moves weights by 1e-3 in an hour; a shorter step re-encodes cached users
    more often (300 s: Recommend's CPU a call at half max x1.14-1.29 in the bench, whose
    users' cache entries lasted over an hour before; docs/bundle.md, "The same answer
    everywhere")."""

    # -- drift (issue 19) ------------------------------------------------------------------------
    drift_enabled: bool = True
    """Count live Recommend traffic into histograms for drift reports (GetDriftReport, the
    `tailor_drift_psi` gauges), against the bundle's training reference (docs/operations.md)."""
    drift_window_seconds: float = Field(300.0, gt=0)
    """Length of one drift window; the report sums the last `drift_windows` of them."""
    drift_windows: int = Field(12, ge=1, le=10_000)
    """Rolling windows a drift report sums (12 x 300 s: the last hour)."""
    drift_psi_warning: float = Field(0.2, gt=0)
    """PSI at or above which a feature counts as drifted: a warning is logged when it crosses
    (0.1-0.25 is read as a moderate shift, above 0.25 as a major one)."""
    drift_min_count: int = Field(500, ge=1)
    """Live values a feature needs in the windows before its PSI can count as drift and its
    `tailor_drift_psi` gauge shows it (-1 before: fewer give noisy PSI, with m bins sampling
    alone gives about (m - 1) / n)."""
    drift_check_seconds: float = Field(30.0, gt=0)
    """How often each worker recomputes the PSI for the gauges and the warning."""

    # -- contact policy (issue 15) -------------------------------------------------------------
    consent_defaults: dict[str, str] = DEFAULT_CONSENT
    """Consent each channel needs for marketing: `opt_in` (an explicit opt-in), `opt_out`
    (allowed unless the user opted out) or `none` (not checked; on email and sms, whose
    messages carry a one-click unsubscribe or take STOP, `none` is `opt_out`: an opt-out is
    always honoured). Transactional campaigns skip
    it (only an explicit transactional opt-out of the channel stops them; an SMS STOP records
    one, as carriers block the number until START). Channels left out
    keep the default shown; a channel name other than web, app, email, sms, push is refused.
    Env: `TAILOR_CONSENT_DEFAULTS='{"push": "opt_in"}'`."""
    contact_default_timezone: str = "UTC"
    """IANA time zone of users without a valid `timezone` profile attribute: their quiet hours,
    their send windows (whose slots are cut and scored at the zone's offset when the window
    starts), and the local hours their events count in for the send-time model (events are
    binned by hour of week in each user's zone, DST included, as they are ingested)."""
    contact_frequency_caps: tuple[tuple[str, int, float], ...] = ()
    """Global caps on marketing contacts per user, as (channel or "*", max, window seconds),
    on top of each campaign's `frequency_caps` (transactional campaigns' decisions are neither
    checked against them nor counted by them); max and window within what a contact history
    keeps (`TAILOR_LIMITS__FREQUENCY_CAP_MAX`, `..._WINDOW_SECONDS`), as campaign caps. Env:
    `TAILOR_CONTACT_FREQUENCY_CAPS='[["*", 5, 86400]]'`."""
    contact_send_time_epsilon: float = Field(0.1, ge=0.0, le=1.0)
    """Exploration share of send-time choice (campaigns with a `send_window`): a uniform slot
    of the window instead of the user's best hour, so the model keeps learning."""
    contact_thompson_draws: int = Field(256, ge=1, le=65536)
    """Monte Carlo draws of a Thompson channel choice (campaigns with several channels) whose
    posteriors quadrature cannot serve (a or b < 1): the channel is drawn from their estimate,
    so its logged propensity is exact; the estimate (standard error <= 0.5 / sqrt(draws + 1))
    only sets how close the choice is to Thompson sampling. Other rows: quadrature, no draws."""
    contact_prior_sample: int = Field(20_000, ge=1, le=10_000_000)
    """Stored profiles the send-time and channel population prior is fitted on (each refit
    reads the next ones, round-robin)."""
    contact_prior_refresh_seconds: float = Field(3600.0, gt=0)
    """Age at which the send-time and channel population prior is refitted."""

    @field_validator("consent_defaults")
    @classmethod
    def _known_consent(cls, value: dict[str, str]) -> dict[str, str]:
        """Every channel's need, those not named at their default: a channel left out (or
        misspelt) must not go unchecked."""
        for channel, need in value.items():
            if channel not in DEFAULT_CONSENT:
                raise ValueError(f"consent_defaults[{channel!r}]: not a channel (known: "
                                 f"{', '.join(DEFAULT_CONSENT)})")
            if need not in ("opt_in", "opt_out", "none"):
                raise ValueError(f"consent_defaults[{channel!r}]: {need!r} is not opt_in, "
                                 "opt_out or none")
        return {**DEFAULT_CONSENT, **value}

    @field_validator("contact_frequency_caps")
    @classmethod
    def _sane_caps(cls, value, info: ValidationInfo):
        """A cap beyond the limits could never bind: a contact history keeps at most
        `frequency_cap_max` contacts, those of the last `frequency_cap_window_seconds`. Not
        checked against limits refused themselves (absent from `info.data`): the defaults in
        their place are not what was asked, and their own error already stops the start."""
        lim = info.data.get("limits")
        if lim is None:
            return value
        for channel, most, window in value:
            if channel not in ("*", "email", "sms", "push") or not 1 <= most <= lim.frequency_cap_max \
                    or not 0 < window <= lim.frequency_cap_window_seconds:
                raise ValueError(f"contact_frequency_caps: ({channel!r}, {most}, {window}) needs "
                                 "a channel in email, sms, push or *, max in 1.."
                                 f"{lim.frequency_cap_max} and window in (0, "
                                 f"{lim.frequency_cap_window_seconds:g}]")
        return value

    @field_validator("public_http_port")
    @classmethod
    def _own_public_port(cls, value: int | None, info: ValidationInfo) -> int | None:
        """A port of its own: with `--workers` the gRPC and public listeners both bind with
        SO_REUSEPORT, and one port would spread connections over both servers."""
        for other in ("port", "metrics_port"):
            if value and info.data.get(other) == value:
                raise ValueError(f"{value} is also the {other}: the public HTTP endpoint needs a "
                                 "port of its own")
        return value

    @field_validator("worker_hang_seconds")
    @classmethod
    def _hang_outlasts_heartbeats(cls, value: float) -> float:
        if 0 < value < WORKER_HANG_FLOOR_SECONDS:
            raise ValueError(f"{value:g} s is less than {WORKER_HANG_FLOOR_SECONDS:g} s, three "
                             "heartbeats of a worker: a busy moment would stop the server (0 "
                             "turns the check off)")
        return value

    @field_validator("stop_seconds")
    @classmethod
    def _stop_outlasts_the_drain(cls, value: float, info: ValidationInfo) -> float:
        """A bound under the drain and grace, plus the `STOP_KILL_SECONDS` before it at which
        what still stops is killed, would kill the server (or its workers) while its calls
        still had time to finish. Not checked when the drain or grace was refused (absent
        from `info.data`): their own error names them."""
        if not {"drain_seconds", "grace_seconds"} <= info.data.keys():
            return value
        drain = info.data["drain_seconds"] + info.data["grace_seconds"]
        if value <= drain + STOP_KILL_SECONDS:
            raise ValueError(f"the stop must outlast drain_seconds + grace_seconds ({drain:g} s) "
                             f"by more than {STOP_KILL_SECONDS:g} s")
        return value

    @model_validator(mode="after")
    def _requests_fit_the_transport(self) -> Settings:
        """A byte bound of `limits` on one request over `grpc_max_request_bytes` could never
        be reached: gRPC would refuse such a request first, with a message naming neither."""
        for name in ("request_bytes", "batch_request_bytes"):
            most = getattr(self.limits, name)
            if most > self.grpc_max_request_bytes:
                raise _refused("grpc_max_request_bytes", self.grpc_max_request_bytes, (
                    f"limits.{name} ({most}) is larger: a request that size would be refused by "
                    f"the transport; raise grpc_max_request_bytes to at least {most}, or lower "
                    f"limits.{name} (TAILOR_LIMITS__{name.upper()}) with it"))
        return self

    @model_validator(mode="after")
    def _stop_outlasts_the_hand_off(self) -> Settings:
        """With a relay or a webhook to send through, a stopping server gives the messages being
        handed over `handoff_seconds` after the calls' grace (`TailorServer._stop_sends`). A
        bound that kills sooner cut that hand-off, and the message went again when its job
        resumed (measured, grace 1 s, a relay answering DATA in 4 s: stop_seconds 3 killed
        at 2 s, one message arrived twice; 20: the stop took 4.2 s, exit 0, each once)."""
        if not self.delivers:
            return self
        need = self.drain_seconds + self.grace_seconds + self.handoff_seconds
        if self.stop_seconds <= need + STOP_KILL_SECONDS:
            raise _refused("stop_seconds", self.stop_seconds, (
                f"with a relay or webhook to send through, the stop must outlast drain_seconds + "
                f"grace_seconds + the hand-off of a message being sent (the larger of "
                f"smtp_timeout_seconds and webhook_timeout_seconds) ({need:g} s) by more than "
                f"{STOP_KILL_SECONDS:g} s: killed sooner, that message is sent again when its job "
                "resumes"))
        return self

    @field_validator("*", mode="before")
    @classmethod
    def _no_empty_path(cls, value, info: ValidationInfo):
        """An empty path is the working directory (`Path("")` is `.`): `TAILOR_DATA_DIR=` (or
        `TAILOR_BUNDLE=`, `data_dir = ""`) served and wrote the directory the server was started
        in. Refused for every path field (`path_fields`); none takes empty for "off": unset, an
        optional one is off and the others take their default. `.` stays allowed, asked for."""
        if value == "" and info.field_name in path_fields():
            raise ValueError("an empty path would be the working directory: give a path (. for "
                             "that directory), or leave it unset")
        return value

    @field_validator("secrets_dir", mode="before")
    @classmethod
    def _environment_only(cls, value):
        """`none` (any case) is no secrets dir (`contract.keyring.environment_only`): a TOML
        file or a variable cannot say None, so "the environment only" was out of an operator's
        reach."""
        return None if environment_only(value) else value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        if not isinstance(logging.getLevelName(value.upper()), int):
            raise ValueError(f"unknown log level {value!r} (DEBUG, INFO, WARNING, ERROR or "
                             "CRITICAL)")
        return value.upper()

    @field_validator("contact_default_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError) as err:  # OSError:
            raise ValueError(f"unknown IANA time zone {value!r}") from err  # "Europe" (a directory)
        return value

    @property
    def delivers(self) -> bool:
        """Messages go out of this server (a relay, an SMS or push webhook), not only composed."""
        return bool(self.smtp_host or self.sms_webhook_url or self.push_webhook_url)

    @property
    def handoff_seconds(self) -> float:
        """How long a stopping server waits, after its calls' grace, for the messages being
        handed over to be accepted and settled (`TailorServer._stop_sends`): one cut then is
        sent again when its job resumes (`_stop_outlasts_the_hand_off`)."""
        return max(self.smtp_timeout_seconds, self.webhook_timeout_seconds)

    @property
    def store_dir(self) -> Path:
        return self.data_dir / "store"

    @property
    def bundles_dir(self) -> Path:
        return self.data_dir / "bundles"

    @property
    def audit_dir(self) -> Path:
        return self.data_dir / "audit"


@functools.cache
def path_fields() -> frozenset[str]:
    """The Settings fields that hold a path (`Path`, `Path | None`): an empty one is refused."""
    return frozenset(name for name, field in Settings.model_fields.items()
                     if Path in (field.annotation, *get_args(field.annotation)))


def _refused(field: str, value: object, message: str) -> ValidationError:
    """A value error on `field` raised from a model validator (one that reads fields declared
    after it), so `settings_error` names the field and its variable as for a field's own."""
    return ValidationError.from_exception_data("Settings", [InitErrorDetails(
        type=PydanticCustomError("value_error", "Value error, {why}", {"why": message}),
        loc=(field,), input=value)])


def load_settings(config_file: Path | None = None, **flags) -> Settings:
    """Settings from, in order of precedence: `flags` (the command line), `TAILOR_*` variables,
    the TOML `config_file` (top-level keys are Settings fields, `[limits]` the Limits), defaults.
    A key the file has but Settings does not is refused (ValueError naming it and the file).

    The three sources are read as raw values, merged (`_over`) and validated once: a check
    across fields (the stop bound against the grace, a cap against `[limits]`, the public port
    against `port`) sees the values the server runs with, whichever source each came from,
    never one source's values beside another's defaults, and every value refused is named.
    (`Settings(**values)` reads the environment again beneath them: the values already there.)"""
    values = _file_values(config_file) if config_file is not None else {}
    for layer in (EnvSettingsSource(Settings)(), flags):  # raises SettingsError on bad JSON
        values = _over(values, layer)
    return Settings(**values)


def _over(low: dict, high: dict) -> dict:
    """`high`'s values over `low`'s, field by field (a dict setting such as `consent_defaults`
    replaced whole, as a scalar); the `limits` table merged key by key, as `[limits]` and
    `TAILOR_LIMITS__*` name its keys one by one."""
    merged = {**low, **high}
    if isinstance(low.get("limits"), dict) and isinstance(high.get("limits"), dict):
        merged["limits"] = {**low["limits"], **high["limits"]}
    return merged


def _file_values(config_file: Path) -> dict:
    """The raw values of the TOML `config_file`, its keys checked against Settings and Limits."""
    try:
        with open(config_file, "rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as err:  # its message names the line and column
        raise ValueError(f"{config_file}: {err}") from None
    if not isinstance(data.get("limits", {}), dict):  # `limits = 5`: its keys cannot be read
        raise ValueError(f"{config_file}: limits is a table ([limits], its settings on the "
                         f"lines under it), not {type(data['limits']).__name__}")
    unknown = sorted(set(data) - set(Settings.model_fields)) + sorted(
        f"limits.{k}" for k in set(data.get("limits") or {}) - set(Limits.model_fields))
    if unknown:
        raise ValueError(f"{config_file}: unknown setting {', '.join(unknown)}")
    return data


def changed_settings(running: Settings, now: Settings) -> list[str]:
    """The fields (`limits.<name>` for the Limits) whose value differs between `running` and
    `now`, in the order Settings declares them."""
    before, after = running.model_dump(), now.model_dump()
    changed = []
    for name, value in before.items():
        if name == "limits":
            changed += [f"limits.{k}" for k, v in value.items() if after["limits"].get(k) != v]
        elif after.get(name) != value:
            changed.append(name)
    return changed


SECRET_SETTINGS = frozenset({"smtp_password"})
"""Settings that hold a secret: a refused one is named, its value never echoed (`settings_error`
goes to stderr and the service manager's log)."""


def settings_error(err: ValidationError, config_file: Path | None = None,
                   flags: Collection[str] = ()) -> str:
    """One line per refused value, naming where it can come from (`flags`: the fields `serve`
    takes as a flag), and what was given, unless it is a secret (`SECRET_SETTINGS`)."""
    lines = []
    for problem in err.errors():
        path = [str(p) for p in problem["loc"]]
        env = "TAILOR_" + "__".join(path).upper()
        flag = f"--{path[0].replace('_', '-')}" if len(path) == 1 and path[0] in flags else ""
        where = ", ".join(x for x in (flag, env, f"'{'.'.join(path)}' in {config_file}"
                                      if config_file else "") if x)
        given = (f"a value of type {type(problem.get('input')).__name__}, not shown: a secret"
                 if path and path[0] in SECRET_SETTINGS else f"{problem.get('input')!r:.60}")
        lines.append(f"{'.'.join(path)} ({where}): {problem['msg']} (got {given})")
    return "; ".join(lines)


def variable_error(err: ValueError) -> str:
    """One line for a `TAILOR_*` variable pydantic-settings could not parse as JSON, naming it."""
    found = re.search(r'field "([a-z_]+)"', str(err))
    if found is None:
        return str(err)
    name = found.group(1)
    return f"{name} (TAILOR_{name.upper()}): not valid JSON ({err.__cause__ or err})"
