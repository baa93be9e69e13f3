"""Logger of the campaigns package."""
import logging

logger = logging.getLogger("tailor.campaigns")
