from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Variant(_message.Message):
    __slots__ = ("id", "content", "features", "weight")
    class ContentEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class FeaturesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    id: str
    content: _containers.ScalarMap[str, str]
    features: _containers.ScalarMap[str, float]
    weight: float
    def __init__(self, id: _Optional[str] = ..., content: _Optional[_Mapping[str, str]] = ..., features: _Optional[_Mapping[str, float]] = ..., weight: _Optional[float] = ...) -> None: ...

class RewardRule(_message.Message):
    __slots__ = ("event_type", "value", "use_event_value", "cap")
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    USE_EVENT_VALUE_FIELD_NUMBER: _ClassVar[int]
    CAP_FIELD_NUMBER: _ClassVar[int]
    event_type: str
    value: float
    use_event_value: bool
    cap: float
    def __init__(self, event_type: _Optional[str] = ..., value: _Optional[float] = ..., use_event_value: _Optional[bool] = ..., cap: _Optional[float] = ...) -> None: ...

class CampaignSpec(_message.Message):
    __slots__ = ("campaign_id", "name", "channel", "variants", "policy", "params", "rewards", "reward_window_seconds", "default_reward", "context_features", "salt", "purpose", "channels", "frequency_caps", "quiet_hours", "send_window")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    VARIANTS_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    REWARDS_FIELD_NUMBER: _ClassVar[int]
    REWARD_WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_REWARD_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FEATURES_FIELD_NUMBER: _ClassVar[int]
    SALT_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    FREQUENCY_CAPS_FIELD_NUMBER: _ClassVar[int]
    QUIET_HOURS_FIELD_NUMBER: _ClassVar[int]
    SEND_WINDOW_FIELD_NUMBER: _ClassVar[int]
    campaign_id: str
    name: str
    channel: str
    variants: _containers.RepeatedCompositeFieldContainer[Variant]
    policy: str
    params: _containers.ScalarMap[str, float]
    rewards: _containers.RepeatedCompositeFieldContainer[RewardRule]
    reward_window_seconds: float
    default_reward: float
    context_features: _containers.RepeatedScalarFieldContainer[str]
    salt: str
    purpose: str
    channels: _containers.RepeatedScalarFieldContainer[str]
    frequency_caps: _containers.RepeatedCompositeFieldContainer[FrequencyCap]
    quiet_hours: QuietHours
    send_window: SendWindow
    def __init__(self, campaign_id: _Optional[str] = ..., name: _Optional[str] = ..., channel: _Optional[str] = ..., variants: _Optional[_Iterable[_Union[Variant, _Mapping]]] = ..., policy: _Optional[str] = ..., params: _Optional[_Mapping[str, float]] = ..., rewards: _Optional[_Iterable[_Union[RewardRule, _Mapping]]] = ..., reward_window_seconds: _Optional[float] = ..., default_reward: _Optional[float] = ..., context_features: _Optional[_Iterable[str]] = ..., salt: _Optional[str] = ..., purpose: _Optional[str] = ..., channels: _Optional[_Iterable[str]] = ..., frequency_caps: _Optional[_Iterable[_Union[FrequencyCap, _Mapping]]] = ..., quiet_hours: _Optional[_Union[QuietHours, _Mapping]] = ..., send_window: _Optional[_Union[SendWindow, _Mapping]] = ...) -> None: ...

class FrequencyCap(_message.Message):
    __slots__ = ("channel", "max", "window_seconds")
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    channel: str
    max: int
    window_seconds: float
    def __init__(self, channel: _Optional[str] = ..., max: _Optional[int] = ..., window_seconds: _Optional[float] = ...) -> None: ...

class QuietHours(_message.Message):
    __slots__ = ("start", "end", "action")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    start: str
    end: str
    action: str
    def __init__(self, start: _Optional[str] = ..., end: _Optional[str] = ..., action: _Optional[str] = ...) -> None: ...

