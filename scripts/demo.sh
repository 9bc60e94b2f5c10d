#!/usr/bin/env bash
# Mounts a demo: the embedded S3 store over a temp dir seeded with one sample execution.
# Usage: scripts/demo.sh [MOUNTPOINT]   (default /tmp/rgrid-demo/mnt)
set -euo pipefail
cd "$(dirname "$0")/.."
root=/tmp/rgrid-demo
mnt=${1:-$root/mnt}
exec_dir=$root/store/rgrid-executions/executions/demo-0001
mkdir -p "$exec_dir/inputs" "$exec_dir/outputs/logs" "$mnt"
printf 'id,value\n1,3.5\n2,4.25\n' >"$exec_dir/inputs/data.csv"
printf '{"rows": 2, "mean": 3.875}\n' >"$exec_dir/outputs/result.json"
printf 'reading /work/inputs/data.csv\nwrote /work/result.json\n' >"$exec_dir/outputs/logs/run.log"

cargo build --release --quiet
mountpoint -q "$mnt" && umount "$mnt"
./target/release/rgrid-mount --local "$root/store" "$mnt"
echo "mounted the demo store at $mnt"
ls -lR "$mnt"
echo "--- cat $mnt/executions/demo-0001/outputs/result.json"
cat "$mnt/executions/demo-0001/outputs/result.json"
if command -v getfattr >/dev/null; then
  echo "--- getfattr -d (artifact metadata and expiry)"
  getfattr -d "$mnt/executions/demo-0001/outputs/result.json"
fi
echo "unmount with: umount $mnt"
