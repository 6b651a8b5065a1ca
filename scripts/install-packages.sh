#!/usr/bin/env bash
# Installs Debian packages the tooling needs (wrk for benchmarks, chromium for browser tests).
set -euo pipefail
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install these with your package manager: $*" >&2
  exit 1
fi
run() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
run env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" ||
  { run apt-get update -q && run env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"; }