class SendWindow(_message.Message):
    __slots__ = ("start_hour", "end_hour")
    START_HOUR_FIELD_NUMBER: _ClassVar[int]
    END_HOUR_FIELD_NUMBER: _ClassVar[int]
    start_hour: int
    end_hour: int
    def __init__(self, start_hour: _Optional[int] = ..., end_hour: _Optional[int] = ...) -> None: ...

class Campaign(_message.Message):
    __slots__ = ("spec", "archived", "created_at", "updated_at", "revision")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    ARCHIVED_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    spec: CampaignSpec
    archived: bool
    created_at: float
    updated_at: float
    revision: int
    def __init__(self, spec: _Optional[_Union[CampaignSpec, _Mapping]] = ..., archived: _Optional[bool] = ..., created_at: _Optional[float] = ..., updated_at: _Optional[float] = ..., revision: _Optional[int] = ...) -> None: ...

class CreateCampaignRequest(_message.Message):
    __slots__ = ("spec",)
    SPEC_FIELD_NUMBER: _ClassVar[int]
    spec: CampaignSpec
    def __init__(self, spec: _Optional[_Union[CampaignSpec, _Mapping]] = ...) -> None: ...

class UpdateCampaignRequest(_message.Message):
    __slots__ = ("spec",)
    SPEC_FIELD_NUMBER: _ClassVar[int]
    spec: CampaignSpec
    def __init__(self, spec: _Optional[_Union[CampaignSpec, _Mapping]] = ...) -> None: ...

class ArchiveCampaignRequest(_message.Message):
    __slots__ = ("campaign_id",)
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    campaign_id: str
    def __init__(self, campaign_id: _Optional[str] = ...) -> None: ...

class GetCampaignRequest(_message.Message):
    __slots__ = ("campaign_id",)
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    campaign_id: str
    def __init__(self, campaign_id: _Optional[str] = ...) -> None: ...

