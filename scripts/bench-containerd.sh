#!/usr/bin/env bash
# containerd benchmark: one QEMU boot (TCG, 2 vCPUs, 2 GiB) of the default host with a
# benchmark service: time from kernel start to containerd ready, and `ctr run --rm` through
# rampart-runc against plain runc (a test-only executable copy of runc that only this
# benchmark image carries), interleaved, BENCH_RUNS (8) of each, medians and their ratio.
#
#   scripts/bench-containerd.sh
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
cargo test --release -p rampart-tests --test containerd containerd_benchmark -- --ignored --nocapture 2>&1 |
  tee /dev/stderr | grep '^BENCH' || { echo "bench-containerd: the benchmark failed" >&2; exit 1; }
