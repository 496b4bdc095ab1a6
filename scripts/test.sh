#!/usr/bin/env bash
# Run rampart's whole test suite: scripts/setup.sh (packages, toolchain check, kernel, release
# build), then every unit test and the end-to-end tests, which boot images in QEMU (TCG is fine).
#
#   scripts/test.sh [extra cargo test arguments, e.g. a test name filter]
#
# The end-to-end tests boot QEMU one at a time (--test-threads=1); each boot takes 5-30 s
# under TCG. Consoles of every boot are kept in target/rampart-tests/*.console.log.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi

start=$(date +%s)
echo "==> test: setup"
scripts/setup.sh

# The Kubernetes node tests (tests/tests/kubelet.rs, cluster.rs) need a kubelet and a
# kube-apiserver built from Debian's source (about 10 minutes on 2 cores the first time, cached
# in .cache/k8s afterwards). RAMPART_SKIP_KUBERNETES=1 skips the build; those tests then skip.
if [ "${RAMPART_SKIP_KUBERNETES:-0}" != 1 ]; then
  echo "==> test: kubernetes pieces"
  scripts/build-kubernetes.sh
fi

echo "==> test: cargo test --workspace --release"
cargo test --workspace --release --locked -- --test-threads=1 "$@"

echo "==> test: all tests passed in $(( $(date +%s) - start ))s"