class ListCampaignsRequest(_message.Message):
    __slots__ = ("include_archived", "page_size", "page_token")
    INCLUDE_ARCHIVED_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    include_archived: bool
    page_size: int
    page_token: str
    def __init__(self, include_archived: _Optional[bool] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListCampaignsResponse(_message.Message):
    __slots__ = ("campaigns", "next_page_token")
    CAMPAIGNS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    campaigns: _containers.RepeatedCompositeFieldContainer[Campaign]
    next_page_token: str
    def __init__(self, campaigns: _Optional[_Iterable[_Union[Campaign, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ChooseVariantRequest(_message.Message):
    __slots__ = ("campaign_id", "user_id", "context", "request_id")
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
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    campaign_id: str
    user_id: str
    context: _containers.ScalarMap[str, float]
    request_id: str
    def __init__(self, campaign_id: _Optional[str] = ..., user_id: _Optional[str] = ..., context: _Optional[_Mapping[str, float]] = ..., request_id: _Optional[str] = ...) -> None: ...

class ChooseVariantResponse(_message.Message):
    __slots__ = ("decision_id", "variant_id", "arm", "propensity", "holdout", "content", "suppressed", "reason", "channel", "send_at")
    class ContentEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    VARIANT_ID_FIELD_NUMBER: _ClassVar[int]
    ARM_FIELD_NUMBER: _ClassVar[int]
    PROPENSITY_FIELD_NUMBER: _ClassVar[int]
    HOLDOUT_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    SUPPRESSED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    SEND_AT_FIELD_NUMBER: _ClassVar[int]
    decision_id: str
    variant_id: str
    arm: int
    propensity: float
    holdout: bool
    content: _containers.ScalarMap[str, str]
    suppressed: bool
    reason: str
    channel: str
    send_at: float
    def __init__(self, decision_id: _Optional[str] = ..., variant_id: _Optional[str] = ..., arm: _Optional[int] = ..., propensity: _Optional[float] = ..., holdout: _Optional[bool] = ..., content: _Optional[_Mapping[str, str]] = ..., suppressed: _Optional[bool] = ..., reason: _Optional[str] = ..., channel: _Optional[str] = ..., send_at: _Optional[float] = ...) -> None: ...

class ReportRewardRequest(_message.Message):
    __slots__ = ("decision_id", "reward")
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    decision_id: str
    reward: float
    def __init__(self, decision_id: _Optional[str] = ..., reward: _Optional[float] = ...) -> None: ...

class ReportRewardResponse(_message.Message):
    __slots__ = ("campaign_id", "variant_id", "duplicate")
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    VARIANT_ID_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    campaign_id: str
    variant_id: str
    duplicate: bool
    def __init__(self, campaign_id: _Optional[str] = ..., variant_id: _Optional[str] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class GetCampaignStatsRequest(_message.Message):
    __slots__ = ("campaign_id",)
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    campaign_id: str
    def __init__(self, campaign_id: _Optional[str] = ...) -> None: ...

class VariantStats(_message.Message):
    __slots__ = ("variant_id", "decisions", "pulls", "rewards", "mean", "ci_low", "ci_high", "prob_best", "expected_loss")
    VARIANT_ID_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    PULLS_FIELD_NUMBER: _ClassVar[int]
    REWARDS_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    CI_LOW_FIELD_NUMBER: _ClassVar[int]
    CI_HIGH_FIELD_NUMBER: _ClassVar[int]
    PROB_BEST_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_LOSS_FIELD_NUMBER: _ClassVar[int]
    variant_id: str
    decisions: int
    pulls: float
    rewards: float
    mean: float
    ci_low: float
    ci_high: float
    prob_best: float
    expected_loss: float
    def __init__(self, variant_id: _Optional[str] = ..., decisions: _Optional[int] = ..., pulls: _Optional[float] = ..., rewards: _Optional[float] = ..., mean: _Optional[float] = ..., ci_low: _Optional[float] = ..., ci_high: _Optional[float] = ..., prob_best: _Optional[float] = ..., expected_loss: _Optional[float] = ...) -> None: ...

class AbRow(_message.Message):
    __slots__ = ("variant_id", "control_id", "diff", "ci_low", "ci_high", "statistic", "pvalue", "prob_beat_control", "msprt_pvalue", "srm_pvalue", "srm_mismatch", "seconds_to_significance")
    VARIANT_ID_FIELD_NUMBER: _ClassVar[int]
    CONTROL_ID_FIELD_NUMBER: _ClassVar[int]
    DIFF_FIELD_NUMBER: _ClassVar[int]
    CI_LOW_FIELD_NUMBER: _ClassVar[int]
    CI_HIGH_FIELD_NUMBER: _ClassVar[int]
    STATISTIC_FIELD_NUMBER: _ClassVar[int]
    PVALUE_FIELD_NUMBER: _ClassVar[int]
    PROB_BEAT_CONTROL_FIELD_NUMBER: _ClassVar[int]
    MSPRT_PVALUE_FIELD_NUMBER: _ClassVar[int]
    SRM_PVALUE_FIELD_NUMBER: _ClassVar[int]
    SRM_MISMATCH_FIELD_NUMBER: _ClassVar[int]
    SECONDS_TO_SIGNIFICANCE_FIELD_NUMBER: _ClassVar[int]
    variant_id: str
    control_id: str
    diff: float
    ci_low: float
    ci_high: float
    statistic: float
    pvalue: float
    prob_beat_control: float
    msprt_pvalue: float
    srm_pvalue: float
    srm_mismatch: bool
    seconds_to_significance: float
    def __init__(self, variant_id: _Optional[str] = ..., control_id: _Optional[str] = ..., diff: _Optional[float] = ..., ci_low: _Optional[float] = ..., ci_high: _Optional[float] = ..., statistic: _Optional[float] = ..., pvalue: _Optional[float] = ..., prob_beat_control: _Optional[float] = ..., msprt_pvalue: _Optional[float] = ..., srm_pvalue: _Optional[float] = ..., srm_mismatch: _Optional[bool] = ..., seconds_to_significance: _Optional[float] = ...) -> None: ...

class CampaignStats(_message.Message):
    __slots__ = ("campaign_id", "policy", "variants", "ab", "holdout_decisions", "holdout_rewarded", "holdout_rewards", "pending", "decisions_per_second")
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    VARIANTS_FIELD_NUMBER: _ClassVar[int]
    AB_FIELD_NUMBER: _ClassVar[int]
    HOLDOUT_DECISIONS_FIELD_NUMBER: _ClassVar[int]
    HOLDOUT_REWARDED_FIELD_NUMBER: _ClassVar[int]
    HOLDOUT_REWARDS_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    campaign_id: str
    policy: str
    variants: _containers.RepeatedCompositeFieldContainer[VariantStats]
    ab: _containers.RepeatedCompositeFieldContainer[AbRow]
    holdout_decisions: int
    holdout_rewarded: int
    holdout_rewards: float
    pending: int
    decisions_per_second: float
    def __init__(self, campaign_id: _Optional[str] = ..., policy: _Optional[str] = ..., variants: _Optional[_Iterable[_Union[VariantStats, _Mapping]]] = ..., ab: _Optional[_Iterable[_Union[AbRow, _Mapping]]] = ..., holdout_decisions: _Optional[int] = ..., holdout_rewarded: _Optional[int] = ..., holdout_rewards: _Optional[float] = ..., pending: _Optional[int] = ..., decisions_per_second: _Optional[float] = ...) -> None: ...

class GetSampleSizeRequest(_message.Message):
    __slots__ = ("baseline_rate", "baseline_mean", "variance", "minimum_detectable_effect", "alpha", "power", "arms", "allocation")
    BASELINE_RATE_FIELD_NUMBER: _ClassVar[int]
    BASELINE_MEAN_FIELD_NUMBER: _ClassVar[int]
    VARIANCE_FIELD_NUMBER: _ClassVar[int]
    MINIMUM_DETECTABLE_EFFECT_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    POWER_FIELD_NUMBER: _ClassVar[int]
    ARMS_FIELD_NUMBER: _ClassVar[int]
    ALLOCATION_FIELD_NUMBER: _ClassVar[int]
    baseline_rate: float
    baseline_mean: float
    variance: float
    minimum_detectable_effect: float
    alpha: float
    power: float
    arms: int
    allocation: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, baseline_rate: _Optional[float] = ..., baseline_mean: _Optional[float] = ..., variance: _Optional[float] = ..., minimum_detectable_effect: _Optional[float] = ..., alpha: _Optional[float] = ..., power: _Optional[float] = ..., arms: _Optional[int] = ..., allocation: _Optional[_Iterable[float]] = ...) -> None: ...

class GetSampleSizeResponse(_message.Message):
    __slots__ = ("per_arm", "total", "alpha_per_comparison", "test")
    PER_ARM_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    ALPHA_PER_COMPARISON_FIELD_NUMBER: _ClassVar[int]
    TEST_FIELD_NUMBER: _ClassVar[int]
    per_arm: _containers.RepeatedScalarFieldContainer[int]
    total: int
    alpha_per_comparison: float
    test: str
    def __init__(self, per_arm: _Optional[_Iterable[int]] = ..., total: _Optional[int] = ..., alpha_per_comparison: _Optional[float] = ..., test: _Optional[str] = ...) -> None: ...

class ExportDecisionsRequest(_message.Message):
    __slots__ = ("campaign_id", "start", "end", "include_pending", "include_suppressed")
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_PENDING_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_SUPPRESSED_FIELD_NUMBER: _ClassVar[int]
    campaign_id: str
    start: float
    end: float
    include_pending: bool
    include_suppressed: bool
    def __init__(self, campaign_id: _Optional[str] = ..., start: _Optional[float] = ..., end: _Optional[float] = ..., include_pending: _Optional[bool] = ..., include_suppressed: _Optional[bool] = ...) -> None: ...

class DecisionRecord(_message.Message):
    __slots__ = ("decision_id", "campaign_id", "user_id", "timestamp", "arm", "propensity", "reward", "context", "position", "variant_id", "status", "reason", "channel", "send_at", "channel_propensity", "send_at_propensity")
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    ARM_FIELD_NUMBER: _ClassVar[int]
    PROPENSITY_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    VARIANT_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    SEND_AT_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_PROPENSITY_FIELD_NUMBER: _ClassVar[int]
    SEND_AT_PROPENSITY_FIELD_NUMBER: _ClassVar[int]
    decision_id: str
    campaign_id: str
    user_id: str
    timestamp: float
    arm: int
    propensity: float
    reward: float
    context: _containers.RepeatedScalarFieldContainer[float]
    position: int
    variant_id: str
    status: str
    reason: str
    channel: str
    send_at: float
    channel_propensity: float
    send_at_propensity: float
    def __init__(self, decision_id: _Optional[str] = ..., campaign_id: _Optional[str] = ..., user_id: _Optional[str] = ..., timestamp: _Optional[float] = ..., arm: _Optional[int] = ..., propensity: _Optional[float] = ..., reward: _Optional[float] = ..., context: _Optional[_Iterable[float]] = ..., position: _Optional[int] = ..., variant_id: _Optional[str] = ..., status: _Optional[str] = ..., reason: _Optional[str] = ..., channel: _Optional[str] = ..., send_at: _Optional[float] = ..., channel_propensity: _Optional[float] = ..., send_at_propensity: _Optional[float] = ...) -> None: ...

class PlanCampaignRequest(_message.Message):
    __slots__ = ("campaign_id", "user_ids", "context")
    class ContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    USER_IDS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    campaign_id: str
    user_ids: _containers.RepeatedScalarFieldContainer[str]
    context: _containers.ScalarMap[str, float]
    def __init__(self, campaign_id: _Optional[str] = ..., user_ids: _Optional[_Iterable[str]] = ..., context: _Optional[_Mapping[str, float]] = ...) -> None: ...

class PlanDecision(_message.Message):
    __slots__ = ("user_id", "decision_id", "variant_id", "arm", "propensity", "holdout", "channel", "send_at", "suppressed", "reason", "channel_propensity", "send_at_propensity")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    VARIANT_ID_FIELD_NUMBER: _ClassVar[int]
    ARM_FIELD_NUMBER: _ClassVar[int]
    PROPENSITY_FIELD_NUMBER: _ClassVar[int]
    HOLDOUT_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    SEND_AT_FIELD_NUMBER: _ClassVar[int]
    SUPPRESSED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_PROPENSITY_FIELD_NUMBER: _ClassVar[int]
    SEND_AT_PROPENSITY_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    decision_id: str
    variant_id: str
    arm: int
    propensity: float
    holdout: bool
    channel: str
    send_at: float
    suppressed: bool
    reason: str
    channel_propensity: float
    send_at_propensity: float
    def __init__(self, user_id: _Optional[str] = ..., decision_id: _Optional[str] = ..., variant_id: _Optional[str] = ..., arm: _Optional[int] = ..., propensity: _Optional[float] = ..., holdout: _Optional[bool] = ..., channel: _Optional[str] = ..., send_at: _Optional[float] = ..., suppressed: _Optional[bool] = ..., reason: _Optional[str] = ..., channel_propensity: _Optional[float] = ..., send_at_propensity: _Optional[float] = ...) -> None: ...

class PlanCampaignResponse(_message.Message):
    __slots__ = ("decisions",)
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    decisions: _containers.RepeatedCompositeFieldContainer[PlanDecision]
    def __init__(self, decisions: _Optional[_Iterable[_Union[PlanDecision, _Mapping]]] = ...) -> None: ...
