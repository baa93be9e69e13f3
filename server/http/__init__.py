"""The public HTTP endpoints (one-click unsubscribe, inbound SMS) on their own port."""
from .public import PublicHttp, server_ssl_context
from .sms import SmsInbound

__all__ = ["PublicHttp", "SmsInbound", "server_ssl_context"]
