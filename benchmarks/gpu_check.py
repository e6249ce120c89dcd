"""The seed case on a GPU: a short sweep of a model folder whose python-backend model runs a
PyTorch tagger on CUDA (512 tokens in, a [512, 14041] FP32 score matrix out: 28.8 MB), served
by the local launcher's tritonserver and measured by perf_analyzer from PyPI.

Run by benchmarks/gpu_check.sh on the device machine; ``--dry-run`` runs the same flow on the
CPU with a small model (what the test suite checks where no GPU is lent).

    python benchmarks/gpu_check.py --out DIR [--dry-run] [--trials 8]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sweeper.errors import SweeperError
from sweeper.spec import load_spec
from sweeper.sweep import run_sweep

MODEL = """
import numpy as np
import torch
import triton_python_backend_utils as pb_utils

VOCABULARY, WIDTH, TAGS = {vocabulary}, {width}, {tags}
# The stub's numpy bridge returns empty outputs under numpy 2; DLPack works there (and numpy
# 1's DLPack capsules are refused by the stub): as sweeper/python_backend/model.py does.
NUMPY2 = int(np.__version__.split(".")[0]) >= 2


class Tagger(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(VOCABULARY, WIDTH)
        self.encoder = torch.nn.TransformerEncoderLayer(WIDTH, nhead=4, dim_feedforward=4 * WIDTH, batch_first=True)
        self.head = torch.nn.Linear(WIDTH, TAGS)

    def forward(self, tokens):
        return self.head(self.encoder(self.embed(tokens)))


class TritonPythonModel:
    def initialize(self, args):
        gpu = args["model_instance_kind"] == "GPU" and torch.cuda.is_available()
        self.device = torch.device(f"cuda:{{args['model_instance_device_id']}}" if gpu else "cpu")
        torch.manual_seed(0)
        self.model = Tagger().eval().to(self.device)

    def execute(self, requests):
        tokens = []
        for request in requests:
            tensor = pb_utils.get_input_tensor_by_name(request, "tokens")
            tokens.append(torch.from_numpy(np.from_dlpack(tensor) if NUMPY2 else tensor.as_numpy()))
        sizes = [t.shape[0] for t in tokens]
        with torch.inference_mode():
            scores = self.model(torch.cat(tokens).to(self.device)).cpu().numpy()  # to the host, as a caller would
        responses, start = [], 0
        for size in sizes:
            part = np.ascontiguousarray(scores[start : start + size])
            tensor = pb_utils.Tensor.from_dlpack("scores", part) if NUMPY2 else pb_utils.Tensor("scores", part)
            responses.append(pb_utils.InferenceResponse([tensor]))
            start += size
        return responses
"""

CONFIG = """
name: "tagger"
backend: "python"
max_batch_size: 8
input [{{ name: "tokens" data_type: TYPE_INT64 dims: [{sequence}] }}]
output [{{ name: "scores" data_type: TYPE_FP32 dims: [{sequence}, {tags}] }}]
dynamic_batching {{ max_queue_delay_microseconds: 100000 }}
instance_group [{{ count: 1 kind: {kind} }}]
"""

SPEC = """
study: {{name: gpu-seed, trials: {trials}, sampler: tpe, seed: 0, confirm_repeats: {repeats}}}
model:
  source: {{repository: {folder}}}
  example_inputs: {{low: 0, high: {vocabulary}, samples: 4}}
server: {{launcher: local, startup_timeout_s: 300{server}}}
search_space:
  max_queue_delay_us: [off, 0, 100, 100000]
  instance_count: [1, 2]
  protocol: [http, grpc]
load:
  generator: {generator}
  concurrency: [1, 4]
  warmup_s: {window_s}
  window_s: {window_s}
  stability_tolerance: 0.2
  max_windows: 5
objectives:
  - {{metric: p50_ms, concurrency: 1, direction: minimize}}
  - {{metric: throughput, concurrency: 4, direction: maximize}}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--dry-run", action="store_true", help="the CPU, a small model, two trials")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--tritonserver", help="a tritonserver binary (default: nvidia-pytriton's)")
    parser.add_argument("--backends", help="its backends folder")
    args = parser.parse_args()
    out = Path(args.out)
    work = out / "work"
    folder = work / "models" / "tagger"
    (folder / "1").mkdir(parents=True, exist_ok=True)
    sizes = {"vocabulary": 30522, "width": 256, "tags": 14041, "sequence": 512}
    if args.dry_run:
        sizes = {"vocabulary": 1000, "width": 32, "tags": 64, "sequence": 16}
    kind = "KIND_CPU" if args.dry_run else "KIND_GPU"
    (folder / "1" / "model.py").write_text(MODEL.format(**sizes))
    (folder / "config.pbtxt").write_text(CONFIG.format(kind=kind, **sizes))
    trials = 2 if args.dry_run else args.trials
    spec = work / "gpu-seed.yaml"
    server = f", tritonserver: {args.tritonserver}, backend_directory: {args.backends}" if args.tritonserver else ""
    # The front's candidates on fresh servers (study.confirm_repeats); the dry run checks this
    # script's flow, and confirmation has tests of its own (tests/integration/test_confirm.py).
    repeats = 0 if args.dry_run else 2
    window_s = 0.3 if args.dry_run else 1  # the dry run checks the flow, not the figures: short windows
    spec.write_text(
        SPEC.format(
            trials=trials,
            repeats=repeats,
            window_s=window_s,
            folder=folder,
            generator="perf_analyzer",
            server=server,
            **sizes,
        )
    )
    facts = {
        "nvidia-smi": subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout.strip()
        if shutil.which("nvidia-smi")
        else "none"
    }
    started = time.perf_counter()
    try:
        run_sweep(load_spec(spec), results_dir=work / "results")
        status = 0
    except SweeperError as exc:  # what the command line would have printed, and its exit status
        status = exc.exit_status
        facts["error"] = str(exc)
    facts.update(status=status, seconds=round(time.perf_counter() - started, 1))
    results = work / "results" / "gpu-seed"
    for name in ("trials.csv", "measurements.csv"):
        if (results / name).is_file():
            shutil.copyfile(results / name, out / name)
    (out / "facts.json").write_text(json.dumps(facts, indent=2))
    print(json.dumps(facts))
    sys.exit(status)


if __name__ == "__main__":
    main()
