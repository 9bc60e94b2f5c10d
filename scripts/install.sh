#!/usr/bin/env bash
# Builds and installs rgrid-mount for operators (root):
#   /usr/local/bin/rgrid-mount            the daemon and its commands
#   /sbin/mount.rgrid, /sbin/mount.fuse.rgrid   mount(8) helpers: `mount -t rgrid`, fstab
#   /etc/systemd/system/rgrid-mount@.service    the templated unit (Type=notify)
#   /etc/systemd/system/rgrid-retention.{service,timer}   the daily retention pass
# Usage: scripts/install.sh [PREFIX]   (default PREFIX=/usr/local; DESTDIR is honoured)
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=${1:-/usr/local}
dest=${DESTDIR:-}
cargo build --locked --release --workspace
install -D -m 0755 target/release/rgrid-mount "$dest$prefix/bin/rgrid-mount"
for helper in mount.rgrid mount.fuse.rgrid; do
  install -D -m 0755 target/release/mount-rgrid "$dest/sbin/$helper"
done
for unit in rgrid-mount@.service rgrid-retention.service rgrid-retention.timer; do
  sed "s|/usr/local/bin/rgrid-mount|$prefix/bin/rgrid-mount|g" "systemd/$unit" |
    install -D -m 0644 /dev/stdin "$dest/etc/systemd/system/$unit"
done
echo "installed rgrid-mount under $dest$prefix, mount helpers in $dest/sbin, units in $dest/etc/systemd/system"
