"""A blocking gRPC client connection (HTTP/2) for pre-encoded unary ``ModelInfer`` calls.

grpcio spends ~250 us of CPU per call in its own threads (measured here), more than the
server spends on a small model; on a shared 2-core host that cost is charged to the server.
This connection speaks just what a unary call needs: the request's headers and message are
written with one ``sendall``, the response's frames are read with ``recv_into`` into a buffer
it keeps. HTTP/2 duties are honoured: SETTINGS are acknowledged and applied, PINGs answered,
flow-control windows respected when sending and replenished when receiving, and header blocks
decoded with ``hpack`` (the ecosystem's HPACK library) so the compression state stays in step.
"""

from __future__ import annotations

import socket
import struct

import hpack

from sweeper.load._wire import InferenceError

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_DATA, _HEADERS, _RST_STREAM, _SETTINGS, _PING, _GOAWAY, _WINDOW_UPDATE, _CONTINUATION = 0, 1, 3, 4, 6, 7, 8, 9
_END_STREAM, _ACK, _END_HEADERS, _PADDED, _PRIORITY = 0x1, 0x1, 0x4, 0x8, 0x20
_SETTING_INITIAL_WINDOW, _SETTING_MAX_FRAME, _SETTING_ENABLE_PUSH = 0x4, 0x5, 0x2
_WINDOW_MAX = 2**31 - 1
_OUR_MAX_FRAME = 2**24 - 1
_FRAME = struct.Struct(">HBBBI")  # 24-bit length as 16 + 8 bits, type, flags, stream id
_INITIAL_BUFFER = 1 << 16
METHOD = "/inference.GRPCInferenceService/ModelInfer"


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    length = len(payload)
    return _FRAME.pack(length >> 8, length & 0xFF, kind, flags, stream) + payload


def _integer(value: int, prefix_bits: int) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([value])
    out, value = [limit], value - limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _literal(name: str, value: str) -> bytes:
    """An HPACK "literal header field without indexing, new name", no Huffman coding."""
    name_bytes, value_bytes = name.encode(), value.encode()
    return b"\x00" + _integer(len(name_bytes), 7) + name_bytes + _integer(len(value_bytes), 7) + value_bytes


def request_headers(authority: str, method: str = METHOD) -> bytes:
    """The HPACK block of every call of ``method`` on a connection to ``authority``."""
    fields = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", method),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]
    return b"".join(_literal(name, value) for name, value in fields)


