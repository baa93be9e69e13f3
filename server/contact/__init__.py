"""The contact policy: whom to contact, on which channel, when (consent, suppression, frequency
caps, quiet hours, send-time and channel choice), applied to every campaign decision.

Send time, channel choice and their population prior are pure functions of feature states and
live in kernels/ (`kernels.send_time`, `kernels.channel_choice`, `kernels.contact_population`),
shared with the offline evaluation (`training.timing`); here `prior` serves the prior fitted on
stored profiles and `choice` applies both choices to a batch of contacts.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import exports

if TYPE_CHECKING:
    from .caps import CONTACT_CHANNELS, ContactHistory, FrequencyCap
    from .consent import PURPOSES, consent_reason
    from .keepout import KeepOut
    from .policy import Contact, ContactPolicy, Verdict, channels_of
    from .quiet_hours import QuietHours, SendWindow
    from .suppression import Suppressions

__all__ = ["Contact", "ContactPolicy", "Verdict", "channels_of", "FrequencyCap", "ContactHistory",
           "QuietHours", "SendWindow", "consent_reason", "PURPOSES", "CONTACT_CHANNELS",
           "Suppressions", "KeepOut"]

__getattr__ = exports(
    __name__,
    caps=("CONTACT_CHANNELS", "ContactHistory", "FrequencyCap"),
    consent=("PURPOSES", "consent_reason"),
    keepout=("KeepOut",),
    policy=("Contact", "ContactPolicy", "Verdict", "channels_of"),
    quiet_hours=("QuietHours", "SendWindow"),
    suppression=("Suppressions",),
)
