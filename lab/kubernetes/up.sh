#!/bin/bash
# Starts a Kubernetes v1.20.2 test bed of NODES nodes (default 1) in BED (a new directory) and
# waits until every node is Ready. No packet leaves the bed:
#   - the control plane's private network namespace (BED/netns), with a bridge kbr0 carrying
#     10.200.0.1 and 10.200.0.2: an upstream registry (docker-registry) on 10.200.0.1:5000, access
#     log in BED/logs/registry.log; etcd, kube-apiserver (10.200.0.2:6443),
#     kube-controller-manager, kube-scheduler
#   - each node nodeI (I = 1..NODES, directory BED/nodeI) its own network namespace
#     (BED/nodeI/netns; node IP 10.200.0.(10+I) on a veth to kbr0, pods on 10.244.I.0/24) and its
#     own mount namespace, in which its containerd 1.6 (root, state and socket under BED/nodeI)
#     and kubelet run, with per-node directories of BED/nodeI/host bind-mounted on the paths a
#     node's host path volumes and kubelet use: /var/lib/kubelet, /var/log/pods,
#     /var/log/containers, /var/lib/cache-daemon and /etc/containerd/certs.d (containerd's
#     config_path). So each node has its own 127.0.0.1:5050 and its own host files, as on a
#     cluster of machines. The pods of nodeI are in cgroup /stampede-nodeI.
#   - in every namespace the Service IP 10.96.0.1:443 of the API server DNAT-ed to it (there is
#     no kube-proxy), so in-cluster clients reach it as on any cluster
# usage: lab/kubernetes/up.sh BED [OWNER_PID [NODES]]
#   BED must be a new directory path (e.g. /tmp/stampede-kube-$$). The binaries come from
#   lab/kubernetes/build.sh's cache ($STAMPEDE_KUBE_CACHE, default /var/cache/stampede/kubernetes).
#   OWNER_PID: the process the bed belongs to (empty: none); a later up.sh tears down beds whose
#   owner is gone.
# Afterwards: BED/bin/k is kubectl for the bed (admin); lab/kubernetes/down.sh BED tears it all down.
# The nodes' mount points must exist on the machine (up.sh creates the missing ones, empty, and
# down.sh removes those), and the cgroup names are fixed, so only one bed runs on a machine at a
# time (BED/../stampede-kube.lock).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BED=${1:?usage: up.sh BED [OWNER_PID [NODES]]}
OWNER=${2:-}
NODES=${3:-1}
case $NODES in [1-9]) ;; *) echo "up.sh: NODES must be 1 to 9, not $NODES" >&2; exit 2 ;; esac
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
  elif ls "$other"/pids/*kubelet.pid >/dev/null 2>&1; then
    echo "up.sh: another test bed runs in $other (the nodes mount over /var/lib/kubelet): run lab/kubernetes/down.sh $other first" >&2; exit 4
  fi
done
[ -e "$BED" ] && { echo "up.sh: $BED exists; give a new directory" >&2; exit 2; }
mkdir -p "$BED"/{pids,logs,pki,etcd,bin,manifests,registry/data,images}
BED=$(cd "$BED" && pwd)
[ -n "$OWNER" ] && echo "$OWNER" > "$BED/owner"
# the nodes' mount points, and what containerd's shims (/run/containerd/s) write outside BED:
# down.sh removes those that were not there before
MOUNTED="/var/lib/kubelet /var/log/pods /var/log/containers /var/lib/cache-daemon /etc/containerd/certs.d"
for d in $MOUNTED /etc/containerd /run/containerd; do [ -e "$d" ] || echo "$d"; done > "$BED/outside"
T0=$(date +%s.%N)
say() { awk -v t0="$T0" -v now="$(date +%s.%N)" -v m="$*" 'BEGIN { printf "[%5.1fs] %s\n", now - t0, m }'; }
# anything failing from here on takes the bed down with it: an EXIT trap that runs unless the
# bed came up (signals, a reader of our output that went away, and set -e failures all exit)
up_ok=0
trap 'if [ $up_ok = 0 ]; then echo "up.sh: failed or interrupted; tearing down $BED (logs copied to $BED.logs)" >&2; cp -r "$BED/logs" "$BED.logs" 2>/dev/null; "$HERE/down.sh" "$BED" >/dev/null 2>&1; fi' EXIT
trap 'exit 1' INT TERM HUP PIPE


API=10.200.0.2
NS="nsenter --net=$BED/netns"
bg() { local n=$1; shift; setsid $NS "$@" > "$BED/logs/$n.log" 2>&1 < /dev/null & echo $! > "$BED/pids/$n.pid"; }
# in node I's namespaces (net and mount), held by its namespace holder process
node_ns() { echo "nsenter --target=$(cat "$BED/pids/node$1-ns.pid") --net --mount"; }
node_bg() { local i=$1 n=$2; shift 2; setsid $(node_ns "$i") "$@" > "$BED/logs/node$i-$n.log" 2>&1 < /dev/null & echo $! > "$BED/pids/node$i-$n.pid"; }
until_ok() { local what=$1 n=$2; shift 2; for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.25; done
  echo "up.sh: $what did not come up; see $BED/logs" >&2; return 1; }
node_ip() { echo "10.200.0.$((10 + $1))"; }

"$HERE/certs.sh" "$BED" "$API" $(for i in $(seq "$NODES"); do echo "node$i=$(node_ip "$i")"; done) >/dev/null
cat > "$BED/bin/k" <<K
#!/bin/sh
exec nsenter --net=$BED/netns $R/usr/bin/kubectl --kubeconfig=$BED/pki/admin.kubeconfig "\$@"
K
chmod +x "$BED/bin/k"
say certs

# the control plane's network: lo and the bridge kbr0 the nodes' veths join; 10.200.0.1 is the
# registry's address and the nodes' gateway, 10.200.0.2 the API server's
touch "$BED/netns"; unshare --net="$BED/netns" true
$NS ip link set lo up
$NS ip link add kbr0 type bridge
$NS ip addr add 10.200.0.1/24 dev kbr0; $NS ip addr add $API/24 dev kbr0
$NS ip link set kbr0 up
dnat() { # the kubernetes Service IP to the API server, in the namespace of the command prefix
  "$@" iptables -t nat -A OUTPUT -d 10.96.0.1/32 -p tcp --dport 443 -j DNAT --to-destination $API:6443
  "$@" iptables -t nat -A PREROUTING -d 10.96.0.1/32 -p tcp --dport 443 -j DNAT --to-destination $API:6443
}
dnat $NS
say "network namespace $BED/netns"

# the nodes: a holder process makes the namespaces (network, and mount with slave propagation:
# nothing mounted in a node shows outside it), mounts the node's host directories over the
# machine's paths and sleeps; containerd and kubelet enter its namespaces
for d in $MOUNTED /run/containerd; do mkdir -p "$d"; done
for i in $(seq "$NODES"); do
  D=$BED/node$i; IP=$(node_ip "$i")
  mkdir -p "$D"/{run,kubelet,containerd/root,containerd/state,cni/net.d,cni/ipam,host}
  binds=""
  for m in $MOUNTED; do
    h=$D/host/$(echo "${m#/}" | tr / -); mkdir -p "$h"
    binds="$binds mount --bind $h $m &&"
  done
  setsid unshare --net --mount --propagation slave sh -c "$binds touch $D/mounted && exec sleep infinity" \
    > "$BED/logs/node$i-ns.log" 2>&1 < /dev/null &
  echo $! > "$BED/pids/node$i-ns.pid"
  until_ok "node$i's namespaces" 120 test -e "$D/mounted"
  holder=$(cat "$BED/pids/node$i-ns.pid")
  touch "$D/netns"; mount --bind "/proc/$holder/ns/net" "$D/netns"
  N="nsenter --net=$D/netns"
  $NS ip link add "n$i" type veth peer name "n$i-eth"
  $NS ip link set "n$i-eth" netns "$holder"
  $NS ip link set "n$i" master kbr0 up
  $N ip link set lo up
  $N ip link set "n$i-eth" name eth0
  $N ip addr add "$IP/24" dev eth0; $N ip link set eth0 up
  $N ip route add default via 10.200.0.1 dev eth0
  $NS ip route add "10.244.$i.0/24" via "$IP"
  dnat $N
  # the node's pods in their own cgroup tree, so no kubelet takes another node's pods for orphans
  for c in /sys/fs/cgroup/*/; do
    case $c in */unified/) continue ;; esac
    mkdir -p "$c/stampede-node$i"
    [ -f "$c/cpuset.cpus" ] && cat "$c/cpuset.cpus" > "$c/stampede-node$i/cpuset.cpus" && cat "$c/cpuset.mems" > "$c/stampede-node$i/cpuset.mems"
  done
  cat > "$D/containerd/config.toml" <<T
