#!/bin/bash
# Builds the Kubernetes test bed's parts once into a cache directory outside the repository:
# Kubernetes v1.20.2 (kube-apiserver, kube-controller-manager, kube-scheduler, kubelet) from
# Debian's source package, built with Debian's Go 1.19 in GOPATH mode, and the Debian packages the
# test bed runs unpacked (etcd, CNI plugins, busybox-static). Nothing is installed system-wide.
#
# usage: lab/kubernetes/build.sh [CACHE_DIR]   (default $STAMPEDE_KUBE_CACHE or /var/cache/stampede/kubernetes)
#
# Does nothing when the binaries are already there. A cold build takes about 6 minutes on 2 cores,
# 1.4 GB RAM and 3 GB of disk while it runs; afterwards only the binaries (343 MB) and the unpacked
# packages (~550 MB) are kept. Concurrent callers wait on a lock and then find the binaries built.
set -euo pipefail
C=${1:-${STAMPEDE_KUBE_CACHE:-/var/cache/stampede/kubernetes}}
BINS="kube-apiserver kube-controller-manager kube-scheduler kubelet"
# run by the test bed: etcd, CNI plugins, busybox (images), kubectl 1.20 (matches the server);
# only for the build: Go 1.19, reflect2 1.0.2, rsync and jq (make gen_openapi)
DEBS="etcd-server busybox-static containernetworking-plugins kubernetes-client golang-1.19-go
      golang-1.19-src golang-github-modern-go-reflect2-dev rsync libjq1 libonig5 jq"

unpacked() {
  [ -x "$C/root/usr/bin/etcd" ] && [ -x "$C/root/usr/lib/cni/bridge" ] && [ -x "$C/root/bin/busybox" ] &&
    [ -x "$C/root/usr/bin/kubectl" ]
}
built() {
  for b in $BINS; do [ -x "$C/bin/$b" ] || return 1; done
  unpacked
}
built && exit 0
mkdir -p "$C"
exec 9>"$C/.lock"
flock 9
built && exit 0
T0=$(date +%s)
say() { echo "[build $(( $(date +%s) - T0 ))s] $*"; }

# 1. a private apt state (for `apt-get source`) whose sources are deb-src copies of the machine's own Debian sources
A=$C/apt
mkdir -p "$A/sources.list.d" "$A/lists/partial" "$A/archives/partial" "$A/cache" "$A/debs" "$C/src"
for f in /etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] && sed 's/^Types: *deb$/Types: deb-src/' "$f" > "$A/sources.list.d/$(basename "$f")"
done
if [ -f /etc/apt/sources.list ]; then
  sed -n 's/^deb /deb-src /p' /etc/apt/sources.list > "$A/sources.list.d/from-sources-list.list"
fi
cat > "$A/apt.conf" <<CONF
Dir::Etc::sourcelist "/nonexistent";
Dir::Etc::sourceparts "$A/sources.list.d";
Dir::State::lists "$A/lists";
Dir::Cache::archives "$A/archives";
Dir::Cache "$A/cache";
CONF
if ! unpacked; then
  # 2. the binary packages, unpacked (not installed) into $C/root
  (cd "$A/debs" && apt-get -q download $DEBS >/dev/null)
  mkdir -p "$C/root"
  for d in "$A"/debs/*.deb; do dpkg -x "$d" "$C/root"; done
  say "packages unpacked: $(ls "$A"/debs | wc -l) debs"
fi
for b in $BINS; do [ -x "$C/bin/$b" ] || NEED_BUILD=1; done
[ -n "${NEED_BUILD:-}" ] || exit 0
APT_CONFIG=$A/apt.conf apt-get -q update >/dev/null
TARBALL=$(ls "$C"/src/kubernetes_*.orig.tar.gz 2>/dev/null | head -1 || true)
if [ -z "$TARBALL" ]; then
  (cd "$C/src" && APT_CONFIG=$A/apt.conf apt-get -q source --download-only kubernetes >/dev/null)
  TARBALL=$(ls "$C"/src/kubernetes_*.orig.tar.gz | head -1)
fi
say "source $(basename "$TARBALL")"

# 3. the build, in GOPATH mode as Kubernetes 1.20's own hack/lib/init.sh does
W=$C/work
rm -rf "$W" "$C/bin.new"; mkdir -p "$W/gopath/src/k8s.io" "$W/gotmp" "$C/bin.new"
export GOROOT=$C/root/usr/lib/go-1.19 GOTOOLCHAIN=local
export PATH=$GOROOT/bin:$C/root/usr/bin:$PATH LD_LIBRARY_PATH=$C/root/usr/lib/x86_64-linux-gnu
export GOCACHE=$W/gocache GOTMPDIR=$W/gotmp GOFLAGS=-p=2 GOMAXPROCS=2 GOPROXY=off GO111MODULE=off
tar xzf "$TARBALL" -C "$W"
S=$(ls -d "$W"/kubernetes-*/ | head -1); S=${S%/}
ln -sfn "$S" "$W/gopath/src/k8s.io/kubernetes"
# the vendored reflect2 v1.0.1 crashes at run time with Go >= 1.18: use Debian's v1.0.2
rm -rf "$S/vendor/github.com/modern-go/reflect2"
cp -r "$C/root/usr/share/gocode/src/github.com/modern-go/reflect2" "$S/vendor/github.com/modern-go/reflect2"
rm -f "$S/vendor/github.com/modern-go/reflect2/go.mod"
# pkg/generated/openapi is generated at build time and not in the tarball
(cd "$S" && make gen_openapi >/dev/null)
say "sources prepared"
export GOPATH=$W/gopath
cd "$W/gopath/src/k8s.io/kubernetes"
V=k8s.io/kubernetes/vendor/k8s.io/component-base/version
LDF="-s -w -X $V.gitVersion=v1.20.2 -X $V.gitMajor=1 -X $V.gitMinor=20 -X $V.gitTreeState=clean -X $V.buildDate=2021-01-13T00:00:00Z"
for b in $BINS; do
  if [ "$b" = kubelet ]; then cg=1; else cg=0; fi
  CGO_ENABLED=$cg go build -ldflags "$LDF" -o "$C/bin.new/$b" "./cmd/$b"
  say "built $b"
done
cd /
rm -rf "$C/bin"; mv "$C/bin.new" "$C/bin"
# keep only what runs: the tree and the Go build cache (~2.5 GB) go
rm -rf "$W" "$A/archives" "$A/cache" "$A/lists"
say "done: $(du -sh "$C" | cut -f1) in $C"
