"""A blocking HTTP/1.1 keep-alive connection for pre-encoded Triton infer requests.

One connection per load worker; a request is one ``sendall`` of bytes built before the load
started, a response is read with ``recv_into`` into a buffer the connection keeps, so the
client's own cost per request is a few system calls.
"""

from __future__ import annotations

import json
import socket

from sweeper.load._wire import InferenceError

_INITIAL_BUFFER = 1 << 16


class HttpConnection:
    """Sends pre-encoded requests to ``host:port`` and reads whole responses."""

    def __init__(self, address: str, timeout_s: float) -> None:
        host, _, port = address.rpartition(":")
        self._socket = socket.create_connection((host, int(port)), timeout=timeout_s)
        self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buffer = bytearray(_INITIAL_BUFFER)
        self._view = memoryview(self._buffer)

    def close(self) -> None:
        self._socket.close()

    def _grow(self, size: int, keep: int) -> None:
        """A buffer of at least ``size`` bytes holding the first ``keep`` bytes of the old one."""
        if size > len(self._buffer):
            larger = bytearray(size)
            larger[:keep] = self._buffer[:keep]
            self._buffer, self._view = larger, memoryview(larger)

    def infer(self, request: bytes) -> tuple[int, int, int]:
        """Send one request; return (body offset, body length, inference header length) of the
        response now in ``self.body``. A non-200 status raises InferenceError with Triton's error."""
        sock = self._socket
        sock.sendall(request)
        filled = 0
        while True:
            got = sock.recv_into(self._view[filled:])
            if not got:
                raise ConnectionError("the server closed the connection")
            filled += got
            end = self._buffer.find(b"\r\n\r\n", 0, filled)
            if end >= 0:
                break
            if filled == len(self._buffer):
                self._grow(2 * len(self._buffer), filled)
        head = bytes(self._buffer[:end]).lower()
        length = _header(head, b"content-length")
        if length is None:
            raise InferenceError("the response has no Content-Length (chunked responses are not expected from Triton)")
        start = end + 4
        total = start + length
        self._grow(total, filled)
        while filled < total:
            got = sock.recv_into(self._view[filled:total])
            if not got:
                raise ConnectionError("the server closed the connection mid-response")
            filled += got
        if head[9:12] != b"200":
            body = bytes(self._buffer[start:total])
            try:
                message = json.loads(body).get("error", body.decode(errors="replace"))
            except ValueError:
                message = body.decode(errors="replace")[:300]
            raise InferenceError(f"HTTP {head[9:12].decode()}: {message}")
        return start, length, _header(head, b"inference-header-content-length") or 0

    def body(self, start: int, length: int) -> bytes:
        """A copy of the last response's body (for checking outputs, not on the hot path)."""
        return bytes(self._buffer[start : start + length])


def _header(head: bytes, name: bytes) -> int | None:
    at = head.find(b"\r\n" + name + b":")
    if at < 0:
        return None
    start = at + len(name) + 3
    stop = head.find(b"\r\n", start)
    return int(head[start : stop if stop >= 0 else len(head)])
