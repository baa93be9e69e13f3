from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BundleChunk(_message.Message):
    __slots__ = ("stage_only", "path", "offset", "data", "canary_percent")
    STAGE_ONLY_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CANARY_PERCENT_FIELD_NUMBER: _ClassVar[int]
    stage_only: bool
    path: str
    offset: int
    data: bytes
    canary_percent: float
    def __init__(self, stage_only: _Optional[bool] = ..., path: _Optional[str] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ..., canary_percent: _Optional[float] = ...) -> None: ...

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
    __slots__ = ("version", "index_type", "n_items", "dim", "has_ranker", "metrics", "loaded_at")
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
    version: str
    index_type: str
    n_items: int
    dim: int
    has_ranker: bool
    metrics: _containers.ScalarMap[str, float]
    loaded_at: float
    def __init__(self, version: _Optional[str] = ..., index_type: _Optional[str] = ..., n_items: _Optional[int] = ..., dim: _Optional[int] = ..., has_ranker: _Optional[bool] = ..., metrics: _Optional[_Mapping[str, float]] = ..., loaded_at: _Optional[float] = ...) -> None: ...

class ModelStatus(_message.Message):
    __slots__ = ("active", "previous_version", "available_versions", "canary", "shares", "guardrail")
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_VERSION_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    CANARY_FIELD_NUMBER: _ClassVar[int]
    SHARES_FIELD_NUMBER: _ClassVar[int]
    GUARDRAIL_FIELD_NUMBER: _ClassVar[int]
    active: LoadedBundle
    previous_version: str
    available_versions: _containers.RepeatedScalarFieldContainer[str]
    canary: LoadedBundle
    shares: _containers.RepeatedCompositeFieldContainer[VersionShare]
    guardrail: str
    def __init__(self, active: _Optional[_Union[LoadedBundle, _Mapping]] = ..., previous_version: _Optional[str] = ..., available_versions: _Optional[_Iterable[str]] = ..., canary: _Optional[_Union[LoadedBundle, _Mapping]] = ..., shares: _Optional[_Iterable[_Union[VersionShare, _Mapping]]] = ..., guardrail: _Optional[str] = ...) -> None: ...

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
