"""One suite for every load generator (the built-in client, HTTP/1.1 and HTTP/2 of its own, and the
real perf_analyzer) against the real server, over both protocols: consistent figures, batching,
queue time and the output check; then what each has of its own (faults, finding perf_analyzer)."""

from __future__ import annotations

import os
import signal
import statistics
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from sweeper.data import generate_samples
from sweeper.errors import TrialError
from sweeper.load import (
    BuiltinGenerator,
    CapacityTarget,
    PerfAnalyzerGenerator,
    PerfAnalyzerUnavailable,
    Workload,
    choose_generator,
    find_perf_analyzer,
    served_outputs,
)
from sweeper.spec import CapacitySearchSpec, LoadSpec, PerfAnalyzerImageSpec
from sweeper.tensors import TensorSpec
from sweeper.vocabulary import Level, TrialConfig
from tests.integration.conftest import keep
from tests.repositories import make_repository, unbatched_python_repository

QUICK_SPEC = LoadSpec(concurrency=[1], warmup_s=0.2, window_s=0.4, stability_tolerance=1.0, max_windows=3)
QUICK = QUICK_SPEC.settings
INPUTS = (TensorSpec("x", "FP32", (16,)),)
OUTPUTS = (TensorSpec("y", "FP32", (4,)),)
WORKLOAD = Workload("mlp", INPUTS, OUTPUTS, generate_samples(list(INPUTS), 8, low=0, high=1, seed=0), 1, True)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:  # the process ended
        return b""


def _serve(launcher, folder: Path, model: Path, config: TrialConfig):
    repository = make_repository(folder / "repo", model, config)
    server = launcher.start(repository, folder / "server.log", {}, model_name="mlp", complete_config=True)
    keep(server)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def server(local_launcher, tmp_path_factory, mlp_file):
    """Batching off: every request alone."""
    yield from _serve(
        local_launcher, tmp_path_factory.mktemp("load"), mlp_file, TrialConfig(8, "off", 1, "http", "fp32")
    )


@pytest.fixture(scope="module")
def batching_server(local_launcher, tmp_path_factory, mlp_file):
    """dynamic_batching { } (delay 0): batches what is queued, waits for nothing."""
    yield from _serve(local_launcher, tmp_path_factory.mktemp("zero"), mlp_file, TrialConfig(8, 0, 1, "http", "fp32"))


@pytest.fixture(scope="module")
def delayed_server(local_launcher, tmp_path_factory, mlp_file):
    """Dynamic batching with a 50 ms max queue delay."""
    yield from _serve(
        local_launcher, tmp_path_factory.mktemp("delayed"), mlp_file, TrialConfig(8, 50_000, 1, "http", "fp32")
    )


@pytest.fixture(scope="module")
def perf_analyzer():
    return PerfAnalyzerGenerator(find_perf_analyzer(None))


BUILTIN = BuiltinGenerator()


@pytest.fixture(params=["builtin", "perf_analyzer"])
def generator(request):
    """Every load generator, for the shared suite."""
    return BUILTIN if request.param == "builtin" else request.getfixturevalue("perf_analyzer")


def _consistent(m, concurrency: int, generator: str) -> None:
    assert m.concurrency == concurrency and m.generator == generator
    assert 0 < m.p50_ms <= m.p90_ms <= m.p95_ms <= m.p99_ms
    assert m.throughput > 0 and m.requests >= 10 and 1 <= m.windows <= QUICK.max_windows
    assert 0 < m.compute_infer_ms < m.mean_ms, "the server saw the load; its compute fits in the latency"
    assert 0 < m.server_ms < m.mean_ms
    assert m.avg_batch_size == pytest.approx(1.0), "batching off: every request runs alone"
    assert m.client_cpu > 0


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_measurement_is_consistent(server, generator, protocol):
    _consistent(generator.measure(server.endpoints, protocol, WORKLOAD, 2, QUICK), 2, generator.name)


@pytest.mark.parametrize("concurrency", [1, 4])
def test_builtin_measurement_is_consistent_alone_and_under_load(server, concurrency):
    _consistent(BUILTIN.measure(server.endpoints, "grpc", WORKLOAD, concurrency, QUICK), concurrency, "builtin")


