"""Per-trial server overhead of each launcher: start (create to ready) and stop (to removed).

Runs N start/stop cycles of the same small model through the local launcher and the docker
launcher (the local test image, see docker/build-test-image.sh) and prints the medians.
Not a test: timings depend on the machine and are reported, never asserted.

    .venv/bin/python benchmarks/trial_overhead.py [--cycles 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.test_launchers import make_repository

from sweeper.launchers import DockerLauncher, LocalLauncher
from sweeper.spec import ServerSpec, TrialConfig
from tests.conftest import docker_server_block, make_mlp_onnx


def cycle(launcher, repository: Path, log: Path) -> tuple[float, float]:
    started = time.perf_counter()
    server = launcher.start(repository, "mlp", log, {"triton-sweeper.study": "overhead"})
    ready = time.perf_counter()
    server.stop()
    return ready - started, time.perf_counter() - ready


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cycles", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        model = make_mlp_onnx(work / "mlp.onnx")
        repository = make_repository(work / "repo", model, TrialConfig(8, 100, 1, "http", "fp32"))
        launchers = {
            "local": LocalLauncher(),
            "docker": DockerLauncher(ServerSpec.model_validate(docker_server_block())),
        }
        print(f"{'launcher':8} {'start to ready (s)':>20} {'stop to gone (s)':>18}   cycles={args.cycles}")
        for name, launcher in launchers.items():
            launcher.preflight()
            starts, stops = [], []
            for index in range(args.cycles):
                start, stop = cycle(launcher, repository, work / f"{name}-{index}.log")
                starts.append(start)
                stops.append(stop)
            print(
                f"{name:8} {statistics.median(starts):>20.2f} {statistics.median(stops):>18.2f}"
                f"   (min {min(starts):.2f}/{min(stops):.2f}, max {max(starts):.2f}/{max(stops):.2f})"
            )


if __name__ == "__main__":
    main()
