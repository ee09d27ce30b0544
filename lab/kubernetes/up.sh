#!/bin/bash
# Starts a one-node Kubernetes v1.20.2 test bed in BED (a new directory), every part inside a
# private network namespace (BED/netns), and waits until the node is Ready:
#   - an upstream registry (docker-registry) on 10.200.0.1:5000, access log in BED/logs/registry.log
#   - etcd, kube-apiserver (10.200.0.2:6443), kube-controller-manager, kube-scheduler
#   - node1: containerd 1.6 (own root, state and socket under BED) and kubelet, node IP 10.200.0.2
#   - the Service IP 10.96.0.1:443 of the API server DNAT-ed to it (there is no kube-proxy), so
#     in-cluster clients reach it as on any cluster
# usage: lab/kubernetes/up.sh BED [OWNER_PID]
#   BED must be a new directory path (e.g. /tmp/stampede-kube-$$). The binaries come from
#   lab/kubernetes/build.sh's cache ($STAMPEDE_KUBE_CACHE, default /var/cache/stampede/kubernetes).
#   OWNER_PID: the process the bed belongs to; a later up.sh tears down beds whose owner is gone.
# Afterwards: BED/bin/k is kubectl for the bed (admin); lab/kubernetes/down.sh BED tears it all down.
# kubelet 1.20 writes /var/log/pods, /var/log/containers and /var/lib/kubelet/device-plugins
# whatever its root dir, so only one bed runs on a machine at a time (BED/../stampede-kube.lock).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BED=${1:?usage: up.sh BED [OWNER_PID]}
OWNER=${2:-}
C=${STAMPEDE_KUBE_CACHE:-/var/cache/stampede/kubernetes}
R=$C/root; B=$C/bin
for b in kube-apiserver kube-controller-manager kube-scheduler kubelet; do
  [ -x "$B/$b" ] || { echo "up.sh: $B/$b is missing: run lab/kubernetes/build.sh first (about 6 minutes)" >&2; exit 3; }
done
for p in containerd ctr runc docker-registry openssl curl nsenter unshare iptables gcc umoci skopeo; do
  command -v $p >/dev/null || { echo "up.sh: $p is not installed" >&2; exit 3; }
done

# beds whose owner died (a test killed by SIGINT or SIGKILL) go first; a live one blocks us
for other in /tmp/stampede-kube-*/; do
  other=${other%/}; [ -d "$other" ] && [ "$other" != "$BED" ] || continue
  o=$(cat "$other/owner" 2>/dev/null || true)
  if [ -n "$o" ] && ! kill -0 "$o" 2>/dev/null; then
    echo "up.sh: tearing down $other (its owner $o is gone)"; "$HERE/down.sh" "$other" >/dev/null 2>&1 || true
  elif [ -f "$other/pids/kubelet.pid" ]; then
    echo "up.sh: another test bed runs in $other (kubelet shares /var/log/pods): run lab/kubernetes/down.sh $other first" >&2; exit 4
  fi
done
[ -e "$BED" ] && { echo "up.sh: $BED exists; give a new directory" >&2; exit 2; }
mkdir -p "$BED"/{pids,logs,pki,etcd,run,bin,manifests,kubelet,registry/data,containerd/certs.d,cni/net.d,cni/ipam,images}
BED=$(cd "$BED" && pwd)
[ -n "$OWNER" ] && echo "$OWNER" > "$BED/owner"
# what kubelet (and containerd's shims, /run/containerd/s) write outside BED: down.sh removes
# those that were not there before
for d in /var/log/pods /var/log/containers /var/lib/kubelet /run/containerd; do [ -e "$d" ] || echo "$d"; done > "$BED/outside"
T0=$(date +%s.%N)
say() { awk -v t0="$T0" -v now="$(date +%s.%N)" -v m="$*" 'BEGIN { printf "[%5.1fs] %s\n", now - t0, m }'; }
# anything failing from here on takes the bed down with it: an EXIT trap that runs unless the
# bed came up (signals, a reader of our output that went away, and set -e failures all exit)
up_ok=0
trap 'if [ $up_ok = 0 ]; then echo "up.sh: failed or interrupted; tearing down $BED (logs copied to $BED.logs)" >&2; cp -r "$BED/logs" "$BED.logs" 2>/dev/null; "$HERE/down.sh" "$BED" >/dev/null 2>&1; fi' EXIT
trap 'exit 1' INT TERM HUP PIPE

