"""Logger of the impressions package."""
import logging

logger = logging.getLogger("tailor.impressions")
