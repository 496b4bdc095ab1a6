#!/usr/bin/env bash
# Pod start latency benchmark: one QEMU boot (TCG, 2 vCPUs, 2 GiB) of the CRI test host whose
# containerd also has a benchmark-only runtime handler, `plain`, running an executable copy of
# runc that only this image carries. The suite's CRI client runs a one-container pod on the CNI
# network (RunPodSandbox, CreateContainer, StartContainer, wait for the exit, StopPodSandbox,
# RemovePodSandbox) through rampart-runc and through plain runc, interleaved, 8 of each after a
# warm-up of each; medians and their ratio.
#
#   scripts/bench-cri.sh
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
cargo test --release -p rampart-tests --test cri cri_pod_benchmark -- --ignored --nocapture 2>&1 |
  tee /dev/stderr | grep '^BENCH' || { echo "bench-cri: the benchmark failed" >&2; exit 1; }