def test_each_generator_says_what_it_is(generator, perf_analyzer):
    info = generator.info
    assert info.name == generator.name
    if generator is perf_analyzer:
        assert info.version and "commit" in info.version, "perf_analyzer's own --version"
        assert generator.describe().startswith("perf_analyzer (")
    else:
        assert info.version and info.version[0].isdigit(), "the sweeper's package version"


def test_zero_delay_batches_and_off_does_not(server, batching_server, generator):
    batched = generator.measure(batching_server.endpoints, "grpc", WORKLOAD, 6, QUICK)
    alone = generator.measure(server.endpoints, "grpc", WORKLOAD, 6, QUICK)
    assert batched.avg_batch_size > 1.2
    assert alone.avg_batch_size == pytest.approx(1.0)


def test_queue_delay_shows_up_as_queue_time(delayed_server, generator):
    """A 50 ms max queue delay at concurrency 1: every request waits it out in the queue."""
    m = generator.measure(delayed_server.endpoints, "http", WORKLOAD, 1, QUICK)
    assert m.p50_ms >= 45 and m.queue_ms >= 40 and m.queue_ms > 10 * m.compute_infer_ms
    assert m.avg_batch_size == pytest.approx(1.0)


@pytest.mark.parametrize("arrival", ["constant", "poisson"])
def test_a_request_rate_is_kept_on_schedule_below_capacity(server, generator, arrival):
    m = generator.measure(server.endpoints, "http", WORKLOAD, Level(request_rate=100, arrival=arrival), QUICK)
    assert m.concurrency is None and m.request_rate == 100 and m.arrival == arrival and m.level == "r100"
    assert m.throughput == pytest.approx(100, rel=0.3), "an open loop sends at its rate, not as fast as it can"
    assert not m.behind_schedule and not m.client_bound
    if m.send_rate is not None:  # perf_analyzer prints its send rate only when it falls behind
        assert m.send_rate == pytest.approx(100, rel=0.3)


def test_above_capacity_a_request_rate_queues_and_falls_behind(server, generator):
    """An open loop does not wait for responses: past the server's capacity the queue, and p99
    with it, grows beyond what a closed loop of 8 requests in flight ever sees; a schedule the
    generator cannot keep is flagged."""
    closed = generator.measure(server.endpoints, "grpc", WORKLOAD, 8, QUICK)
    flooded = generator.measure(server.endpoints, "grpc", WORKLOAD, Level(request_rate=40_000), QUICK)
    assert flooded.p99_ms > 3 * closed.p99_ms, (flooded.p99_ms, closed.p99_ms)
    assert flooded.throughput < 0.9 * 40_000
    assert flooded.behind_schedule and flooded.client_bound


@pytest.mark.parametrize("generator", ["perf_analyzer"], indirect=True)
def test_capacity_is_the_highest_load_within_the_budget(server, generator):
    """Grow then bisect over concurrency 1..8; every load tried is a measurement; the answer is
    within the budget and one resolution step below a load that broke it (or the upper bound).
    One generator: the search is the family's base class over ``measure`` (whose generators the
    tests above hold to the same figures)."""
    level_1 = generator.measure(server.endpoints, "grpc", WORKLOAD, 1, QUICK)
    budget = round(level_1.p99_ms * 2.5, 3)
    search = QUICK_SPEC.model_copy(update={"capacity": CapacitySearchSpec(low=1, high=8, resolution=1)}).settings
    target = CapacityTarget(f"capacity@p99_ms<={budget:g}", "p99_ms", budget)
    measurements, (capacity,) = generator.measure_trial(server.endpoints, "grpc", WORKLOAD, search, [target])
    by_load = {m.concurrency: m for m in measurements if m.retake is None}
    retakes = [m for m in measurements if m.retake is not None]
    assert set(capacity.tried) <= set(by_load) and capacity.tried[0] == 1
    assert all(by_load[load].search == target.column for load in capacity.tried if load != 1), "c1 is listed"
    # Where most measurements of the load found broke the budget, the capacity is read below it.
    stepped_down = "broke it in" in (capacity.note or "")
    if capacity.load == 0:
        assert stepped_down or (by_load[1].p99_ms > budget and "no load tried meets it" in capacity.note)
        return
    found = by_load[capacity.load]
    takes = [found, *(m for m in retakes if m.concurrency == capacity.load)]
    assert [m.retake for m in takes[1:]] == [1, 2] and all(m.search == target.column for m in retakes)
    assert found.p99_ms <= budget and capacity.throughput == statistics.median(m.throughput for m in takes), (
        "the figure is the median of the load's three measurements"
    )
    above = [load for load in capacity.tried if load > capacity.load]
    if capacity.load < 8:
        assert stepped_down or (min(above) - capacity.load <= 1 and by_load[min(above)].p99_ms > budget)
    else:
        assert "at least this" in capacity.note


