#!/usr/bin/env bash
# The GPU check: the seed case swept on a GPU with the local launcher, measured by perf_analyzer.
# On the device machine (no network): Python packages come from wheels carried in .whl/, the
# tritonserver from .whl/tritonserver-trimmed.tar.gz (the nvidia-pytriton wheel's server, its
# python backend and the stub for Python 3.12; see benchmarks/README.md for how both are made).
# Figures land in $OUT (default /tmp/gpu-check): trials.csv, measurements.csv, facts.json.
#   usage: benchmarks/gpu_check.sh            on the GPU machine
#          benchmarks/gpu_check.sh --dry-run  here: the same flow on the CPU, a small model, the venv
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-/tmp/gpu-check}"
mkdir -p "$out"
if [ "${1:-}" = --dry-run ]; then
  exec .venv/bin/python benchmarks/gpu_check.py --out "$out" --dry-run
fi
site=/tmp/sweeper-site
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl
tar -xzf .whl/tritonserver-trimmed.tar.gz -C "$site"
export PYTHONPATH="$site:$PWD"
# The python backend's stub links libpython3.12.so: where this Python keeps it, if the loader does not know.
libdir=$(python3 -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR") or "")')
if [ -n "$libdir" ] && ls "$libdir"/libpython3.12.so* >/dev/null 2>&1; then
  export LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
server="$site/pytriton/tritonserver"
backends=/tmp/sweeper-backends
mkdir -p "$backends/python"
ln -sf "$server/backends/python/libtriton_python.so" "$server/backends/python/triton_python_backend_utils.py" \
  "$server/python_backend_stubs/3.12/triton_python_backend_stub" "$backends/python/"
{
  nvidia-smi -L || true
  python3 --version
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
  ldd "$server/python_backend_stubs/3.12/triton_python_backend_stub" | grep "not found" || echo "stub libraries: all found"
  "$site/perf_analyzer/bin/perf_analyzer" --version 2>&1 | head -1
} | tee "$out/machine.txt"
exec python3 benchmarks/gpu_check.py --out "$out" --tritonserver "$server/bin/tritonserver" --backends "$backends"
