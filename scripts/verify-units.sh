#!/usr/bin/env bash
# systemd-analyze verify of systemd/*: the units as shipped, with ExecStart pointed at the
# binary built here (verify insists that the program exists).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --locked --quiet --bin rgrid-mount
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for unit in systemd/*.service systemd/*.mount systemd/*.timer; do
  [ -e "$unit" ] || continue
  sed "s|/usr/local/bin/rgrid-mount|$PWD/target/debug/rgrid-mount|g" "$unit" >"$tmp/$(basename "$unit")"
done
out=$(systemd-analyze verify "$tmp"/* 2>&1) || { echo "$out"; exit 1; }
# verify exits 0 on some warnings; any line it prints is a finding.
[ -z "$out" ] || { echo "$out"; exit 1; }
echo "systemd units verified: $(ls "$tmp" | tr '\n' ' ')"
