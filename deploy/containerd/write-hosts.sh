#!/bin/sh
# Writes containerd's hosts.toml for every registry the node's cache-daemon mirrors, from the
# template beside this script (hosts.toml.tmpl): `@SERVER@` becomes the registry's URL and
# `@MIRROR@` the cache-daemon's. The cache-daemon DaemonSet runs it in an init container; on a
# node without Kubernetes, run it once by hand (see deploy/README.md).
#
#   MIRROR=http://127.0.0.1:5050 \
#   REGISTRIES="docker.io=https://registry-1.docker.io ghcr.io=https://ghcr.io" \
#   sh write-hosts.sh hosts.toml.tmpl /etc/containerd/certs.d
#
# Each file is written to a temporary name and renamed, so containerd never reads half a file.
# A hosts.toml that cache-daemon did not write (no "# Written by cache-daemon" first line) is
# left alone. POSIX sh; runs under busybox.
set -eu

template=$1
certs_dir=$2
: "${MIRROR:?set MIRROR to the cache-daemon URL, e.g. http://127.0.0.1:5050}"
: "${REGISTRIES:?set REGISTRIES to space-separated HOST=URL pairs}"
marker="# Written by cache-daemon"

for entry in $REGISTRIES; do
  host=${entry%%=*}
  server=${entry#*=}
  if [ -z "$host" ] || [ "$host" = "$entry" ] || [ -z "$server" ]; then
    echo "write-hosts: $entry: expected HOST=URL" >&2
    exit 2
  fi
  dir=$certs_dir/$host
  file=$dir/hosts.toml
  if [ -e "$file" ]; then
    case $(head -n 1 "$file") in
      "$marker"*) ;;
      *)
        echo "write-hosts: $file exists and was not written by cache-daemon; left as it is" >&2
        continue
        ;;
    esac
  fi
  mkdir -p "$dir"
  sed -e "s|@SERVER@|$server|g" -e "s|@MIRROR@|$MIRROR|g" "$template" > "$file.tmp"
  mv -f "$file.tmp" "$file"
  echo "write-hosts: $file -> $MIRROR, falling back to $server"
done
