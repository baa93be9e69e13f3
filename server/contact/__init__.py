"""The contact policy: whom to contact, on which channel, when (consent, suppression, ...)."""

__all__: list[str] = []
