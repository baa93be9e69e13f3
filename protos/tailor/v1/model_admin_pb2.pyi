from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BundleChunk(_message.Message):
    __slots__ = ("stage_only", "path", "offset", "data", "canary_percent", "new_catalog")
    STAGE_ONLY_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CANARY_PERCENT_FIELD_NUMBER: _ClassVar[int]
    NEW_CATALOG_FIELD_NUMBER: _ClassVar[int]
    stage_only: bool
    path: str
    offset: int
    data: bytes
    canary_percent: float
    new_catalog: bool
    def __init__(self, stage_only: _Optional[bool] = ..., path: _Optional[str] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ..., canary_percent: _Optional[float] = ..., new_catalog: _Optional[bool] = ...) -> None: ...

class GetModelStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RollbackRequest(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: str
    def __init__(self, version: _Optional[str] = ...) -> None: ...

class CanaryRequest(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: str
    def __init__(self, version: _Optional[str] = ...) -> None: ...

class LoadedBundle(_message.Message):
    __slots__ = ("version", "index_type", "n_items", "dim", "has_ranker", "metrics", "loaded_at", "ranker_candidates")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    VERSION_FIELD_NUMBER: _ClassVar[int]
    INDEX_TYPE_FIELD_NUMBER: _ClassVar[int]
    N_ITEMS_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    HAS_RANKER_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    LOADED_AT_FIELD_NUMBER: _ClassVar[int]
    RANKER_CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    version: str
    index_type: str
    n_items: int
    dim: int
    has_ranker: bool
    metrics: _containers.ScalarMap[str, float]
    loaded_at: float
    ranker_candidates: int
    def __init__(self, version: _Optional[str] = ..., index_type: _Optional[str] = ..., n_items: _Optional[int] = ..., dim: _Optional[int] = ..., has_ranker: _Optional[bool] = ..., metrics: _Optional[_Mapping[str, float]] = ..., loaded_at: _Optional[float] = ..., ranker_candidates: _Optional[int] = ...) -> None: ...

class ModelStatus(_message.Message):
    __slots__ = ("active", "previous_version", "available_versions", "canary", "shares", "guardrail", "fallback")
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_VERSION_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    CANARY_FIELD_NUMBER: _ClassVar[int]
    SHARES_FIELD_NUMBER: _ClassVar[int]
    GUARDRAIL_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_FIELD_NUMBER: _ClassVar[int]
    active: LoadedBundle
    previous_version: str
    available_versions: _containers.RepeatedScalarFieldContainer[str]
    canary: LoadedBundle
    shares: _containers.RepeatedCompositeFieldContainer[VersionShare]
    guardrail: str
    fallback: BundleFallback
    def __init__(self, active: _Optional[_Union[LoadedBundle, _Mapping]] = ..., previous_version: _Optional[str] = ..., available_versions: _Optional[_Iterable[str]] = ..., canary: _Optional[_Union[LoadedBundle, _Mapping]] = ..., shares: _Optional[_Iterable[_Union[VersionShare, _Mapping]]] = ..., guardrail: _Optional[str] = ..., fallback: _Optional[_Union[BundleFallback, _Mapping]] = ...) -> None: ...

class BundleFallback(_message.Message):
    __slots__ = ("from_version", "to_version", "at")
    FROM_VERSION_FIELD_NUMBER: _ClassVar[int]
    TO_VERSION_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    from_version: str
    to_version: str
    at: float
    def __init__(self, from_version: _Optional[str] = ..., to_version: _Optional[str] = ..., at: _Optional[float] = ...) -> None: ...

class VersionShare(_message.Message):
    __slots__ = ("version", "share", "requests", "errors", "p99_ms", "impressions", "clicks")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    P99_MS_FIELD_NUMBER: _ClassVar[int]
    IMPRESSIONS_FIELD_NUMBER: _ClassVar[int]
    CLICKS_FIELD_NUMBER: _ClassVar[int]
    version: str
    share: float
    requests: int
    errors: int
    p99_ms: float
    impressions: int
    clicks: int
    def __init__(self, version: _Optional[str] = ..., share: _Optional[float] = ..., requests: _Optional[int] = ..., errors: _Optional[int] = ..., p99_ms: _Optional[float] = ..., impressions: _Optional[int] = ..., clicks: _Optional[int] = ...) -> None: ...

class GetModelStatsRequest(_message.Message):
    __slots__ = ("model_version", "channel", "ks", "confidence")
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    KS_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    model_version: str
    channel: str
    ks: _containers.RepeatedScalarFieldContainer[int]
    confidence: float
    def __init__(self, model_version: _Optional[str] = ..., channel: _Optional[str] = ..., ks: _Optional[_Iterable[int]] = ..., confidence: _Optional[float] = ...) -> None: ...

class Rate(_message.Message):
    __slots__ = ("value", "low", "high", "k")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    LOW_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    value: float
    low: float
    high: float
    k: int
    def __init__(self, value: _Optional[float] = ..., low: _Optional[float] = ..., high: _Optional[float] = ..., k: _Optional[int] = ...) -> None: ...

class ModelChannelStats(_message.Message):
    __slots__ = ("model_version", "channel", "impressions", "cold_start", "clicked", "clicks", "carted", "conversions", "revenue", "ctr", "conversion_rate", "revenue_per_mille", "first_seen", "last_seen")
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    IMPRESSIONS_FIELD_NUMBER: _ClassVar[int]
    COLD_START_FIELD_NUMBER: _ClassVar[int]
    CLICKED_FIELD_NUMBER: _ClassVar[int]
    CLICKS_FIELD_NUMBER: _ClassVar[int]
    CARTED_FIELD_NUMBER: _ClassVar[int]
    CONVERSIONS_FIELD_NUMBER: _ClassVar[int]
    REVENUE_FIELD_NUMBER: _ClassVar[int]
    CTR_FIELD_NUMBER: _ClassVar[int]
    CONVERSION_RATE_FIELD_NUMBER: _ClassVar[int]
    REVENUE_PER_MILLE_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEEN_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    model_version: str
    channel: str
    impressions: int
    cold_start: int
    clicked: int
    clicks: int
    carted: int
    conversions: int
    revenue: float
    ctr: _containers.RepeatedCompositeFieldContainer[Rate]
    conversion_rate: Rate
    revenue_per_mille: Rate
    first_seen: float
    last_seen: float
    def __init__(self, model_version: _Optional[str] = ..., channel: _Optional[str] = ..., impressions: _Optional[int] = ..., cold_start: _Optional[int] = ..., clicked: _Optional[int] = ..., clicks: _Optional[int] = ..., carted: _Optional[int] = ..., conversions: _Optional[int] = ..., revenue: _Optional[float] = ..., ctr: _Optional[_Iterable[_Union[Rate, _Mapping]]] = ..., conversion_rate: _Optional[_Union[Rate, _Mapping]] = ..., revenue_per_mille: _Optional[_Union[Rate, _Mapping]] = ..., first_seen: _Optional[float] = ..., last_seen: _Optional[float] = ...) -> None: ...

class ModelStats(_message.Message):
    __slots__ = ("rows",)
    ROWS_FIELD_NUMBER: _ClassVar[int]
    rows: _containers.RepeatedCompositeFieldContainer[ModelChannelStats]
    def __init__(self, rows: _Optional[_Iterable[_Union[ModelChannelStats, _Mapping]]] = ...) -> None: ...

class ExportImpressionsRequest(_message.Message):
    __slots__ = ("start", "end")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    start: float
    end: float
    def __init__(self, start: _Optional[float] = ..., end: _Optional[float] = ...) -> None: ...

class ShownItem(_message.Message):
    __slots__ = ("item_id", "position", "score", "clicked", "carted", "purchased")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    CLICKED_FIELD_NUMBER: _ClassVar[int]
    CARTED_FIELD_NUMBER: _ClassVar[int]
    PURCHASED_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    position: int
    score: float
    clicked: bool
    carted: bool
    purchased: bool
    def __init__(self, item_id: _Optional[str] = ..., position: _Optional[int] = ..., score: _Optional[float] = ..., clicked: _Optional[bool] = ..., carted: _Optional[bool] = ..., purchased: _Optional[bool] = ...) -> None: ...

class Impression(_message.Message):
    __slots__ = ("request_id", "user_ref", "user_id", "timestamp", "model_version", "channel", "context", "cold_start", "items", "first_click", "clicks", "add_to_carts", "purchases", "revenue")
    class ContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    USER_REF_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    COLD_START_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    FIRST_CLICK_FIELD_NUMBER: _ClassVar[int]
    CLICKS_FIELD_NUMBER: _ClassVar[int]
    ADD_TO_CARTS_FIELD_NUMBER: _ClassVar[int]
    PURCHASES_FIELD_NUMBER: _ClassVar[int]
    REVENUE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    user_ref: str
    user_id: str
    timestamp: float
    model_version: str
    channel: str
    context: _containers.ScalarMap[str, str]
    cold_start: bool
    items: _containers.RepeatedCompositeFieldContainer[ShownItem]
    first_click: int
    clicks: int
    add_to_carts: int
    purchases: int
    revenue: float
    def __init__(self, request_id: _Optional[str] = ..., user_ref: _Optional[str] = ..., user_id: _Optional[str] = ..., timestamp: _Optional[float] = ..., model_version: _Optional[str] = ..., channel: _Optional[str] = ..., context: _Optional[_Mapping[str, str]] = ..., cold_start: _Optional[bool] = ..., items: _Optional[_Iterable[_Union[ShownItem, _Mapping]]] = ..., first_click: _Optional[int] = ..., clicks: _Optional[int] = ..., add_to_carts: _Optional[int] = ..., purchases: _Optional[int] = ..., revenue: _Optional[float] = ...) -> None: ...

class GetDriftReportRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class FeatureDrift(_message.Message):
    __slots__ = ("name", "psi", "status", "live_count", "reference_count", "categorical", "edges", "reference_share", "live_share")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PSI_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LIVE_COUNT_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_COUNT_FIELD_NUMBER: _ClassVar[int]
    CATEGORICAL_FIELD_NUMBER: _ClassVar[int]
    EDGES_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_SHARE_FIELD_NUMBER: _ClassVar[int]
    LIVE_SHARE_FIELD_NUMBER: _ClassVar[int]
    name: str
    psi: float
    status: str
    live_count: int
    reference_count: int
    categorical: bool
    edges: _containers.RepeatedScalarFieldContainer[float]
    reference_share: _containers.RepeatedScalarFieldContainer[float]
    live_share: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, name: _Optional[str] = ..., psi: _Optional[float] = ..., status: _Optional[str] = ..., live_count: _Optional[int] = ..., reference_count: _Optional[int] = ..., categorical: _Optional[bool] = ..., edges: _Optional[_Iterable[float]] = ..., reference_share: _Optional[_Iterable[float]] = ..., live_share: _Optional[_Iterable[float]] = ...) -> None: ...

class DriftReport(_message.Message):
    __slots__ = ("version", "status", "threshold", "min_count", "window_seconds", "windows", "since", "features")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MIN_COUNT_FIELD_NUMBER: _ClassVar[int]
    WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    version: str
    status: str
    threshold: float
    min_count: int
    window_seconds: float
    windows: int
    since: float
    features: _containers.RepeatedCompositeFieldContainer[FeatureDrift]
    def __init__(self, version: _Optional[str] = ..., status: _Optional[str] = ..., threshold: _Optional[float] = ..., min_count: _Optional[int] = ..., window_seconds: _Optional[float] = ..., windows: _Optional[int] = ..., since: _Optional[float] = ..., features: _Optional[_Iterable[_Union[FeatureDrift, _Mapping]]] = ...) -> None: ...
