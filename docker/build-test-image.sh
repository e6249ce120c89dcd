#!/usr/bin/env bash
# Builds `sweeper-test-triton:latest` with no image registry: an empty root filesystem imported
# with `docker import`, laid out like NVIDIA's image (/opt/tritonserver/bin/tritonserver and
# /opt/tritonserver/backends/python) through links to the nvidia-pytriton wheel in the venv.
# Containers from it run that real tritonserver with read-only bind mounts of the host's /usr,
# the Python install and the venv. The image is rebuilt when it was made for another venv.
# Prints the `server:` block a spec needs to use it.
#   usage: docker/build-test-image.sh [VENV]   (default: .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
image=sweeper-test-triton:latest
venv=$(cd "${1:-.venv}" && pwd)
python="$venv/bin/python"
python_home=$("$python" -c 'import sys; print(sys.base_prefix)')
server_dir=$("$python" -c 'from sweeper.launchers._local import pytriton_server_dir; print(pytriton_server_dir() or "")')
[ -n "$server_dir" ] || { echo "build-test-image: nvidia-pytriton is not installed in $venv" >&2; exit 1; }
stub="$server_dir/python_backend_stubs/$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')/triton_python_backend_stub"

built_for=$(docker image inspect -f '{{index .Config.Labels "triton-sweeper.venv"}}' "$image" 2>/dev/null || true)
if [ "$built_for" != "$venv" ]; then
  previous=$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)
  root=$(mktemp -d)
  trap 'rm -rf "$root"' EXIT
  mkdir -p "$root"/{usr,tmp,etc,root,dev,proc,sys,run} "$root/opt/tritonserver/bin" "$root/opt/tritonserver/backends/python"
  chmod 1777 "$root/tmp"
  for dir in lib lib64 bin sbin; do ln -s "usr/$dir" "$root/$dir"; done
  ln -s "$server_dir/bin/tritonserver" "$root/opt/tritonserver/bin/tritonserver"
  for file in "$server_dir"/backends/python/libtriton_python.so "$server_dir"/backends/python/triton_python_backend_utils.py "$stub"; do
    ln -s "$file" "$root/opt/tritonserver/backends/python/$(basename "$file")"
  done
  tar -C "$root" -c . | docker import \
    -c 'ENV PATH=/opt/tritonserver/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c "LABEL triton-sweeper.venv=$venv" - "$image" >/dev/null
  # The image made for another venv is untagged now: remove it (unless a container uses it).
  [ -z "$previous" ] || docker rmi "$previous" >/dev/null 2>&1 || true
fi

# Containers cannot raise memlock above the host's hard limit (NVIDIA recommends unlimited).
memlock=$(ulimit -H -l)
[ "$memlock" = unlimited ] && memlock=-1 || memlock=$((memlock * 1024))

cat <<YAML
# A spec's server block for $image (what the tests use):
server:
  launcher: docker
  docker:
    image: $image
    network: host
    pull: never
    gpus: none
    ulimits: {memlock: $memlock, stack: 67108864}
    volumes:
      /usr: /usr
      $python_home: $python_home
      $venv: $venv
    env:
      PATH: $venv/bin:/opt/tritonserver/bin:/usr/bin:/bin
      PYTHONPATH: /opt/tritonserver/backends/python
YAML
