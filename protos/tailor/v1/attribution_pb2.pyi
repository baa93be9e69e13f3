from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AttributionModel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ATTRIBUTION_MODEL_UNSPECIFIED: _ClassVar[AttributionModel]
    FIRST_TOUCH: _ClassVar[AttributionModel]
    LAST_TOUCH: _ClassVar[AttributionModel]
    LAST_NON_DIRECT: _ClassVar[AttributionModel]
    LINEAR: _ClassVar[AttributionModel]
    POSITION_BASED: _ClassVar[AttributionModel]
    TIME_DECAY: _ClassVar[AttributionModel]
    MARKOV: _ClassVar[AttributionModel]
    SHAPLEY: _ClassVar[AttributionModel]

class ShapleyForm(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SHAPLEY_FORM_UNSPECIFIED: _ClassVar[ShapleyForm]
    COUNTS: _ClassVar[ShapleyForm]
    RATE: _ClassVar[ShapleyForm]
    ORDERED: _ClassVar[ShapleyForm]

class Grouping(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GROUPING_UNSPECIFIED: _ClassVar[Grouping]
    CHANNEL: _ClassVar[Grouping]
    CAMPAIGN: _ClassVar[Grouping]
ATTRIBUTION_MODEL_UNSPECIFIED: AttributionModel
FIRST_TOUCH: AttributionModel
LAST_TOUCH: AttributionModel
LAST_NON_DIRECT: AttributionModel
LINEAR: AttributionModel
POSITION_BASED: AttributionModel
TIME_DECAY: AttributionModel
MARKOV: AttributionModel
SHAPLEY: AttributionModel
SHAPLEY_FORM_UNSPECIFIED: ShapleyForm
COUNTS: ShapleyForm
RATE: ShapleyForm
ORDERED: ShapleyForm
GROUPING_UNSPECIFIED: Grouping
CHANNEL: Grouping
CAMPAIGN: Grouping

class ModelSpec(_message.Message):
    __slots__ = ("model", "order", "position_first", "position_last", "half_life_seconds", "direct_channel", "shapley_form", "shapley_samples", "seed", "transition_matrix", "path_credits")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIRST_FIELD_NUMBER: _ClassVar[int]
    POSITION_LAST_FIELD_NUMBER: _ClassVar[int]
    HALF_LIFE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DIRECT_CHANNEL_FIELD_NUMBER: _ClassVar[int]
    SHAPLEY_FORM_FIELD_NUMBER: _ClassVar[int]
    SHAPLEY_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    TRANSITION_MATRIX_FIELD_NUMBER: _ClassVar[int]
    PATH_CREDITS_FIELD_NUMBER: _ClassVar[int]
    model: AttributionModel
    order: int
    position_first: float
    position_last: float
    half_life_seconds: float
    direct_channel: str
    shapley_form: ShapleyForm
    shapley_samples: int
    seed: int
    transition_matrix: bool
    path_credits: bool
    def __init__(self, model: _Optional[_Union[AttributionModel, str]] = ..., order: _Optional[int] = ..., position_first: _Optional[float] = ..., position_last: _Optional[float] = ..., half_life_seconds: _Optional[float] = ..., direct_channel: _Optional[str] = ..., shapley_form: _Optional[_Union[ShapleyForm, str]] = ..., shapley_samples: _Optional[int] = ..., seed: _Optional[int] = ..., transition_matrix: _Optional[bool] = ..., path_credits: _Optional[bool] = ...) -> None: ...

class Path(_message.Message):
    __slots__ = ("channels", "path", "timestamps", "conversions", "value", "nulls")
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMPS_FIELD_NUMBER: _ClassVar[int]
    CONVERSIONS_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    NULLS_FIELD_NUMBER: _ClassVar[int]
    channels: _containers.RepeatedScalarFieldContainer[str]
    path: str
    timestamps: _containers.RepeatedScalarFieldContainer[float]
    conversions: float
    value: float
    nulls: float
    def __init__(self, channels: _Optional[_Iterable[str]] = ..., path: _Optional[str] = ..., timestamps: _Optional[_Iterable[float]] = ..., conversions: _Optional[float] = ..., value: _Optional[float] = ..., nulls: _Optional[float] = ...) -> None: ...

class AttributeRequest(_message.Message):
    __slots__ = ("spec", "paths", "channelattribution_rows")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    PATHS_FIELD_NUMBER: _ClassVar[int]
    CHANNELATTRIBUTION_ROWS_FIELD_NUMBER: _ClassVar[int]
    spec: ModelSpec
    paths: _containers.RepeatedCompositeFieldContainer[Path]
    channelattribution_rows: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, spec: _Optional[_Union[ModelSpec, _Mapping]] = ..., paths: _Optional[_Iterable[_Union[Path, _Mapping]]] = ..., channelattribution_rows: _Optional[_Iterable[str]] = ...) -> None: ...

class AttributeStoredRequest(_message.Message):
    __slots__ = ("spec", "start_time", "end_time", "lookback_seconds", "group_by", "touch_types", "exclude_nulls")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    LOOKBACK_SECONDS_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_FIELD_NUMBER: _ClassVar[int]
    TOUCH_TYPES_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_NULLS_FIELD_NUMBER: _ClassVar[int]
    spec: ModelSpec
    start_time: int
    end_time: int
    lookback_seconds: int
    group_by: Grouping
    touch_types: _containers.RepeatedScalarFieldContainer[str]
    exclude_nulls: bool
    def __init__(self, spec: _Optional[_Union[ModelSpec, _Mapping]] = ..., start_time: _Optional[int] = ..., end_time: _Optional[int] = ..., lookback_seconds: _Optional[int] = ..., group_by: _Optional[_Union[Grouping, str]] = ..., touch_types: _Optional[_Iterable[str]] = ..., exclude_nulls: _Optional[bool] = ...) -> None: ...

class ChannelCredit(_message.Message):
    __slots__ = ("channel", "conversions", "value", "removal_effect", "value_removal_effect", "stderr", "rank_conversions", "rank_value", "value_stderr")
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    CONVERSIONS_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    REMOVAL_EFFECT_FIELD_NUMBER: _ClassVar[int]
    VALUE_REMOVAL_EFFECT_FIELD_NUMBER: _ClassVar[int]
    STDERR_FIELD_NUMBER: _ClassVar[int]
    RANK_CONVERSIONS_FIELD_NUMBER: _ClassVar[int]
    RANK_VALUE_FIELD_NUMBER: _ClassVar[int]
    VALUE_STDERR_FIELD_NUMBER: _ClassVar[int]
    channel: str
    conversions: float
    value: float
    removal_effect: float
    value_removal_effect: float
    stderr: float
    rank_conversions: _containers.RepeatedScalarFieldContainer[float]
    rank_value: _containers.RepeatedScalarFieldContainer[float]
    value_stderr: float
    def __init__(self, channel: _Optional[str] = ..., conversions: _Optional[float] = ..., value: _Optional[float] = ..., removal_effect: _Optional[float] = ..., value_removal_effect: _Optional[float] = ..., stderr: _Optional[float] = ..., rank_conversions: _Optional[_Iterable[float]] = ..., rank_value: _Optional[_Iterable[float]] = ..., value_stderr: _Optional[float] = ...) -> None: ...

class PathCredit(_message.Message):
    __slots__ = ("path_index", "touch_conversions", "touch_value")
    PATH_INDEX_FIELD_NUMBER: _ClassVar[int]
    TOUCH_CONVERSIONS_FIELD_NUMBER: _ClassVar[int]
    TOUCH_VALUE_FIELD_NUMBER: _ClassVar[int]
    path_index: int
    touch_conversions: _containers.RepeatedScalarFieldContainer[float]
    touch_value: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, path_index: _Optional[int] = ..., touch_conversions: _Optional[_Iterable[float]] = ..., touch_value: _Optional[_Iterable[float]] = ...) -> None: ...