NS="nsenter --net=$BED/netns"
bg() { local n=$1; shift; setsid $NS "$@" > "$BED/logs/$n.log" 2>&1 < /dev/null & echo $! > "$BED/pids/$n.pid"; }
until_ok() { local what=$1 n=$2; shift 2; for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.25; done
  echo "up.sh: $what did not come up; see $BED/logs" >&2; return 1; }

"$HERE/certs.sh" "$BED" node1 10.200.0.2 >/dev/null
cat > "$BED/bin/k" <<K
#!/bin/sh
exec nsenter --net=$BED/netns $R/usr/bin/kubectl --kubeconfig=$BED/pki/admin.kubeconfig "\$@"
K
chmod +x "$BED/bin/k"
say certs

# the private network: lo and a veth pair with both ends inside; v0 carries the node IP (the
# API server and kubelet refuse loopback), v1 a gateway address for the upstream registry
touch "$BED/netns"; unshare --net="$BED/netns" true
$NS ip link set lo up
$NS ip link add v0 type veth peer name v1
$NS ip addr add 10.200.0.2/24 dev v0; $NS ip addr add 10.200.0.1/24 dev v1
$NS ip link set v0 up; $NS ip link set v1 up
$NS ip route add default via 10.200.0.1 dev v0
$NS iptables -t nat -A OUTPUT -d 10.96.0.1/32 -p tcp --dport 443 -j DNAT --to-destination 10.200.0.2:6443
$NS iptables -t nat -A PREROUTING -d 10.96.0.1/32 -p tcp --dport 443 -j DNAT --to-destination 10.200.0.2:6443
say "network namespace $BED/netns"

cat > "$BED/registry/config.yml" <<Y
version: 0.1
log: {level: info}
storage: {filesystem: {rootdirectory: $BED/registry/data}, delete: {enabled: true}}
http: {addr: "10.200.0.1:5000"}
Y
cat > "$BED/containerd/config.toml" <<T
version = 2
root = "$BED/containerd/root"
state = "$BED/containerd/state"
[grpc]
  address = "$BED/run/containerd.sock"
[ttrpc]
  address = "$BED/run/containerd-ttrpc.sock"
[debug]
  address = "$BED/run/containerd-debug.sock"
  level = "info"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "k8s.local/pause:3.2"
  netns_mounts_under_state_dir = true
  # root here lacks CAP_SYS_RESOURCE: without this every sandbox fails on oom_score_adj -998
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "$(command -v runc)"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$R/usr/lib/cni"
    conf_dir = "$BED/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    # the node's /etc/containerd/certs.d: the DaemonSet's init container writes hosts.toml here
    config_path = "$BED/containerd/certs.d"
T
# the registry speaks plain HTTP: say so to containerd (deploy.sh removes this file, so that the
# DaemonSet's init container writes the node's own, which it would otherwise leave alone)
mkdir -p "$BED/containerd/certs.d/10.200.0.1:5000"
cat > "$BED/containerd/certs.d/10.200.0.1:5000/hosts.toml" <<T
server = "http://10.200.0.1:5000"
[host."http://10.200.0.1:5000"]
  capabilities = ["pull", "resolve"]
T
cat > "$BED/cni/net.d/10-bridge.conflist" <<J
{"cniVersion": "0.4.0", "name": "stampede-pods", "plugins": [
  {"type": "bridge", "bridge": "k8sbr0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.0.0/24"}]], "dataDir": "$BED/cni/ipam"}},
  {"type": "loopback"}]}
J
bg registry docker-registry serve "$BED/registry/config.yml"
bg etcd "$R/usr/bin/etcd" --name bed --data-dir "$BED/etcd" \
  --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
  --initial-cluster bed=http://127.0.0.1:2380
