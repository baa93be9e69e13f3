"""Logger of the attribution package."""
import logging

logger = logging.getLogger("tailor.attribution")
