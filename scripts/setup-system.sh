#!/usr/bin/env bash
# Installs and starts what the test suite needs beyond Python, on a fresh Debian machine:
# Chromium (the report's browser test), PostgreSQL binaries (the tests start a throwaway server
# for a study shared by two workers), a Docker engine (the docker launcher's tests) and the local
# test image. Idempotent: what is already there is kept. Needs root (apt-get, dockerd).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v chromium >/dev/null || need+=(chromium)
command -v dockerd >/dev/null || need+=(docker.io)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup-system: installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  echo "setup-system: starting dockerd (vfs storage, no iptables, no bridge)"
  # No engine answers, so pid files left by a killed one are stale; dockerd refuses to start
  # while its pid file names a process that still exists (a zombie, or a reused pid).
  rm -f /var/run/docker.pid /var/run/docker/containerd/containerd.pid
  # No iptables/bridge: this machine has neither; the tests use host networking.
  nohup dockerd --storage-driver=vfs --iptables=false --bridge=none \
    >/tmp/triton-sweeper-dockerd.log 2>&1 &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 0.5
  done
  docker info >/dev/null 2>&1 || { echo "setup-system: dockerd did not start:"; tail -20 /tmp/triton-sweeper-dockerd.log; exit 1; }
fi

bash docker/build-test-image.sh >/dev/null
echo "setup-system: chromium, postgresql, docker engine and sweeper-test-triton:latest are ready"
