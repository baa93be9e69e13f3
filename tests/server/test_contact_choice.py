"""ContactPolicy with send-time and channel choice: a batch decides as each contact alone."""
import datetime as dt

import numpy as np
import pytest

from kernels import feature_layout as FL
from kernels import features as F
from kernels.features import Events
from server.contact import ContactPolicy, QuietHours, SendWindow
from server.contact.policy import Contact
from server.profiles.schema import ProfileSchema

LAYOUT = ProfileSchema().layout()
MONDAY = dt.datetime(2024, 1, 1, tzinfo=dt.UTC).timestamp()
H = 3600.0
OPT_IN = {"consent": {"email": {"opted_in": True}}}


class Spec:
    purpose, channel, channels = "marketing", "email", ("email", "push")
    frequency_caps = ()
    quiet_hours = QuietHours()
    send_window = SendWindow(8, 12)


def user(kind_times):
    types = [LAYOUT.type_code(k) for k, _ in kind_times]
    chans = [LAYOUT.channel_code(k.split("_")[0]) for k, _ in kind_times]
    return F.update(LAYOUT, FL.new_state(LAYOUT), Events(types, chans, [t for _, t in kind_times]))


def policy(seed=0):
    return ContactPolicy(layout=LAYOUT, epsilon=0.0, n_mc=64, rng=np.random.default_rng(seed))


def test_a_batch_decides_as_each_contact_alone():
    now = MONDAY  # Monday 00:00 UTC; the window is Monday 08:00-12:00 UTC
    pusher = user([("push_sent", now - 7 * 86400 + 10 * H)] * 20
                  + [("push_open", now - 7 * 86400 + 10 * H)] * 15
                  + [("email_sent", now - 7 * 86400 + 10 * H)] * 20)
    contacts = [Contact("p", OPT_IN, pusher), Contact("n", None, None), Contact("m", OPT_IN, None)]
    batch = policy().verdicts(Spec, contacts, now)
    alone = [policy().verdicts(Spec, [c], now)[0] for c in contacts]
    # pusher: push (Beta(16, 14) vs Beta(1, 29)) at Monday 10:00, their opens' hour
    assert (batch[0].channel, batch[0].send_at, batch[0].send_at_propensity) == \
           ("push", now + 10 * H, 1.0)
    # no email consent: push without a choice; no history: the uniform prior's first slot
    assert (batch[1].channel, batch[1].channel_propensity, batch[1].send_at) == \
           ("push", 1.0, now + 8 * H)
    assert batch[2].channel in ("email", "push") and 0 < batch[2].channel_propensity < 1
    for b, a in zip(batch[:2], alone[:2]):
        assert b == a


def test_quiet_hours_apply_at_the_chosen_time():
    class Quiet(Spec):
        channels = ("push",)
        quiet_hours = QuietHours("07:00", "09:00", "defer")
    v = policy().verdicts(Quiet, [Contact("n", None, None)], MONDAY)[0]
    assert v.send_at == MONDAY + 9 * H  # chosen 08:00 is quiet: deferred to 09:00


def test_no_layout_means_no_choice():
    v = ContactPolicy().verdicts(Spec, [Contact("m", OPT_IN, None)], MONDAY)[0]
    assert (v.channel, v.send_at, v.channel_propensity, v.send_at_propensity) == \
           ("email", 0.0, 1.0, 1.0)
    assert not ContactPolicy().needs_state(Spec) and policy().needs_state(Spec)


def test_inside_the_window_the_first_slot_is_now():
    v = policy().verdicts(Spec, [Contact("n", None, None)], MONDAY + 9.5 * H)[0]
    assert v.send_at == 0.0 and v.send_at_propensity == pytest.approx(1.0)