version = 2
root = "$D/containerd/root"
state = "$D/containerd/state"
[grpc]
  address = "$D/run/containerd.sock"
[ttrpc]
  address = "$D/run/containerd-ttrpc.sock"
[debug]
  address = "$D/run/containerd-debug.sock"
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
    conf_dir = "$D/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    # the node's own /etc/containerd/certs.d (BED/nodeI/host/etc-containerd-certs.d): the
    # DaemonSet's init container writes hosts.toml there
    config_path = "/etc/containerd/certs.d"
T
  # the registry speaks plain HTTP: say so to containerd (deploy.sh removes this file, so that
  # the DaemonSet's init container writes the node's own, which it would otherwise leave alone)
  mkdir -p "$D/host/etc-containerd-certs.d/10.200.0.1:5000"
  cat > "$D/host/etc-containerd-certs.d/10.200.0.1:5000/hosts.toml" <<T
server = "http://10.200.0.1:5000"
[host."http://10.200.0.1:5000"]
  capabilities = ["pull", "resolve"]
T
  cat > "$D/cni/net.d/10-bridge.conflist" <<J
{"cniVersion": "0.4.0", "name": "stampede-pods", "plugins": [
  {"type": "bridge", "bridge": "k8sbr0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.$i.0/24"}]], "dataDir": "$D/cni/ipam"}},
  {"type": "loopback"}]}
