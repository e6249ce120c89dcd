"""One connection of the built-in client (HTTP/1.1 or HTTP/2 gRPC), one request on its own, and a
failed request in words."""

from __future__ import annotations

from sweeper.launchers import Endpoints
from sweeper.load._grpc import GrpcConnection
from sweeper.load._http import HttpConnection
from sweeper.load._wire import InferenceError, grpc_outputs, http_outputs


def connect(protocol: str, endpoints: Endpoints, timeout_s: float) -> HttpConnection | GrpcConnection:
    """A connection for one worker."""
    if protocol == "grpc":
        return GrpcConnection(endpoints.grpc, timeout_s)
    return HttpConnection(endpoints.http, timeout_s)


def send_once(
    protocol: str, endpoints: Endpoints, request: bytes, timeout_s: float
) -> list[tuple[str, str, list[int], int]]:
    """One request on a fresh connection; the outputs its response describes."""
    connection = connect(protocol, endpoints, timeout_s)
    try:
        if protocol == "grpc":
            return grpc_outputs(connection.call(request, keep=True))
        start, length, header = connection.infer(request)
        return http_outputs(connection.body(start, length), header)
    finally:
        connection.close()


def describe_failure(failure: BaseException, timeout_s: float) -> str:
    """A failed request in words (a timeout names the spec's setting)."""
    if isinstance(failure, TimeoutError):
        return f"no response within load.request_timeout_s ({timeout_s:g} s)"
    if isinstance(failure, InferenceError):
        return str(failure)
    return f"{type(failure).__name__}: {failure}"
