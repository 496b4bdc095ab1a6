#!/usr/bin/env bash
# Boot benchmark (not a test): rampart-init against a busybox shell /init doing the same work.
#
#   scripts/bench-boot.sh [N]        (N boots of each, default 5)
#
# Both images boot the same kernel with the same command line, QEMU options and files:
# - rampart: `rampart-image build` of examples/host.toml;
# - busybox: that image's initrd unpacked, with rampart-init replaced by two busybox scripts
#   generated from rampart's own plans (`rampart-check plan-sh`): stage 0 copies the initramfs
#   into a tmpfs, remounts it read-only and switch_roots into it; stage 1 performs the same
#   mounts, loads the same modules, writes the same sysctls, enables the same cgroup
#   controllers, starts the same service in its own cgroup and prints
#   `busybox-init: services started at <secs>s` from /proc/uptime.
# Boots are interleaved (rampart, busybox, rampart, ...). Printed: each boot's time from kernel
# start to "services started" and its wall time, the medians and their ratio, the size of the
# rampart-init binary and PID 1's RSS after boot (one more boot, with `rampart-check rss` as the
# service).
#
# Environment: RAMPART_BENCH_ACCEL (default auto), RAMPART_BENCH_KEEP=1 keeps the work folder,
# RAMPART_BENCH_NO_BUILD=1 uses the release binaries already built.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)
n=${1:-5}
accel=${RAMPART_BENCH_ACCEL:-auto}
case $n in '' | *[!0-9]* | 0) echo "usage: $0 [N>0]" >&2; exit 2 ;; esac
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
for tool in qemu-system-x86_64 cpio; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing (scripts/setup.sh installs it)" >&2; exit 1; }
done
[ -x /bin/busybox ] || { echo "bench: /bin/busybox is missing (apt-get install busybox-static)" >&2; exit 1; }
[ -e .cache/kernel/vmlinuz ] || scripts/fetch-kernel.sh

say() { printf '==> bench: %s\n' "$*" >&2; }

if [ "${RAMPART_BENCH_NO_BUILD:-0}" = 1 ]; then
  say "using the binaries already built (RAMPART_BENCH_NO_BUILD=1)"
else
  say "building (release)"
  cargo build --release -q --workspace
fi
bin=${CARGO_TARGET_DIR:-$top/target}/x86_64-unknown-linux-gnu/release
image=$bin/rampart-image
check=$bin/rampart-check

work=$(mktemp -d /tmp/rampart-bench.XXXXXX)
if [ "${RAMPART_BENCH_KEEP:-0}" = 1 ]; then
  say "work folder kept: $work"
else
  trap 'rm -rf "$work"' EXIT
fi

say "building the rampart image from examples/host.toml"
"$image" build --config examples/host.toml --out "$work/rampart" >"$work/build.log" 2>&1 \
  || { cat "$work/build.log" >&2; exit 1; }

say "building the busybox image from the same initrd"
mkdir -p "$work/bbroot" "$work/busybox"
(cd "$work/bbroot" && cpio -idm --quiet <"$work/rampart/initrd")
rm -f "$work/bbroot/init" "$work/bbroot/sbin/init"
if [ ! -e "$work/bbroot/bin/busybox" ]; then
  mkdir -p "$work/bbroot/bin" && cp /bin/busybox "$work/bbroot/bin/busybox"
fi
"$check" plan-sh examples/host.toml "$work/bbroot"
(cd "$work/bbroot" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet) >"$work/busybox/initrd"
cp "$work/rampart/kernel" "$work/rampart/cmdline" "$work/busybox/"
[ -e "$work/rampart/manifest.json" ] && cp "$work/rampart/manifest.json" "$work/busybox/"

# boot KIND DIR: prints "<services-started-secs> <wall-secs>", keeps the console in $work.
boot() {
  local kind=$1 dir=$2 i=$3 log="$work/$1.$3.console" t0 t1 started
  t0=$(date +%s.%N)
  if ! "$image" boot "$dir" --memory 1024 --cpus 2 --accel "$accel" --timeout 180 >"$log" 2>"$log.err"; then
    echo "bench: $kind boot $i failed; console:" >&2
    tail -n 30 "$log" "$log.err" >&2
    exit 1
  fi
  t1=$(date +%s.%N)
  started=$(tr -d '\r' <"$log" | sed -n "s/.*$kind-init: services started at \([0-9.]*\)s.*/\1/p" | head -n1)
  if [ -z "$started" ]; then
    echo "bench: no '$kind-init: services started' line in boot $i; console:" >&2
    tail -n 30 "$log" >&2
    exit 1
  fi
  echo "$started $(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}')"
}

median() { sort -n | awk '{v[NR]=$1} END {if (NR%2) printf "%.3f", v[(NR+1)/2]; else printf "%.3f", (v[NR/2]+v[NR/2+1])/2}'; }

: >"$work/rampart.times"
: >"$work/busybox.times"
say "booting $n x rampart and $n x busybox, interleaved (accel $accel)"
printf '%-8s %4s %18s %10s\n' image boot services-started wall
for i in $(seq 1 "$n"); do
  for kind in rampart busybox; do
    read -r started wall < <(boot "$kind" "$work/$kind" "$i") || true
    [ -n "${started:-}" ] || exit 1
    echo "$started $wall" >>"$work/$kind.times"
    printf '%-8s %4d %17.3fs %9.2fs\n' "$kind" "$i" "$started" "$wall"
  done
done

say "one more rampart boot to read PID 1's RSS"
"$check" host-toml examples/host.toml "$check" rss >"$work/rss.toml"
"$image" build --config "$work/rss.toml" --out "$work/rss" >"$work/rss-build.log" 2>&1 \
  || { cat "$work/rss-build.log" >&2; exit 1; }
"$image" boot "$work/rss" --memory 1024 --cpus 2 --accel "$accel" --timeout 180 >"$work/rss.console" 2>&1 || true
rss=$(tr -d '\r' <"$work/rss.console" | sed -n 's/.*RAMPART-RSS pid1_vmrss_kib=\([0-9]*\).*/\1/p' | head -n1)

r_med=$(cut -d' ' -f1 "$work/rampart.times" | median)
b_med=$(cut -d' ' -f1 "$work/busybox.times" | median)
r_wall=$(cut -d' ' -f2 "$work/rampart.times" | median)
b_wall=$(cut -d' ' -f2 "$work/busybox.times" | median)
ratio=$(awk -v r="$r_med" -v b="$b_med" 'BEGIN {printf "%.2f", r / b}')
size=$(stat -c %s "$bin/rampart-init")

echo
echo "kernel: $(cat .cache/kernel/release 2>/dev/null || echo unknown), $(nproc) host cores, QEMU $accel, 2 vCPUs, 1 GiB, N=$n"
echo "median kernel start -> services started: rampart ${r_med}s, busybox ${b_med}s, ratio rampart/busybox ${ratio}"
echo "median wall time per boot (QEMU start -> power-off): rampart ${r_wall}s, busybox ${b_wall}s"
echo "rampart-init binary: $size bytes ($(awk -v s="$size" 'BEGIN {printf "%.2f", s / 1048576}') MiB, static, release)"
echo "PID 1 RSS after boot: ${rss:-unknown} KiB"
