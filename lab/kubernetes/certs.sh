#!/bin/bash
# The test bed's PKI and kubeconfigs, with openssl: a CA; the API server's serving certificate
# (127.0.0.1, the node IP, the kubernetes Service IP 10.96.0.1 and its names); client
# certificates for admin (system:masters), the API server towards kubelets, the
# controller-manager, the scheduler and each node's kubelet (system:node:NODE, in
# kubelet-NODE.kubeconfig); each kubelet's serving certificate (kubelet-serving-NODE); the
# service-account signing key pair. Kubeconfigs point at https://API_IP:6443 with the
# certificates embedded.
# usage: certs.sh BED API_IP NODE=NODE_IP...
set -euo pipefail
BED=$1; IP=$2; shift 2
P=$BED/pki; mkdir -p "$P"; cd "$P"
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 30 -subj "/CN=stampede-bed-ca" 2>/dev/null
openssl genrsa -out sa.key 2048 2>/dev/null; openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
mk() { # name CN O SANs
  local n=$1 cn=$2 o=$3 san=$4
  openssl genrsa -out "$n.key" 2048 2>/dev/null
  openssl req -new -key "$n.key" -out "$n.csr" -subj "/CN=$cn${o:+/O=$o}" 2>/dev/null
  if [ -n "$san" ]; then printf "subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\n" "$san" > "$n.ext"
  else printf "extendedKeyUsage=clientAuth\n" > "$n.ext"; fi
  openssl x509 -req -in "$n.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$n.crt" -days 30 -extfile "$n.ext" 2>/dev/null
  rm -f "$n.csr" "$n.ext"
}
mk apiserver kube-apiserver "" "IP:127.0.0.1,IP:$IP,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
mk admin admin system:masters ""
mk apiserver-kubelet-client kube-apiserver-kubelet-client system:masters ""
mk controller-manager system:kube-controller-manager "" ""
mk scheduler system:kube-scheduler "" ""
for node in "$@"; do
  name=${node%%=*}; ip=${node#*=}
  mk "kubelet-$name" "system:node:$name" system:nodes ""
  mk "kubelet-serving-$name" "$name" "" "IP:127.0.0.1,IP:$ip,DNS:$name,DNS:localhost"
done
b64() { base64 -w0 < "$1"; }
for n in admin controller-manager scheduler $(for node in "$@"; do echo "kubelet-${node%%=*}"; done); do
  cat > "$n.kubeconfig" <<K
apiVersion: v1
kind: Config
clusters:
- name: bed
  cluster: {server: "https://$IP:6443", certificate-authority-data: $(b64 ca.crt)}
users:
- name: $n
  user: {client-certificate-data: $(b64 "$n.crt"), client-key-data: $(b64 "$n.key")}
contexts:
- name: bed
  context: {cluster: bed, user: $n}
current-context: bed
K
done
