#!/usr/bin/env bash
# Operate benchmarks (issue 7):
#  1. PID 1 serving `status` 1,000 times: one QEMU boot (TCG, 2 vCPUs) of the operate test
#     host; in the guest, `rampart-probe control-bench` sends 1,000 `status` requests over fresh
#     connections and reads PID 1's VmRSS/VmHWM and utime+stime before and after.
#  2. The log pipeline's throughput before it drops lines: rampart-logd's library fed by a fake
#     control server as fast as it can, to a fast TCP collector and a stalled one.
#
#   scripts/bench-operate.sh
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
cargo test --release -p rampart-tests --test operate operate_end_to_end -- --nocapture 2>&1 |
  tee /dev/stderr | grep 'operate: control benchmark' ||
  { echo "bench-operate: the control benchmark failed" >&2; exit 1; }
cargo test --release -p rampart-init --lib logfwd::tests::throughput -- --ignored --nocapture 2>&1 |
  tee /dev/stderr | grep -i 'lines' | tail -n 5 ||
  { echo "bench-operate: the log pipeline benchmark failed" >&2; exit 1; }
