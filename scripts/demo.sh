#!/usr/bin/env bash
# plexus, locally: give a "pod" network namespace three networks from the file-based examples, show
# them, delete them, and show that nothing is left.
#
#   sudo bash scripts/demo.sh
#
# Everything happens inside two network namespaces this script creates ("host" stands in for the node,
# where plexus and its delegates run; "pod" is the container's) and a temporary directory; all of it is
# removed on exit. The machine's own network namespace is never touched.
set -euo pipefail
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO_ROOT"
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

if ! is_root; then
    echo "The demo creates network namespaces and needs root: sudo bash scripts/demo.sh" >&2
    exit 1
fi

banner "Checking dependencies"
ensure_packages ip iproute2 /usr/lib/cni/bridge containernetworking-plugins
command -v cargo >/dev/null || { echo "cargo is not installed" >&2; exit 1; }

banner "Building plexus"
cargo build -p plexus --bin plexus
PLEXUS="$(target_dir)/debug/plexus"

HOST="plexus-demo-host-$$"
POD="plexus-demo-pod-$$"
WORK=$(mktemp -d /tmp/plexus-demo.XXXXXX)
CID="demo-$$"
cleanup() {
    ip netns del "$POD" 2>/dev/null || true
    ip netns del "$HOST" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

pretty() {
    if command -v jq >/dev/null 2>&1; then
        jq .
    elif command -v python3 >/dev/null 2>&1; then
        python3 -m json.tool
    else
        cat
        echo
    fi
}

# Run plexus as a container runtime would, inside the host namespace, with the plexus config on stdin.
plexus() {
    local command=$1 netns=${2:-}
    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
        CNI_COMMAND="$command" CNI_CONTAINERID="$CID" CNI_NETNS="$netns" CNI_IFNAME=eth0 \
        CNI_PATH=/usr/lib/cni \
        ip netns exec "$HOST" "$PLEXUS" <"$WORK/etc/cni/net.d/00-plexus.conf"
}

banner "Creating the namespaces: $HOST (the node) and $POD (the pod)"
ip netns add "$HOST"
ip netns add "$POD"
ip -n "$HOST" link set lo up
ip -n "$POD" link set lo up
# The macvlan network's master: a veth pair standing in for the node's second NIC.
ip -n "$HOST" link add eth1 type veth peer name eth1-peer
ip -n "$HOST" link set eth1 up
ip -n "$HOST" link set eth1-peer up
echo "pod namespace before ADD:"
ip -n "$POD" -br link

banner "Writing the example configs (examples/file-based) under $WORK"
mkdir -p "$WORK/etc/cni/net.d" "$WORK/etc/cni/multus/net.d" "$WORK/var/lib/cni" "$WORK/var/log/plexus"
rewrite() {
    sed -e "s#/etc/cni/#$WORK/etc/cni/#g" \
        -e "s#/var/lib/cni#$WORK/var/lib/cni#g" \
        -e "s#/var/log/plexus#$WORK/var/log/plexus#g" \
        -e "s#/opt/cni/bin#/usr/lib/cni#g" \
        "examples/file-based/$1" >"$2/$1"
}
rewrite 00-plexus.conf "$WORK/etc/cni/net.d"
rewrite 10-cluster.conflist "$WORK/etc/cni/net.d"
rewrite macvlan.conf "$WORK/etc/cni/multus/net.d"
rewrite ptp.conf "$WORK/etc/cni/multus/net.d"
(cd "$WORK" && find etc -type f | sort | sed 's/^/  /')
echo "plexus config (00-plexus.conf):"
pretty <"$WORK/etc/cni/net.d/00-plexus.conf"

banner "ADD: plexus attaches the cluster network (eth0), macvlan-net (net1) and ptp-net (net2)"
if ! result=$(plexus ADD "/run/netns/$POD"); then
    echo "plexus ADD failed:" >&2
    echo "$result" | pretty >&2
    echo "log:" >&2
    cat "$WORK/var/log/plexus/plexus.log" >&2 || true
    exit 1
fi
echo "result returned to the runtime (the cluster network's, in the config's cniVersion):"
echo "$result" | pretty

banner "Inside the pod: ip -n $POD addr"
ip -n "$POD" addr
echo
echo "routes:"
ip -n "$POD" route

banner "State on the node: plexus's cache and the host-local reservations"
(cd "$WORK/var/lib/cni" && find . -type f | sort | sed 's#^\./#  #')

banner "DEL: plexus detaches every network, last first"
if ! out=$(plexus DEL "/run/netns/$POD"); then
    echo "plexus DEL failed:" >&2
    echo "$out" | pretty >&2
    exit 1
fi
echo "DEL succeeded"

banner "After DEL"
echo "pod namespace:"
ip -n "$POD" -br link
left=$(cd "$WORK/var/lib/cni" && find . -type f ! -name lock ! -name 'last_reserved_ip.*' | sort)
if [ -n "$left" ]; then
    echo "left behind:" >&2
    echo "$left" >&2
    exit 1
fi
echo "no reservations and no cache left (host-local keeps only its lock and last_reserved_ip files)"

banner "plexus log (logLevel verbose)"
cat "$WORK/var/log/plexus/plexus.log"

banner "Done; removing the namespaces and $WORK"
