#!/usr/bin/env bash
# plexus, locally, as Kubernetes runs it: a pod annotated with two NetworkAttachmentDefinitions gets the
# cluster network and both of them; plexus writes the pod's network-status annotation back through the
# Kubernetes API; then everything is deleted and nothing is left.
#
#   sudo bash scripts/demo.sh                                   # against the API stand-in (e2e/STANDIN.md)
#   sudo KUBECONFIG=/path/to/kubeconfig bash scripts/demo.sh     # against a real cluster instead
#
# Everything happens inside two network namespaces this script creates ("host" stands in for the node,
# where plexus, its delegates and the API stand-in run; "pod" is the container's) and a temporary
# directory; all of it is removed on exit, and every process the script starts is stopped. The machine's
# own network namespace is never touched.
#
# With KUBECONFIG set, the demo creates a namespace plexus-demo-<pid> (and the NAD CRD when the cluster
# has none) and deletes them on exit. plexus still runs in the host namespace, which has no network of
# its own: two socat relays joined by a Unix socket carry its API connections to the server's address,
# which must be an IPv4 address (the kubeconfig is used unchanged, so TLS still checks the server's name).
set -euo pipefail
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO_ROOT"
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

if ! is_root; then
    echo "The demo creates network namespaces and needs root: sudo bash scripts/demo.sh" >&2
    exit 1
fi

MODE=standin
if [ -n "${KUBECONFIG:-}" ]; then
    MODE=cluster
    if [[ $KUBECONFIG == *:* ]] || [ ! -f "$KUBECONFIG" ]; then
        echo "KUBECONFIG must name one kubeconfig file (it is $KUBECONFIG)" >&2
        exit 1
    fi
fi

banner "Checking dependencies"
deps=(ip iproute2 /usr/lib/cni/bridge containernetworking-plugins curl curl jq jq)
[ "$MODE" = cluster ] && deps+=(kubectl kubernetes-client socat socat)
ensure_packages "${deps[@]}"
command -v cargo >/dev/null || { echo "cargo is not installed" >&2; exit 1; }

banner "Building plexus and the Kubernetes API stand-in (plexus-apiserver)"
cargo build -p plexus -p plexus-e2e --bins
PLEXUS="$(target_dir)/debug/plexus"
APISERVER="$(target_dir)/debug/plexus-apiserver"

HOST="plexus-demo-host-$$"
POD="plexus-demo-pod-$$"
WORK=$(mktemp -d /tmp/plexus-demo.XXXXXX)
CID="demo-$$"
NS=plexus-demo
[ "$MODE" = cluster ] && NS="plexus-demo-$$"
POD_NAME=demo
# Where plexus's config says its kubeconfig is (examples/kubernetes/00-plexus.conf, rewritten).
PLEXUS_KUBECONFIG="$WORK/etc/cni/net.d/plexus.d/plexus.kubeconfig"
APISERVER_PID=""
RELAY_PIDS=()
NS_CREATED=""
CRD_CREATED=""
CRD_NAME=network-attachment-definitions.k8s.cni.cncf.io

