"""Logger of the security package (it never logs tokens, user ids or PII, only principal names)."""
import logging

logger = logging.getLogger("tailor.security")