def test_a_budget_no_load_meets_and_one_every_load_meets(server):
    search = QUICK_SPEC.model_copy(update={"capacity": CapacitySearchSpec(low=1, high=4, resolution=1)}).settings
    never = CapacityTarget("capacity@p50_ms<=0.001", "p50_ms", 0.001)
    always = CapacityTarget("capacity@p99_ms<=10000", "p99_ms", 10_000)
    _, (none, bounded) = BUILTIN.measure_trial(server.endpoints, "http", WORKLOAD, search, [never, always])
    assert (none.load, none.throughput, none.tried) == (0, 0, (1,))
    assert "over the budget of 0.001 ms: no load tried meets it" in none.note
    assert bounded.load == 4 and bounded.tried == (1, 2, 4) and "at least this" in bounded.note


def test_capacity_over_request_rates(server):
    rates = LoadSpec(
        mode="request_rate",
        request_rates=[50],
        warmup_s=0.2,
        window_s=0.4,
        stability_tolerance=1.0,
        max_windows=3,
        capacity=CapacitySearchSpec(low=50, high=400, resolution=50),
    ).settings
    always = CapacityTarget("capacity@p99_ms<=10000", "p99_ms", 10_000)
    measurements, (capacity,) = BUILTIN.measure_trial(server.endpoints, "http", WORKLOAD, rates, [always])
    assert capacity.tried == (50, 100, 200, 400) and capacity.load == 400
    assert capacity.throughput == pytest.approx(400, rel=0.3)
    assert [(m.level, m.retake) for m in measurements] == [
        ("r50", None),
        ("r100", None),
        ("r200", None),
        ("r400", None),
        ("r400", 1),
        ("r400", 2),
    ]


def test_an_unstable_perf_analyzer_measurement_is_kept_and_marked(server, perf_analyzer):
    strict = LoadSpec(concurrency=[1], warmup_s=0.1, window_s=0.3, stability_tolerance=0.0001, max_windows=3).settings
    m = perf_analyzer.measure(server.endpoints, "http", WORKLOAD, 1, strict)
    assert not m.stable and m.windows == 3
    assert m.p50_ms > 0 and m.throughput > 0 and m.requests > 0


def test_a_request_longer_than_the_window_is_measured(local_launcher, tmp_path, generator):
    """A 0.35 s request and 0.15 s windows: perf_analyzer records no request in most windows
    ("No valid requests recorded", exit 3) and is run again with longer windows."""
    repository = unbatched_python_repository(tmp_path / "repo", seconds_per_request=0.35).parent
    workload = Workload("doubler", INPUTS, (TensorSpec("y", "FP32", (16,)),), WORKLOAD.samples, 1, False)
    load = LoadSpec(concurrency=[1], warmup_s=0.1, window_s=0.15, stability_tolerance=1.0, max_windows=3).settings
    with local_launcher.start(repository, tmp_path / "server.log", {}, model_name="doubler") as server:
        m = generator.measure(server.endpoints, "http", workload, 1, load)
    assert m.p50_ms == pytest.approx(350, rel=0.15) and m.requests >= 2


def test_a_server_that_dies_mid_run_fails_with_perf_analyzers_words(local_launcher, tmp_path, mlp_file, perf_analyzer):
    repository = make_repository(tmp_path / "repo", mlp_file, TrialConfig(8, "off", 1, "http", "fp32"))
    server = local_launcher.start(repository, tmp_path / "server.log", {}, model_name="mlp")
    try:
        long = LoadSpec(concurrency=[1], warmup_s=0.1, window_s=2, stability_tolerance=0.0001, max_windows=10).settings
        threading.Timer(2.0, server.stop).start()
        with pytest.raises(TrialError) as failure:
            perf_analyzer.measure(server.endpoints, "http", WORKLOAD, 1, long)
        assert "perf_analyzer failed (exit status" in str(failure.value)
        assert "Failed to" in str(failure.value) or "failed" in str(failure.value).split(":", 1)[1]
    finally:
        server.stop()


