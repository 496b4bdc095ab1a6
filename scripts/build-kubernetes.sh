#!/usr/bin/env bash
# Build the Kubernetes pieces the node tests need from Debian 12's own packages, offline except
# for the Debian archive. Run as root; idempotent (a second run only checks and prints).
#
#   scripts/build-kubernetes.sh
#
# 1. apt: installs Debian's Go (1.19) and dpkg-dev to build, and the ready-made pieces:
#    etcd-server (etcd), containernetworking-plugins (CNI plugins in /usr/lib/cni) and
#    kubernetes-client (kubectl; skipped when another package owns /usr/bin/kubectl). The etcd
#    service the package enables (and starts, under systemd) is stopped and disabled: tests
#    start their own etcd.
# 2. source: enables deb-src for the Debian suite when no source index is configured yet (a file
#    of its own, /etc/apt/sources.list.d/rampart-deb-src.sources), then `apt-get source
#    --download-only kubernetes` and `dpkg-source -x` into .cache/k8s/src (Debian's 1.20.2, with
#    the upstream vendor/ tree and Debian's patches applied).
# 3. kubectl: unpacked from the kubernetes-client .deb into .cache/k8s/bin (same version as the
#    apiserver, whatever kubectl is on PATH).
# 4. build: static kubelet and kube-apiserver (CGO_ENABLED=0, -trimpath, stripped, version
#    stamped) into .cache/k8s/bin, GOPATH mode (GO111MODULE=off) with every Go cache under
#    .cache/k8s, under `nice -n 19`; kube-apiserver first needs pkg/generated/openapi, which
#    the source package lacks and openapi-gen (from vendor/) writes. A binary is rebuilt only
#    when its stamp file does not name the current source version, Go version and ldflags.
#
# Ends with: kubernetes: kubelet vX, kube-apiserver vX in .cache/k8s/bin (Ns)
#
# Environment: K8S_CACHE (default .cache/k8s under the repository), K8S_SKIP_APT=1 skips step 1
# and the deb-src setup (when the packages are there and the source is already unpacked).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cache=${K8S_CACHE:-$top/.cache/k8s}
start=$SECONDS

say() { printf '==> build-kubernetes: %s\n' "$*"; }
die() { printf 'build-kubernetes: %s\n' "$*" >&2; exit 1; }
phase_start() { phase_t0=$SECONDS; }
phase_end() { say "$1 took $((SECONDS - phase_t0))s"; }

export DEBIAN_FRONTEND=noninteractive
apt_opts=(-q -o DPkg::Lock::Timeout=600)

# ---------------------------------------------------------------------------------------------
# 1. Debian packages.
packages=(golang-go dpkg-dev etcd-server containernetworking-plugins)
# kubernetes-client ships /usr/bin/kubectl; some machines already have a kubectl package of
# another origin (Google Cloud SDK's "kubectl", 1.32) owning that path, and dpkg refuses to
# overwrite it. Install it only when /usr/bin/kubectl is free or already Debian's; in every case
# a kubectl matching the apiserver is unpacked into the cache's bin/ below.
kubectl_owner=$(dpkg-query -S /usr/bin/kubectl 2>/dev/null | cut -d: -f1 || true)
if [ -z "$kubectl_owner" ] || [ "$kubectl_owner" = kubernetes-client ]; then
  packages+=(kubernetes-client)
else
  say "/usr/bin/kubectl belongs to package $kubectl_owner: not installing kubernetes-client"
fi
phase_start
if [ "${K8S_SKIP_APT:-0}" = 1 ]; then
  say "skipping apt (K8S_SKIP_APT=1)"
