"""Campaign definitions: the domain types, their validation (InvalidArgument naming the field)
and their stored form (JSON in the "campaigns" table)."""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field

from kernels import bandits as B

from ..contact import CONTACT_CHANNELS, PURPOSES, FrequencyCap, QuietHours, SendWindow
from ..errors import InvalidArgument
from ..limits import DEFAULT_LIMITS, Limits
from ..profiles.schema import CHANNELS, EVENT_TYPES
from ..validation import (
    check_count,
    check_finite,
    check_free_text,
    check_id,
    check_key,
    check_known,
    check_text,
    shown,
)
from .errors import ImmutableField

__all__ = ["Variant", "RewardRule", "CampaignSpec", "Campaign", "PARAM_NAMES", "DEFAULT_WINDOW_S"]

PARAM_NAMES = tuple(f.name for f in dataclasses.fields(B.Params))
DEFAULT_WINDOW_S = 86400.0


@dataclass(frozen=True)
class Variant:
    id: str
    content: dict[str, str] = field(default_factory=dict)
    features: dict[str, float] = field(default_factory=dict)
    weight: float = 0.0


@dataclass(frozen=True)
class RewardRule:
    event_type: str
    value: float = 0.0
    use_event_value: bool = False
    cap: float = 0.0

    def reward(self, event_value: float) -> float:
        if not self.use_event_value:
            return self.value
        return min(event_value, self.cap) if self.cap > 0 else event_value

    @property
    def ceiling(self) -> float:
        """The most this rule can give (inf for an uncapped event value)."""
        if not self.use_event_value:
            return self.value
        return self.cap if self.cap > 0 else math.inf