def test_perf_analyzer_stopped_at_its_memory_limit_hands_its_loads_to_the_builtin_client(
    local_launcher, tmp_path, perf_analyzer
):
    """perf_analyzer keeps every response (1.2 MB each here: 12 GB after 600 requests of 4 MB on
    this machine): held to load.client_memory_mb, it is stopped, never the host's out-of-memory
    killer; its loads from there are measured by the built-in client, said in the row and in the
    capacity's note; each row says what the client read."""
    length = 300_000
    repository = unbatched_python_repository(tmp_path / "repo", length=length).parent
    inputs, outputs = (TensorSpec("x", "FP32", (length,)),), (TensorSpec("y", "FP32", (length,)),)
    workload = Workload("doubler", inputs, outputs, generate_samples(list(inputs), 1, low=0, high=1, seed=0), 1, False)
    load = LoadSpec(
        concurrency=[1],
        warmup_s=0.1,
        window_s=0.5,
        stability_tolerance=1.0,
        max_windows=3,
        client_memory_mb=120,
        capacity=CapacitySearchSpec(low=1, high=4, resolution=1),
    ).settings
    target = CapacityTarget("capacity@p99_ms<=60000", "p99_ms", 60_000)
    with local_launcher.start(repository, tmp_path / "server.log", {}, model_name="doubler") as server:
        measurements, (capacity,) = perf_analyzer.measure_trial(server.endpoints, "http", workload, load, [target])
    handed = [m for m in measurements if m.note is not None]
    assert handed, "perf_analyzer holds more than 120 MB within a few hundred responses of 1.2 MB"
    assert all(m.generator == "builtin" and "over its memory limit of 120 MB" in m.note for m in handed[:1])
    assert all(m.generator == "builtin" and "memory limit" in m.note for m in handed)
    assert capacity.load == 4 and "memory limit" in capacity.note, "the generator's bound, said"
    assert all(m.response_bytes == 4 * length and m.response_mb_s > 0 for m in measurements)
    running = [p for p in Path("/proc").glob("[0-9]*/comm") if _read(p).strip() == b"perf_analyzer"]
    assert not running, "no perf_analyzer is left running"


def test_a_load_perf_analyzer_fails_on_its_own_is_measured_by_the_builtin_client(server, tmp_path):
    """perf_analyzer exits 99 ("failed to find the requested model version", as it did at
    concurrency 32 of a GPT-2 here) while the server serves on: the load is the builtin client's,
    said in its note, not the configuration's failure. A stand-in script plays perf_analyzer:
    its failure under a GPT-2's load cannot be produced on demand."""
    from sweeper.load import PerfAnalyzer

    script = tmp_path / "perf_analyzer"
    script.write_text(
        "#!/bin/sh\necho 'Request concurrency: 2'\necho 'failed to find the requested model version'\nexit 99\n"
    )
    script.chmod(0o755)
    failing = PerfAnalyzerGenerator(PerfAnalyzer((str(script),), str(script)))
    m = failing.measure(server.endpoints, "http", WORKLOAD, 2, QUICK)
    assert m.generator == "builtin" and m.throughput > 0 and m.concurrency == 2
    assert "perf_analyzer failed (exit status 99)" in m.note and "failed to find the requested model version" in m.note
    assert "measured by the built-in client instead" in m.note


def test_a_missing_or_unrunnable_perf_analyzer_is_one_line_and_auto_falls_back(tmp_path):
    with pytest.raises(PerfAnalyzerUnavailable, match="'/nonexistent/perf_analyzer' is not a file") as missing:
        find_perf_analyzer("/nonexistent/perf_analyzer")
    assert "install-perf-analyzer.sh" in missing.value.hint
    # The wheel's binary run as it is on this host (glibc 2.36): the real "does not run here".
    raw = (
        Path(next(iter(find_perf_analyzer(None).command))).parent.parent
        / "lib"
        / "perf_analyzer"
        / "bin"
        / "perf_analyzer"
    )
    if raw.is_file():  # the trixie-runtime install; on a glibc >= 2.38 host the binary runs as it is
        with pytest.raises(PerfAnalyzerUnavailable, match="does not run here: .*GLIBC_2.38"):
            find_perf_analyzer(str(raw))
    fallback = choose_generator("auto", "/nonexistent/perf_analyzer")
    assert isinstance(fallback, BuiltinGenerator) and "no runnable perf_analyzer" in fallback.describe()
    assert isinstance(choose_generator("auto", None), PerfAnalyzerGenerator)
    with pytest.raises(PerfAnalyzerUnavailable):
        choose_generator("perf_analyzer", "/nonexistent/perf_analyzer")


