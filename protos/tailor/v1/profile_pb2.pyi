from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Event(_message.Message):
    __slots__ = ("event_id", "user_id", "type", "channel", "campaign_id", "item_id", "value", "timestamp", "attributes", "request_id", "position")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    user_id: str
    type: str
    channel: str
    campaign_id: str
    item_id: str
    value: float
    timestamp: float
    attributes: _containers.ScalarMap[str, str]
    request_id: str
    position: int
    def __init__(self, event_id: _Optional[str] = ..., user_id: _Optional[str] = ..., type: _Optional[str] = ..., channel: _Optional[str] = ..., campaign_id: _Optional[str] = ..., item_id: _Optional[str] = ..., value: _Optional[float] = ..., timestamp: _Optional[float] = ..., attributes: _Optional[_Mapping[str, str]] = ..., request_id: _Optional[str] = ..., position: _Optional[int] = ...) -> None: ...

class TrackEventsRequest(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    def __init__(self, events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ...) -> None: ...

class RejectedEvent(_message.Message):
    __slots__ = ("index", "event_id", "reason")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    index: int
    event_id: str
    reason: str
    def __init__(self, index: _Optional[int] = ..., event_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class TrackEventsResponse(_message.Message):
    __slots__ = ("accepted", "duplicates", "rejected", "accepted_ids")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_IDS_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    duplicates: int
    rejected: _containers.RepeatedCompositeFieldContainer[RejectedEvent]
    accepted_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, accepted: _Optional[int] = ..., duplicates: _Optional[int] = ..., rejected: _Optional[_Iterable[_Union[RejectedEvent, _Mapping]]] = ..., accepted_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class GetProfileRequest(_message.Message):
    __slots__ = ("user_id", "max_events", "parts")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_EVENTS_FIELD_NUMBER: _ClassVar[int]
    PARTS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    max_events: int
    parts: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, user_id: _Optional[str] = ..., max_events: _Optional[int] = ..., parts: _Optional[_Iterable[str]] = ...) -> None: ...

class Consent(_message.Message):
    __slots__ = ("opted_in", "source", "timestamp", "purpose", "channel")
    OPTED_IN_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    opted_in: bool
    source: str
    timestamp: float
    purpose: str
    channel: str
    def __init__(self, opted_in: _Optional[bool] = ..., source: _Optional[str] = ..., timestamp: _Optional[float] = ..., purpose: _Optional[str] = ..., channel: _Optional[str] = ...) -> None: ...

class ChannelRates(_message.Message):
    __slots__ = ("open_rate", "click_rate", "sends")
    OPEN_RATE_FIELD_NUMBER: _ClassVar[int]
    CLICK_RATE_FIELD_NUMBER: _ClassVar[int]
    SENDS_FIELD_NUMBER: _ClassVar[int]
    open_rate: float
    click_rate: float
    sends: float
    def __init__(self, open_rate: _Optional[float] = ..., click_rate: _Optional[float] = ..., sends: _Optional[float] = ...) -> None: ...

class Features(_message.Message):
    __slots__ = ("counts", "decayed_counts", "recency_seconds", "frequency", "monetary", "monetary_decayed", "category_affinity", "hour_of_week", "channel_rates", "first_seen", "last_seen", "n_events")
    class CountsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class DecayedCountsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class MonetaryDecayedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class CategoryAffinityEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class ChannelRatesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: ChannelRates
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[ChannelRates, _Mapping]] = ...) -> None: ...
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    DECAYED_COUNTS_FIELD_NUMBER: _ClassVar[int]
    RECENCY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FREQUENCY_FIELD_NUMBER: _ClassVar[int]
    MONETARY_FIELD_NUMBER: _ClassVar[int]
    MONETARY_DECAYED_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_AFFINITY_FIELD_NUMBER: _ClassVar[int]
    HOUR_OF_WEEK_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_RATES_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEEN_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    N_EVENTS_FIELD_NUMBER: _ClassVar[int]
    counts: _containers.ScalarMap[str, float]
    decayed_counts: _containers.ScalarMap[str, float]
    recency_seconds: float
    frequency: float
    monetary: float
    monetary_decayed: _containers.ScalarMap[str, float]
    category_affinity: _containers.ScalarMap[str, float]
    hour_of_week: _containers.RepeatedScalarFieldContainer[float]
    channel_rates: _containers.MessageMap[str, ChannelRates]
    first_seen: float
    last_seen: float
    n_events: int
    def __init__(self, counts: _Optional[_Mapping[str, float]] = ..., decayed_counts: _Optional[_Mapping[str, float]] = ..., recency_seconds: _Optional[float] = ..., frequency: _Optional[float] = ..., monetary: _Optional[float] = ..., monetary_decayed: _Optional[_Mapping[str, float]] = ..., category_affinity: _Optional[_Mapping[str, float]] = ..., hour_of_week: _Optional[_Iterable[float]] = ..., channel_rates: _Optional[_Mapping[str, ChannelRates]] = ..., first_seen: _Optional[float] = ..., last_seen: _Optional[float] = ..., n_events: _Optional[int] = ...) -> None: ...

class RecentItem(_message.Message):
    __slots__ = ("item_id", "weight", "timestamp")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    weight: float
    timestamp: float
    def __init__(self, item_id: _Optional[str] = ..., weight: _Optional[float] = ..., timestamp: _Optional[float] = ...) -> None: ...

