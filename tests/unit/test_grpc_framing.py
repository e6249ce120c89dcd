"""The built-in gRPC client against a peer that does what Triton cannot be made to do on demand:
change its SETTINGS in mid-connection (a smaller window and frame size for the next request) and
split a response's header block into CONTINUATION frames. The peer is a mock written here, raw
frames over a real socket, because no real server produces these faults when asked; the real
server's side (megabyte requests, an error reply mid-request, GOAWAY) is
tests/integration/test_grpc_client.py."""

from __future__ import annotations

import socket
import struct
import threading

import hpack
from tritonclient.grpc import service_pb2

from sweeper.load._grpc import GrpcConnection

FRAME = struct.Struct(">I")  # length (24 bits after dropping the first byte), type, flags, stream


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return FRAME.pack(len(payload))[1:] + bytes([kind, flags]) + FRAME.pack(stream) + payload


def _read(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("client closed")
        data += chunk
    return data


def _peer(listener: socket.socket, seen: dict) -> None:
    """Answer two unary calls. Before answering the first, lower the initial window to 4096 and
    the frame size to 16384, and from then on grant window only as DATA arrives; the second
    call's response headers come as HEADERS + CONTINUATION + CONTINUATION."""
    sock, _ = listener.accept()
    encoder = hpack.Encoder()
    _read(sock, 24)  # the client's preface
    sock.sendall(_frame(4, 0, 0))  # our (empty) SETTINGS
    calls, bodies = 0, {}
    while calls < 2:
        header = _read(sock, 9)
        length = int.from_bytes(header[:3], "big")
        kind, flags, stream = header[3], header[4], FRAME.unpack(header[5:])[0] & 0x7FFFFFFF
        payload = _read(sock, length)
        if kind == 4 and flags & 1:
            seen["settings_acks"] = seen.get("settings_acks", 0) + 1
        elif kind == 4:
            sock.sendall(_frame(4, 1, 0))
        elif kind == 0:
            bodies[stream] = bodies.get(stream, b"") + payload
            if calls == 1:
                seen.setdefault("frames_after_change", []).append(length)
                sock.sendall(_frame(8, 0, 0, FRAME.pack(length)) + _frame(8, 0, stream, FRAME.pack(length)))
            if flags & 1:  # END_STREAM: the request is whole
                calls += 1
                seen.setdefault("requests", []).append(len(bodies[stream]))
                if calls == 1:  # the change arrives before the answer: the client reads it first
                    sock.sendall(_frame(4, 0, 0, struct.pack(">HIHI", 0x4, 4096, 0x5, 16384)))
                _respond(sock, encoder, stream, split=calls == 2)
    sock.shutdown(socket.SHUT_WR)  # then read what the client still sends, so closing resets nothing
    while sock.recv(65536):
        pass
    sock.close()


def _respond(sock: socket.socket, encoder: hpack.Encoder, stream: int, split: bool) -> None:
    message = service_pb2.ModelInferResponse(model_name="peer", id=str(stream)).SerializeToString()
    block = encoder.encode([(":status", "200"), ("content-type", "application/grpc")])
    if split:
        block += encoder.encode([(f"x-padding-{i}", "v" * 40) for i in range(6)])
        third = len(block) // 3
        sock.sendall(
            _frame(1, 0, stream, block[:third])
            + _frame(9, 0, stream, block[third : 2 * third])
            + _frame(9, 0x4, stream, block[2 * third :])
        )
    else:
        sock.sendall(_frame(1, 0x4, stream, block))
    data = b"\x00" + FRAME.pack(len(message)) + message
    trailers = encoder.encode([("grpc-status", "0")])
    sock.sendall(_frame(0, 0, stream, data) + _frame(1, 0x4 | 0x1, stream, trailers))


def test_a_settings_change_and_a_split_header_block_are_honoured():
    listener = socket.create_server(("127.0.0.1", 0))
    seen: dict = {}
    peer = threading.Thread(target=_peer, args=(listener, seen), daemon=True)
    peer.start()
    connection = GrpcConnection(f"127.0.0.1:{listener.getsockname()[1]}", timeout_s=10)
    try:
        first = service_pb2.ModelInferResponse()
        first.ParseFromString(connection.call(b"\x00\x00\x00\x00\x04abcd", keep=True))
        request = b"\x00" + FRAME.pack(20_000) + b"x" * 20_000  # five times the new window
        second = service_pb2.ModelInferResponse()
        second.ParseFromString(connection.call(request, keep=True))
    finally:
        connection.close()
        peer.join(timeout=10)
        listener.close()
    assert (first.id, second.id) == ("1", "3"), "each answer read whole, the split header block decoded"
    assert seen["requests"] == [9, 20_005], "the whole request arrived"
    assert seen.get("settings_acks", 0) >= 2, "our SETTINGS and the change were acknowledged"
    assert max(seen["frames_after_change"]) <= 4096, "no frame beyond the window the peer gave"