else
  [ "$(id -u)" -eq 0 ] || die "run as root (or set K8S_SKIP_APT=1 when the packages are installed)"
  missing=()
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    say "installing ${missing[*]}"
    apt-get "${apt_opts[@]}" update
    apt-get "${apt_opts[@]}" install -y --no-install-recommends "${missing[@]}"
  else
    say "Debian packages present: ${packages[*]}"
  fi
  # The tests run their own etcd (in a network namespace): the packaged service must neither
  # run nor start at boot. etcd-server's postinst enables etcd.service (and its SysV links) and
  # starts it where systemd runs and no policy-rc.d forbids it.
  if [ -d /run/systemd/system ] && systemctl is-active --quiet etcd.service 2>/dev/null; then
    say "stopping the packaged etcd service"
    systemctl stop etcd.service
  fi
  if command -v systemctl >/dev/null 2>&1 && systemctl is-enabled --quiet etcd.service 2>/dev/null; then
    say "disabling the packaged etcd service"
    systemctl disable --quiet etcd.service 2>/dev/null || true
  fi
  if [ ! -d /run/systemd/system ] && [ -x /etc/init.d/etcd ]; then
    /etc/init.d/etcd stop >/dev/null 2>&1 || true
    update-rc.d etcd disable >/dev/null 2>&1 || true
  fi
fi
phase_end apt

# ---------------------------------------------------------------------------------------------
# 2. Source package.
phase_start
srcver=$(apt-cache showsrc kubernetes 2>/dev/null | awk '/^Version:/{print $2}' | sort -V | tail -n1 || true)
if [ -z "$srcver" ] && [ "${K8S_SKIP_APT:-0}" != 1 ]; then
  # No deb-src index is configured (Debian 12's default deb822 debian.sources has only
  # "Types: deb"). Add one of our own for the mirror and suite the binary packages come from,
  # rather than editing the system's files.
  # shellcheck disable=SC1091
  codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  [ -n "$codename" ] || die "cannot read VERSION_CODENAME from /etc/os-release"
  mirror=$(apt-get download --print-uris kubernetes-client 2>/dev/null | sed -n "s|^'\(.*\)/pool/.*|\1|p" | head -n1)
  [ -n "$mirror" ] || die "cannot find the Debian mirror that serves kubernetes-client"
  say "enabling deb-src for $mirror $codename $codename-updates"
  cat >/etc/apt/sources.list.d/rampart-deb-src.sources <<EOF
# Written by rampart's scripts/build-kubernetes.sh: source packages (apt-get source kubernetes).
Types: deb-src
URIs: $mirror
Suites: $codename $codename-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  apt-get "${apt_opts[@]}" update
  srcver=$(apt-cache showsrc kubernetes 2>/dev/null | awk '/^Version:/{print $2}' | sort -V | tail -n1 || true)