bg containerd containerd --config "$BED/containerd/config.toml"
until_ok etcd 480 $NS curl -sf http://127.0.0.1:2379/health
until_ok containerd 480 ctr -a "$BED/run/containerd.sock" version
until_ok registry 480 $NS curl -sf http://10.200.0.1:5000/v2/
say "registry, etcd, containerd"

"$HERE/images.sh" base "$BED/images" "$R/bin/busybox" > "$BED/logs/images.log" 2>&1
ctr -a "$BED/run/containerd.sock" -n k8s.io images import "$BED/images/pause.tar" >/dev/null
ctr -a "$BED/run/containerd.sock" -n k8s.io images import "$BED/images/busybox.tar" >/dev/null
say "images: pause, busybox (as docker.io/library/busybox:1.36.1)"

P=$BED/pki
bg kube-apiserver "$B/kube-apiserver" \
  --advertise-address=10.200.0.2 --bind-address=0.0.0.0 --secure-port=6443 --insecure-port=0 \
  --etcd-servers=http://127.0.0.1:2379 --service-cluster-ip-range=10.96.0.0/24 \
  --tls-cert-file="$P/apiserver.crt" --tls-private-key-file="$P/apiserver.key" --client-ca-file="$P/ca.crt" \
  --kubelet-client-certificate="$P/apiserver-kubelet-client.crt" --kubelet-client-key="$P/apiserver-kubelet-client.key" \
  --kubelet-preferred-address-types=InternalIP \
  --service-account-key-file="$P/sa.pub" --service-account-signing-key-file="$P/sa.key" \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction --allow-privileged=true
until_ok kube-apiserver 960 $NS curl -sf --cacert "$P/ca.crt" https://127.0.0.1:6443/readyz
bg kube-controller-manager "$B/kube-controller-manager" --kubeconfig="$P/controller-manager.kubeconfig" \
  --authentication-kubeconfig="$P/controller-manager.kubeconfig" --authorization-kubeconfig="$P/controller-manager.kubeconfig" \
  --bind-address=127.0.0.1 --leader-elect=false --use-service-account-credentials=true \
  --service-account-private-key-file="$P/sa.key" --root-ca-file="$P/ca.crt" \
  --cluster-signing-cert-file="$P/ca.crt" --cluster-signing-key-file="$P/ca.key" \
  --service-cluster-ip-range=10.96.0.0/24 --controllers='*,-nodeipam'
bg kube-scheduler "$B/kube-scheduler" --kubeconfig="$P/scheduler.kubeconfig" \
  --authentication-kubeconfig="$P/scheduler.kubeconfig" --authorization-kubeconfig="$P/scheduler.kubeconfig" \
  --bind-address=127.0.0.1 --leader-elect=false
say "control plane"

cat > "$BED/kubelet-config.yaml" <<Y
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication: {anonymous: {enabled: false}, webhook: {enabled: true}, x509: {clientCAFile: $P/ca.crt}}
authorization: {mode: Webhook}
address: 10.200.0.2
healthzBindAddress: 127.0.0.1
readOnlyPort: 0
cgroupDriver: cgroupfs
failSwapOn: false
clusterDomain: cluster.local
clusterDNS: [10.96.0.10]
tlsCertFile: $P/kubelet-serving.crt
tlsPrivateKeyFile: $P/kubelet-serving.key
staticPodPath: $BED/manifests
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
Y
bg kubelet "$B/kubelet" --config="$BED/kubelet-config.yaml" --kubeconfig="$P/kubelet.kubeconfig" \
  --container-runtime=remote --container-runtime-endpoint="unix://$BED/run/containerd.sock" \
  --hostname-override=node1 --node-ip=10.200.0.2 --root-dir="$BED/kubelet" --cert-dir="$BED/kubelet/pki" --v=1
node_ready() { [ "$("$BED/bin/k" get node node1 -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}')" = True ]; }
until_ok "node1 Ready" 1440 node_ready
until_ok "default service account" 120 "$BED/bin/k" get serviceaccount default
say "node1 Ready"
up_ok=1
