#!/bin/bash
# Applies the repository's deploy/kubernetes/daemonset.yaml to a test bed (up.sh BED), changed
# only in the parameters deploy/README.md names, and waits until the DaemonSet is Ready:
#   - the cache-daemon image: BINARY packed as registry.example.invalid/stampede/cache-daemon:0.1.0
#     (the name the file has) and imported into every node's containerd, since nothing can be pulled
#     from a public registry here; busybox:1.36.1 for the init containers was imported by up.sh
#   - the cluster key in the Secret (the file ships it empty)
#   - one more mirrored registry, the bed's upstream 10.200.0.1:5000 (http), in config.toml's
#     [registries] and in the init container's REGISTRIES
#   - up.sh's own hosts.toml for the registry is removed from every node first, so the init
#     container writes it
# The hostPath volumes stay as they are: each node's /var/lib/cache-daemon and
# /etc/containerd/certs.d are its own (BED/nodeI/host/..., mounted there in its mount namespace).
# The rendered file is BED/daemonset.yaml; `diff` it against the original to see every change.
# usage: lab/kubernetes/deploy.sh BED BINARY [REPO_ROOT]
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BED=$(cd "${1:?usage: deploy.sh BED BINARY}" && pwd); BIN=$(realpath "${2:?usage: deploy.sh BED BINARY}")
REPO=${3:-$(cd "$HERE/../.." && pwd)}
NAME=registry.example.invalid/stampede/cache-daemon:0.1.0
"$HERE/images.sh" cache-daemon "$BED/images" "$BIN" "$NAME" >> "$BED/logs/images.log" 2>&1 ||
  { echo "deploy.sh: the cache-daemon image could not be built from $BIN; see $BED/logs/images.log" >&2; exit 6; }
for S in "$BED"/node*/run/containerd.sock; do
  ctr -a "$S" -n k8s.io images import "$BED/images/cache-daemon.tar" >/dev/null
done
SECRET=$(head -c 32 /dev/urandom | base64)
sed -e "s|^\( *\)cluster-secret: \"\"$|\1cluster-secret: \"$SECRET\"|" \
    -e 's|^\( *\)registry.k8s.io=https://registry.k8s.io$|&\n\110.200.0.1:5000=http://10.200.0.1:5000|' \
    -e 's|^\( *\)url = "https://registry.k8s.io"$|&\n\n\1[registries."10.200.0.1:5000"]\n\1url = "http://10.200.0.1:5000"|' \
    "$REPO/deploy/kubernetes/daemonset.yaml" > "$BED/daemonset.yaml"
changed=$(diff "$REPO/deploy/kubernetes/daemonset.yaml" "$BED/daemonset.yaml" | grep -c '^>' || true)
[ "$changed" = 5 ] || { echo "deploy.sh: expected 5 changed lines in the rendered DaemonSet, got $changed (did daemonset.yaml change shape?)" >&2; exit 5; }
# up.sh's plain-HTTP hosts.toml for the registry goes: the init container writes the node's
rm -f "$BED"/node*/host/etc-containerd-certs.d/10.200.0.1:5000/hosts.toml
"$BED/bin/k" apply -f "$BED/daemonset.yaml" >/dev/null
if ! "$BED/bin/k" -n cache-daemon rollout status daemonset/cache-daemon --timeout=300s >/dev/null; then
  echo "deploy.sh: the DaemonSet did not become ready:" >&2
  "$BED/bin/k" -n cache-daemon get pods -o wide >&2
  "$BED/bin/k" -n cache-daemon describe pods | tail -30 >&2
  exit 7
fi
echo "cache-daemon DaemonSet ready ($BED/daemonset.yaml)"
