"""Logger of the contact package."""
import logging

logger = logging.getLogger("tailor.contact")
