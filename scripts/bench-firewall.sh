#!/bin/sh
# Firewall benchmark (run as root on the build machine; needs nftables and iproute2, test-only):
# applies a 1,000-rule ruleset in a throwaway network namespace with rampart's netlink code and
# with `nft -f` of the same rendered rules, and prints both (medians of RAMPART_BENCH_RUNS runs).
set -eu
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
exec cargo test --release -p rampart-init --lib firewall::netns_tests::bench_1000_rules -- --ignored --nocapture --test-threads=1
