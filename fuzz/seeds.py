#!/usr/bin/env python3
"""Extract the fuzz targets' seed corpora from the project's own test inputs and examples.

    python3 fuzz/seeds.py     # (re)writes fuzz/corpus/<target>/seed-*; run from anywhere

Sources: string literals handed to the annotation parser in src/k8s/annotations.rs's tests and the
annotations of examples/pods; the plexus configs in examples/ and deploy-style confs; every NAD's
spec.config in examples/ (as netconf seeds and as whole NAD objects); JSON results from
crates/cni/src/result.rs's tests; CNI_ARGS strings from crates/cni/src/args.rs and src/request.rs.
Files are named by content hash, so re-running is idempotent.
"""
import hashlib, json, pathlib, re

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "fuzz" / "corpus"


def put(target, data):
    if isinstance(data, str):
        data = data.encode()
    if not data or len(data) > 8192:
        return
    d = OUT / target
    d.mkdir(parents=True, exist_ok=True)
    (d / ("seed-" + hashlib.sha1(data).hexdigest()[:16])).write_bytes(data)


def rust_strings(text):
    """Rust string literals: raw r#"..."# and plain "..." (simple escapes only)."""
    for m in re.finditer(r'r#"(.*?)"#', text, re.S):
        yield m.group(1)
    for m in re.finditer(r'(?<![r#\w])"((?:[^"\\\n]|\\.)*)"', text):
        s = m.group(1)
        try:
            yield json.loads('"' + s + '"')
        except ValueError:
            pass


