"""The public HTTP endpoints (one-click unsubscribe, inbound SMS) on their own port."""
from .public import PublicHttp, server_ssl_context

__all__ = ["PublicHttp", "server_ssl_context"]