def test_a_too_old_perf_analyzer_is_refused(tmp_path):
    """A stand-in: no older perf_analyzer can be had here, so a script answers as one would,
    with a usage that lacks options the sweeper passes."""
    old = tmp_path / "perf_analyzer"
    old.write_text(
        '#!/bin/sh\nif [ "$1" = --version ]; then echo "Perf Analyzer Version 1.2"; '
        'else echo "Usage: -m <model> -u <url> --concurrency-range --input-data"; fi\n'
    )
    old.chmod(0o755)
    with pytest.raises(PerfAnalyzerUnavailable, match="is too old: it lacks --measurement-interval"):
        find_perf_analyzer(str(old))


def test_perf_analyzer_from_a_container_image(server, docker_block):
    """perf_analyzer run through the Docker engine with the host network (the test image plays
    NVIDIA's -sdk image: the venv's perf_analyzer, mounted)."""
    venv = str(Path(next(iter(find_perf_analyzer(None).command))).parent.parent)
    image = PerfAnalyzerImageSpec(
        image=docker_block["docker"]["image"],
        command=[f"{venv}/bin/perf_analyzer"],
        volumes={"/usr": "/usr", venv: venv},
        pull="never",
    )
    analyzer = PerfAnalyzerGenerator(find_perf_analyzer(image.model_dump()))
    m = analyzer.measure(server.endpoints, "grpc", WORKLOAD, 1, QUICK)
    assert m.generator == "perf_analyzer" and m.p50_ms > 0 and m.requests > 0


def test_a_wrong_first_response_fails_instead_of_measuring(local_launcher, tmp_path, generator):
    """A python model whose output arrives empty (the numpy 2 trap looks like this)."""
    folder = tmp_path / "repo" / "empty"
    (folder / "1").mkdir(parents=True)
    (folder / "config.pbtxt").write_text(
        'name: "empty" backend: "python" max_batch_size: 8 '
        'input [{ name: "x" data_type: TYPE_FP32 dims: [16] }] output [{ name: "y" data_type: TYPE_FP32 dims: [4] }]'
    )
    (folder / "1" / "model.py").write_text(
        "import numpy as np\nimport triton_python_backend_utils as pb_utils\n"
        "class TritonPythonModel:\n"
        "    def execute(self, requests):\n"
        "        return [pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor('y', np.zeros((1, 0), np.float32))])"
        " for _ in requests]\n"
    )
    workload = Workload("empty", INPUTS, OUTPUTS, WORKLOAD.samples, 1, True)
    with local_launcher.start(tmp_path / "repo", tmp_path / "server.log", {}, model_name="empty") as server:
        for protocol in ("http", "grpc"):
            with pytest.raises(TrialError, match=f"the first {protocol} response is wrong: output 'y' has shape"):
                generator.measure(server.endpoints, protocol, workload, 1, QUICK)


def test_served_outputs_match_the_model(server, mlp_file):
    import onnxruntime as ort

    feeds = [{"x": np.random.default_rng(i).random((2, 16), dtype=np.float32)} for i in range(3)]
    produced = served_outputs(server.endpoints, WORKLOAD, feeds)
    assert len(produced) == len(feeds), "one answer per feed"
    session = ort.InferenceSession(str(mlp_file), providers=["CPUExecutionProvider"])
    for feed, (output,) in zip(feeds, produced):
        np.testing.assert_allclose(output, session.run(None, feed)[0], rtol=1e-5, atol=1e-6)


def test_request_timeout_is_a_clear_failure(delayed_server):
    impatient = LoadSpec(
        concurrency=[1], warmup_s=0.5, window_s=0.3, stability_tolerance=1.0, max_windows=3, request_timeout_s=0.01
    ).settings
    started = time.perf_counter()
    with pytest.raises(TrialError, match="no response within load.request_timeout_s"):
        BUILTIN.measure(delayed_server.endpoints, "http", WORKLOAD, 1, impatient)
    assert time.perf_counter() - started < 10


