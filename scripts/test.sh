#!/usr/bin/env bash
# Installs what the tests need, then runs them: unit tests, and real FUSE mounts of the
# embedded S3 store and of moto (needs root and /dev/fuse).
#   apt:  fuse3 (fusermount3), attr (getfattr/setfattr), rsync, systemd (systemd-analyze),
#         curl (share links)
#   pip:  moto[server] (an S3 server with bucket lifecycle configuration)
# Usage: scripts/test.sh [deps]   ("deps": install only)
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v fusermount3 >/dev/null || need+=(fuse3)
command -v getfattr >/dev/null || need+=(attr)
command -v rsync >/dev/null || need+=(rsync)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v curl >/dev/null || need+=(curl ca-certificates)
if ((${#need[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
[ -e /dev/fuse ] || modprobe fuse
python3 -c 'import moto.server, flask' 2>/dev/null ||
  python3 -m pip install --quiet --disable-pip-version-check 'moto[server]==5.2.1'

[ "${1:-}" = deps ] && exit 0
exec cargo test --locked --workspace
