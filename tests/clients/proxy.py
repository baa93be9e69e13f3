"""A loopback TCP proxy in front of a real server that loses the server's answers when asked:
the call was made, its answer never reaches the client (a proxy or a network dropping it),
which gRPC reports as UNAVAILABLE."""
from __future__ import annotations

import contextlib
import socket
import threading

__all__ = ["LosingProxy"]


class LosingProxy:
    """A loopback TCP proxy to a real server that closes the connection in place of passing on
    the server's next answers when `lose_next(times)` was called: the call was made, its answer
    is lost (a proxy or a network dropping it), which gRPC reports as UNAVAILABLE."""

    def __init__(self, port: int):
        self.target_port, self.losing, self.lock = port, 0, threading.Lock()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.target = f"127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def lose_next(self, times: int = 1) -> None:
        """Lose the next `times` answers (each ends its connection; gRPC opens another)."""
        with self.lock:
            self.losing = times

    def _lose(self) -> bool:
        with self.lock:
            if self.losing:
                self.losing -= 1
                return True
        return False

    def close(self) -> None:
        self.sock.close()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.sock.accept()
                server = socket.create_connection(("127.0.0.1", self.target_port))
                threading.Thread(target=self._requests, args=(client, server), daemon=True).start()
                threading.Thread(target=self._answers, args=(server, client), daemon=True).start()

    @staticmethod
    def _requests(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        _close(src, dst)

    def _answers(self, src: socket.socket, dst: socket.socket) -> None:
        """HTTP/2 frames from the server, passed on whole; a HEADERS frame (an answer starting)
        while losing ends the connection instead."""
        pending = b""
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                pending += data
                while len(pending) >= 9 and len(pending) >= 9 + int.from_bytes(pending[:3], "big"):
                    size = 9 + int.from_bytes(pending[:3], "big")
                    frame, pending = pending[:size], pending[size:]
                    if frame[3] == 1 and self._lose():  # type 1: HEADERS
                        raise OSError("answer lost")
                    dst.sendall(frame)
        _close(src, dst)


def _close(*socks: socket.socket) -> None:
    for s in socks:
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)
        s.close()
