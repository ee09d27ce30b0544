#!/bin/bash
# Tears a test bed down (lab/kubernetes/up.sh BED), every node of it: every process it started,
# by the PIDs in BED/pids (kubelets first); every container and pod sandbox with its shim (killed
# through each node's containerd while it is still up, then by the shims' own PID files); the
# nodes' namespace holders, whose end frees each node's mount namespace with everything mounted
# in it (host directories, pod volumes, sandbox network namespaces, overlay root filesystems);
# every mount under BED (the nodes' and the bed's network namespaces, which frees them); the
# nodes' cgroups (/stampede-nodeI); then the mount points up.sh made outside BED, the CNI
# plugins' entries in /var/lib/cni, and BED itself.
# usage: lab/kubernetes/down.sh BED [--keep]   (--keep leaves BED's files, logs included)
set -uo pipefail
BED=${1:?usage: down.sh BED [--keep]}
[ -d "$BED" ] || exit 0
BED=$(cd "$BED" && pwd)
stop() { # name: SIGTERM, up to 10 s, then SIGKILL; by PID (a setsid leader: its group too)
  local f=$BED/pids/$1.pid p; [ -f "$f" ] || return 0; p=$(cat "$f")
  if kill -0 "$p" 2>/dev/null; then
    kill -- "-$p" 2>/dev/null || kill "$p"
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
    kill -9 -- "-$p" 2>/dev/null; kill -9 "$p" 2>/dev/null
    echo "stopped $1 ($p)"
  fi
  rm -f "$f"
}
for n in "$BED"/pids/*kubelet.pid; do [ -f "$n" ] && stop "$(basename "$n" .pid)"; done
for S in "$BED"/node*/run/containerd.sock; do
  [ -S "$S" ] || continue
  C="ctr -a $S -n k8s.io"
  for t in $($C tasks ls -q 2>/dev/null); do $C tasks kill -s SIGKILL "$t" >/dev/null 2>&1; done
  sleep 1
  for t in $($C tasks ls -q 2>/dev/null); do $C tasks delete -f "$t" >/dev/null 2>&1; done
  for c in $($C containers ls -q 2>/dev/null); do $C containers delete "$c" >/dev/null 2>&1; done
done
for n in kube-scheduler kube-controller-manager kube-apiserver etcd registry; do stop "$n"; done
for n in "$BED"/pids/*.pid; do [ -f "$n" ] && stop "$(basename "$n" .pid)"; done
# shims left by a containerd that died first
for f in $(find "$BED"/node*/containerd/state -name shim.pid 2>/dev/null); do
  p=$(cat "$f"); kill -0 "$p" 2>/dev/null && kill -9 "$p" && echo "stopped shim ($p)"
done
# the nodes' cgroups, deepest first (empty now: their processes are gone)
for i in $(seq 9); do
  for c in /sys/fs/cgroup/*/stampede-node$i; do
    [ -d "$c" ] || continue
    find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null
    if [ -d "$c" ]; then echo "cgroup $c still in use" >&2; else echo "removed cgroup $c"; fi
  done
done
# deepest first; the bed's network namespace (BED/netns) is the last one and frees it
grep -o " $BED/[^ ]*" /proc/mounts | sort -r | while read -r m; do umount -l "$m" && echo "umount $m"; done
# up.sh listed which of these did not exist before the bed (only those go: empty mount points,
# and containerd's shim socket directory); the CNI result cache holds other runtimes' files too
# (podman's), so only our network's entries go
for d in $(cat "$BED/outside" 2>/dev/null); do
  case $d in
    # shims of other containerd instances may use it too: only an empty one goes
    /run/containerd) rmdir /run/containerd/runc/k8s.io /run/containerd/runc /run/containerd/s /run/containerd 2>/dev/null ;;
    *) [ -e "$d" ] && rm -rf "$d" && echo "removed $d" ;;
  esac
done
rm -f /var/lib/cni/results/stampede-pods-*
rmdir /var/lib/cni/results /var/lib/cni 2>/dev/null
if [ "${2:-}" != --keep ]; then rm -rf "$BED"; else rm -f "$BED/owner"; fi
