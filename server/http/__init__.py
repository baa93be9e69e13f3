"""The public HTTP endpoints (one-click unsubscribe, inbound SMS, delivery reports) on their own
port. The names load on first use (`server.lazy`): a server without a public port never imports
the HTTP stack."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import exports

if TYPE_CHECKING:
    from .delivery_events import DeliveryEvents
    from .public import PublicHttp, server_ssl_context
    from .signing import SignedRequests
    from .sms import SmsInbound

__all__ = ["DeliveryEvents", "PublicHttp", "SignedRequests", "SmsInbound", "server_ssl_context"]

__getattr__ = exports(
    __name__,
    delivery_events=("DeliveryEvents",),
    public=("PublicHttp", "server_ssl_context"),
    signing=("SignedRequests",),
    sms=("SmsInbound",),
)
