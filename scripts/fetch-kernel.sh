#!/usr/bin/env bash
# Fetch Debian's current 6.1 kernel into a cache folder without installing it into the host.
#
#   scripts/fetch-kernel.sh [CACHE_DIR]     (default: .cache/kernel under the repository)
#
# Leaves CACHE_DIR/vmlinuz and CACHE_DIR/modules as stable links to the unpacked package,
# which is what examples/host.toml points at.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cache=${1:-$top/.cache/kernel}
mkdir -p "$cache"
cd "$cache"

# linux-image-amd64 depends on the current linux-image-6.1.0-NN-amd64 package.
pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
if [ -z "$pkg" ]; then
  apt-get update -qq
  pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
fi
[ -n "$pkg" ] || { echo "fetch-kernel: cannot resolve linux-image-amd64 to a kernel package" >&2; exit 1; }
release=${pkg#linux-image-}

if [ ! -f "root-$release/boot/vmlinuz-$release" ]; then
  echo "fetch-kernel: downloading $pkg"
  rm -rf "dl" && mkdir dl
  (cd dl && apt-get download -q "$pkg")
  deb=$(ls dl/*.deb)
  rm -rf "root-$release.tmp"
  dpkg -x "$deb" "root-$release.tmp"
  mv "root-$release.tmp" "root-$release"
  rm -rf dl
fi
ln -sfn "root-$release/boot/vmlinuz-$release" vmlinuz
ln -sfn "root-$release/lib/modules/$release" modules
echo "$release" > release
echo "fetch-kernel: $release in $cache"
