"""The built-in gRPC client (its own HTTP/2 framing, ``sweeper/load/_grpc.py``) where HTTP/2 gets
hard: requests of megabytes (flow control: the request waits for the server's WINDOW_UPDATEs),
an error reply while a request is still being sent, the server going away, and a peer that
changes its SETTINGS or splits a header block into CONTINUATION frames (tests/unit/
test_grpc_framing.py: Triton cannot be made to do those on demand)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from tritonclient.grpc import service_pb2

from sweeper.load._grpc import GrpcConnection
from sweeper.load._wire import InferenceError, grpc_message
from sweeper.tensors import TensorSpec
from tests.repositories import unbatched_python_repository


@pytest.fixture(scope="module")
def doubler(local_launcher, tmp_path_factory):
    """A python-backend model that doubles an FP32 vector of any length, on a real server."""
    folder = tmp_path_factory.mktemp("grpc-client")
    repository = unbatched_python_repository(folder / "repo", length=-1).parent
    with local_launcher.start(repository, folder / "server.log", {}, model_name="doubler") as server:
        yield server


def _request(values: np.ndarray) -> bytes:
    return grpc_message("doubler", [TensorSpec("x", "FP32", (len(values),))], {"x": values}, ["y"])


def _doubled(connection: GrpcConnection, values: np.ndarray) -> np.ndarray:
    response = service_pb2.ModelInferResponse()
    response.ParseFromString(connection.call(_request(values), keep=True))
    return np.frombuffer(response.raw_output_contents[0], dtype=np.float32)


@pytest.mark.parametrize("megabytes", [1, 8])
def test_a_request_of_megabytes_gets_the_right_answer(doubler, megabytes):
    """1 MB and 8 MB requests are many times the 16 KiB frame and the 64 KiB initial window."""
    values = np.random.default_rng(megabytes).random(megabytes * 2**18, dtype=np.float32)
    connection = GrpcConnection(doubler.endpoints.grpc, timeout_s=60)
    try:
        for _ in range(2):  # the windows are replenished for the next call on the same connection
            np.testing.assert_array_equal(_doubled(connection, values), values * 2)
    finally:
        connection.close()


def test_an_error_reply_while_the_request_is_being_sent_ends_the_call_at_once(doubler):
    """The server answers a method it does not have as soon as it reads the headers (status 12,
    UNIMPLEMENTED), while 8 MB are still waiting for flow control: the call returns that answer
    instead of waiting out its timeout for window the server will never give, and the connection
    serves the next call."""
    values = np.ones(2 * 2**20, dtype=np.float32)
    wrong = GrpcConnection(doubler.endpoints.grpc, timeout_s=30, method="/inference.GRPCInferenceService/NoSuchCall")
    try:
        started = time.perf_counter()
        with pytest.raises(InferenceError, match="gRPC status 12"):
            wrong.call(_request(values), keep=True)
        assert time.perf_counter() - started < 5
    finally:
        wrong.close()
    connection = GrpcConnection(doubler.endpoints.grpc, timeout_s=30)
    try:
        np.testing.assert_array_equal(_doubled(connection, values[:16]), values[:16] * 2)
    finally:
        connection.close()


def test_a_server_that_goes_away_is_a_connection_error_not_a_hang(local_launcher, tmp_path):
    """--grpc-max-connection-age: the server sends GOAWAY and closes a connection older than
    that; the next call on it fails at once with a connection error (the load generator's
    worker fails the level with it) rather than waiting."""
    repository = unbatched_python_repository(tmp_path / "repo", length=-1).parent
    options = ["--grpc-max-connection-age=500", "--grpc-max-connection-age-grace=100"]
    with local_launcher.start(repository, tmp_path / "server.log", {}, model_name="doubler", options=options) as server:
        connection = GrpcConnection(server.endpoints.grpc, timeout_s=30)
        try:
            values = np.arange(16, dtype=np.float32)
            np.testing.assert_array_equal(_doubled(connection, values), values * 2)
            time.sleep(1.5)
            started = time.perf_counter()
            with pytest.raises(ConnectionError, match="GOAWAY|closed the connection"):
                _doubled(connection, values)
            assert time.perf_counter() - started < 5
        finally:
            connection.close()