class _PausingGenerator(BuiltinGenerator):
    """The built-in generator, but the first measurement of concurrency ``at`` (``retakes``: every
    measurement of it taken after the search, without a warm-up) runs while the server's process
    group is stopped and continued in turns (SIGSTOP/SIGCONT, 60 ms each): a stall from outside
    the configuration, as a noisy neighbour makes one."""

    def __init__(self, group: int, at: int, retakes: bool = False) -> None:
        super().__init__()
        self._group, self._at, self._retakes, self.paused = group, at, retakes, 0

    def measure_level(self, endpoints, protocol, workload, requests, level, settings, tail=None):
        chosen = settings.warmup_s == 0 if self._retakes else not self.paused
        if level.concurrency != self._at or not chosen:
            return super().measure_level(endpoints, protocol, workload, requests, level, settings, tail)
        self.paused += 1
        done = threading.Event()

        def stall() -> None:
            while not done.wait(0.06):
                os.killpg(self._group, signal.SIGSTOP)
                try:
                    time.sleep(0.06)
                finally:
                    os.killpg(self._group, signal.SIGCONT)

        staller = threading.Thread(target=stall, daemon=True)
        staller.start()
        try:
            return super().measure_level(endpoints, protocol, workload, requests, level, settings, tail)
        finally:
            done.set()
            staller.join()
            os.killpg(self._group, signal.SIGCONT)


def test_an_outlier_load_is_measured_again_and_does_not_cap_the_capacity(server):
    """Concurrency 4 measured while the server stalls breaks a budget every load holds otherwise,
    at a fraction of concurrency 2's throughput: it is measured again before it may cap the
    search, both measurements are kept, and the capacity goes past it."""
    pausing = _PausingGenerator(server._process.pid, at=4)
    search = QUICK_SPEC.model_copy(update={"capacity": CapacitySearchSpec(low=1, high=8, resolution=1)}).settings
    target = CapacityTarget("capacity@p99_ms<=20", "p99_ms", 20.0)
    measurements, (capacity,) = pausing.measure_trial(server.endpoints, "http", WORKLOAD, search, [target])
    fours = [m for m in measurements if m.concurrency == 4]
    assert pausing.paused == 1 and len(fours) == 2, [(m.level, m.p99_ms, m.remeasured) for m in measurements]
    stalled, again = fours
    assert stalled.p99_ms > 20 and "fell 15% or more below that of concurrency" in stalled.remeasured
    assert again.remeasured is None and again.p99_ms <= 20 and again.verdict.startswith("within")
    assert capacity.load > 4, capacity
    assert stalled.intervals["p99_ms"][0] is not None, "the built-in generator keeps its samples: an interval"


def test_a_load_found_whose_retakes_break_the_budget_gives_way_to_the_load_below(server):
    """Concurrency 8 holds a 20 ms budget in the search, then the server stalls through both of
    its retakes: most of its measurements broke the budget, so it counts as over it and the
    search bisects again below it (from concurrency 4, the highest load held below) to the next
    load found, whose own retakes hold; every measurement is kept."""
    pausing = _PausingGenerator(server._process.pid, at=8, retakes=True)
    search = QUICK_SPEC.model_copy(update={"capacity": CapacitySearchSpec(low=1, high=8, resolution=1)}).settings
    target = CapacityTarget("capacity@p99_ms<=20", "p99_ms", 20.0)
    measurements, (capacity,) = pausing.measure_trial(server.endpoints, "http", WORKLOAD, search, [target])
    retakes = [(m.concurrency, m.retake, m.p99_ms > 20) for m in measurements if m.retake is not None]
    found = int(capacity.load)
    assert pausing.paused == 2 and 4 <= found < 8, (found, capacity.tried)
    assert retakes == [(8, 1, True), (8, 2, True), (found, 1, False), (found, 2, False)], retakes
    assert capacity.tried[:5] == (1, 2, 4, 8, 6), "after 8 was outvoted the search bisected again between 4 and 8"
    takes = [m.throughput for m in measurements if m.concurrency == found and m.remeasured is None]
    assert capacity.throughput == statistics.median(takes) and len(takes) == 3
    assert "concurrency 8 held the budget on the search's measurement but broke it in 2 of 3" in capacity.note
