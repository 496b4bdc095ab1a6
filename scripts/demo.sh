#!/usr/bin/env bash
# Set everything up on a fresh Debian 12 machine (as root), build the default image from
# examples/host.toml and boot it in QEMU with the serial console on this terminal.
#
#   scripts/demo.sh [extra rampart-image boot arguments]
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
scripts/setup.sh
bin=target/x86_64-unknown-linux-gnu/release
echo "demo: building the default image into out/default"
"$bin/rampart-image" build --config examples/host.toml --out out/default
echo "demo: booting out/default in QEMU (the guest powers off by itself)"
exec "$bin/rampart-image" boot out/default --memory 2048 "$@"
