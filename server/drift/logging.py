"""Logger of the drift package (warnings name bundle versions and features, never users)."""
import logging

logger = logging.getLogger("tailor.drift")
