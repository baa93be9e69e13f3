"""The server's profile feature layout, built from the contract alone (kernel tests do not
import server/): the event vocabulary and weights of `contract.events`, the five channels,
half-lives of 1, 7 and 30 days."""
from contract.events import DEFAULT_EVENT_WEIGHTS, EVENT_TYPES, VALUED_TYPES
from kernels.feature_layout import DAY, FeatureLayout

CHANNELS = ("web", "app", "email", "sms", "push")
LAYOUT = FeatureLayout(EVENT_TYPES, CHANNELS, 64, DEFAULT_EVENT_WEIGHTS,
                       half_lives_s=(DAY, 7 * DAY, 30 * DAY), recent_capacity=50,
                       valued_types=VALUED_TYPES)
