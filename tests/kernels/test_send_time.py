"""Send-time choice: slots by hand, shrinkage toward the population, exact propensities."""
import datetime as dt

import numpy as np
import pytest

from kernels import feature_layout as FL
from kernels import features as F
from kernels import send_time as S
from kernels.contact_population import Population
from kernels.features import Events

from .profile_layout import LAYOUT

MONDAY = dt.datetime(2024, 1, 1, tzinfo=dt.UTC).timestamp()  # Monday 00:00 UTC = bin 0
H = 3600.0


def population(peaks: dict[int, float], alpha: float) -> Population:
    p = np.full(168, 0.0)
    for b, share in peaks.items():
        p[b] = share
    p[p == 0] = (1 - sum(peaks.values())) / (168 - len(peaks))
    return Population(p, alpha, LAYOUT.channels, np.ones(5), np.full(5, 9.0))


def test_slots_follow_local_hours():
    start, end = MONDAY + 10.5 * H, MONDAY + 13 * H
    utc = S.slots([start], [end], [0])
    assert utc.at[0][utc.valid[0]].tolist() == [start, MONDAY + 11 * H, MONDAY + 12 * H]
    assert utc.bin[0][utc.valid[0]].tolist() == [10, 11, 12]
    # +05:30: 10:30 UTC is 16:00 local, the next local hours start at 11:30 and 12:30 UTC
    india = S.slots([start], [end], [330])
    assert india.at[0][india.valid[0]].tolist() == [start, MONDAY + 11.5 * H, MONDAY + 12.5 * H]
    assert india.bin[0][india.valid[0]].tolist() == [16, 17, 18]
    # -01:00 wraps to Sunday 23:00 = bin 167
    assert S.slots([MONDAY], [MONDAY + H], [-60]).bin[0, 0] == 167


def test_slots_refuse_bad_windows():
    for end in (MONDAY, MONDAY - 1, MONDAY + 169 * H, np.nan):
        with pytest.raises(ValueError, match="window"):
            S.slots([MONDAY], [end], [0])


def test_greedy_slot_and_exact_probabilities_by_hand():
    cand = S.slots([MONDAY + 10.5 * H], [MONDAY + 13 * H], [0])  # bins 10, 11, 12
    hist = np.zeros((1, 168))
    hist[0, 12] = 3.0
    best, probs = S.slot_probs(hist, cand, population({}, 1.0), epsilon=0.3)
    assert best.tolist() == [2]
    assert probs[0][cand.valid[0]] == pytest.approx([0.1, 0.1, 0.8])


def test_sparse_users_fall_back_to_the_population_heavy_users_do_not():
    # alpha p = 2 at bin 11, 0.5 at bin 12: one event at 12 scores 1.5 < 2, five score 5.5 > 2
    pop = population({11: 0.2, 12: 0.05}, alpha=10.0)
    cand = S.slots([MONDAY + 10.5 * H] * 3, [MONDAY + 13 * H] * 3, [0, 0, 0])
    hist = np.zeros((3, 168))
    hist[1, 12], hist[2, 12] = 1.0, 5.0
    best, _ = S.slot_probs(hist, cand, pop, epsilon=0.0)
    assert best.tolist() == [1, 1, 2]


def test_draws_follow_the_logged_propensities():
    cand = S.slots([MONDAY] * 20000, [MONDAY + 4 * H] * 20000, np.zeros(20000))
    hist = np.zeros((20000, 168))
    hist[:, 2] = 1.0
    at, prop, slot = S.choose_slots(hist, cand, population({}, 1.0),
                                    np.random.default_rng(1), epsilon=0.2)
    expected = np.array([0.05, 0.05, 0.85, 0.05])
    assert prop == pytest.approx(expected[slot])
    freq = np.bincount(slot, minlength=4) / slot.size
    assert freq == pytest.approx(expected, abs=4 * np.sqrt(0.85 * 0.15 / 20000))
    assert (at == MONDAY + slot * H).all()


def test_choose_send_at_reads_local_engagement_from_the_state():
    # a user at +02:00 who clicks on Mondays at 20:00 local (18:00 UTC)
    click = LAYOUT.type_code("email_click")
    ts = [MONDAY - w * 7 * 86400 + 18 * H for w in range(1, 5)]
    state = F.update(LAYOUT, FL.new_state(LAYOUT),
                     Events([click] * 4, [2] * 4, ts, tz_offset_min=[120] * 4))
    send_at, prop = S.choose_send_at(state, (MONDAY, MONDAY + 24 * H), MONDAY,
                                     np.random.default_rng(0), population({}, 1.0),
                                     layout=LAYOUT, epsilon=0.0)
    assert (send_at, prop) == (MONDAY + 18 * H, 1.0)
    # no profile: the population's best hour (bin 9 = Monday 09:00, UTC offset 0)
    send_at, prop = S.choose_send_at(None, (MONDAY - H, MONDAY + 24 * H), MONDAY,
                                     np.random.default_rng(0), population({9: 0.5}, 5.0),
                                     layout=LAYOUT, epsilon=0.1)
    assert send_at == MONDAY + 9 * H and prop == pytest.approx(0.9 + 0.1 / 24)

