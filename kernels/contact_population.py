"""The population prior of send-time and channel choice, fitted by empirical Bayes.

Both choices shrink a user's own counts toward the population's:

- send time: a user's decayed hour-of-week engagement histogram x_u (168 bins, local time) is
  read as draws from the user's hour distribution theta_u ~ Dirichlet(alpha * p), so the
  posterior mean of bin b is (x_ub + alpha p_b) / (n_u + alpha), n_u = sum_b x_ub;
- channel: a user's engagements s_uc out of sends n_uc on channel c are Binomial(n_uc, r_uc)
  with r_uc ~ Beta(a_c, b_c), i.e. the two-bin case (engaged, not) of the same model, with
  p = (m_c, 1 - m_c), a_c = alpha_c m_c and b_c = alpha_c (1 - m_c).

`fit_dirichlet` estimates (p, alpha) from the population by the method of moments of the
Dirichlet-multinomial. p is the pooled share, p_k = sum_i x_ik / sum_i n_i. Under the model,

    E[x_ik] = n_i p_k,   Var[x_ik] = n_i p_k (1 - p_k) (1 + (n_i - 1) rho),  rho = 1 / (1 + alpha)

so the per-user statistic S_i = sum_k (x_ik - n_i p_k)^2 / p_k has E[S_i] = (K - 1) n_i
(1 + (n_i - 1) rho). Summing over users and solving for rho:

    rho_hat = (sum_i S_i / (K - 1) - sum_i n_i) / sum_i n_i (n_i - 1)

and alpha_hat = 1 / rho_hat - 1, clipped to [alpha_min, alpha_max]: rho near 1 (users unlike
each other) gives a weak prior, rho near 0 (users like the population) a strong one. Users with
n_i <= 1 add nothing to the denominator; if no user has more than one count, alpha_max is
returned (no evidence of user-level variation: use the population).

Decayed counts are not counts: a decayed bin is a sum of weights w_j = 2^(-age_j / h) <= 1,
whose multinomial noise is sum w_j^2 p (1 - p), not sum w_j p (1 - p). Read as counts they look
less noisy than they are and the fit mistakes the noise deficit for users being alike (alpha
far too large). Both the fit and the posteriors therefore use effective counts x / phi_u, with
phi_u = sum w^2 / sum w for events arriving at a steady rate between the user's first and latest
event (header FIRST_TS, REF_TS), decayed to `now`:

    phi_u = (2^(-(now - REF_TS) / h) + 2^(-(now - FIRST_TS) / h)) / 2

(one event: its weight; a long steady history: 1/2). `effective_scale` computes it.

Pure numpy over feature states (no I/O): the server fits it on a sample of stored profiles
(`server.contact.prior`, refreshed periodically), the offline evaluation on simulated ones
(`training.timing`); `save` / `load` are an npz codec for it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kernels.feature_layout import FIRST_TS, HOURS_PER_WEEK, N_EVENTS, REF_TS, FeatureLayout
from kernels.features import channel_counts_many, hour_of_week_many

__all__ = ["Population", "fit_dirichlet", "fit_population", "engagement", "effective_scale",
           "user_hours", "user_channels", "save", "load"]

ALPHA_MIN = 1e-3
ALPHA_MAX = 1e6


def fit_dirichlet(counts, smoothing: float = 0.5, alpha_min: float = ALPHA_MIN,
                  alpha_max: float = ALPHA_MAX) -> tuple[np.ndarray, float]:
    """Method-of-moments (p, alpha) of a Dirichlet-multinomial from `counts` [n_users, K].

    Parameters
    ----------
    counts : array [n, K] of counts >= 0 (decayed counts allowed, see the module docs)
    smoothing : float
        Added to every pooled bin before p is normalised, so p_k > 0 (an empty bin would
        otherwise make S_i undefined and a user's posterior mass there 0 forever).

    Returns
    -------
    p : float64 [K], sums to 1
    alpha : float in [alpha_min, alpha_max]
    """
    x = np.asarray(counts, np.float64)
    if x.ndim != 2 or x.shape[1] < 2 or not np.all(np.isfinite(x) & (x >= 0)):
        raise ValueError("counts: must be a finite [n, K >= 2] array of values >= 0")
    pooled = x.sum(axis=0) + smoothing
    if not pooled.sum() > 0:
        return np.full(x.shape[1], 1.0 / x.shape[1]), float(alpha_max)
    p = pooled / pooled.sum()
    n = x.sum(axis=1)
    seen = p > 0  # a bin nobody used (smoothing 0) carries no information
    s = (((x[:, seen] - n[:, None] * p[seen]) ** 2) / p[seen]).sum(axis=1)
    den = float((n * (n - 1.0)).sum())
    if not den > 0 or seen.sum() < 2:
        return p, float(alpha_max)
    rho = (s.sum() / (seen.sum() - 1) - n.sum()) / den
    alpha = 1.0 / rho - 1.0 if rho > 0 else alpha_max
    return p, float(min(max(alpha, alpha_min), alpha_max))


def engagement(layout: FeatureLayout, counts: dict[str, np.ndarray]
               ) -> tuple[np.ndarray, np.ndarray]:
    """(sends, engaged) [n, C] from `channel_counts_many` output.

    A send is engaged when it was opened; on a channel without an open event (sms: an SMS is
    read on arrival, only a click is observable) a click counts instead. The channel of an open
    type is its name's prefix ("push_open" -> "push"). Engaged is clipped to sends.
    """
    has_open = np.array([any(t.split("_")[0] == c for t in layout.open_types)
                         for c in layout.channels])
    engaged = np.where(has_open[None, :], counts["opens"], counts["clicks"])
    return counts["sends"], np.minimum(engaged, counts["sends"])


def effective_scale(states: np.ndarray, now: float, half_life_s: float) -> np.ndarray:
    """phi [n] (module docs): divide a state's decayed counts by it to get effective counts."""
    states = np.asarray(states, np.float64)
    has = states[:, N_EVENTS] > 0
    first = np.where(has, states[:, FIRST_TS], now)
    ref = np.where(has, states[:, REF_TS], now)
    phi = (np.exp2(-np.maximum(now - ref, 0.0) / half_life_s)
           + np.exp2(-np.maximum(now - first, 0.0) / half_life_s)) / 2.0
    return np.where(has, phi, 1.0)


def user_hours(layout: FeatureLayout, states, now: float) -> tuple[np.ndarray, np.ndarray]:
    """(effective hour-of-week counts [n, 168], tz_offset_min [n]) of a batch of states."""
    states = np.asarray(states, np.float64).reshape(-1, layout.size)
    hist, tz = hour_of_week_many(layout, states, now)
    return hist / effective_scale(states, now, layout.hour_half_life_s)[:, None], tz


def user_channels(layout: FeatureLayout, states, now: float, half_life: int | None = -1
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(effective sends, engaged) [n, C] of a batch of states (`engagement`), from the decayed
    counts of `layout.half_lives_s[half_life]` (default the longest; None: all-time counts)."""
    states = np.asarray(states, np.float64).reshape(-1, layout.size)
    if half_life is None:
        return engagement(layout, channel_counts_many(layout, states, now, None))
    hl = half_life % len(layout.half_lives_s)
    sends, engaged = engagement(layout, channel_counts_many(layout, states, now, hl))
    phi = effective_scale(states, now, layout.half_lives_s[hl])[:, None]
    return sends / phi, engaged / phi


@dataclass(frozen=True, eq=False)
class Population:
    """The fitted prior. `hour_p` [168] (local Monday 00:00 first) and `hour_alpha`: the
    Dirichlet prior alpha * p of a user's hour-of-week histogram; per channel of `channels`, the
    Beta(`channel_a`, `channel_b`) prior of the user's engagement rate per send."""

    hour_p: np.ndarray
    hour_alpha: float
    channels: tuple[str, ...]
    channel_a: np.ndarray
    channel_b: np.ndarray

    def __post_init__(self):
        p = np.asarray(self.hour_p, np.float64)
        if p.shape != (HOURS_PER_WEEK,) or not (np.all(p >= 0) and abs(p.sum() - 1) < 1e-9):
            raise ValueError(f"hour_p: {HOURS_PER_WEEK} values >= 0 summing to 1")
        if not (np.isfinite(self.hour_alpha) and self.hour_alpha > 0):
            raise ValueError(f"hour_alpha: must be finite > 0, got {self.hour_alpha}")
        a, b = (np.asarray(v, np.float64) for v in (self.channel_a, self.channel_b))
        if a.shape != (len(self.channels),) or b.shape != a.shape or not (
                np.all(np.isfinite(a) & (a > 0)) and np.all(np.isfinite(b) & (b > 0))):
            raise ValueError("channel_a, channel_b: one finite value > 0 per channel")
        for name, value in (("hour_p", p), ("channel_a", a), ("channel_b", b)):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "channels", tuple(self.channels))

    @classmethod
    def uninformed(cls, layout: FeatureLayout, hour_alpha: float = 1.0) -> Population:
        """Before any fit: uniform hours (weight `hour_alpha`), the layout's `rate_prior`."""
        a, b = layout.rate_prior
        c = len(layout.channels)
        return cls(np.full(HOURS_PER_WEEK, 1.0 / HOURS_PER_WEEK), hour_alpha, layout.channels,
                   np.full(c, a), np.full(c, b))


def fit_population(layout: FeatureLayout, states, now: float, half_life: int | None = -1,
                   smoothing: float = 0.5) -> Population:
    """Fit the prior from feature states [n, size], read as of `now`.

    `half_life`: which decayed counts give the channel rates (index into
    `layout.half_lives_s`, default the last = longest; None = all-time counts), the same the
    serving side must read (`channel_choice.posteriors`).
    """
    states = np.asarray(states, np.float64).reshape(-1, layout.size)
    hour_p, hour_alpha = fit_dirichlet(user_hours(layout, states, now)[0], smoothing)
    sends, engaged = user_channels(layout, states, now, half_life)
    a = np.empty(len(layout.channels))
    b = np.empty(len(layout.channels))
    prior_a, prior_b = layout.rate_prior
    for c in range(len(layout.channels)):
        rows = sends[:, c] > 0
        if not rows.any():
            a[c], b[c] = prior_a, prior_b
            continue
        pair = np.stack([engaged[rows, c], sends[rows, c] - engaged[rows, c]], axis=1)
        (m, _), alpha = fit_dirichlet(pair, smoothing)
        a[c], b[c] = alpha * m, alpha * (1.0 - m)
    return Population(hour_p, hour_alpha, layout.channels, a, b)


def save(population: Population, path: str | Path) -> None:
    """Write `population` as an npz (arrays hour_p, hour_alpha, channels, channel_a, channel_b)."""
    with open(path, "wb") as fh:
        np.savez(fh, hour_p=population.hour_p, hour_alpha=np.float64(population.hour_alpha),
                 channels=np.array(population.channels), channel_a=population.channel_a,
                 channel_b=population.channel_b)


def load(path: str | Path) -> Population:
    """Read an npz written by `save`; ValueError names what is missing or wrong."""
    with np.load(path, allow_pickle=False) as npz:
        missing = {"hour_p", "hour_alpha", "channels", "channel_a", "channel_b"} - set(npz.files)
        if missing:
            raise ValueError(f"{Path(path).name}: missing arrays {sorted(missing)}")
        return Population(npz["hour_p"], float(npz["hour_alpha"]),
                          tuple(npz["channels"].tolist()), npz["channel_a"], npz["channel_b"])