def yaml_block_values(text, key):
    """Values of `key: |` blocks and `key: '...'`/`key: "..."`/`key: plain` scalars in simple YAML."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r'^(\s*)' + re.escape(key) + r':\s*(.*)$', line)
        if not m:
            continue
        indent, rest = len(m.group(1)), m.group(2).strip()
        if rest in ("|", "|-", ">", ">-", "|+"):
            block = []
            for nxt in lines[i + 1:]:
                if nxt.strip() and len(nxt) - len(nxt.lstrip()) <= indent:
                    break
                block.append(nxt)
            pad = min((len(b) - len(b.lstrip()) for b in block if b.strip()), default=0)
            yield "\n".join(b[pad:] for b in block).strip()
        elif rest:
            if rest[0] in "'\"" and rest[-1] == rest[0]:
                rest = rest[1:-1]
            yield rest


# --- annotation ---
ann = (ROOT / "src/k8s/annotations.rs").read_text()
tests = ann[ann.index("#[cfg(test)]"):]
for s in rust_strings(tests):
    if len(s) < 400:
        put("annotation", s)
for m in re.finditer(r'json!\((\[\{.*?\}\])\)', tests, re.S):
    body = m.group(1)
    if "{" in body and "(" not in body:
        try:
            put("annotation", json.dumps(json.loads(re.sub(r",\s*([\]}])", r"\1", body))))
        except ValueError:
            pass
for f in sorted((ROOT / "examples").rglob("*.yaml")):
    t = f.read_text()
    for key in ("k8s.v1.cni.cncf.io/networks", "v1.multus-cni.io/default-network"):
        for v in yaml_block_values(t, key):
            put("annotation", v)

# --- config, netconf, nad ---
for f in sorted((ROOT / "examples").rglob("*")):
    if f.suffix in (".conf", ".conflist", ".json"):
        data = f.read_bytes()
        put("config" if "plexus" in f.name else "netconf", data)
for f in sorted(ROOT.glob("tests/*.rs")) + [ROOT / "src/config/mod.rs", ROOT / "src/netconf.rs"]:
    for s in rust_strings(f.read_text()):
        if s.startswith("{") and '"cniVersion"' in s:
            target = "config" if ('"delegates"' in s or '"clusterNetwork"' in s) else "netconf"
            put(target, s)
for f in sorted((ROOT / "examples").rglob("*.yaml")):
    t = f.read_text()
    if "NetworkAttachmentDefinition" not in t:
        continue
    for doc in t.split("\n---"):
        if "NetworkAttachmentDefinition" not in doc:
            continue
        name = next(yaml_block_values(doc, "name"), "net")
        for cfg in yaml_block_values(doc, "config"):
            put("netconf", cfg)
            put("nad", json.dumps({
                "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
                "metadata": {"name": name, "namespace": "pods"}, "spec": {"config": cfg}}))
put("nad", json.dumps({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
                       "metadata": {"name": "x", "namespace": "ns"}, "spec": {}}))

# --- result (first byte: the fallback version) ---
res = (ROOT / "crates/cni/src/result.rs").read_text()
for s in rust_strings(res):
    if s.startswith("{") and ("ips" in s or "ip4" in s or "cniVersion" in s):
        for v in (0, 4, 6):
            put("result", bytes([v]) + s.encode())
for m in re.finditer(r'json!\((\{.*?\})\)', res[res.index("#[cfg(test)]"):], re.S):
    body = m.group(1)
    if "(" in body:
        continue
    try:
        put("result", b"\x06" + json.dumps(json.loads(re.sub(r",\s*([\]}])", r"\1", body))).encode())
    except ValueError:
        pass

# --- cni_args: CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_ARGS, CNI_PATH lines ---
for f in (ROOT / "crates/cni/src/args.rs", ROOT / "src/request.rs"):
    for s in rust_strings(f.read_text()):
        if "=" in s and "\n" not in s and len(s) < 300:
            put("cni_args", s)
            put("cni_args", "ADD\ncid-1\n/run/netns/x\neth0\n" + s + "\n/opt/cni/bin")
put("cni_args", "DEL\ncid-1\n\nnet1\nIgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;K8S_POD_UID=u\n/opt/cni/bin:/usr/lib/cni")
put("cni_args", "VERSION")


# Hand-written plexus configs touching every key group (the tests build theirs with json!).
for cfg in [
    {"cniVersion": "1.1.0", "name": "plexus", "type": "plexus", "kubeconfig": "/etc/cni/net.d/plexus.d/plexus.kubeconfig",
     "clusterNetwork": "/etc/cni/net.d/10-cluster.conflist", "defaultNetworks": ["macvlan-net", "/etc/x.conf"],
     "systemNamespaces": ["kube-system"], "multusNamespace": "kube-system", "namespaceIsolation": True,
     "globalNamespaces": "default,shared", "confDir": "/etc/cni/multus/net.d", "cniDir": "/var/lib/cni/multus",
     "binDir": "/opt/cni/bin", "logLevel": "debug", "logFile": "/var/log/plexus.log", "logToStderr": False,
     "logOptions": {"maxAge": 5, "maxSize": 100, "maxBackups": 5, "compress": True},
     "readinessindicatorfile": "/run/ready", "readinessIndicatorTimeoutSeconds": 3,
     "capabilities": {"portMappings": True, "bandwidth": True}, "runtimeConfig": {"portMappings": [{"hostPort": 80, "containerPort": 8080, "protocol": "tcp"}]},
     "retryDeleteOnError": True, "auxiliaryCNIChainName": "aux", "strictCapabilities": False,
     "delegateTimeoutSeconds": 30, "lockTimeoutSeconds": 2.5, "apiTimeoutSeconds": 0.25, "apiBudgetSeconds": 10},
    {"cniVersion": "1.1.0", "name": "plexus", "delegates": [
        {"cniVersion": "1.0.0", "name": "cluster", "plugins": [{"type": "bridge", "ipam": {"type": "host-local", "subnet": "10.1.0.0/16"}}, {"type": "portmap", "capabilities": {"portMappings": True}}]},
        {"cniVersion": "0.3.1", "name": "second", "type": "macvlan", "master": "eth1"}],
     "cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"}], "cni.dev/attachments": []},
    {"cniVersion": "0.3.1", "name": "multus-cni-network", "type": "multus", "kubeconfig": "/etc/cni/net.d/multus.d/multus.kubeconfig",
     "delegates": [{"cniVersion": "0.3.1", "name": "cbr0", "plugins": [{"type": "flannel", "delegate": {"isDefaultGateway": True}}]}]},
]:
    put("config", json.dumps(cfg))
    put("config", json.dumps(cfg, indent=1))

for d in sorted(OUT.iterdir()):
    print(f"{d.name}: {len(list(d.iterdir()))} seeds")
