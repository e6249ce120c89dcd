"""Per-trial server overhead: what a trial pays before and after its measurement.

``restart`` (the default): start a server on the trial's repository until the model is ready,
and stop it (every process and its shared memory gone). ``reload``: one server in explicit
model control; load the trial's model (under a name of its own) until ready, and unload it.
Both for the local launcher and the docker launcher (the local test image,
docker/build-test-image.sh). Medians of N cycles; nothing is asserted.

    .venv/bin/python benchmarks/trial_overhead.py [--cycles 5] [--launchers local docker]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _models import demo_model

from sweeper.launchers import DockerLauncher, Launcher, LocalLauncher
from sweeper.repository import write_model
from sweeper.source import ModelSource
from sweeper.spec import ServerSpec
from sweeper.triton_config import apply_trial
from sweeper.vocabulary import TrialConfig

REPO = Path(__file__).resolve().parent.parent


def docker_launcher() -> DockerLauncher:
    """The docker launcher on the local test image (built if missing)."""
    venv = Path(sys.executable).parent.parent
    built = subprocess.run(
        ["bash", str(REPO / "docker" / "build-test-image.sh"), str(venv)], capture_output=True, text=True, check=True
    )
    return DockerLauncher.from_spec(ServerSpec.model_validate(yaml.safe_load(built.stdout)["server"]))


def _write(repository: Path, source: ModelSource, name: str, config: TrialConfig) -> None:
    model = apply_trial(source.template, config, serve_with="python")
    model.name = name
    write_model(repository, source, model, source.onnx_file)


def restart_cycles(launcher: Launcher, source: ModelSource, folder: Path, cycles: int) -> tuple[list, list]:
    starts, stops = [], []
    for index in range(cycles):
        repository = folder / f"restart-{index}"
        _write(repository, source, source.name, TrialConfig(8, 0, 1, "http", "fp32"))
        began = time.perf_counter()
        server = launcher.start(
            repository,
            folder / f"restart-{index}.log",
            {"triton-sweeper.study": "overhead"},
            model_name=source.name,
            complete_config=True,
        )
        ready = time.perf_counter()
        server.stop()
        starts.append(ready - began)
        stops.append(time.perf_counter() - ready)
    return starts, stops


def reload_cycles(launcher: Launcher, source: ModelSource, folder: Path, cycles: int) -> tuple[list, list]:
    repository = folder / "reload"
    repository.mkdir()
    loads, unloads = [], []
    with launcher.start(
        repository, folder / "reload.log", {"triton-sweeper.study": "overhead"}, model_name=None, complete_config=True
    ) as server:
        for index in range(cycles):
            name = f"{source.name}__t{index}"
            _write(repository, source, name, TrialConfig(8, 0, 1 + index % 2, "http", "fp32"))
            began = time.perf_counter()
            server.load(name, 120)
            ready = time.perf_counter()
            server.unload(name, 120)
            loads.append(ready - began)
            unloads.append(time.perf_counter() - ready)
    return loads, unloads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--launchers", nargs="+", default=["local", "docker"])
    args = parser.parse_args()
    print(f"{args.cycles} cycles each")
    print("| launcher | mode | start or load (median, min-max) | stop or unload (median, min-max) |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        source = demo_model(Path(folder))
        for name in args.launchers:
            launcher = LocalLauncher() if name == "local" else docker_launcher()
            launcher.preflight()
            for mode, cycles in (("restart", restart_cycles), ("reload", reload_cycles)):
                work = Path(folder) / f"{name}-{mode}"
                work.mkdir()
                before, after = cycles(launcher, source, work, args.cycles)
                print(
                    f"| {name} | {mode} | {statistics.median(before):.3f} s ({min(before):.3f}-{max(before):.3f}) | "
                    f"{statistics.median(after):.3f} s ({min(after):.3f}-{max(after):.3f}) |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
