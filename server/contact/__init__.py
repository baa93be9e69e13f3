"""The contact policy: whom to contact, on which channel, when (consent, suppression, frequency
caps, quiet hours, send-time and channel choice), applied to every campaign decision.

Send time (`send_time`), channel choice (`channel`) and their population prior (`population`,
served by `prior`) are pure functions of feature states; see each module.
"""
from .caps import CONTACT_CHANNELS, ContactHistory, FrequencyCap
from .consent import PURPOSES, consent_reason
from .policy import Contact, ContactPolicy, Verdict
from .quiet_hours import QuietHours, SendWindow
from .suppression import Suppressions

__all__ = ["Contact", "ContactPolicy", "Verdict", "FrequencyCap", "ContactHistory",
           "QuietHours", "SendWindow", "consent_reason", "PURPOSES", "CONTACT_CHANNELS",
           "Suppressions"]
