from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListDeadLettersRequest(_message.Message):
    __slots__ = ("limit", "channel")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    limit: int
    channel: str
    def __init__(self, limit: _Optional[int] = ..., channel: _Optional[str] = ...) -> None: ...

class DeadLetter(_message.Message):
    __slots__ = ("id", "channel", "campaign_id", "decision_id", "user_ref", "reason", "attempts", "at")
    ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    USER_REF_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    channel: str
    campaign_id: str
    decision_id: str
    user_ref: str
    reason: str
    attempts: int
    at: float
    def __init__(self, id: _Optional[str] = ..., channel: _Optional[str] = ..., campaign_id: _Optional[str] = ..., decision_id: _Optional[str] = ..., user_ref: _Optional[str] = ..., reason: _Optional[str] = ..., attempts: _Optional[int] = ..., at: _Optional[float] = ...) -> None: ...

class ListDeadLettersResponse(_message.Message):
    __slots__ = ("letters",)
    LETTERS_FIELD_NUMBER: _ClassVar[int]
    letters: _containers.RepeatedCompositeFieldContainer[DeadLetter]
    def __init__(self, letters: _Optional[_Iterable[_Union[DeadLetter, _Mapping]]] = ...) -> None: ...

class RetryDeadLetterRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class SendCampaignRequest(_message.Message):
    __slots__ = ("campaign_id", "user_ids", "rate_per_second", "context", "request_id")
    class RatePerSecondEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class ContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    USER_IDS_FIELD_NUMBER: _ClassVar[int]
    RATE_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    campaign_id: str
    user_ids: _containers.RepeatedScalarFieldContainer[str]
    rate_per_second: _containers.ScalarMap[str, float]
    context: _containers.ScalarMap[str, float]
    request_id: str
    def __init__(self, campaign_id: _Optional[str] = ..., user_ids: _Optional[_Iterable[str]] = ..., rate_per_second: _Optional[_Mapping[str, float]] = ..., context: _Optional[_Mapping[str, float]] = ..., request_id: _Optional[str] = ...) -> None: ...

class GetSendProgressRequest(_message.Message):
    __slots__ = ("send_id",)
    SEND_ID_FIELD_NUMBER: _ClassVar[int]
    send_id: str
    def __init__(self, send_id: _Optional[str] = ...) -> None: ...

class CancelSendRequest(_message.Message):
    __slots__ = ("send_id",)
    SEND_ID_FIELD_NUMBER: _ClassVar[int]
    send_id: str
    def __init__(self, send_id: _Optional[str] = ...) -> None: ...

class SendProgress(_message.Message):
    __slots__ = ("send_id", "campaign_id", "total", "sent", "suppressed", "suppressed_by_reason", "failed", "failed_by_reason", "pending", "done", "started_at", "finished_at", "cancelled_at", "stopped_by")
    class SuppressedByReasonEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class FailedByReasonEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    SEND_ID_FIELD_NUMBER: _ClassVar[int]
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    SENT_FIELD_NUMBER: _ClassVar[int]
    SUPPRESSED_FIELD_NUMBER: _ClassVar[int]
    SUPPRESSED_BY_REASON_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    FAILED_BY_REASON_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_AT_FIELD_NUMBER: _ClassVar[int]
    STOPPED_BY_FIELD_NUMBER: _ClassVar[int]
    send_id: str
    campaign_id: str
    total: int
    sent: int
    suppressed: int
    suppressed_by_reason: _containers.ScalarMap[str, int]
    failed: int
    failed_by_reason: _containers.ScalarMap[str, int]
    pending: int
    done: bool
    started_at: float
    finished_at: float
    cancelled_at: float
    stopped_by: str
    def __init__(self, send_id: _Optional[str] = ..., campaign_id: _Optional[str] = ..., total: _Optional[int] = ..., sent: _Optional[int] = ..., suppressed: _Optional[int] = ..., suppressed_by_reason: _Optional[_Mapping[str, int]] = ..., failed: _Optional[int] = ..., failed_by_reason: _Optional[_Mapping[str, int]] = ..., pending: _Optional[int] = ..., done: _Optional[bool] = ..., started_at: _Optional[float] = ..., finished_at: _Optional[float] = ..., cancelled_at: _Optional[float] = ..., stopped_by: _Optional[str] = ...) -> None: ...

