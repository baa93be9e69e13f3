"""The public HTTP endpoints (one-click unsubscribe, inbound SMS, delivery reports) on their own
port."""
from .delivery_events import DeliveryEvents
from .public import PublicHttp, server_ssl_context
from .sms import SmsInbound

__all__ = ["DeliveryEvents", "PublicHttp", "SmsInbound", "server_ssl_context"]
