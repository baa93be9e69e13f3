"""The /metrics HTTP server: prometheus-client's WSGI app behind a bounded threading server.

prometheus-client's own `start_http_server` gives every connection a thread with no timeout
and, over TLS, does the handshake inside `accept`, on its one serving thread: one connection
that never sent a ClientHello stopped every scrape for good, and silent plain connections each
held a thread and a file descriptor for good (200 of them: 200 threads). Here the handshake and
the request run on the connection's own thread within `seconds` in all (then its socket is shut
down), and at most `most` connections are served at once; one more is closed at once.
"""
from __future__ import annotations

import logging
import socket
import ssl
import threading

from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler, make_wsgi_app

__all__ = ["MetricsServer", "metrics_server"]

logger = logging.getLogger("tailor.metrics")


class MetricsServer(ThreadingWSGIServer):
    """At most `most` connections at once, each done within `seconds` (its TLS handshake
    included: `tls`, a server context, is applied on the connection's thread)."""

    def __init__(self, address, most: int, seconds: float, tls: ssl.SSLContext | None = None):
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _SilentHandler)
        self.most, self.seconds, self.tls = most, seconds, tls
        self._slots = threading.BoundedSemaphore(most)

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):  # past the bound: closed unread
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread started: the slot is not taken
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        # the deadline shuts down a duplicate of the socket: TLS wrapping detaches `request`
        # (a shutdown of it then did nothing, and a client trickling bytes kept its thread)
        deadline = cut = None
        try:
            cut = request.dup()
            deadline = threading.Timer(self.seconds, _cut, (cut,))
            deadline.daemon = True
            deadline.start()
            request.settimeout(self.seconds)
            if self.tls is not None:
                request = self.tls.wrap_socket(request, server_side=True)
            super().process_request_thread(request, client_address)
        except (OSError, ValueError) as err:  # a handshake refused, cut or timed out
            logger.debug("metrics connection ended: %s", err)
            self.shutdown_request(request)
        finally:
            if deadline is not None:
                deadline.cancel()
            if cut is not None:
                cut.close()
            self._slots.release()

    def handle_error(self, request, client_address) -> None:
        """A client's connection that broke (socketserver printed a traceback to stderr)."""
        logger.debug("metrics request failed", exc_info=True)


def _cut(sock: socket.socket) -> None:
    """End a connection past its time: its thread's blocked read or write returns."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def metrics_server(host: str, port: int, registry, most: int, seconds: float,
                   tls: ssl.SSLContext | None = None) -> MetricsServer:
    """A started `MetricsServer` of `registry` on `host`:`port` (its own daemon thread)."""
    httpd = MetricsServer((host, port), most, seconds, tls)
    httpd.set_app(make_wsgi_app(registry))
    threading.Thread(target=httpd.serve_forever, name="metrics", daemon=True).start()
    return httpd
