#!/usr/bin/env bash
# Prepare a fresh Debian 12 machine (as root) to build, boot and test rampart. Idempotent.
#
#   scripts/setup.sh
#
# 1. installs the Debian packages rampart needs (QEMU, busybox, containerd, runc, cpio and a C
#    toolchain for the static liblzma build),
# 2. makes sure a Rust toolchain of 1.85 or newer is there: an existing cargo (rustup's), or else
#    Debian 12's `rustc-web` and `cargo-web` packages (the toolchain Debian keeps current for
#    Firefox); Debian 12's plain `rustc` (1.63) is too old for this workspace,
# 3. fetches Debian's kernel into .cache/kernel (scripts/fetch-kernel.sh, never installed),
# 4. builds the workspace in release mode.
#
# Set RAMPART_SKIP_APT=1 to skip step 1 (e.g. when not root and the packages are there).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> setup: %s\n' "$*"; }

# 1. Debian packages.
# nftables, iproute2, netbase (/etc/protocols, which nft needs to print protocol names) and procps
# (sysctl inside test namespaces) are test dependencies only.
packages=(qemu-system-x86 busybox-static containerd runc cpio build-essential pkg-config ca-certificates nftables iproute2 netbase procps)
# A Rust toolchain when there is none: Debian 12's rustc-web and cargo-web (1.85 or newer).
if ! command -v cargo >/dev/null 2>&1 && ! [ -x "$HOME/.cargo/bin/cargo" ]; then
  packages+=(rustc-web cargo-web)
fi
# Disk images (--format disk): UEFI stub, file system tools, objcopy, OVMF, qemu-img; veritysetup for tests.
packages+=(systemd-boot-efi squashfs-tools dosfstools mtools e2fsprogs binutils ovmf qemu-utils cryptsetup-bin)
# AppArmor profiles are compiled at image build time (apparmor_parser).
packages+=(apparmor)
# CNI plugins (bridge, host-local, loopback) for [containerd] pod_subnet, copied into images.
packages+=(containernetworking-plugins)
if [ "${RAMPART_SKIP_APT:-0}" = 1 ]; then
  say "skipping apt (RAMPART_SKIP_APT=1)"
else
  missing=()
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
      echo "setup: missing Debian packages: ${missing[*]}; run this script as root" >&2
      exit 1
    fi
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
  else
    say "Debian packages present: ${packages[*]}"
  fi
fi

# 2. Rust toolchain (rustup's; Debian 12's rustc 1.63 cannot build this workspace).
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
  if [ "${RAMPART_SKIP_APT:-0}" != 1 ] && [ "$(id -u)" -eq 0 ]; then
    say "no cargo: installing Debian 12's rustc-web and cargo-web"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends rustc-web cargo-web
  fi
fi
if ! command -v cargo >/dev/null 2>&1; then
  cat >&2 <<'MSG'
setup: no `cargo` found. rampart needs Rust 1.85 or newer: run this script as root so it can
install Debian 12's rustc-web and cargo-web, or install rustup's stable toolchain.
MSG
  exit 1
fi
rust_version=$(rustc --version | awk '{print $2}')
if [ "$(printf '%s\n1.85.0\n' "$rust_version" | sort -V | head -n1)" != 1.85.0 ]; then
  echo "setup: rustc $rust_version is too old: rampart needs 1.85 or newer (rustup update stable)" >&2
  exit 1
fi
if command -v rustup >/dev/null 2>&1; then
  rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-gnu \
    || rustup target add x86_64-unknown-linux-gnu
fi
say "using $(cargo --version), rustc $rust_version"

# 3. The kernel.
if [ -e .cache/kernel/vmlinuz ] && [ -e .cache/kernel/modules ]; then
  say "kernel present: .cache/kernel ($(cat .cache/kernel/release 2>/dev/null || echo unknown release))"
else
  say "fetching Debian's kernel into .cache/kernel"
  scripts/fetch-kernel.sh
fi

# 4. Build.
say "building the workspace (release)"
cargo build --release --workspace --locked
say "done: binaries in ${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release"