@dataclass(frozen=True)
class CampaignSpec:
    campaign_id: str
    name: str = ""
    channel: str = "web"
    variants: tuple[Variant, ...] = ()
    policy: str = "bernoulli_ts"
    params: dict[str, float] = field(default_factory=dict)
    rewards: tuple[RewardRule, ...] = ()
    reward_window_seconds: float = DEFAULT_WINDOW_S
    default_reward: float = 0.0
    context_features: tuple[str, ...] = ()
    salt: str = ""
    purpose: str = "marketing"
    channels: tuple[str, ...] = ()
    """Channels in order of preference; empty = (channel,)."""
    frequency_caps: tuple[FrequencyCap, ...] = ()
    quiet_hours: QuietHours = QuietHours()
    send_window: SendWindow = SendWindow()

    @property
    def message_channels(self) -> tuple[str, ...]:
        """The channels a message of this campaign may go out on (`server.messages`): its
        `channel` and `channels` that carry messages (email, sms, push; a placement, web or
        app, has none), each once, in order of preference."""
        return tuple(dict.fromkeys(c for c in (self.channel, *getattr(self, "channels", ()))
                                   if c in CONTACT_CHANNELS))

    @property
    def dim(self) -> int:
        """Context dimension of the linear policies: a bias plus the named features."""
        return len(self.context_features) + 1 if self.policy in B.LINEAR else 0

    def rule_for(self, event_type: str) -> RewardRule | None:
        return next((r for r in self.rewards if r.event_type == event_type), None)

    @property
    def best_event_reward(self) -> float:
        return max((r.ceiling for r in self.rewards), default=0.0)

    def validated(self, limits: Limits = DEFAULT_LIMITS, new: bool = True) -> CampaignSpec:
        """Check every field; returns the spec with defaults filled in (salt, window). Not
        `new` (an update): the salt is checked by `check_update_of` alone, which takes only the
        stored one, which may predate the text rule (`check_free_text`)."""
        check_id("campaign_id", self.campaign_id, limits.id_bytes)
        check_known("channel", self.channel, CHANNELS)
        check_known("policy", self.policy, B.POLICIES)
        self._check_variants(limits)
        self._check_params()
        self._check_rewards(limits.reward_max)
        window = self.reward_window_seconds or DEFAULT_WINDOW_S
        if not 0 < window <= limits.reward_window_seconds:
            raise InvalidArgument("reward_window_seconds",
                                  f"must be in (0, {limits.reward_window_seconds:g}]")
        from .context import check_feature_names
        check_feature_names(self.context_features, limits.campaign_context_features)
        from ..messages.templates import check_variants  # message parts are templates
        check_variants([(v.id, v.content) for v in self.variants], self.message_channels, limits)
        check_free_text("name", self.name, limits.campaign_name_chars)
        (check_free_text if new else check_text)("salt", self.salt, limits.campaign_salt_chars)
        return dataclasses.replace(self, reward_window_seconds=float(window),
                                   salt=self.salt or self.campaign_id,
                                   purpose=self.purpose or "marketing",
                                   quiet_hours=self.quiet_hours.checked("quiet_hours"),
                                   **self._checked_contact(limits))

    def _checked_contact(self, limits: Limits) -> dict:
        """The contact-policy fields, checked (purpose, channels, caps, send window)."""
        check_known("purpose", self.purpose or "marketing", PURPOSES)
        check_count("channels", len(self.channels), len(CHANNELS))
        for i, c in enumerate(self.channels):
            check_known(f"channels[{i}]", c, CHANNELS)
        if len(set(self.channels)) != len(self.channels):
            raise InvalidArgument("channels", "must be distinct")
        if self.channels and self.channel not in self.channels:
            raise InvalidArgument("channels", f"must include the campaign's channel {self.channel!r}")
        check_count("frequency_caps", len(self.frequency_caps), limits.campaign_frequency_caps)
        caps = tuple(c.checked(f"frequency_caps[{i}]", limits)
                     for i, c in enumerate(self.frequency_caps))
        return {"frequency_caps": caps, "send_window": self.send_window.checked("send_window")}

    def _check_variants(self, limits: Limits) -> None:
        if not self.variants:
            raise InvalidArgument("variants", "need at least one variant")
        check_count("variants", len(self.variants), limits.campaign_variants)
        seen = set()
        total = 0
        for i, v in enumerate(self.variants):
            check_id(f"variants[{i}].id", v.id, limits.id_bytes)
            if v.id in seen:
                raise InvalidArgument(f"variants[{i}].id", "is used twice")
            seen.add(v.id)
            check_count(f"variants[{i}].content", len(v.content), limits.variant_content_entries)
            for k, x in v.content.items():  # a template's lines, or text a page shows
                check_key(f"variants[{i}].content key", k, limits.attribute_key_chars)
                check_free_text(f"variants[{i}].content[{shown(k)}]", x,
                                limits.variant_content_bytes, multiline=True)
            size = sum(len(k.encode()) + len(x.encode()) for k, x in v.content.items())
            if size > limits.variant_content_bytes:
                raise InvalidArgument(f"variants[{i}].content",
                                      f"{size} bytes, at most {limits.variant_content_bytes}")
            total += size
            check_count(f"variants[{i}].features", len(v.features), limits.variant_features)
            for k, x in v.features.items():
                check_key(f"variants[{i}].features key", k, limits.attribute_key_chars)
                check_finite(f"variants[{i}].features[{shown(k)}]", x)
            if not (check_finite(f"variants[{i}].weight", v.weight) >= 0):
                raise InvalidArgument(f"variants[{i}].weight", "must be >= 0")
            if v.weight and self.policy != "fixed":
                raise InvalidArgument(f"variants[{i}].weight", "only a 'fixed' split takes "
                                      f"weights; policy {self.policy!r} chooses by itself "
                                      "(leave weight 0)")
        if total > limits.campaign_content_bytes:
            raise InvalidArgument("variants", f"content of all variants takes {total} bytes, "
                                  f"at most {limits.campaign_content_bytes}")
        if not math.isfinite(sum(v.weight for v in self.variants)):
            raise InvalidArgument("variants.weight", "the weights sum to more than a float holds")
        if self.policy == "fixed" and any(v.weight for v in self.variants) \
                and not all(v.weight > 0 for v in self.variants):
            raise InvalidArgument("variants.weight",
                                  "a fixed split needs every weight > 0 (or all 0)")

    def _check_params(self) -> None:
        for key, value in self.params.items():
            if key not in PARAM_NAMES:
                raise InvalidArgument(f"params[{shown(key)}]",
                                      f"unknown (known: {', '.join(PARAM_NAMES)})")
            check_finite(f"params[{shown(key)}]", value)
        try:
            self.new_state()
        except B.BadParam as err:
            raise InvalidArgument(f"params[{shown(err.name)}]", err.reason) from None
        except ValueError as err:
            raise InvalidArgument("params", str(err)) from None

    def _check_rewards(self, most: float) -> None:
        seen = set()
        for i, r in enumerate(self.rewards):
            if r.event_type not in EVENT_TYPES:
                raise InvalidArgument(f"rewards[{i}].event_type", f"{shown(r.event_type)} is unknown")
            if r.event_type in seen:
                raise InvalidArgument(f"rewards[{i}].event_type", f"{r.event_type!r} is used twice")
            seen.add(r.event_type)
            self.check_reward(f"rewards[{i}].value", r.value, most, binary=False)
            if not check_finite(f"rewards[{i}].cap", r.cap) >= 0:
                raise InvalidArgument(f"rewards[{i}].cap", "must be >= 0")
            self.check_reward(f"rewards[{i}].cap", r.cap, most, binary=False)
        self.check_reward("default_reward", self.default_reward, most, binary=False)
        if self.binary_rewards:
            for i, r in enumerate(self.rewards):
                if not 0 <= r.ceiling <= 1 or not 0 <= r.value <= 1:
                    raise InvalidArgument(f"rewards[{i}]", "bernoulli_ts needs rewards in [0, 1] "
                                          "(a capped event value needs cap <= 1)")
            self.check_reward("default_reward", self.default_reward, most)

    @property
    def binary_rewards(self) -> bool:
        return self.policy == "bernoulli_ts"

    def check_reward(self, name: str, reward: float, most: float = DEFAULT_LIMITS.reward_max,
                     binary: bool = True) -> float:
        """A finite reward within ±`most` (`Limits.reward_max`); in [0, 1] for bernoulli_ts
        unless not `binary` (a setting its own check bounds)."""
        check_finite(name, reward)
        if not -most <= reward <= most:
            raise InvalidArgument(name, f"must be within ±{most:g}, got {reward:g}")
        if binary and self.binary_rewards and not 0 <= reward <= 1:
            raise InvalidArgument(name, "bernoulli_ts campaigns take rewards in [0, 1], "
                                  f"got {reward:g}")
        return float(reward)

    def new_state(self) -> B.BanditState:
        weights = [v.weight for v in self.variants]
        return B.new_state(self.policy, len(self.variants), self.dim,
                           weights=weights if any(weights) else None, **self.params)

    def check_update_of(self, old: CampaignSpec) -> None:
        if self.policy != old.policy:
            raise ImmutableField("policy", "the posterior state belongs to the old policy")
        if self.context_features != old.context_features:
            raise ImmutableField("context_features", "the linear state has their dimension")
        if [v.id for v in self.variants[:len(old.variants)]] != [v.id for v in old.variants]:
            raise ImmutableField("variants", "existing variants keep their ids and order "
                                 "(new ones may be appended)")
        if self.salt != old.salt:
            raise ImmutableField("salt", "it would reshuffle the split of every user")

    def restate(self, state: B.BanditState) -> B.BanditState:
        """`state` carried over to this (updated) spec: new params/weights, appended arms."""
        fresh = self.new_state()
        k = state.n_arms
        for name in ("n", "s", "ss", "A", "b"):
            getattr(fresh, name)[:k] = getattr(state, name)
        return fresh


@dataclass(frozen=True)
class Campaign:
    spec: CampaignSpec
    archived: bool = False
    created_at: float = 0.0
    updated_at: float = 0.0
    revision: int = 1

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Campaign:
        d = json.loads(raw)
        s = d.pop("spec")
        spec = CampaignSpec(**{
            **s, "variants": tuple(Variant(**v) for v in s["variants"]),
            "rewards": tuple(RewardRule(**r) for r in s["rewards"]),
            "context_features": tuple(s["context_features"]),
            # Fields added with the contact policy (absent from older records: defaults).
            "channels": tuple(s.get("channels", ())),
            "frequency_caps": tuple(FrequencyCap(**c) for c in s.get("frequency_caps", ())),
            "quiet_hours": QuietHours(**s.get("quiet_hours", {})),
            "send_window": SendWindow(**s.get("send_window", {}))})
        return cls(spec, **d)
