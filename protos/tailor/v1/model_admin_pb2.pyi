from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BundleChunk(_message.Message):
    __slots__ = ("stage_only", "path", "offset", "data")
    STAGE_ONLY_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    stage_only: bool
    path: str
    offset: int
    data: bytes
    def __init__(self, stage_only: _Optional[bool] = ..., path: _Optional[str] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class GetModelStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RollbackRequest(_message.Message):
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
    __slots__ = ("active", "previous_version", "available_versions")
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_VERSION_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    active: LoadedBundle
    previous_version: str
    available_versions: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, active: _Optional[_Union[LoadedBundle, _Mapping]] = ..., previous_version: _Optional[str] = ..., available_versions: _Optional[_Iterable[str]] = ...) -> None: ...

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
