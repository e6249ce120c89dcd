#!/usr/bin/env bash
# Builds `sweeper-test-triton:latest` with no image registry: an empty root filesystem imported
# with `docker import`. Containers from it run the host's tritonserver (from the nvidia-pytriton
# wheel in the venv) through read-only bind mounts of /usr, the Python install and the venv.
# Prints the `server.docker` block a spec needs to use it.
#   usage: docker/build-test-image.sh [VENV]   (default: .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
image=sweeper-test-triton:latest
venv=$(cd "${1:-.venv}" && pwd)
python_home=$("$venv/bin/python" -c 'import sys; print(sys.base_prefix)')

if ! docker image inspect "$image" >/dev/null 2>&1; then
  root=$(mktemp -d)
  trap 'rm -rf "$root"' EXIT
  mkdir -p "$root"/{usr,tmp,etc,root,dev,proc,sys,run}
  chmod 1777 "$root/tmp"
  for dir in lib lib64 bin sbin; do ln -s "usr/$dir" "$root/$dir"; done
  tar -C "$root" -c . | docker import -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - "$image" >/dev/null
fi

cat <<YAML
# server block for specs that run Triton in $image (what the tests use):
server:
  launcher: docker
  docker:
    image: $image
    network: host
    pull: never
    gpus: none
    tritonserver: $venv/lib/python3.*/site-packages/pytriton/tritonserver/bin/tritonserver
    volumes:
      /usr: /usr
      $python_home: $python_home
      $venv: $venv
    env:
      PATH: $venv/bin:/usr/bin:/bin
YAML
