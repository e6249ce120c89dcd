#!/usr/bin/env bash
# Installs NVIDIA's perf_analyzer (PyPI `perf-analyzer`) into a venv as VENV/bin/perf_analyzer.
#
# The wheel's binary needs glibc >= 2.38. Where the host has it (Ubuntu 24.04, NVIDIA's -sdk
# images) the wheel is installed as it is. On an older host (Debian 12 has glibc 2.36) the
# binary is unpacked from the manylinux_2_38 wheel and run through the dynamic loader of Debian
# 13 (trixie)'s C runtime (libc6, libstdc++6, libgcc-s1 fetched from Debian's archive with
# apt-get download into VENV/lib/perf_analyzer/), with the host's libssl and zlib. No root, no
# chroot: perf_analyzer sees the host's files and network, so its -f and --input-data paths are
# ordinary paths. Idempotent.
#   usage: scripts/install-perf-analyzer.sh [VENV]   (default: .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
version=2.60.0
venv=$(cd "${1:-.venv}" && pwd)
target="$venv/bin/perf_analyzer"
home="$venv/lib/perf_analyzer"

works() { "$target" --version 2>&1 | grep -q "Perf Analyzer"; }
if works; then exit 0; fi

# A host with glibc >= 2.38 takes the wheel as published.
if "$venv/bin/python" -m pip install -q --no-deps "perf-analyzer==$version" 2>/dev/null; then
  # The wheel's entry point runs the binary as a child and drops its exit status: link the binary.
  binary=$("$venv/bin/python" -c 'import perf_analyzer, pathlib; print(pathlib.Path(perf_analyzer.__file__).parent / "bin" / "perf_analyzer")')
  ln -sf "$binary" "$target"
  if works; then echo "install-perf-analyzer: perf_analyzer $version from PyPI"; exit 0; fi
  "$venv/bin/python" -m pip uninstall -q -y perf-analyzer
fi

command -v apt-get >/dev/null || { echo "install-perf-analyzer: glibc < 2.38 and no apt-get: cannot provide a C runtime for perf_analyzer" >&2; exit 1; }
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
[ -f "$keyring" ] || { echo "install-perf-analyzer: $keyring is missing (apt-get install debian-archive-keyring)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$venv/bin/python" -m pip download -q --no-deps --only-binary=:all: --platform manylinux_2_38_x86_64 \
  --python-version 3.12 "perf-analyzer==$version" -d "$work/wheel"
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/debs"
echo "deb [signed-by=$keyring] http://deb.debian.org/debian trixie main" >"$work/sources.list"
apt=(-o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
     -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache" -o Dir::State::status=/dev/null
     -o APT::Architecture=amd64 -o APT::Architectures=amd64 -o APT::Sandbox::User=root -qq)
apt-get "${apt[@]}" update
(cd "$work/debs" && apt-get "${apt[@]}" download libc6 libstdc++6 libgcc-s1)

rm -rf "$home"
mkdir -p "$home/bin" "$home/runtime"
for deb in "$work"/debs/*.deb; do dpkg-deb -x "$deb" "$home/runtime"; done
"$venv/bin/python" -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("perf_analyzer/bin/perf_analyzer", sys.argv[2])' \
  "$(ls "$work"/wheel/*.whl)" "$work/unpacked"
install -m 755 "$work/unpacked/perf_analyzer/bin/perf_analyzer" "$home/bin/perf_analyzer"
lib="$home/runtime/usr/lib/x86_64-linux-gnu"
cat >"$target" <<SH
#!/bin/sh
# perf_analyzer $version with Debian trixie's C runtime (made by scripts/install-perf-analyzer.sh)
exec "$lib/ld-linux-x86-64.so.2" --library-path "$lib:/usr/lib/x86_64-linux-gnu:/lib/x86_64-linux-gnu" "$home/bin/perf_analyzer" "\$@"
SH
chmod 755 "$target"
works || { echo "install-perf-analyzer: the installed perf_analyzer does not run" >&2; exit 1; }
echo "install-perf-analyzer: perf_analyzer $version with Debian trixie's C runtime in $home"
