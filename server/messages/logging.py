"""Logger of the messages package."""
import logging

logger = logging.getLogger("tailor.messages")