J
  node_bg "$i" containerd containerd --config "$D/containerd/config.toml"
done
say "nodes' namespaces: $NODES"

cat > "$BED/registry/config.yml" <<Y
version: 0.1
log: {level: info}
storage: {filesystem: {rootdirectory: $BED/registry/data}, delete: {enabled: true}}
http: {addr: "10.200.0.1:5000"}
Y
bg registry docker-registry serve "$BED/registry/config.yml"
bg etcd "$R/usr/bin/etcd" --name bed --data-dir "$BED/etcd" \
  --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
  --initial-cluster bed=http://127.0.0.1:2380
until_ok etcd 480 $NS curl -sf http://127.0.0.1:2379/health
until_ok registry 480 $NS curl -sf http://10.200.0.1:5000/v2/
"$HERE/images.sh" base "$BED/images" "$R/bin/busybox" > "$BED/logs/images.log" 2>&1
for i in $(seq "$NODES"); do
  S=$BED/node$i/run/containerd.sock
  until_ok "node$i's containerd" 480 ctr -a "$S" version
  ctr -a "$S" -n k8s.io images import "$BED/images/pause.tar" >/dev/null
  ctr -a "$S" -n k8s.io images import "$BED/images/busybox.tar" >/dev/null
done
say "registry, etcd, containerd; images pause, busybox (as docker.io/library/busybox:1.36.1)"

P=$BED/pki
bg kube-apiserver "$B/kube-apiserver" \
  --advertise-address=$API --bind-address=0.0.0.0 --secure-port=6443 --insecure-port=0 \
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

for i in $(seq "$NODES"); do
  D=$BED/node$i
  cat > "$D/kubelet-config.yaml" <<Y
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication: {anonymous: {enabled: false}, webhook: {enabled: true}, x509: {clientCAFile: $P/ca.crt}}
authorization: {mode: Webhook}
address: $(node_ip "$i")
healthzBindAddress: 127.0.0.1
readOnlyPort: 0
cgroupDriver: cgroupfs
cgroupRoot: /stampede-node$i
failSwapOn: false
clusterDomain: cluster.local
clusterDNS: [10.96.0.10]
tlsCertFile: $P/kubelet-serving-node$i.crt
tlsPrivateKeyFile: $P/kubelet-serving-node$i.key
staticPodPath: $D/manifests
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
Y
  mkdir -p "$D/manifests"
  node_bg "$i" kubelet "$B/kubelet" --config="$D/kubelet-config.yaml" --kubeconfig="$P/kubelet-node$i.kubeconfig" \
    --container-runtime=remote --container-runtime-endpoint="unix://$D/run/containerd.sock" \
    --hostname-override="node$i" --node-ip="$(node_ip "$i")" --root-dir="$D/kubelet" --cert-dir="$D/kubelet/pki" --v=1
done
ready_nodes() { "$BED/bin/k" get nodes -o 'jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c '^True$'; }
all_ready() { [ "$(ready_nodes)" = "$NODES" ]; }
until_ok "$NODES node(s) Ready" 1440 all_ready
until_ok "default service account" 120 "$BED/bin/k" get serviceaccount default
say "$NODES node(s) Ready"
up_ok=1