fi
[ -n "$srcver" ] || die "no source package for kubernetes (is a deb-src entry configured?)"
# 1.20.5+really1.20.2-1.1+deb12u1 -> 1.20.2: drop the epoch and the Debian revision, keep what
# follows "+really" (Debian's marker for a version that went back).
upver=${srcver#*:}
upver=${upver%-*}
upver=${upver##*+really}
srcdir=$cache/src/kubernetes-$upver
mkdir -p "$cache/src"
if [ -f "$srcdir/.rampart-srcver" ] && [ "$(cat "$srcdir/.rampart-srcver")" = "$srcver" ]; then
  say "source kubernetes $srcver present in $srcdir"
else
  say "fetching source kubernetes $srcver"
  dl=$cache/src/dl
  rm -rf "$dl" && mkdir -p "$dl"
  # As root, apt warns that it cannot drop privileges to _apt for this directory; harmless.
  (cd "$dl" && apt-get "${apt_opts[@]}" source --download-only "kubernetes=$srcver")
  dsc=$(ls "$dl"/kubernetes_*.dsc)
  rm -rf "$srcdir" "$srcdir.tmp"
  dpkg-source -q -x "$dsc" "$srcdir.tmp"
  echo "$srcver" >"$srcdir.tmp/.rampart-srcver"
  mv "$srcdir.tmp" "$srcdir"
  rm -rf "$dl"
fi
phase_end source

# kubectl from Debian's kubernetes-client .deb (same source version as the apiserver), unpacked
# into the cache rather than relying on whichever kubectl is on PATH.
phase_start
mkdir -p "$cache/bin"
clientver=$(apt-cache show --no-all-versions kubernetes-client 2>/dev/null | awk '/^Version:/{print $2; exit}' || true)
[ -n "$clientver" ] || die "no kubernetes-client package in the apt indexes"
if [ -x "$cache/bin/kubectl" ] && [ "$(cat "$cache/bin/.kubectl.stamp" 2>/dev/null)" = "kubernetes-client $clientver" ]; then
  say "kubectl present (kubernetes-client $clientver)"
else
  say "unpacking kubectl from kubernetes-client $clientver"
  dl=$cache/src/dl-client
  rm -rf "$dl" && mkdir -p "$dl"
  (cd "$dl" && apt-get "${apt_opts[@]}" download "kubernetes-client=$clientver")
  dpkg-deb -x "$dl"/kubernetes-client_*.deb "$dl/root"
  install -m 0755 "$dl/root/usr/bin/kubectl" "$cache/bin/kubectl"
  echo "kubernetes-client $clientver" >"$cache/bin/.kubectl.stamp"
  rm -rf "$dl"
fi
phase_end kubectl

# ---------------------------------------------------------------------------------------------
# 4. Static kubelet and kube-apiserver.
command -v go >/dev/null 2>&1 || die "no go on PATH (install golang-go)"
goversion=$(go env GOVERSION)
# GOPATH layout: k8s.io/kubernetes must sit at $GOPATH/src/k8s.io/kubernetes for its vendor/
# tree (which links the staging/ repositories) to resolve.
gopath=$cache/gopath
mkdir -p "$gopath/src/k8s.io" "$cache/gocache" "$cache/tmp"
ln -sfn "$srcdir" "$gopath/src/k8s.io/kubernetes"
export GOPATH=$gopath GOCACHE=$cache/gocache GOTMPDIR=$cache/tmp GOMODCACHE=$gopath/pkg/mod
export GO111MODULE=off GOFLAGS=-trimpath GOPROXY=off GOENV=off CGO_ENABLED=0 GOOS=linux GOARCH=amd64
# Version information, set as upstream's hack/lib/version.sh does in both packages that hold it
# (in GOPATH mode they are reached through k8s.io/kubernetes/vendor/): component-base/version
# answers `--version`, client-go/pkg/version what the apiserver serves at /version. gitCommit
# needs no flag: `git archive` already wrote it into the sources.
major=${upver%%.*}
minor=${upver#*.}
minor=${minor%%.*}
# The build date is the Debian changelog's, so rebuilding the same source gives the same bytes.
builddate=$(date -u -d "@$(dpkg-parsechangelog -l "$srcdir/debian/changelog" -S Timestamp)" +%Y-%m-%dT%H:%M:%SZ)
ldflags="-s -w"
for vpkg in k8s.io/kubernetes/vendor/k8s.io/component-base/version k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version; do
  ldflags+=" -X $vpkg.gitVersion=v$upver -X $vpkg.gitMajor=$major -X $vpkg.gitMinor=$minor"
  ldflags+=" -X $vpkg.gitTreeState=archive -X $vpkg.buildDate=$builddate"
done
flagsum=$(printf '%s' "$ldflags" | cksum | cut -d' ' -f1)

build() { # build NAME
  local name=$1 stamp="$cache/bin/.$1.stamp" want
  want="kubernetes $srcver $goversion ldflags:$flagsum"
  phase_start
  if [ -x "$cache/bin/$name" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    say "$name present ($want)"
  else
    say "building $name (nice -n 19, GOPATH mode)"
    rm -f "$stamp"
    (cd "$gopath/src/k8s.io/kubernetes" &&
      nice -n 19 go build -ldflags "$ldflags" -o "$cache/bin/$name.tmp" "k8s.io/kubernetes/cmd/$name")
    mv "$cache/bin/$name.tmp" "$cache/bin/$name"
    echo "$want" >"$stamp"
  fi
  phase_end "$name"
}
build kubelet

# kube-apiserver imports k8s.io/kubernetes/pkg/generated/openapi, whose zz_generated.openapi.go
# upstream's Makefile generates at build time (`make generated_files`); the release tarball and
# so Debian's source package lack it (the staging repositories' copies are shipped). Generate
# just that file, as Makefile.generated_files's KUBE openapi target does: openapi-gen from
# vendor/, run over every package of the tree (staging named as vendor/) with a
# "+k8s:openapi-gen=" tag, except code-generator and sample-apiserver.
openapi_gen() {
  local out=$srcdir/pkg/generated/openapi/zz_generated.openapi.go mark=$srcdir/.rampart-openapi dirs
  phase_start
  if [ -f "$out" ] && [ -f "$mark" ]; then
    say "openapi definitions present"
  else
    say "generating pkg/generated/openapi (openapi-gen, nice -n 19)"
    mkdir -p "$cache/tools"
    (cd "$gopath/src/k8s.io/kubernetes" &&
      nice -n 19 go build -ldflags "-s -w" -o "$cache/tools/openapi-gen" k8s.io/kubernetes/vendor/k8s.io/kube-openapi/cmd/openapi-gen)
    dirs=$(cd "$srcdir" &&
      find -H . \( -path './_*' -o -path './.*' -o -path ./vendor \) -prune -o -type f -name '*.go' -print |
      { xargs grep -l '^// *+k8s:' || [ $? -eq 123 ]; } |
      { xargs grep -l '+k8s:openapi-gen=' || [ $? -eq 123 ]; } |
      sed -e 's|^\./||' -e 's|^staging/src/|vendor/|' |
      { grep -v -e '^vendor/k8s.io/code-generator/' -e '^vendor/k8s.io/sample-apiserver/' || true; } |
      xargs -n1 dirname | LC_ALL=C sort -u | sed 's|^|k8s.io/kubernetes/|' | paste -sd,)
    [ -n "$dirs" ] || die "no +k8s:openapi-gen packages found in $srcdir"
    rm -f "$out" "$mark"
    # GOROOT explicitly: a Go 1.19 binary built with -trimpath has no GOROOT of its own, and
    # without one openapi-gen's go/build cannot load the standard library (time.Duration then
    # comes out as an "Unsupported" type and generation fails).
    (cd "$gopath/src/k8s.io/kubernetes" &&
      GOROOT=$(go env GOROOT) nice -n 19 "$cache/tools/openapi-gen" --logtostderr -v 0 -i "$dirs" \
        -p k8s.io/kubernetes/pkg/generated/openapi -O zz_generated.openapi \
        -h vendor/k8s.io/code-generator/hack/boilerplate.go.txt -r "$cache/tmp/openapi-violations.report")
    [ -f "$out" ] || die "openapi-gen wrote no $out"
    # Upstream fails the build when the API-rule report differs from the known list; here it is
    # only information (the source is a release, not a change under review).
    if ! diff -q "$cache/tmp/openapi-violations.report" "$srcdir/api/api-rules/violation_exceptions.list" >/dev/null; then
      say "note: openapi API-rule report differs from api/api-rules/violation_exceptions.list"
    fi
    touch "$mark"
  fi
  phase_end openapi-gen
}
openapi_gen
build kube-apiserver

kubelet_v=$("$cache/bin/kubelet" --version | awk '{print $NF}')
apiserver_v=$("$cache/bin/kube-apiserver" --version | awk '{print $NF}')
rel=${cache#"$top"/}
echo "kubernetes: kubelet $kubelet_v, kube-apiserver $apiserver_v in $rel/bin ($((SECONDS - start))s)"