class TransitionMatrix(_message.Message):
    __slots__ = ("states", "row", "col", "probability")
    STATES_FIELD_NUMBER: _ClassVar[int]
    ROW_FIELD_NUMBER: _ClassVar[int]
    COL_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    states: _containers.RepeatedScalarFieldContainer[str]
    row: _containers.RepeatedScalarFieldContainer[int]
    col: _containers.RepeatedScalarFieldContainer[int]
    probability: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, states: _Optional[_Iterable[str]] = ..., row: _Optional[_Iterable[int]] = ..., col: _Optional[_Iterable[int]] = ..., probability: _Optional[_Iterable[float]] = ...) -> None: ...

class AttributeResponse(_message.Message):
    __slots__ = ("model", "credits", "paths", "total_conversions", "total_value", "path_credits", "transition_matrix", "conversion_probability", "unattributed_conversions", "unattributed_value", "stored_paths", "shapley_samples")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CREDITS_FIELD_NUMBER: _ClassVar[int]
    PATHS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_CONVERSIONS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_VALUE_FIELD_NUMBER: _ClassVar[int]
    PATH_CREDITS_FIELD_NUMBER: _ClassVar[int]
    TRANSITION_MATRIX_FIELD_NUMBER: _ClassVar[int]
    CONVERSION_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    UNATTRIBUTED_CONVERSIONS_FIELD_NUMBER: _ClassVar[int]
    UNATTRIBUTED_VALUE_FIELD_NUMBER: _ClassVar[int]
    STORED_PATHS_FIELD_NUMBER: _ClassVar[int]
    SHAPLEY_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    model: AttributionModel
    credits: _containers.RepeatedCompositeFieldContainer[ChannelCredit]
    paths: int
    total_conversions: float
    total_value: float
    path_credits: _containers.RepeatedCompositeFieldContainer[PathCredit]
    transition_matrix: TransitionMatrix
    conversion_probability: float
    unattributed_conversions: float
    unattributed_value: float
    stored_paths: _containers.RepeatedCompositeFieldContainer[Path]
    shapley_samples: int
    def __init__(self, model: _Optional[_Union[AttributionModel, str]] = ..., credits: _Optional[_Iterable[_Union[ChannelCredit, _Mapping]]] = ..., paths: _Optional[int] = ..., total_conversions: _Optional[float] = ..., total_value: _Optional[float] = ..., path_credits: _Optional[_Iterable[_Union[PathCredit, _Mapping]]] = ..., transition_matrix: _Optional[_Union[TransitionMatrix, _Mapping]] = ..., conversion_probability: _Optional[float] = ..., unattributed_conversions: _Optional[float] = ..., unattributed_value: _Optional[float] = ..., stored_paths: _Optional[_Iterable[_Union[Path, _Mapping]]] = ..., shapley_samples: _Optional[int] = ...) -> None: ...