cleanup() {
    local pid
    if [ -n "$APISERVER_PID" ]; then
        kill "$APISERVER_PID" 2>/dev/null || true
        wait "$APISERVER_PID" 2>/dev/null || true
    fi
    for pid in "${RELAY_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ -n "$NS_CREATED" ]; then
        kubectl delete namespace "$NS" --wait=false --ignore-not-found >/dev/null 2>&1 || true
    fi
    if [ -n "$CRD_CREATED" ]; then
        kubectl delete crd "$CRD_NAME" --wait=false --ignore-not-found >/dev/null 2>&1 || true
    fi
    ip netns del "$POD" 2>/dev/null || true
    ip netns del "$HOST" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# Copy an example file into $WORK, rewriting the node paths it names to $WORK (and /opt/cni/bin to
# Debian's /usr/lib/cni), so what the demo runs is exactly the example.
rewrite() {
    local src=$1 dst=$2
    mkdir -p "$(dirname "$dst")"
    sed -e "s#/etc/cni/#$WORK/etc/cni/#g" \
        -e "s#/var/lib/cni#$WORK/var/lib/cni#g" \
        -e "s#/var/log/plexus#$WORK/var/log/plexus#g" \
        -e "s#/opt/cni/bin#/usr/lib/cni#g" \
        -e "s#namespace: plexus-demo\$#namespace: $NS#" \
        -e "s#name: plexus-demo\$#name: $NS#" \
        "$src" >"$dst"
}

# The Kubernetes API, for the demo's own calls. With the stand-in: curl inside the host namespace, with
# the CA and the bearer token of the kubeconfig the stand-in wrote. With a cluster: kubectl.
API_URL=""
api_curl() {
    local code
    code=$(ip netns exec "$HOST" curl -sS -o "$WORK/api.body" -w '%{http_code}' \
        --cacert "$WORK/api-ca.pem" -H "@$WORK/api-auth.header" "$@") || return 1
    if [ "$code" -ge 400 ]; then
        echo "the API answered $code:" >&2
        cat "$WORK/api.body" >&2
        echo >&2
        return 1
    fi
    cat "$WORK/api.body"
}
# api_get PATH: the JSON at PATH.
api_get() {
    if [ "$MODE" = standin ]; then
        api_curl "$API_URL$1"
    else
        kubectl get --raw "$1"
    fi
}
# api_create COLLECTION_PATH FILE: create the object in FILE (YAML); prints it as created.
api_create() {
    if [ "$MODE" = standin ]; then
        api_curl -X POST -H 'Content-Type: application/yaml' --data-binary "@$2" "$API_URL$1"
    else
        kubectl create -f "$2" -o json
    fi
}

# Run plexus as the container runtime would, inside the host namespace, with the plexus config on stdin.
plexus() {
    local command=$1 netns=${2:-}
    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
        CNI_COMMAND="$command" CNI_CONTAINERID="$CID" CNI_NETNS="$netns" CNI_IFNAME=eth0 \
        CNI_PATH=/usr/lib/cni CNI_ARGS="$CNI_ARGS" \
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

if [ "$MODE" = standin ]; then
    banner "Starting the Kubernetes API stand-in inside $HOST"
    mkdir -p "$(dirname "$PLEXUS_KUBECONFIG")"
    ip netns exec "$HOST" "$APISERVER" --kubeconfig "$PLEXUS_KUBECONFIG" \
        >"$WORK/apiserver.out" 2>"$WORK/apiserver.log" &
    APISERVER_PID=$!
    for _ in $(seq 300); do
        grep -q '^plexus-apiserver ready' "$WORK/apiserver.out" && break
        if ! kill -0 "$APISERVER_PID" 2>/dev/null; then
            APISERVER_PID=""
            echo "plexus-apiserver exited:" >&2
            cat "$WORK/apiserver.log" >&2
            exit 1
        fi
        sleep 0.1
    done
    grep '^plexus-apiserver ready' "$WORK/apiserver.out" || { echo "plexus-apiserver is not ready" >&2; exit 1; }
    API_URL=$(sed -n 's/^plexus-apiserver ready url=\([^ ]*\) .*/\1/p' "$WORK/apiserver.out")
    # The kubeconfig carries the CA (base64) and the bearer token, both as YAML scalars.
    kubeconfig_value() {
        sed -n "s/^ *$1: *//p" "$PLEXUS_KUBECONFIG" | head -n 1 | sed -e 's/^"//' -e 's/"$//'
    }
    kubeconfig_value certificate-authority-data | base64 -d >"$WORK/api-ca.pem"
    (umask 077 && echo "Authorization: Bearer $(kubeconfig_value token)" >"$WORK/api-auth.header")
    echo "plexus's kubeconfig: $PLEXUS_KUBECONFIG (written by the stand-in)"
else
    banner "Using the cluster of $KUBECONFIG"
    server=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')
    echo "API server: $server"
    if ! [[ $server =~ ^https://([0-9]+\.[0-9]+\.[0-9]+\.[0-9]+)(:([0-9]+))?/?$ ]]; then
        echo "The demo runs plexus in a network namespace of its own, which reaches the API only through" >&2
        echo "a relay to an IPv4 address; this kubeconfig's server is $server." >&2
        echo "Use a kubeconfig whose server is https://<IPv4>:<port>, or run without KUBECONFIG to use" >&2
        echo "the API stand-in." >&2
        exit 1
    fi
    ip_addr=${BASH_REMATCH[1]}
    port=${BASH_REMATCH[3]:-443}
    if ! out=$(kubectl version 2>&1); then
        echo "cannot reach the API server with $KUBECONFIG:" >&2
        echo "$out" >&2
        exit 1
    fi
    # plexus's side of the relay listens on the server's own address inside the host namespace, so the
    # kubeconfig works unchanged there.
    [[ $ip_addr == 127.* ]] || ip -n "$HOST" addr add "$ip_addr/32" dev lo
    socat "UNIX-LISTEN:$WORK/api.sock,fork,mode=600" "TCP:$ip_addr:$port" &
    RELAY_PIDS+=($!)
    ip netns exec "$HOST" socat "TCP-LISTEN:$port,bind=$ip_addr,fork,reuseaddr" "UNIX-CONNECT:$WORK/api.sock" &
    RELAY_PIDS+=($!)
    for _ in $(seq 100); do
        [ -S "$WORK/api.sock" ] && ip netns exec "$HOST" bash -c "exec 3<>/dev/tcp/$ip_addr/$port" 2>/dev/null && break
        sleep 0.1
    done
    mkdir -p "$(dirname "$PLEXUS_KUBECONFIG")"
    install -m 600 "$KUBECONFIG" "$PLEXUS_KUBECONFIG"
    echo "plexus's kubeconfig: $PLEXUS_KUBECONFIG (a copy of $KUBECONFIG)"
    echo "relay: $HOST $ip_addr:$port -> $WORK/api.sock -> $ip_addr:$port"
fi

banner "Writing the node's configs (examples/kubernetes, examples/file-based) under $WORK"
mkdir -p "$WORK/var/lib/cni" "$WORK/var/log/plexus"
rewrite examples/kubernetes/00-plexus.conf "$WORK/etc/cni/net.d/00-plexus.conf"
rewrite examples/file-based/10-cluster.conflist "$WORK/etc/cni/net.d/10-cluster.conflist"
for f in namespace macvlan-net ptp-net pod; do
    rewrite "examples/kubernetes/$f.yaml" "$WORK/k8s/$f.yaml"
done
(cd "$WORK" && find etc k8s -type f | sort | sed 's/^/  /')
echo "plexus config (00-plexus.conf):"
jq . "$WORK/etc/cni/net.d/00-plexus.conf"

banner "Creating the NetworkAttachmentDefinition CRD (plexus crd), namespace $NS, the NADs and the pod"
"$PLEXUS" crd >"$WORK/k8s/crd.yaml"
if [ "$MODE" = cluster ] && kubectl get crd "$CRD_NAME" >/dev/null 2>&1; then
    echo "the cluster already has the CRD $CRD_NAME; using it"
else
    api_create /apis/apiextensions.k8s.io/v1/customresourcedefinitions "$WORK/k8s/crd.yaml" |
        jq -r '"created CRD " + .metadata.name'
    if [ "$MODE" = cluster ]; then
        CRD_CREATED=1
        kubectl wait --for condition=established --timeout=60s "crd/$CRD_NAME" >/dev/null
    fi
fi
[ "$MODE" = cluster ] && NS_CREATED=1
api_create /api/v1/namespaces "$WORK/k8s/namespace.yaml" | jq -r '"created namespace " + .metadata.name'
for nad in macvlan-net ptp-net; do
    api_create "/apis/k8s.cni.cncf.io/v1/namespaces/$NS/network-attachment-definitions" "$WORK/k8s/$nad.yaml" |
        jq -r '"created NetworkAttachmentDefinition " + .metadata.namespace + "/" + .metadata.name'
done
pod_json=$(api_create "/api/v1/namespaces/$NS/pods" "$WORK/k8s/pod.yaml")
POD_UID=$(jq -r .metadata.uid <<<"$pod_json")
jq -r '"created pod " + .metadata.namespace + "/" + .metadata.name + " (uid " + .metadata.uid + ", node " + .spec.nodeName + ")"' <<<"$pod_json"
jq -r '.metadata.annotations | to_entries[] | "  annotation " + .key + ": " + .value' <<<"$pod_json"
CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=$NS;K8S_POD_NAME=$POD_NAME;K8S_POD_INFRA_CONTAINER_ID=$CID;K8S_POD_UID=$POD_UID"
[ "$MODE" = standin ] && api_curl -X DELETE "$API_URL/standin/requests" >/dev/null

banner "ADD: plexus attaches the cluster network (eth0), macvlan-net (net1) and ptp-net (data0)"
echo "CNI_ARGS=$CNI_ARGS"
if ! result=$(plexus ADD "/run/netns/$POD"); then
    echo "plexus ADD failed:" >&2
    echo "$result" | jq . >&2 || echo "$result" >&2
    echo "log:" >&2
    cat "$WORK/var/log/plexus/plexus.log" >&2 || true
    exit 1
fi
echo "result returned to the runtime (the cluster network's, in the config's cniVersion):"
echo "$result" | jq .

# plexus posts its events after replying, from a detached process: give them a moment to land.
for _ in $(seq 50); do
    if [ "$MODE" = standin ]; then
        # (the stand-in's request log, so the demo's own reads do not show up in it)
        n=$(api_curl "$API_URL/standin/requests" | jq '[.[] | select(.method == "POST" and (.path | endswith("/events")))] | length')
    else
        n=$(api_get "/api/v1/namespaces/$NS/events?fieldSelector=involvedObject.name%3D$POD_NAME" | jq '.items | length')
    fi
    [ "${n:-0}" -ge 3 ] && break
    sleep 0.1
done

if [ "$MODE" = standin ]; then
    banner "plexus's API requests during ADD (the stand-in's request log)"
    api_curl "$API_URL/standin/requests" |
        jq -r '.[] | "  \(.method) \(.path)\(if .query != "" then "?" + .query else "" end) -> \(.status)"'
fi

banner "The pod's k8s.v1.cni.cncf.io/network-status annotation, read back from the API"
api_get "/api/v1/namespaces/$NS/pods/$POD_NAME" |
    jq '.metadata.annotations["k8s.v1.cni.cncf.io/network-status"] | fromjson'
echo "events:"
api_get "/api/v1/namespaces/$NS/events?fieldSelector=involvedObject.name%3D$POD_NAME" |
    jq -r '.items[] | "  \(.type) \(.reason): \(.message)"'

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
    echo "$out" | jq . >&2 || echo "$out" >&2
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

if [ "$MODE" = standin ]; then
    banner "Done; stopping the API stand-in, removing the namespaces and $WORK"
else
    banner "Done; deleting namespace $NS${CRD_CREATED:+ and the CRD}, stopping the relays, removing the namespaces and $WORK"
fi
