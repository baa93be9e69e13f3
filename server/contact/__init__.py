"""The contact policy: whom to contact, on which channel, when (consent, frequency caps,
quiet hours), applied to every campaign decision."""
from .caps import CONTACT_CHANNELS, ContactHistory, FrequencyCap
from .consent import PURPOSES, consent_reason
from .policy import Contact, ContactPolicy, Verdict
from .quiet_hours import QuietHours, SendWindow

__all__ = ["Contact", "ContactPolicy", "Verdict", "FrequencyCap", "ContactHistory",
           "QuietHours", "SendWindow", "consent_reason", "PURPOSES", "CONTACT_CHANNELS"]
