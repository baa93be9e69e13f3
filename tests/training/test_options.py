"""--event-weight / --half-life-days: checked against the contract, recorded complete."""
import argparse

import numpy as np
import pytest

from contract.events import DEFAULT_EVENT_WEIGHTS, DEFAULT_HALF_LIFE_DAYS, EVENT_TYPES
from training.cli.options import add_training_options, config_from_args


def parse(*argv):
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_training_options(parser)
    return config_from_args(parser.parse_args(argv))


def test_overrides_land_in_a_complete_table():
    cfg = parse("--event-weight", "purchase=20", "--event-weight", "sms_click=0")
    assert set(cfg.event_weights) == set(EVENT_TYPES)
    assert cfg.event_weights == {**DEFAULT_EVENT_WEIGHTS, "purchase": 20.0, "sms_click": 0.0}
    assert cfg.als.half_life_days == DEFAULT_HALF_LIFE_DAYS


@pytest.mark.parametrize("bad", ["teleport=1", "purchase=-1", "purchase=nan", "purchase"])
def test_unknown_events_and_bad_weights_are_refused(bad):
    with pytest.raises(argparse.ArgumentError, match="EVENT=WEIGHT"):
        parse("--event-weight", bad)


def test_rows_weigh_their_type_and_ratings_their_value():
    from tests.training.conftest import make_interactions
    from training.events import event_weights
    rows = make_interactions([("u", "a", 1, "purchase"), ("u", "b", 2, "rating", 4.0),
                              ("u", "c", 3, "sms_click"), ("u", "d", 4, "email_sent")])
    np.testing.assert_array_equal(event_weights(rows, {"rating": 0.5}), [8.0, 2.0, 2.0, 0.0])


def test_eval_users_defaults_to_a_sample_and_refuses_negatives():
    assert parse().eval_users == 20_000 and parse("--eval-users", "0").eval_users == 0
    for bad in ("-1", "many"):
        with pytest.raises(argparse.ArgumentError, match="whole number"):
            parse("--eval-users", bad)
