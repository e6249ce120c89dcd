"""The load generator on a real server, over both protocols."""

from __future__ import annotations

import numpy as np
import pytest

from sweeper.load import measure
from sweeper.spec import LoadSpec, TrialConfig
from tests.test_launchers import make_repository

QUICK = LoadSpec(concurrency=[1], warmup_s=0.3, window_s=0.5, stability_tolerance=0.5, max_windows=4)
X = {"x": np.random.default_rng(0).random((1, 16), dtype=np.float32)}


def _serve(launcher, folder, model, config: TrialConfig):
    repository = make_repository(folder / "repo", model, config)
    with launcher.start(repository, "mlp", folder / "server.log", {}) as running:
        yield running


@pytest.fixture(scope="module")
def server(local_launcher, tmp_path_factory, mlp_onnx):
    yield from _serve(local_launcher, tmp_path_factory.mktemp("load"), mlp_onnx, TrialConfig(8, 0, 1, "http", "fp32"))


@pytest.fixture(scope="module")
def delayed_server(local_launcher, tmp_path_factory, mlp_onnx):
    """Dynamic batching with a 50 ms max queue delay."""
    config = TrialConfig(8, 50_000, 1, "http", "fp32")
    yield from _serve(local_launcher, tmp_path_factory.mktemp("delayed"), mlp_onnx, config)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("concurrency", [1, 4])
def test_measurement_is_consistent(server, protocol, concurrency):
    m = measure(server.endpoints, protocol, "mlp", X, ["y"], concurrency, QUICK)
    assert m.concurrency == concurrency
    assert 0 < m.p50_ms <= m.p90_ms <= m.p95_ms <= m.p99_ms
    assert m.throughput > 0
    assert m.requests >= 10
    assert 1 <= m.windows <= QUICK.max_windows
    # The server saw the load: compute time is measured and fits inside the client latency.
    assert 0 < m.compute_infer_ms < m.mean_ms
    assert 0 < m.server_ms < m.mean_ms
    assert m.avg_batch_size >= 1
    assert m.client_cpu > 0


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_queue_delay_shows_up_as_queue_time(delayed_server, protocol):
    """A 50 ms max queue delay at concurrency 1: every request waits it out in the queue."""
    m = measure(delayed_server.endpoints, protocol, "mlp", X, ["y"], 1, QUICK)
    assert m.p50_ms >= 45
    assert m.queue_ms >= 40
    assert m.queue_ms > 10 * m.compute_infer_ms
    assert m.avg_batch_size == pytest.approx(1.0)


def test_batching_groups_concurrent_requests(delayed_server):
    m = measure(delayed_server.endpoints, "grpc", "mlp", X, ["y"], 8, QUICK)
    assert m.avg_batch_size > 4


def test_served_outputs_match_the_model_in_requests_of_max_batch_size(server, mlp_onnx):
    import onnxruntime as ort

    from sweeper.load import served_outputs

    feed = {"x": np.random.default_rng(3).random((20, 16), dtype=np.float32)}
    (produced,) = served_outputs(server.endpoints, "mlp", feed, ["y"], max_batch_size=8)
    expected = ort.InferenceSession(str(mlp_onnx), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    assert produced.shape == (20, 4)
    np.testing.assert_allclose(produced, expected, rtol=1e-5, atol=1e-6)


def test_http_load_asks_for_uncompressed_responses(server):
    """aiohttp asks for gzip by default and Triton then compresses every response (a 28.8 MB
    output cost ~0.9 s per request): the load generator must ask for plain bytes. A real
    pass-through proxy in front of the real server records what the client asked for."""
    import asyncio
    import threading

    import aiohttp
    from aiohttp import web

    from sweeper.launchers import Endpoints
    from sweeper.launchers._base import free_port

    asked: list[str | None] = []

    async def forward(request: web.Request) -> web.Response:
        if request.path.endswith("/infer"):
            asked.append(request.headers.get("Accept-Encoding"))
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with aiohttp.ClientSession(auto_decompress=False) as session:
            async with session.request(request.method, f"http://{server.endpoints.http}{request.path_qs}",
                                       data=await request.read(), headers=headers) as upstream:
                body = await upstream.read()
                passed = {k: v for k, v in upstream.headers.items() if k.lower() not in ("content-length", "transfer-encoding")}
                return web.Response(body=body, status=upstream.status, headers=passed)

    port = free_port("127.0.0.1")
    ready = threading.Event()
    loop = asyncio.new_event_loop()

    async def serve() -> web.AppRunner:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", forward)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return runner

    runner = loop.run_until_complete(serve())
    thread = threading.Thread(target=lambda: (ready.set(), loop.run_forever()), daemon=True)
    thread.start()
    ready.wait()
    try:
        proxied = Endpoints(http=f"127.0.0.1:{port}", grpc=server.endpoints.grpc, metrics=server.endpoints.metrics)
        m = measure(proxied, "http", "mlp", X, ["y"], 1, QUICK)
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
    assert m.requests > 0 and asked
    assert set(asked) == {"identity"}