class Profile(_message.Message):
    __slots__ = ("user_id", "attributes", "consent", "features", "recent_items", "events", "pii_masked", "created_at", "updated_at", "consents", "consent_history")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class ConsentEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Consent
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Consent, _Mapping]] = ...) -> None: ...
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    CONSENT_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    RECENT_ITEMS_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    PII_MASKED_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    CONSENTS_FIELD_NUMBER: _ClassVar[int]
    CONSENT_HISTORY_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    attributes: _containers.ScalarMap[str, str]
    consent: _containers.MessageMap[str, Consent]
    features: Features
    recent_items: _containers.RepeatedCompositeFieldContainer[RecentItem]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    pii_masked: bool
    created_at: float
    updated_at: float
    consents: _containers.RepeatedCompositeFieldContainer[Consent]
    consent_history: _containers.RepeatedCompositeFieldContainer[Consent]
    def __init__(self, user_id: _Optional[str] = ..., attributes: _Optional[_Mapping[str, str]] = ..., consent: _Optional[_Mapping[str, Consent]] = ..., features: _Optional[_Union[Features, _Mapping]] = ..., recent_items: _Optional[_Iterable[_Union[RecentItem, _Mapping]]] = ..., events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ..., pii_masked: _Optional[bool] = ..., created_at: _Optional[float] = ..., updated_at: _Optional[float] = ..., consents: _Optional[_Iterable[_Union[Consent, _Mapping]]] = ..., consent_history: _Optional[_Iterable[_Union[Consent, _Mapping]]] = ...) -> None: ...

class UpsertAttributesRequest(_message.Message):
    __slots__ = ("user_id", "attributes")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    attributes: _containers.ScalarMap[str, str]
    def __init__(self, user_id: _Optional[str] = ..., attributes: _Optional[_Mapping[str, str]] = ...) -> None: ...

class SetConsentRequest(_message.Message):
    __slots__ = ("user_id", "channel", "opted_in", "source", "timestamp", "purpose")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    OPTED_IN_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    channel: str
    opted_in: bool
    source: str
    timestamp: float
    purpose: str
    def __init__(self, user_id: _Optional[str] = ..., channel: _Optional[str] = ..., opted_in: _Optional[bool] = ..., source: _Optional[str] = ..., timestamp: _Optional[float] = ..., purpose: _Optional[str] = ...) -> None: ...

class DeleteProfileRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class DeleteProfileResponse(_message.Message):
    __slots__ = ("records_deleted", "erased_at")
    RECORDS_DELETED_FIELD_NUMBER: _ClassVar[int]
    ERASED_AT_FIELD_NUMBER: _ClassVar[int]
    records_deleted: int
    erased_at: float
    def __init__(self, records_deleted: _Optional[int] = ..., erased_at: _Optional[float] = ...) -> None: ...

class ExportEventsRequest(_message.Message):
    __slots__ = ("start", "end")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    start: float
    end: float
    def __init__(self, start: _Optional[float] = ..., end: _Optional[float] = ...) -> None: ...

class ExportProfileRequest(_message.Message):
    __slots__ = ("user_id", "events_offset", "impressions_offset")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    EVENTS_OFFSET_FIELD_NUMBER: _ClassVar[int]
    IMPRESSIONS_OFFSET_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    events_offset: int
    impressions_offset: int
    def __init__(self, user_id: _Optional[str] = ..., events_offset: _Optional[int] = ..., impressions_offset: _Optional[int] = ...) -> None: ...

class ExportProfileResponse(_message.Message):
    __slots__ = ("document",)
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    document: str
    def __init__(self, document: _Optional[str] = ...) -> None: ...

class ExportTombstonesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Tombstone(_message.Message):
    __slots__ = ("kid", "digest", "erased_at")
    KID_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    ERASED_AT_FIELD_NUMBER: _ClassVar[int]
    kid: str
    digest: str
    erased_at: float
    def __init__(self, kid: _Optional[str] = ..., digest: _Optional[str] = ..., erased_at: _Optional[float] = ...) -> None: ...

class SuppressionAddress(_message.Message):
    __slots__ = ("email", "phone", "push_token")
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    PHONE_FIELD_NUMBER: _ClassVar[int]
    PUSH_TOKEN_FIELD_NUMBER: _ClassVar[int]
    email: str
    phone: str
    push_token: str
    def __init__(self, email: _Optional[str] = ..., phone: _Optional[str] = ..., push_token: _Optional[str] = ...) -> None: ...

class AddSuppressionRequest(_message.Message):
    __slots__ = ("address", "reason", "timestamp")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    address: SuppressionAddress
    reason: str
    timestamp: float
    def __init__(self, address: _Optional[_Union[SuppressionAddress, _Mapping]] = ..., reason: _Optional[str] = ..., timestamp: _Optional[float] = ...) -> None: ...

class Suppression(_message.Message):
    __slots__ = ("suppressed", "reason", "timestamp", "kind", "marketing_only")
    SUPPRESSED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MARKETING_ONLY_FIELD_NUMBER: _ClassVar[int]
    suppressed: bool
    reason: str
    timestamp: float
    kind: str
    marketing_only: bool
    def __init__(self, suppressed: _Optional[bool] = ..., reason: _Optional[str] = ..., timestamp: _Optional[float] = ..., kind: _Optional[str] = ..., marketing_only: _Optional[bool] = ...) -> None: ...

class RemoveSuppressionResponse(_message.Message):
    __slots__ = ("removed", "unsuppressed")
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    UNSUPPRESSED_FIELD_NUMBER: _ClassVar[int]
    removed: bool
    unsuppressed: bool
    def __init__(self, removed: _Optional[bool] = ..., unsuppressed: _Optional[bool] = ...) -> None: ...