class GrpcConnection:
    """One HTTP/2 connection; ``call`` runs one unary call at a time on it."""

    def __init__(self, address: str, timeout_s: float, method: str = METHOD) -> None:
        host, _, port = address.rpartition(":")
        self._socket = socket.create_connection((host, int(port)), timeout=timeout_s)
        self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._headers = request_headers(address, method)
        self._decoder = hpack.Decoder()
        self._buffer = bytearray(_INITIAL_BUFFER)
        self._view = memoryview(self._buffer)
        self._start = self._end = 0
        self._stream = 1
        self._send_window = 65535  # the connection's, for what we send
        self._peer_initial_window = 65535
        self._peer_max_frame = 16384
        self._stream_windows: dict[int, int] = {}
        self._unacknowledged = 0  # received DATA bytes not yet returned to the server's window
        settings = struct.pack(
            ">HIHIHI", _SETTING_ENABLE_PUSH, 0, _SETTING_INITIAL_WINDOW, _WINDOW_MAX, _SETTING_MAX_FRAME, _OUR_MAX_FRAME
        )
        self._socket.sendall(
            _PREFACE
            + _frame(_SETTINGS, 0, 0, settings)
            + _frame(_WINDOW_UPDATE, 0, 0, struct.pack(">I", _WINDOW_MAX - 65535))
        )

    def close(self) -> None:
        self._socket.close()

    def call(self, message: bytes, *, keep: bool = False) -> bytes | None:
        """Send one gRPC message (already framed) and wait for the whole response. With ``keep``
        the response message (without its 5-byte frame) is returned."""
        stream = self._stream
        self._stream += 2
        self._stream_windows[stream] = self._peer_initial_window
        parts: list[bytes] | None = [] if keep else None
        self._received = 0
        self._status: str | None = None
        self._message = ""
        headers = _frame(_HEADERS, _END_HEADERS, stream, self._headers)
        try:
            if len(message) <= min(self._peer_max_frame, self._send_window, self._peer_initial_window):
                self._send_window -= len(message)
                self._socket.sendall(headers + _frame(_DATA, _END_STREAM, stream, message))
                ended = False
            else:
                self._socket.sendall(headers)
                ended = self._send_large(stream, message, parts)
            while not ended:
                kind, flags, on, payload = self._read_frame()
                ended = self._handle(kind, flags, on, payload, stream=stream, parts=parts) and on == stream
        finally:
            self._stream_windows.pop(stream, None)
        return self._response(parts)

    def _send_large(self, stream: int, message: bytes, parts: list | None) -> bool:
        """Send ``message`` in frames as flow control allows; True when the server ended the
        stream before all of it was sent (an error reply: nothing more is sent or awaited)."""
        sent, view = 0, memoryview(message)
        while sent < len(message):
            allowed = min(self._peer_max_frame, self._send_window, self._stream_windows[stream], len(message) - sent)
            if allowed <= 0:  # wait for WINDOW_UPDATE, answering what else arrives
                kind, flags, on, payload = self._read_frame()
                if self._handle(kind, flags, on, payload, stream=stream, parts=parts) and on == stream:
                    return True
                continue
            last = sent + allowed == len(message)
            self._socket.sendall(_frame(_DATA, _END_STREAM if last else 0, stream, bytes(view[sent : sent + allowed])))
            sent += allowed
            self._send_window -= allowed
            self._stream_windows[stream] -= allowed
        return False

    def _response(self, parts: list | None) -> bytes | None:
        """The ended call's message, or InferenceError with the gRPC status and message."""
        if self._status != "0":
            raise InferenceError(f"gRPC status {self._status}: {self._message or '(no message)'}")
        if not self._received:
            raise InferenceError("the gRPC response has no message")
        return b"".join(parts)[5:] if parts is not None else None

    def _handle(self, kind: int, flags: int, on: int, payload: memoryview, *, stream: int, parts: list | None) -> bool:
        """Act on one frame; True when it ends ``stream``."""
        if kind == _DATA:
            return self._on_data(flags, payload, parts)
        if kind == _HEADERS:
            return self._on_headers(flags, payload)
        if kind == _SETTINGS:
            if not flags & _ACK:
                self._on_settings(payload)
        elif kind == _PING:
            if not flags & _ACK:
                self._socket.sendall(_frame(_PING, _ACK, 0, bytes(payload)))
        elif kind == _WINDOW_UPDATE:
            (increment,) = struct.unpack_from(">I", payload)
            if on == 0:
                self._send_window += increment
            elif on in self._stream_windows:
                self._stream_windows[on] += increment
        elif kind == _RST_STREAM and on == stream:
            (code,) = struct.unpack_from(">I", payload)
            raise InferenceError(f"HTTP/2 stream reset by the server (error code {code})")
        elif kind == _GOAWAY:
            debug = bytes(payload[8:]).decode(errors="replace")
            raise ConnectionError(f"the server closed the HTTP/2 connection (GOAWAY {debug})".strip())
        return False

    def _on_data(self, flags: int, payload: memoryview, parts: list | None) -> bool:
        """A DATA frame: kept (``parts``) and acknowledged to flow control in batches."""
        if flags & _PADDED:
            payload = payload[1 : len(payload) - payload[0]]
        size = len(payload)
        self._received += size
        if parts is not None:
            parts.append(bytes(payload))
        self._unacknowledged += size
        if self._unacknowledged > _WINDOW_MAX // 2:
            self._socket.sendall(_frame(_WINDOW_UPDATE, 0, 0, struct.pack(">I", self._unacknowledged)))
            self._unacknowledged = 0
        return bool(flags & _END_STREAM)

    def _on_headers(self, flags: int, payload: memoryview) -> bool:
        """A header block (with its CONTINUATION frames): the gRPC status and message."""
        block = bytes(payload)
        if flags & _PADDED:
            block = block[1 : len(block) - block[0]]
        if flags & _PRIORITY:
            block = block[5:]
        while not flags & _END_HEADERS:
            kind, flags, _, more = self._read_frame()
            if kind != _CONTINUATION:
                raise ConnectionError("HTTP/2: a header block was interrupted")
            block += bytes(more)
        for name, value in self._decoder.decode(block, raw=True):
            if name == b"grpc-status":
                self._status = value.decode()
            elif name == b"grpc-message":
                self._message = value.decode(errors="replace")
        return bool(flags & _END_STREAM)

    def _on_settings(self, payload: memoryview) -> None:
        """The peer's SETTINGS: window and frame sizes honoured, then acknowledged."""
        for offset in range(0, len(payload) - 5, 6):
            key, value = struct.unpack_from(">HI", payload, offset)
            if key == _SETTING_INITIAL_WINDOW:
                change = value - self._peer_initial_window
                self._stream_windows = {s: w + change for s, w in self._stream_windows.items()}
                self._peer_initial_window = value
            elif key == _SETTING_MAX_FRAME:
                self._peer_max_frame = value
        self._socket.sendall(_frame(_SETTINGS, _ACK, 0))

    def _read_frame(self) -> tuple[int, int, int, memoryview]:
        self._fill(9)
        high, low, kind, flags, stream = _FRAME.unpack_from(self._buffer, self._start)
        length = (high << 8) | low
        self._fill(9 + length)
        start = self._start + 9
        self._start = start + length
        return kind, flags, stream & 0x7FFFFFFF, self._view[start : start + length]

    def _fill(self, size: int) -> None:
        """Have at least ``size`` unread bytes in the buffer."""
        if self._end - self._start >= size:
            return
        if self._start:  # move the unread bytes to the front
            pending = self._end - self._start
            self._buffer[:pending] = self._buffer[self._start : self._end]
            self._start, self._end = 0, pending
        if size > len(self._buffer):  # a new buffer: views of the old one may still be alive
            larger = bytearray(max(size, 2 * len(self._buffer)))
            larger[: self._end] = self._buffer[: self._end]
            self._buffer, self._view = larger, memoryview(larger)
        while self._end < size:
            got = self._socket.recv_into(self._view[self._end :])
            if not got:
                raise ConnectionError("the server closed the connection")
            self._end += got
