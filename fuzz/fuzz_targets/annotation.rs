//! The pod's `k8s.v1.cni.cncf.io/networks` and `v1.multus-cni.io/default-network` annotations, both
//! forms (`src/pure/annotations.rs`, NPWG-14 to NPWG-36, EXT-1 to EXT-4).
//!
//! Invariants: no panic; an accepted value keeps the limits and yields only valid names, namespaces
//! and interface names; every accepted selection, written back in the JSON form (and, when it has
//! nothing but a name, namespace and interface, in the text form), parses to the same selection;
//! the default-network parse agrees with the networks parse; `cni-args` merge into a conf that
//! still parses; a refusal's message is short (it quotes at most a slice of the value).
#![no_main]

use libfuzzer_sys::fuzz_target;
use plexus::pure::{annotations::{self, AnnotationError, MAX_ANNOTATION_BYTES, MAX_ELEMENTS, Selection, inject_cni_args}, netconf::NetworkConfig};
use plexus_cni::validate;
use serde_json::{Map, Value, json};

const POD_NS: &str = "pods";

fuzz_target!(|data: &[u8]| {
    let Ok(value) = std::str::from_utf8(data) else {
        return;
    };
    check(value);
});

fn check(value: &str) {
    let parsed = annotations::parse_networks(value, POD_NS);
    match &parsed {
        Ok(list) => {
            assert!(value.len() <= MAX_ANNOTATION_BYTES);
            assert!(
                list.len() <= MAX_ELEMENTS,
                "{} elements accepted",
                list.len()
            );
            assert!(list.iter().filter(|s| s.requests.gateways.is_some()).count() <= 1);
            for s in list {
                check_selection(s);
            }
            round_trip_json(list);
            round_trip_text(list);
        }
        Err(e) => check_error(e),
    }
    match annotations::parse_default_network(value, "kube-system") {
        Ok(one) => {
            let list = annotations::parse_networks(value, "kube-system").expect("same value");
            assert_eq!(list, vec![one]);
        }
        Err(AnnotationError::NotOneDefaultNetwork { count }) => {
            assert_ne!(count, 1);
        }
        Err(e) => check_error(&e),
    }
}

fn check_error(e: &AnnotationError) {
    let msg = e.to_string();
    assert!(!msg.is_empty());
    // Messages quote at most 64 characters of any value; the longest fixed texts stay well below this.
    assert!(
        msg.len() <= 1024,
        "error message of {} bytes: {msg:.300}",
        msg.len()
    );
}

fn check_selection(s: &Selection) {
    assert!(!s.namespace.is_empty() && s.namespace.len() <= 63, "{s:?}");
    assert!(!s.name.is_empty() && s.name.len() <= 253, "{s:?}");
    for part in [&s.namespace, &s.name] {
        assert!(
            part.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'),
            "{s:?}"
        );
        assert!(!part.contains(".."), "{s:?}");
    }
    assert!(!s.namespace.contains('.'), "{s:?}");
    if let Some(ifname) = &s.interface {
        validate::interface_name(ifname).unwrap_or_else(|e| panic!("accepted {ifname:?}: {e}"));
    }
    if let Some(mac) = &s.requests.mac {
        assert_eq!(mac.len(), 17, "{mac}");
        assert_eq!(mac, &mac.to_ascii_lowercase());
    }
    assert_eq!(s.qualified_name(), format!("{}/{}", s.namespace, s.name));
}

/// A selection written back as one JSON element, the way a pod author would.
fn to_json(s: &Selection) -> Value {
    let mut o = Map::new();
    o.insert("name".into(), json!(s.name));
    o.insert("namespace".into(), json!(s.namespace));
    let mut opt = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            o.insert(k.into(), v);
        }
    };
    opt("interface", s.interface.as_ref().map(|v| json!(v)));
    opt("ips", (!s.requests.ips.is_empty()).then(|| json!(s.requests.ips)));
    opt("mac", s.requests.mac.as_ref().map(|v| json!(v)));
    opt(
        "infiniband-guid",
        s.requests.infiniband_guid.as_ref().map(|v| json!(v)),
    );
    opt("portMappings", s.requests.port_mappings.clone());
    opt("bandwidth", s.requests.bandwidth.clone());
    opt(
        "default-route",
        s.requests.gateways.as_ref().map(|g| json!(g)),
    );
    opt("cni-args", s.cni_args.clone().map(Value::Object));
    opt("deviceID", s.requests.device_id.as_ref().map(|v| json!(v)));
    opt(
        "ipam-claim-reference",
        s.ipam_claim_reference.as_ref().map(|v| json!(v)),
    );
    Value::Object(o)
}

fn without_warnings(list: &[Selection]) -> Vec<Selection> {
    list.iter()
        .cloned()
        .map(|mut s| {
            s.warnings.clear();
            s
        })
        .collect()
}

fn round_trip_json(list: &[Selection]) {
    if list.is_empty() {
        return;
    }
    let text = Value::Array(list.iter().map(to_json).collect()).to_string();
    if text.len() > MAX_ANNOTATION_BYTES {
        return;
    }
    let again = annotations::parse_networks(&text, "elsewhere")
        .unwrap_or_else(|e| panic!("written back as {text:.500}: {e}"));
    assert_eq!(
        without_warnings(&again),
        without_warnings(list),
        "written back as {text:.500}"
    );
    for (s, original) in again.iter().zip(list) {
        // Cut the element, not the message: the keys plexus writes are all known, so no warning.
        assert!(s.warnings.is_empty(), "{:?} from {original:?}", s.warnings);
        if let Some(args) = &s.cni_args {
            check_cni_args(args);
        }
    }
}

fn round_trip_text(list: &[Selection]) {
    let plain = list.iter().all(|s| {
        to_json(s).as_object().is_some_and(|o| {
            o.keys()
                .all(|k| matches!(k.as_str(), "name" | "namespace" | "interface"))
        })
    });
    if list.is_empty() || !plain {
        return;
    }
    let text = list
        .iter()
        .map(|s| match &s.interface {
            Some(i) => format!("{}/{}@{i}", s.namespace, s.name),
            None => format!("{}/{}", s.namespace, s.name),
        })
        .collect::<Vec<_>>()
        .join(", ");
    // An interface name may hold '"', '[', '{' or '@', which the text form cannot carry.
    if text.contains(['[', '{', '"'])
        || list.iter().any(|s| {
            s.interface
                .as_deref()
                .is_some_and(|i| i.contains(['@', ',']))
        })
    {
        return;
    }
    let again = annotations::parse_networks(&text, "elsewhere")
        .unwrap_or_else(|e| panic!("written back as {text:.500}: {e}"));
    assert_eq!(
        without_warnings(&again),
        without_warnings(list),
        "written back as {text:.500}"
    );
}

/// NPWG-29: the selection's `cni-args` land in `args.cni` of every plugin, and the result parses.
fn check_cni_args(args: &Map<String, Value>) {
    let conf = NetworkConfig::from_bytes(
        br#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"macvlan","args":{"cni":{"keep":1}}},{"type":"tuning"}]}"#,
    )
    .expect("fixed conf");
    let merged = inject_cni_args(&conf, args).expect("merge into object args");
    let again = NetworkConfig::from_bytes(&merged.bytes).expect("merged conf parses");
    assert_eq!(again.plugins.len(), 2);
    for p in &again.plugins {
        let cni = &p.raw["args"]["cni"];
        for (k, v) in args {
            assert_eq!(&cni[k], v);
        }
    }
}
