"""Every bound a request is checked against: one `Limits` model, set through `Settings.limits`.

Its own module, free of `pydantic_settings`, so that the writer processes (which check records
against the limits they are handed) do not import the settings machinery to get it.
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from contract.attribution import ATTRIBUTION_RANK_CELLS, ATTRIBUTION_SECONDS

__all__ = ["DEFAULT_LIMITS", "Limits", "UNREAD_SECONDS_FLOOR"]

UNREAD_SECONDS_FLOOR = 0.1
"""Least `plan_unread_seconds` and `stream_unread_seconds` may be: below it, the time a reply
takes to be written, not a client that stopped reading, ends the stream (1e-6 was accepted,
and every stream then ended RESOURCE_EXHAUSTED at its first reply)."""


class Limits(BaseModel):
    """Every bound a request is checked against (`server.validation` raises INVALID_ARGUMENT
    naming the field). Environment: `TAILOR_LIMITS__<FIELD>`, e.g. `TAILOR_LIMITS__RECOMMEND_K`."""

    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="constants")

    id_bytes: int = Field(128, ge=1, le=240)
    """Longest id (user, event, item, campaign, variant, decision) in UTF-8 bytes. Ids are store
    keys, joined by 0x1F (which no id may contain) into keys LMDB caps at 511 bytes. No id or
    attribute key may hold a C0 or C1 control, a bidirectional control, U+2028, U+2029 or a
    format character (Unicode Cf: U+FEFF, U+200B-U+200D, U+2060, U+00AD, ...) (`contract.ids`:
    they make logs and exports show another id); the calls that name what was
    stored before all but the C0 controls were refused still take its id (DeleteProfile,
    ExportProfile, the opt-outs of links and STOP replies; UpsertAttributes and unsubscribe
    events, for a profile stored only: other events stay refused; GetCampaign, ArchiveCampaign,
    GetCampaignStats, ExportDecisions, ListCampaigns; RemoveItems of a served item), and
    Recommend's exclude_item_ids (look-ups only: a served item's id a client hands back)."""

    request_bytes: int = 1024 * 1024
    """Largest Recommend request accepted."""
    batch_request_bytes: int = 16 * 1024 * 1024
    """Largest RecommendBatch request accepted."""
    batch_users: int = 1000
    """Most requests in one RecommendBatch."""
    recommend_k: int = Field(1000, ge=1, le=32767)
    """Most items one Recommend may ask for (k); at most 32,767, the positions the impression
    log records."""
    batch_items: int = Field(100_000, ge=1)
    """Most items one RecommendBatch may ask for in all (the sum of its requests' k), checked
    before anything is computed or logged: its answer must fit one message (an item takes about
    100 bytes; 1,000 requests of k=1,000 made 95 MB, over the 64 MiB message limit). An answer
    that still does not fit (long titles and URLs) is refused once computed, before it is
    logged (INVALID_ARGUMENT `requests[].k`)."""
    exclude_items: int = 1000
    """Most exclude_item_ids in one Recommend (each an item id of at most `id_bytes`)."""
    recommend_context_bytes: int = Field(1024, ge=0, le=16384)
    """Most UTF-8 bytes of one Recommend's `context` keys and values together (the impression
    log records them). Each key is one an attribute key may be: not empty, no control or format
    character, no look-alike spelling (`email` with a zero-width space, U+200B, in it, or with
    a Cyrillic `е`, escaped the `pii_keys` masking: `validation.key_problem`). Each value is
    text with lines (`item_text_chars` says which characters text may not hold)."""

    events_per_batch: int = 10_000
    """Most events in one TrackEvents request (or one message of a TrackEventStream); more is
    INVALID_ARGUMENT before any event is converted (gRPC still parses the message whole, up
    to `grpc_max_request_bytes`: 23.9 MiB of 12.5 million empty events held a worker 1.1 s;
    64 MiB ones, 13 s, before that bound). 10,000 events at every id and attribute bound make
    17.9 MiB: raising it may need `grpc_max_request_bytes` raised."""
    stream_read_ahead_events: int = Field(32_000, ge=1)
    """Events a TrackEventStream reads ahead of its oldest uncommitted batch: what is read ahead
    waits for the writer, `stream_commit_events` of it a transaction, so the writer is never
    idle for want of the client's next message; more memory per stream."""
    stream_commit_events: int = Field(8_000, ge=1)
    """Most events of TrackEventStream messages read ahead (a stream's messages after its
    first) one write transaction carries, at least one whole message. A TrackEvents call is
    taken before them and commits without them, so it waits for the stream's transaction
    running when it arrives, then for its own: beside a 200,000-event stream of 20,000 users
    (messages of 500), 4 TrackEvents a second waited p50 0.17 s, at most 0.42 s, against
    0.74-0.80 s and 1.27 s with up to 64 messages (32,000 events) a transaction, when over
    `batch_queue_seconds` the calls after them were refused. Higher: fewer, larger commits
    (that stream alone 27,400-29,400 events/s at 32,000, 23,900-24,000 at 8,000; within noise
    with 200,000 users' events; docs/performance.md), longer waits beside it."""
    stream_rejected_events: int = Field(100_000, ge=1)
    """Most rejected events one TrackEventStream answers with: its one reply lists each (index,
    id, reason: about 150 bytes, at most 600), and 480,000 of them (a backfill whose ids another
    user's events hold) made a reply over the 64 MiB message limit, answered RESOURCE_EXHAUSTED
    with nothing said. Past it the stream ends RESOURCE_EXHAUSTED saying what its messages read
    until then did (those events stay tracked)."""
    event_value_max: float = 1e9
    """Largest magnitude of an event's `value` (a purchase's is also not negative)."""
    event_attributes: int = 32
    """Most attributes on one tracked event."""
    event_attribute_bytes: int = 1024
    """Most UTF-8 bytes of one event's attribute keys and values together. Each value is text
    with lines (`item_text_chars`: an event holding another control is rejected)."""
    profile_attributes: int = 64
    """Most attributes one UpsertAttributes call may set."""
    profile_attributes_total: int = Field(256, ge=1)
    """Most attributes one profile holds (RESOURCE_EXHAUSTED for a call that would add more)."""
    profile_attributes_bytes: int = Field(65_536, ge=1)
    """Most UTF-8 bytes of attribute keys and values one profile holds (RESOURCE_EXHAUSTED for
    a call that would add more)."""
    attribute_key_chars: int = 64
    """Longest profile attribute key."""
    attribute_value_chars: int = 1024
    """Longest profile attribute value. A value is text with lines (`item_text_chars`); a
    refusal names its key and the character's class and position, never the value."""
    seen_items: int = Field(50_000, ge=1_000)
    """Most distinct items one user's live seen-set holds (20 bytes each, rewritten with every
    batch of the user's events); past it the items with the oldest latest event are dropped,
    those excluded for good (`seen_exclusion_days` inf: purchases, ratings) last."""
    join_impressions: int = Field(10_000, ge=100, le=200_000)
    """Most of a user's impressions the click join reads for one TrackEvents batch (one walk
    per user serves all of that user's events), newest first, inside the store's write lock: a
    shared id such as "anonymous" holds an answer every few seconds for the whole retention. A
    click whose answer the walk does not reach joins nothing (docs/impressions.md). At most
    200,000 (about 1.5 s of write lock a user on this machine's 2 cores)."""
    profile_export_impression_bytes: int = Field(16 << 20, ge=1 << 10, le=24 << 20)
    """Most bytes of JSON the impressions of one ExportProfile page make in its document
    (newest first; a page holds at least one): a shared id such as "anonymous" holds an answer
    every few seconds, whose impressions together made documents over the 64 MiB message
    limit. The first page also holds a page of events (`profile_export_bytes` stored, up to
    about four times that as JSON): the two stay under 64 MiB."""
    profile_export_message_bytes: int = Field(2 << 20, ge=0, le=4 << 20)
    """Most bytes of JSON the messages kept for one user make in an ExportProfile document,
    in each of its two sections that hold them (`dead_letters`, `messages`: the email or
    webhook body as handed to the adapter, rendered for the user), oldest first; a message past
    it is listed with its `message_bytes` and no `message`. With the events and impressions of
    the first page the document stays under the 64 MiB message limit."""
    profile_export_audit_bytes: int = Field(1 << 20, ge=1 << 10, le=4 << 20)
    """Most bytes of JSON the audit lines naming one user make in an ExportProfile document
    (`audit`: who read or changed their data, when; the newest kept, listed oldest first,
    `audit_left_out` counting the older ones): with the other sections of the first page the
    document stays under the 64 MiB message limit."""
    profile_events_bytes: int = Field(16 << 20, ge=1 << 16, le=32 << 20)
    """Most stored bytes of the raw events one GetProfile returns (the newest first, at least
    one; `max_events` 0 asks for as many as this holds): a heavy user's profile stays one
    message under the 64 MiB limit (`grpc_max_message_bytes`). ExportProfile pages through
    every event."""
    profile_export_events: int = Field(100_000, ge=1)
    """Most events one ExportProfile document lists (a page, newest first; it says how many are
    held and where the next page starts)."""
    profile_export_bytes: int = Field(8 << 20, ge=1 << 16, le=16 << 20)
    """Most stored bytes of the events one ExportProfile page lists (their JSON, field names
    spelled out, is up to about four times that; a page holds at least one event): pages keep
    each document under the 64 MiB message limit."""

    campaign_variants: int = 1000
    """Most variants in one campaign."""
    variant_content_entries: int = 32
    """Most content entries of one campaign variant."""
    variant_content_bytes: int = 16 * 1024
    """Most UTF-8 bytes of one variant's content keys and values together. Each value (a
    message part's template, or text a page shows) is text with lines (`item_text_chars`)."""
    variant_features: int = 64
    """Most features of one campaign variant."""
    campaign_content_bytes: int = 256 * 1024
    """Most UTF-8 bytes of the content of all a campaign's variants together."""
    campaigns_page: int = Field(100, ge=1, le=10_000)
    """Most campaigns one ListCampaigns page holds (and its size when the request names none)."""
    campaigns_page_bytes: int = Field(16 << 20, ge=1 << 20, le=32 << 20)
    """Most stored bytes of the campaigns one ListCampaigns page holds (a page holds at least
    one): a page of large campaigns ends early, under the 64 MiB message limit."""
    campaign_context_features: int = 64
    """Most context features one campaign may name."""
    campaign_name_chars: int = 256
    """Longest campaign name: one line of text (`item_text_chars`)."""
    campaign_salt_chars: int = 128
    """Longest campaign salt: one line of text at CreateCampaign (`item_text_chars`); an
    update keeps the stored one (it may not change)."""
    reward_window_seconds: float = 90 * 86400.0
    """Longest reward window a campaign may set."""
    reward_max: float = Field(1e9, gt=0, le=1e15)
    """Largest magnitude of a reward (ReportReward, a reward rule's value or cap, a campaign's
    default reward; a reward taken from an event's value is clipped to it): the Gaussian and
    linear posteriors square rewards, which a value past ~1e154 turns into inf/NaN for good."""
    context_entries: int = 64
    """Most request context entries in one ChooseVariant."""
    lints_propensity_samples: int = Field(65_536, ge=256, le=4_194_304)
    """Most posterior arm values (draws x arms) behind one lints decision's propensity,
    estimated by inverse sampling (`campaigns.policy`): bounds a decision's time (about 10 ns
    a value, so 0.7 ms at the default). Arms rarer than about 64 x arms / this value get an
    IPS weight biased low (docs/operations.md, "Campaign decisions")."""
    request_id_bytes: int = Field(64, ge=1, le=128)
    """Longest `request_id` of a ChooseVariant, ComposeMessage or SendCampaign, in UTF-8 bytes
    (the Python client sends a 32-character one)."""
    request_id_window_seconds: float = Field(3600.0, ge=1.0, le=7 * 86400.0)
    """How long a decision's `request_id` is remembered: a ChooseVariant or ComposeMessage
    repeating it (same caller, campaign and user) within this time is answered the decision
    logged for it instead of deciding again (a gRPC retry of a call whose answer was lost).
    Ids are kept in buckets this wide (one write an id; the bucket two back is deleted by
    later decisions with an id), so each costs the decision log ~120 bytes for one to two
    windows; older ids count as new. Changing it forgets the ids remembered under the old
    width (a retry spanning the restart is decided anew)."""
    context_value_max: float = Field(1e9, gt=0, le=1e15)
    """Largest magnitude of a request context value a campaign reads (`request.<key>`; also
    every value of a SendCampaign's context): the linear policies square them into their
    posterior, which a value past ~1e154 turns into inf/NaN for good."""
    plan_batch_users: int = Field(10_000, ge=1)
    """Most user ids in one PlanCampaign message (INVALID_ARGUMENT past it)."""
    plan_stream_users: int = Field(10_000_000, ge=1)
    """Most user ids in one PlanCampaign stream (RESOURCE_EXHAUSTED past it). A stream keeps
    8 bytes a user it named, to answer a user named again suppressed `duplicate`."""
    plan_streams: int = Field(8, ge=1)
    """Most PlanCampaign streams one worker process serves at once (RESOURCE_EXHAUSTED past it:
    retry once one ends). Each keeps 8 bytes a user it named (`plan_stream_users`: up to 80 MB,
    about twice that while its sorted runs merge), so this bounds what plans hold together."""
    plan_idle_seconds: float = Field(60.0, gt=0, allow_inf_nan=False)
    """Longest a PlanCampaign stream may wait for the client's next message once every message
    it sent is answered and the answer taken (RESOURCE_EXHAUSTED then: the batches answered
    stand). A stream holds one of `plan_streams` places of its worker; a client that sent
    nothing held it until its connection's age ended it (~6 minutes). Time spent deciding,
    committing or waiting for the client to read an answer does not count: a slow client that
    sends its next batch within this of taking the last answer is never cut."""
    batch_queue_seconds: float = Field(1.0, ge=0, allow_inf_nan=False)
    """Longest the oldest call queued for a micro-batch (Recommend, TrackEvents,
    ChooseVariant and ComposeMessage decisions, ReportReward) may have waited when another
    arrives: past it the new call is refused RESOURCE_EXHAUSTED at once, nothing of it done
    (`server.errors.Overloaded`; counted in `tailor_shed_calls_total{batcher}`), so a worker
    offered more than it can serve answers what it takes within about this plus a batch's
    time and refuses the rest, instead of queueing without bound. Before, TrackEvents offered
    twice what 2 workers commit (open loop, 30 s, 2 s deadlines) queued 3,000 calls, 6,306 of
    8,982 ended at their deadline (none answered in some seconds), and the workers went on
    committing given-up calls for 15 s after the load stopped (50 s on a store of 1M events);
    with the bound 5,618 were answered, 2,863 refused at once, 501 past their deadline. 0:
    never refuse. Keep it below the callers' deadlines: a call that waited past its deadline
    was work for nothing."""
    plan_unread_seconds: float = Field(30.0, ge=UNREAD_SECONDS_FLOOR, allow_inf_nan=False)
    """Longest one PlanCampaign answer may wait for the client to make room for it (a client
    that stopped reading: HTTP/2 flow control holds the answer back once the client's window
    and the sockets' buffers are full). Past it the stream ends RESOURCE_EXHAUSTED and frees its
    place of `plan_streams`: the batches answered stand, the one held back included (the client
    may still receive it), those decided after it are withdrawn. A client that takes each
    answer within this of its sending is never cut, however slowly it reads in all; one that
    stopped reading held the place until its connection's age ended it. At least 0.1 s
    (`UNREAD_SECONDS_FLOOR`)."""
    stream_unread_seconds: float = Field(30.0, ge=UNREAD_SECONDS_FLOOR, allow_inf_nan=False)
    """Longest one reply of every other server stream (ExportDecisions, ExportEvents,
    ExportImpressions, ExportTombstones, reflection's ServerReflectionInfo, and any streaming
    method added later) may wait for the client to make room for it, as `plan_unread_seconds`
    for PlanCampaign. Past it the stream ends RESOURCE_EXHAUSTED (an export changes nothing
    stored: run it again). A client that stopped reading held the call, the records read for
    it and not yet sent (an export's current read snapshot, closed already: up to 10,000
    decisions, or the events among 4,096 keys; the impression export also holds the names of
    every user and item) and one of its connection's `grpc_max_concurrent_streams`, until the
    connection's age ended it. Health/Watch is left out: a watch is held open by design
    (`open_streams` bounds them) and writes a few bytes only when a status changes. A reply
    waits behind those the client has received and not yet taken, as many as its
    flow-control window holds (the client sets its size and when it reopens it), so a client
    that reads, but slowly, is cut too once taking those takes longer than this: on loopback,
    ExportEvents (~85-byte replies) to a grpcio client with a 1 KB window taking one event
    every 0.2 s was cut by a 3 s bound after 30 events. A consumer that spends long on each
    record should read the stream into a queue of its own, or this be raised. At least 0.1 s
    (`UNREAD_SECONDS_FLOOR`: below it, writing a reply, not the client, ends the stream)."""
    plan_read_ahead_users: int = Field(1000, ge=1)
    """Most users of a PlanCampaign stream decided and handed to the decision log but not yet
    answered (a batch that does not fit waits for earlier answers; one larger than this is read
    alone). More decides further ahead of the log's writer (which commits a slice of 250 a
    transaction), at the expense of other calls on the worker: on the 1M-user bench (batches of
    250, Recommend at 600/s beside the plan, when the writer took up to 8 slices a transaction)
    4,000 planned 14,322 users/s alone and 8,135 beside Recommend, against 10,505 and 6,496 at
    1,000, but Recommend's p99 beside the plan was 193 ms against 52 ms (docs/performance.md).
    Raise it for audiences planned off-peak."""
    campaign_frequency_caps: int = 16
    """Most frequency caps one campaign may set."""
    frequency_cap_window_seconds: float = 366 * 86400.0
    """Longest frequency-cap window (campaign or global); contacts older than this are
    forgotten."""
    frequency_cap_max: int = Field(100, ge=1)
    """Largest `max` of a frequency cap; also the most recent contacts kept per user."""

    sms_segments: int = Field(4, ge=1, le=255)
    """Most segments a rendered SMS may take (GSM-7: 160 characters in one, 153 per segment of
    a longer one; UCS-2: 70, then 67); a longer text is refused (FAILED_PRECONDITION)."""
    push_title_chars: int = Field(65, ge=1)
    """Longest rendered push title (characters; iOS shows about this many)."""
    push_body_chars: int = Field(240, ge=1)
    """Longest rendered push body (characters; Android's expanded view shows about this many)."""
    push_payload_bytes: int = Field(4000, ge=1)
    """Most bytes a rendered push's parts (title, body, url) may take together, encoded as the
    push webhook sends them (`parts`: UTF-8 JSON, quotes and escapes counted). The characters
    above are what a screen shows; the provider counts bytes: APNs refuses a payload over 4096
    (FCM 4096 too), and the relay's own wrapping (`aps`, `alert`) takes some of that. Before, a
    title of emoji or a long url passed the character limits and the provider refused it."""
    message_part_bytes: int = Field(256 * 1024, ge=1)
    """Most UTF-8 bytes one rendered part (subject, html, ...) may take."""
    message_recommend_k: int = Field(20, ge=1)
    """Most items one `recommend(k)` call of a template may ask for."""
    message_recommend_calls: int = Field(16, ge=1)
    """Most `recommend()` calls one message's templates may make (each runs the Recommend
    pipeline: ComposeMessage's on the event loop); more is FAILED_PRECONDITION."""
    message_render_steps: int = Field(100_000, ge=1)
    """Most loop items, `range()` elements and calls one message's templates may spend when
    rendered (they render on the event loop: this bounds the time; `server.messages.sandbox`)."""
    message_render_seconds: float = Field(1.0, gt=0)
    """Longest one message's templates may render, their `recommend()` calls' waits not
    counted: steps alone do not bound the time (each step may be a filter over a string of
    `message_part_bytes`: 20,000 `|upper` took 14 s); checked at every step."""
    preview_attributes: int = 64
    """Most sample attributes a PreviewMessage may carry."""
    send_audience: int = Field(100_000, ge=1)
    """Most user ids one SendCampaign may name (the job's records are written at once)."""
    send_rate_per_second: float = Field(10_000.0, gt=0)
    """Highest rate per channel a SendCampaign may ask for (messages per second)."""
    dead_letters_listed: int = Field(1000, ge=1)
    """Most dead letters one ListDeadLetters returns."""
    detached_deliveries: int = Field(1000, ge=0)
    """Most ComposeMessage hand-overs and RetryDeadLetter retries one worker runs apart from
    their call, so that a caller giving up (its deadline, a cancel, a lost connection) does
    not stop one: it ends, and its outcome is kept (for a repeat of its request id; the dead
    letter settled). Each holds its message until it ends (a caller cancelling call after
    call would otherwise pile them up). Past it, one is part of its call, as before: a
    caller giving up cuts it, and a repeat is answered that whether it went is not known.
    0: none."""

    attribution_seconds: float = Field(ATTRIBUTION_SECONDS, gt=0)
    """Most seconds one attribution may compute (the call's deadline, if sooner, bounds it too):
    past it the Markov model, sampled RATE Shapley and AttributeStored's reading of the
    stored events stop and answer RESOURCE_EXHAUSTED (DEADLINE_EXCEEDED for the caller's
    deadline)."""
    attribution_touches: int = Field(5_000_000, ge=1)
    """Most touches one Attribute request (or AttributeStream) may carry."""
    attribution_count_max: float = Field(1e15, gt=0, le=1e300)
    """Largest conversions, value or nulls of one given path (finite ones past it sum to inf
    and NaN credits)."""
    attribution_rank_cells: int = Field(ATTRIBUTION_RANK_CELLS, ge=1)
    """Most cells of the ORDERED Shapley form's credits by rank: channels x the most distinct
    channels of one path. The answer carries two doubles a cell (16 MB at 1,000,000) and the
    worker builds them in memory, so one long path over many channels could take gigabytes;
    past it the request is INVALID_ARGUMENT (use the COUNTS form)."""

    bundle_upload_bytes: int = Field(4 << 30, ge=1)
    """Largest bundle (all files together) PushBundle accepts, a compressed .npz counted by
    the bytes its arrays take decoded: checked as the bytes arrive, RESOURCE_EXHAUSTED past it,
    the upload removed at once. The demo world's 100k-item bundle (100k users, HNSW M 32, 64
    factors) takes 165 MB, about 1.2 KB per item and 0.45 KB per user; the 1M-item one, 1.26 GB
    (1.18 GiB counted: the encoder 256 MB, the HNSW index 528, items.npz 432, users.npz 46). At
    8 GiB before, one stream staged 1.3 GB in 5 s and went on to its deadline or a full disk."""
    latest_timestamp: float = 4_102_444_800.0
    """Latest time (Unix seconds; default 2100-01-01) a request may name: export bounds, consent
    times. Every time is also finite and not negative."""
    consent_source_chars: int = 256
    """Longest consent `source`."""
    consent_history: int = Field(64, ge=1)
    """Consent changes kept per user (channel, purpose, state, source, time), oldest dropped
    first; the current state per channel and purpose is kept whatever its age."""
    address_profiles: int = Field(1_000, ge=1)
    """Most profiles one email address or phone number is indexed for by UpsertAttributes
    (the address index of STOP replies and one-click unsubscribes, which reach every one: at
    100,000 a STOP held its webhook call for a minute, the index entry 20 MB, read whole).
    Setting it on one more is RESOURCE_EXHAUSTED; a profile indexed already, a message's
    address and the profiles stored before the index are never refused (an opt-out from the
    address must reach them)."""
    address_chars: int = Field(254, ge=16)
    """Longest email address or phone number a suppression request may name, or
    UpsertAttributes set as a user's `email` / `phone` (RFC 5321 paths hold at most 254
    characters)."""
    push_token_chars: int = Field(1024, ge=64, le=1024)
    """Longest push token a suppression request may name, or UpsertAttributes set as a user's
    `push_token` (an APNs device token is 64 characters, an FCM registration token about 160,
    a Web Push subscription's JSON 400-600); at most `attribute_value_chars` can be stored,
    and at most 1024 (the audit log's target of a suppression call names the token whole)."""
    audit_failure_pairs: int = Field(256, ge=1)
    """Most (peer, reason) pairs of failed authentication counted apart per
    `audit_failure_seconds`; failures of further pairs are counted together (peer `*`). The
    same bound for (principal, method) pairs of denied calls (further ones: counted per
    principal, method `*`, for as many principals again, then principal and method `*`; the
    first denial of each still has its own line naming principal and method)."""
    jwt_failures: int = Field(20, ge=0)
    """Bearer JWTs that fail verification (bad signature, expired, wrong audience...) one client
    address may send per `jwt_failure_seconds` before its further unknown JWTs are refused
    without a signature check (about 0.4 ms of the event loop each) for the rest of that
    interval; tokens from the auth config and JWTs already verified still pass. 0: no bound."""
    jwt_failure_seconds: float = Field(10.0, gt=0, le=3600)
    """The interval `jwt_failures` counts over."""
    metadata_bytes: int = Field(16 * 1024, ge=4096, le=1024 * 1024)
    """Most bytes of metadata (headers: `authorization`, `x-request-id`, ...) one gRPC call may
    send; more is refused RESOURCE_EXHAUSTED, every time (gRPC's own default refused 8-16 KiB at
    random: a JWT with many claims failed one call in two). Raise it for larger JWTs."""
    open_request_bytes: int = Field(4096, ge=1024, le=1 << 20)
    """Longest request message of health (open to anyone) and reflection (a service or symbol
    name); a longer one is refused RESOURCE_EXHAUSTED unparsed. gRPC reads a message
    whole before any handler (up to `grpc_max_request_bytes`), and Health/Watch held its
    request as long as the stream stayed open: eight anonymous 60 MiB ones held 1.4 GB."""
    open_streams: int = Field(1000, ge=1)
    """Most streams of the methods open to anyone (Health/Watch) open at once, per process; one
    more is refused RESOURCE_EXHAUSTED at its start. Each holds ~12 KB for as long as its
    caller likes (10,000 anonymous ones took a server from 175 to 230 MB). Health/Check is not
    bounded (it ends at once): load balancers and probes use it; a client watching health
    (gRPC client-side health checking) holds one Watch per connection."""
    metrics_connections: int = Field(32, ge=1, le=1024)
    """Most connections the /metrics endpoint serves at once (each on a thread of its own, per
    server: the parent's with `--workers`); one more is closed unread. A scrape takes one."""
    metrics_seconds: float = Field(10.0, gt=0, le=300)
    """Longest one /metrics connection may last, its TLS handshake included; then it is cut.
    Before, a connection that sent nothing held its thread for good, and over TLS one that
    never sent a ClientHello stopped every scrape."""
    webhook_signatures: int = Field(100_000, ge=1)
    """Most signatures of accepted webhook requests remembered (per process) to refuse a replay
    within `webhook_tolerance_seconds`; beyond it the oldest are forgotten (the timestamp check
    still refuses them once stale)."""
    webhook_reply_bytes: int = Field(64 * 1024, ge=1024, le=16 << 20)
    """Most bytes of an SMS or push provider's reply body read (nothing in it is used; read so
    the connection is reused): past it the connection is closed, and the reply's status
    decides, as when the body stalls or breaks off after the status."""
    http_connections: int = Field(256, ge=1)
    """Most connections the public HTTP port holds open at once, per process (from the accept,
    a TLS handshake included, to the close); one more closes the connection that has waited
    longest for a request (kept alive between requests, in its handshake, or without a
    complete head) and takes its place; only when every one is inside a request is it answered
    503 (over TLS: closed) at once. A TLS handshake must end within `http_idle_seconds`. Keep it well
    under the process's open-file limit (`ulimit -n`, often 1024): each connection is a file
    descriptor, and the store and the gRPC port need theirs. A pending request head holds up to
    `http_headers` x 8 KiB of memory: 256 x 32 x 8 KiB = 64 MiB at most."""
    http_body_bytes: int = Field(16 * 1024, ge=1024, le=1 << 20)
    """Largest body of a public HTTP request (a one-click form, an SMS reply, a delivery
    report): 413 past it."""
    http_headers: int = Field(32, ge=8, le=128)
    """Most header fields of one public HTTP request (each at most 8 KiB): 400 past it. Mail
    providers and browsers send about a dozen."""
    http_idle_seconds: float = Field(15.0, gt=0)
    """Longest a public HTTP connection may go without a complete request head, from its start
    (its TLS handshake, then again for the head) or after a reply: then it is closed (a client
    sending nothing, or its headers a byte at a time, holds no connection longer)."""
    http_body_seconds: float = Field(10.0, gt=0)
    """Longest the body of a public HTTP request may take to arrive once its head has: 408
    after it, nothing changed."""
    bundle_version_chars: int = 128
    """Longest bundle version (a manifest's `version`, a Rollback target): letters, digits,
    '.', '_' and '-', not starting with '.'."""
    bundle_path_chars: int = 128
    """Longest file name in a PushBundle chunk."""
    bundle_chunks: int = Field(65_536, ge=1)
    """Most chunks one PushBundle may carry: the bundle's bytes (`bundle_upload_bytes`) in
    64 KiB chunks (`clients` sends 1 MiB ones: 4,096 for the largest bundle). Empty or tiny
    chunks pass the byte bound, and one stream of them (an open() and a thread hop each, about
    5,000 a second here) kept a worker taking them until its deadline; past it the push is
    INVALID_ARGUMENT, nothing of it stored."""
    bundle_files: int = Field(64, ge=1)
    """Most distinct files one PushBundle may carry (a bundle has under ten; each name is a
    file in the staging directory, empty chunks included)."""
    upsert_items: int = Field(1000, ge=1)
    """Most items in one UpsertItems or RemoveItems."""
    catalog_items: int = Field(100_000, ge=1)
    """Most items the catalog keeps updates for between trainings (RESOURCE_EXHAUSTED beyond;
    each worker rebuilds its served catalog from all of them on every update)."""
    item_text_chars: int = Field(2048, ge=16)
    """Longest item title, URL or image URL in UpsertItems; also the widest text column
    (titles, links, category names) a bundle's items.npz may hold (refused at load past it).
    Free text a caller stores to be shown (a title, a campaign name and salt, a variant's
    content, an attribute's, event attribute's or Recommend context's value) may not hold a
    C0 or C1 control, DEL, a bidirectional embedding, override or isolate (U+202A-U+202E,
    U+2066-U+2069: "Trojan Source"), U+2028, U+2029 or a lone surrogate; text with lines (all
    but titles, names and salts) may hold tab, LF, CR, U+2028 and U+2029. Other format
    characters (an emoji's zero-width joiner) and the directional marks right-to-left text
    holds (U+061C, U+200E, U+200F) are text. A refusal is INVALID_ARGUMENT naming
    the field, the character's class, code point and position, never echoing the text
    (`validation.text_problem`). Consent sources keep their stricter rule (no format
    character either: `validation.check_source`)."""

    def address_chars_of(self, kind: str) -> int:
        """The longest address of `kind` (`contact.addresses.KINDS`): `push_token_chars` for a
        push token, `address_chars` for an email address or a phone number."""
        return self.push_token_chars if kind == "push_token" else self.address_chars


DEFAULT_LIMITS = Limits()
"""The limits of a default `Settings()` (for domain objects built without one, in tests)."""