class ComposeMessageRequest(_message.Message):
    __slots__ = ("campaign_id", "user_id", "context", "deliver", "request_id")
    class ContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    DELIVER_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    campaign_id: str
    user_id: str
    context: _containers.ScalarMap[str, float]
    deliver: bool
    request_id: str
    def __init__(self, campaign_id: _Optional[str] = ..., user_id: _Optional[str] = ..., context: _Optional[_Mapping[str, float]] = ..., deliver: _Optional[bool] = ..., request_id: _Optional[str] = ...) -> None: ...

class PreviewMessageRequest(_message.Message):
    __slots__ = ("campaign_id", "variant_id", "user_id", "sample_attributes", "sample_interests", "channel")
    class SampleAttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    VARIANT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_INTERESTS_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    campaign_id: str
    variant_id: str
    user_id: str
    sample_attributes: _containers.ScalarMap[str, str]
    sample_interests: _containers.RepeatedScalarFieldContainer[str]
    channel: str
    def __init__(self, campaign_id: _Optional[str] = ..., variant_id: _Optional[str] = ..., user_id: _Optional[str] = ..., sample_attributes: _Optional[_Mapping[str, str]] = ..., sample_interests: _Optional[_Iterable[str]] = ..., channel: _Optional[str] = ...) -> None: ...

class SmsLength(_message.Message):
    __slots__ = ("encoding", "units", "segments")
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    UNITS_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    encoding: str
    units: int
    segments: int
    def __init__(self, encoding: _Optional[str] = ..., units: _Optional[int] = ..., segments: _Optional[int] = ...) -> None: ...

class Message(_message.Message):
    __slots__ = ("campaign_id", "decision_id", "variant_id", "channel", "send_at", "suppressed", "reason", "holdout", "parts", "headers", "unsubscribe_url", "sms", "delivered", "scheduled", "send_id")
    class PartsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    VARIANT_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    SEND_AT_FIELD_NUMBER: _ClassVar[int]
    SUPPRESSED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    HOLDOUT_FIELD_NUMBER: _ClassVar[int]
    PARTS_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    UNSUBSCRIBE_URL_FIELD_NUMBER: _ClassVar[int]
    SMS_FIELD_NUMBER: _ClassVar[int]
    DELIVERED_FIELD_NUMBER: _ClassVar[int]
    SCHEDULED_FIELD_NUMBER: _ClassVar[int]
    SEND_ID_FIELD_NUMBER: _ClassVar[int]
    campaign_id: str
    decision_id: str
    variant_id: str
    channel: str
    send_at: float
    suppressed: bool
    reason: str
    holdout: bool
    parts: _containers.ScalarMap[str, str]
    headers: _containers.ScalarMap[str, str]
    unsubscribe_url: str
    sms: SmsLength
    delivered: bool
    scheduled: bool
    send_id: str
    def __init__(self, campaign_id: _Optional[str] = ..., decision_id: _Optional[str] = ..., variant_id: _Optional[str] = ..., channel: _Optional[str] = ..., send_at: _Optional[float] = ..., suppressed: _Optional[bool] = ..., reason: _Optional[str] = ..., holdout: _Optional[bool] = ..., parts: _Optional[_Mapping[str, str]] = ..., headers: _Optional[_Mapping[str, str]] = ..., unsubscribe_url: _Optional[str] = ..., sms: _Optional[_Union[SmsLength, _Mapping]] = ..., delivered: _Optional[bool] = ..., scheduled: _Optional[bool] = ..., send_id: _Optional[str] = ...) -> None: ...
