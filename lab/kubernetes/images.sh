#!/bin/bash
# Container images for the test bed, built here with umoci (no registry can be pulled from):
#   images.sh base DIR BUSYBOX          pause (static, from pause.c) -> DIR/pause.tar as k8s.local/pause:3.2;
#                                       busybox (the static binary BUSYBOX, every applet linked in /bin)
#                                       -> DIR/busybox.tar as docker.io/library/busybox:1.36.1, the name
#                                       deploy/kubernetes/daemonset.yaml's init containers use
#   images.sh cache-daemon DIR BINARY NAME
#                                       the cache-daemon binary BINARY (stripped, with the shared
#                                       libraries it links) -> DIR/cache-daemon.tar as NAME
#   images.sh app DIR BUSYBOX MB        busybox plus one layer of MB MiB of random bytes, in the OCI
#                                       layout DIR/oci as `app` (push it with skopeo)
# The .tar files are docker archives for `ctr images import`.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
what=$1; D=$2; mkdir -p "$D"; cd "$D"
layout() { [ -d oci ] || umoci init --layout oci; }
busybox_rootfs() { # BUSYBOX ROOTFS
  mkdir -p "$2/bin" "$2/tmp"; cp "$1" "$2/bin/busybox"
  for a in $("$1" --list); do [ "$a" = busybox ] || ln -sf busybox "$2/bin/$a"; done
}
case $what in
base)
  BUSYBOX=$3; layout
  gcc -static -Os -o pause.bin "$HERE/pause.c"; strip pause.bin
  rm -rf b-pause; umoci new --image oci:pause; umoci unpack --image oci:pause b-pause >/dev/null
  cp pause.bin b-pause/rootfs/pause; umoci repack --image oci:pause b-pause
  umoci config --image oci:pause --config.entrypoint /pause --config.user 65535:65535 --architecture amd64 --os linux
  rm -rf b-bb; umoci new --image oci:busybox; umoci unpack --image oci:busybox b-bb >/dev/null
  busybox_rootfs "$BUSYBOX" b-bb/rootfs; umoci repack --image oci:busybox b-bb
  umoci config --image oci:busybox --config.cmd sh --config.env PATH=/bin --architecture amd64 --os linux
  rm -rf b-pause b-bb pause.tar busybox.tar
  skopeo copy -q oci:oci:pause docker-archive:pause.tar:k8s.local/pause:3.2
  skopeo copy -q oci:oci:busybox docker-archive:busybox.tar:docker.io/library/busybox:1.36.1
  ;;
cache-daemon)
  BIN=$3; NAME=$4; layout
  rm -rf b-cd; umoci new --image oci:cache-daemon; umoci unpack --image oci:cache-daemon b-cd >/dev/null
  mkdir -p b-cd/rootfs/usr/local/bin b-cd/rootfs/tmp
  cp "$BIN" b-cd/rootfs/usr/local/bin/cache-daemon; strip b-cd/rootfs/usr/local/bin/cache-daemon
  for lib in $(ldd "$BIN" | grep -o '/[^ ]*'); do mkdir -p "b-cd/rootfs$(dirname "$lib")"; cp -L "$lib" "b-cd/rootfs$lib"; done
  umoci repack --image oci:cache-daemon b-cd
  umoci config --image oci:cache-daemon --config.entrypoint /usr/local/bin/cache-daemon \
    --config.user 65532:65532 --architecture amd64 --os linux
  rm -rf b-cd cache-daemon.tar
  skopeo copy -q oci:oci:cache-daemon "docker-archive:cache-daemon.tar:$NAME"
  ;;
app)
  BUSYBOX=$3; MB=$4; layout
  rm -rf b-app; umoci new --image oci:app; umoci unpack --image oci:app b-app >/dev/null
  busybox_rootfs "$BUSYBOX" b-app/rootfs
  head -c $((MB * 1024 * 1024)) /dev/urandom > b-app/rootfs/payload
  umoci repack --image oci:app b-app
  umoci config --image oci:app --config.cmd sleep --config.cmd 3600 --config.env PATH=/bin --architecture amd64 --os linux
  rm -rf b-app
  ;;
*) echo "images.sh: base, cache-daemon or app, not $what" >&2; exit 2 ;;
esac
