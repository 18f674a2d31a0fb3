//! The pod's network selection: `k8s.v1.cni.cncf.io/networks` (NPWG-14 to NPWG-36) and
//! `v1.multus-cni.io/default-network` (EXT-4), parsed into validated [`Selection`]s. Pure: no I/O.
//!
//! ```text
//! annotation value ──parse_networks──▶ Vec<Selection> ──Selection::requests──▶ plan::Requests
//!                                          │
//!                                          └─cni_args──inject_cni_args──▶ NetworkConfig (args.cni)
//! ```
//!
//! Two value forms (NPWG-15): a value containing any of `[`, `{` or `"` is JSON and must be an array
//! of selection objects (NPWG-18; a bare object is refused); anything else is the comma text form
//! `[namespace/]name[@interface]` (NPWG-17, EXT-1), items trimmed, empty items skipped. An empty or
//! all-whitespace value selects nothing.
//!
//! Invalid values fail closed (DECIDE-A1; docs/multus-compat.md, "Invalid annotations"): the whole
//! annotation is refused with an [`AnnotationError`] naming the element (its index, counted from 0
//! in annotation order as in the JSON array; empty text items are not counted; and `namespace/name`
//! once those are known), the field, and what is valid. The caller prefixes the pod and the
//! annotation key.
//!
//! Choices where the references leave room:
//! * Names are DNS-1123 *subdomains* (dots allowed, ≤253) and namespaces DNS-1123 labels (≤63), in
//!   both forms (NPWG-9; docs/multus-compat.md, "Annotations"). Interface names follow CNI-53
//!   (NPWG-25).
//! * Optional string keys set to `""` and optional keys set to `null` count as absent, as Go's
//!   decoder treats them; an empty `ips` list is no request. In the text form an empty part
//!   (`/name`, `name@`) is an error.
//! * `mac` must be a unicast, non-zero 6-byte address (what the kernel will accept on a link, v1.2+
//!   of NPWG-23); it and `infiniband-guid` are accepted with `:`/`-` or Cisco `.` separators and
//!   normalised to lower-case colon form.
//! * `bandwidth` may be `{}`; unknown keys inside `bandwidth` and `portMappings` entries are kept.
//! * Unknown dotted keys are ignored silently (NPWG-18). Unknown undotted keys are reserved by the
//!   spec: they are ignored with a warning in [`Selection::warnings`], so a newer spec key does not
//!   break pods, but the event can say it had no effect.
//! * `ips` together with `ipam-claim-reference` is accepted (docs/multus-compat.md, "Annotations").
//! * At most one element may carry `default-route` (NPWG-34), and its list may hold at most one
//!   IPv4 and one IPv6 gateway (Go Multus refuses ECMP default routes).
//!
//! Limits against hostile input: the value is at most [`MAX_ANNOTATION_BYTES`], at most
//! [`MAX_ELEMENTS`] elements, JSON nesting at most [`MAX_JSON_DEPTH`] levels (serde_json's limit).

use std::{collections::BTreeMap, fmt::Write as _, net::IpAddr};

use ipnet::IpNet;
use plexus_cni::validate;
use serde_json::{Map, Value};

use crate::pure::{
    names::{check_label, check_subdomain},
    netconf::{Kind, NetConfError, NetworkConfig},
    plan::Requests,
};

/// Pod annotation selecting extra networks (NPWG-14).
pub const NETWORKS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/networks";
/// Pod annotation plexus writes with the attachment results (NPWG-41).
pub const NETWORK_STATUS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/network-status";
/// Pod annotation replacing the cluster network for one pod (EXT-4).
pub const DEFAULT_NETWORK_ANNOTATION: &str = "v1.multus-cni.io/default-network";
/// NAD annotation naming the device resource of the network (NPWG-13).
pub const RESOURCE_NAME_ANNOTATION: &str = "k8s.v1.cni.cncf.io/resourceName";
/// Pod annotation the kubelet sets on static pods (`file`, `http`) and API pods (`api`).
pub const CONFIG_SOURCE_ANNOTATION: &str = "kubernetes.io/config.source";

/// The longest annotation value accepted, in bytes (256 KiB; Kubernetes allows 256 KiB for all of a
/// pod's annotations together).
pub const MAX_ANNOTATION_BYTES: usize = 256 * 1024;
/// The most elements one annotation may select.
pub const MAX_ELEMENTS: usize = 1024;
/// The deepest JSON nesting accepted (serde_json's recursion limit).
pub const MAX_JSON_DEPTH: usize = 128;

const EXAMPLE_JSON: &str = r#"[{"name": "macvlan-conf"}]"#;
const TEXT_FORM: &str = "the text form is [namespace/]name[@interface], items separated by ','";

/// One selected network, validated (NPWG-19 to NPWG-36, EXT-2, EXT-3).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Selection {
    /// The NAD namespace (NPWG-20); the default namespace when not given.
    pub namespace: String,
    /// The NAD name (NPWG-19).
    pub name: String,
    /// `interface` (NPWG-25), legacy `interfaceRequest` (EXT-2), or `@ifname` (EXT-1).
    pub interface: Option<String>,
    /// What the element asks of its attachment: `ips` (NPWG-21), `mac` (NPWG-23), `infiniband-guid`
    /// (NPWG-35), `portMappings` (NPWG-30), `bandwidth` (NPWG-32), `default-route` (NPWG-34, an explicit
    /// empty list is `Some(vec![])`) and `deviceID` (EXT-3, NPWG-37), validated and canonical.
    pub requests: Requests,
    /// `cni-args`, merged into the delegate's `args.cni` (NPWG-28, NPWG-29).
    pub cni_args: Option<Map<String, Value>>,
    /// `deviceID` (EXT-3, NPWG-37).
    /// `ipam-claim-reference` (NPWG-36).
    pub ipam_claim_reference: Option<String>,
    /// Keys that were ignored, one message each (unknown undotted keys, NPWG-18).
    pub warnings: Vec<String>,
}

impl Selection {
    /// `namespace/name`, the status name of the attachment (NPWG-46).
    pub fn qualified_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// An annotation value that is refused (fail closed, DECIDE-A1). The message says what is valid;
/// the caller adds the pod and the annotation key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnnotationError {
    /// The value is longer than [`MAX_ANNOTATION_BYTES`].
    #[error("the value is {len} bytes; at most {MAX_ANNOTATION_BYTES} bytes (256 KiB) are allowed")]
    TooLarge {
        /// Its length in bytes.
        len: usize,
    },
    /// More than [`MAX_ELEMENTS`] elements.
    #[error("the value selects {count} networks; at most {MAX_ELEMENTS} are allowed")]
    TooManyElements {
        /// How many.
        count: usize,
    },
    /// The value looks like JSON (it contains `[`, `{` or `"`) but does not parse.
    #[error(
        "the value is not valid JSON ({reason}); a value containing '[', '{{' or '\"' must be a JSON array of selection objects like {EXAMPLE_JSON}"
    )]
    Json {
        /// The parser's message.
        reason: String,
    },
    /// JSON that is not an array (NPWG-18).
    #[error("the value must be a JSON array of selection objects like {EXAMPLE_JSON}, not {found}")]
    NotAnArray {
        /// What it is instead, e.g. `a single object`.
        found: &'static str,
    },
    /// One element is invalid.
    #[error("{}", element_message(*.index, .network, .field, .reason))]
    Element {
        /// Its index in the annotation, from 0.
        index: usize,
        /// `namespace/name`, once known.
        network: Option<String>,
        /// The field, as a JSON path inside the element (e.g. `portMappings[0].hostPort`).
        field: Option<String>,
        /// What is wrong and what is valid.
        reason: String,
    },
    /// `v1.multus-cni.io/default-network` names other than one network (EXT-4).
    #[error("the value names {count} networks; it must name exactly one")]
    NotOneDefaultNetwork {
        /// How many it names.
        count: usize,
    },
}

fn element_message(
    index: usize,
    network: &Option<String>,
    field: &Option<String>,
    reason: &str,
) -> String {
    let mut s = format!("element {index}");
    if let Some(n) = network {
        let _ = write!(s, " ({n})");
    }
    if let Some(f) = field {
        let _ = write!(s, ": \"{f}\"");
    }
    let _ = write!(s, ": {reason}");
    s
}

/// Builds errors for one element.
struct At {
    index: usize,
    network: Option<String>,
}

impl At {
    fn err(&self, field: impl Into<String>, reason: impl Into<String>) -> AnnotationError {
        AnnotationError::Element {
            index: self.index,
            network: self.network.clone(),
            field: Some(field.into()),
            reason: reason.into(),
        }
    }

    fn whole(&self, reason: impl Into<String>) -> AnnotationError {
        AnnotationError::Element {
            index: self.index,
            network: self.network.clone(),
            field: None,
            reason: reason.into(),
        }
    }
}

/// A JSON value for a message: compact, cut at 64 characters.
fn show(v: &Value) -> String {
    cut(&v.to_string())
}

/// A string for a message: quoted, cut at 64 characters.
fn show_str(s: &str) -> String {
    cut(&Value::from(s).to_string())
}

fn cut(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_string(),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "a single object",
    }
}

fn check_interface(s: &str) -> Result<(), String> {
    validate::interface_name(s).map_err(|e| e.to_string())
}

// === Address rules ===

/// Bytes of a hardware address written as hex pairs separated by `:` or `-`, or as groups of four
/// hex digits separated by `.`; `None` unless exactly `len` bytes.
fn hardware_address(s: &str, len: usize) -> Option<Vec<u8>> {
    let (sep, group) = if s.contains(':') {
        (':', 2)
    } else if s.contains('-') {
        ('-', 2)
    } else if s.contains('.') {
        ('.', 4)
    } else {
        return None;
    };
    let mut out = Vec::with_capacity(len);
    for part in s.split(sep) {
        if part.len() != group || !part.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        for pair in part.as_bytes().chunks(2) {
            // Both bytes are ASCII hex digits (checked above), so this parses.
            let text = std::str::from_utf8(pair).ok()?;
            out.push(u8::from_str_radix(text, 16).ok()?);
        }
    }
    (out.len() == len).then_some(out)
}

fn colon_form(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// NPWG-23: a 6-byte Ethernet address a link can carry (unicast, not all zero).
fn check_mac(s: &str) -> Result<String, String> {
    let rule = "a 6-byte Ethernet MAC address like 02:00:00:00:00:01";
    let Some(bytes) = hardware_address(s, 6) else {
        return Err(format!("{} is not {rule}", show_str(s)));
    };
    if bytes[0] & 1 == 1 {
        return Err(format!(
            "{} is a multicast address; it must be a unicast {rule} (lowest bit of the first byte clear)",
            show_str(s)
        ));
    }
    if bytes.iter().all(|b| *b == 0) {
        return Err(format!("{} is all zero; it must be {rule}", show_str(s)));
    }
    Ok(colon_form(&bytes))
}

/// NPWG-35: an 8-byte InfiniBand GUID.
fn check_guid(s: &str) -> Result<String, String> {
    hardware_address(s, 8)
        .map(|b| colon_form(&b))
        .ok_or_else(|| {
            format!(
                "{} is not an 8-byte InfiniBand GUID like 00:11:22:33:44:55:66:77",
                show_str(s)
            )
        })
}

/// NPWG-21: an IPv4 or IPv6 address with an optional prefix length.
fn check_ip_with_prefix(s: &str) -> Result<(), String> {
    let ok = if s.contains('/') {
        s.parse::<IpNet>().is_ok()
    } else {
        s.parse::<IpAddr>().is_ok()
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{} is not an IPv4 or IPv6 address with an optional prefix length, like 192.0.2.10/24 or 2001:db8::10",
            show_str(s)
        ))
    }
}

// === Entry points ===

/// Parse `k8s.v1.cni.cncf.io/networks` (NPWG-14 to NPWG-36); `pod_namespace` is the default
/// namespace (NPWG-20). The elements come back in annotation order; the same network may appear
/// more than once (NPWG-38).
pub fn parse_networks(value: &str, pod_namespace: &str) -> Result<Vec<Selection>, AnnotationError> {
    if value.len() > MAX_ANNOTATION_BYTES {
        return Err(AnnotationError::TooLarge { len: value.len() });
    }
    if value.trim().is_empty() {
        return Ok(Vec::new());
    }
    if value.contains(['[', '{', '"']) {
        parse_json(value, pod_namespace)
    } else {
        parse_text(value, pod_namespace)
    }
}

/// Parse `v1.multus-cni.io/default-network` (EXT-4): the same forms, the default namespace is
/// `multusNamespace` (#1291), and it must name exactly one network.
pub fn parse_default_network(
    value: &str,
    multus_namespace: &str,
) -> Result<Selection, AnnotationError> {
    let mut list = parse_networks(value, multus_namespace)?;
    if list.len() != 1 {
        return Err(AnnotationError::NotOneDefaultNetwork { count: list.len() });
    }
    Ok(list.remove(0))
}

fn parse_text(value: &str, default_ns: &str) -> Result<Vec<Selection>, AnnotationError> {
    let items: Vec<&str> = value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if items.len() > MAX_ELEMENTS {
        return Err(AnnotationError::TooManyElements { count: items.len() });
    }
    items
        .iter()
        .enumerate()
        .map(|(index, item)| parse_text_item(index, item, default_ns))
        .collect()
}

fn parse_text_item(
    index: usize,
    item: &str,
    default_ns: &str,
) -> Result<Selection, AnnotationError> {
    let mut at = At {
        index,
        network: None,
    };
    for sep in ['/', '@'] {
        if item.matches(sep).count() > 1 {
            return Err(at.whole(format!(
                "{} has more than one '{sep}'; {TEXT_FORM}",
                show_str(item)
            )));
        }
    }
    let (namespace, rest) = match item.split_once('/') {
        Some((ns, rest)) => (Some(ns.trim()), rest),
        None => (None, item),
    };
    let (name, interface) = match rest.split_once('@') {
        Some((name, ifname)) => (name.trim(), Some(ifname.trim())),
        None => (rest.trim(), None),
    };
    if name.is_empty() {
        return Err(at.err(
            "name",
            format!("is empty in {}; {TEXT_FORM}", show_str(item)),
        ));
    }
    check_subdomain(name).map_err(|r| at.err("name", r))?;
    let namespace = match namespace {
        Some("") => {
            return Err(at.err(
                "namespace",
                format!("is empty before '/' in {}; {TEXT_FORM}", show_str(item)),
            ));
        }
        Some(ns) => {
            check_label(ns).map_err(|r| at.err("namespace", r))?;
            ns.to_string()
        }
        None => default_ns.to_string(),
    };
    at.network = Some(format!("{namespace}/{name}"));
    let interface = match interface {
        Some("") => {
            return Err(at.err(
                "interface",
                format!("is empty after '@' in {}; {TEXT_FORM}", show_str(item)),
            ));
        }
        Some(ifname) => {
            check_interface(ifname).map_err(|r| at.err("interface", r))?;
            Some(ifname.to_string())
        }
        None => None,
    };
    Ok(Selection {
        namespace,
        name: name.to_string(),
        interface,
        ..Selection::default()
    })
}

fn parse_json(value: &str, default_ns: &str) -> Result<Vec<Selection>, AnnotationError> {
    let parsed: Value = serde_json::from_str(value).map_err(|e| {
        let reason = e.to_string();
        let reason = if reason.contains("recursion limit") {
            format!("nesting is deeper than {MAX_JSON_DEPTH} levels: {reason}")
        } else {
            reason
        };
        AnnotationError::Json { reason }
    })?;
    let Value::Array(elements) = parsed else {
        return Err(AnnotationError::NotAnArray {
            found: type_name(&parsed),
        });
    };
    if elements.len() > MAX_ELEMENTS {
        return Err(AnnotationError::TooManyElements {
            count: elements.len(),
        });
    }
    let mut out: Vec<Selection> = Vec::with_capacity(elements.len());
    for (index, element) in elements.iter().enumerate() {
        let selection = parse_element(index, element, default_ns)?;
        if selection.requests.gateways.is_some()
            && let Some((first, earlier)) = out
                .iter()
                .enumerate()
                .find(|(_, s)| s.requests.gateways.is_some())
        {
            return Err(AnnotationError::Element {
                index,
                network: Some(selection.qualified_name()),
                field: Some("default-route".into()),
                reason: format!(
                    "element {first} ({}) already sets \"default-route\"; at most one element may (NPWG-34)",
                    earlier.qualified_name()
                ),
            });
        }
        out.push(selection);
    }
    Ok(out)
}

const KNOWN_KEYS: &[&str] = &[
    "name",
    "namespace",
    "interface",
    "interfaceRequest",
    "ips",
    "mac",
    "infiniband-guid",
    "portMappings",
    "bandwidth",
    "default-route",
    "cni-args",
    "deviceID",
    "ipam-claim-reference",
];

/// An optional string key: absent, `null` and `""` are `None`.
fn opt_str<'v>(
    at: &At,
    obj: &'v Map<String, Value>,
    key: &str,
) -> Result<Option<&'v str>, AnnotationError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(at.err(key, format!("must be a string, got {}", show(other)))),
    }
}

fn parse_element(index: usize, v: &Value, default_ns: &str) -> Result<Selection, AnnotationError> {
    let mut at = At {
        index,
        network: None,
    };
    let Value::Object(obj) = v else {
        return Err(at.whole(format!(
            "must be a JSON object like {{\"name\": \"macvlan-conf\"}}, got {}",
            show(v)
        )));
    };
    let name = match obj.get("name") {
        None | Some(Value::Null) => return Err(at.err("name", "is required (NPWG-19)")),
        Some(Value::String(s)) if s.is_empty() => {
            return Err(at.err("name", "is required (NPWG-19) and may not be empty"));
        }
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(at.err("name", format!("must be a string, got {}", show(other))));
        }
    };
    check_subdomain(&name).map_err(|r| at.err("name", r))?;
    let namespace = match opt_str(&at, obj, "namespace")? {
        Some(ns) => {
            check_label(ns).map_err(|r| at.err("namespace", r))?;
            ns.to_string()
        }
        None => default_ns.to_string(),
    };
    at.network = Some(format!("{namespace}/{name}"));
    let mut selection = Selection {
        namespace,
        name,
        ..Selection::default()
    };

    // interface, then the legacy interfaceRequest when interface is empty (EXT-2).
    let interface = opt_str(&at, obj, "interface")?;
    let legacy = opt_str(&at, obj, "interfaceRequest")?;
    let (key, ifname) = match (interface, legacy) {
        (Some(i), Some(l)) => {
            if i != l {
                selection.warnings.push(format!(
                    "element {index} ({}): \"interfaceRequest\" {} ignored; \"interface\" {} is used",
                    selection.qualified_name(),
                    show_str(l),
                    show_str(i)
                ));
            }
            ("interface", Some(i))
        }
        (Some(i), None) => ("interface", Some(i)),
        (None, l) => ("interfaceRequest", l),
    };
    if let Some(ifname) = ifname {
        check_interface(ifname).map_err(|r| at.err(key, r))?;
        selection.interface = Some(ifname.to_string());
    }

    // ips (NPWG-21).
    match obj.get("ips") {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) => {
            for (i, item) in list.iter().enumerate() {
                let field = format!("ips[{i}]");
                let Value::String(s) = item else {
                    return Err(at.err(field, format!("must be a string, got {}", show(item))));
                };
                check_ip_with_prefix(s).map_err(|r| at.err(field, r))?;
                selection.requests.ips.push(s.clone());
            }
        }
        Some(other) => {
            return Err(at.err(
                "ips",
                format!(
                    "must be a list of addresses like [\"192.0.2.10/24\"], got {}",
                    show(other)
                ),
            ));
        }
    }

    if let Some(mac) = opt_str(&at, obj, "mac")? {
        selection.requests.mac = Some(check_mac(mac).map_err(|r| at.err("mac", r))?);
    }
    if let Some(guid) = opt_str(&at, obj, "infiniband-guid")? {
        selection.requests.infiniband_guid =
            Some(check_guid(guid).map_err(|r| at.err("infiniband-guid", r))?);
    }
    match obj.get("portMappings") {
        None | Some(Value::Null) => {}
        Some(pm) => {
            check_port_mappings(&at, pm)?;
            selection.requests.port_mappings = Some(pm.clone());
        }
    }
    match obj.get("bandwidth") {
        None | Some(Value::Null) => {}
        Some(bw) => {
            check_bandwidth(&at, bw)?;
            selection.requests.bandwidth = Some(bw.clone());
        }
    }
    match obj.get("default-route") {
        None | Some(Value::Null) => {}
        Some(gws) => {
            let gws = check_default_route(&at, gws)?;
            selection.requests.gateways = Some(gws.iter().map(IpAddr::to_string).collect());
        }
    }
    match obj.get("cni-args") {
        None | Some(Value::Null) => {}
        Some(Value::Object(args)) => selection.cni_args = Some(args.clone()),
        Some(other) => {
            return Err(at.err(
                "cni-args",
                format!(
                    "must be an object like {{\"key\": \"value\"}}, got {}",
                    show(other)
                ),
            ));
        }
    }
    selection.requests.device_id = opt_str(&at, obj, "deviceID")?.map(str::to_string);
    if let Some(claim) = opt_str(&at, obj, "ipam-claim-reference")? {
        check_subdomain(claim).map_err(|r| {
            at.err(
                "ipam-claim-reference",
                format!("must name an IPAMClaim: {r}"),
            )
        })?;
        selection.ipam_claim_reference = Some(claim.to_string());
    }

    for key in obj.keys() {
        if !KNOWN_KEYS.contains(&key.as_str()) && !key.contains('.') {
            selection.warnings.push(format!(
                "element {index} ({}): unknown key {} ignored; keys without a '.' are reserved by the NPWG spec (NPWG-18)",
                selection.qualified_name(),
                show_str(key)
            ));
        }
    }
    Ok(selection)
}

/// NPWG-30: a non-empty list of `{hostPort, containerPort, protocol?, hostIP?}`.
fn check_port_mappings(at: &At, v: &Value) -> Result<(), AnnotationError> {
    const EXAMPLE: &str = r#"[{"hostPort": 8080, "containerPort": 80, "protocol": "TCP"}]"#;
    let list = match v {
        Value::Array(list) if !list.is_empty() => list,
        Value::Array(_) => {
            return Err(at.err(
                "portMappings",
                format!("is empty; it must list at least one mapping like {EXAMPLE}"),
            ));
        }
        other => {
            return Err(at.err(
                "portMappings",
                format!("must be a list like {EXAMPLE}, got {}", show(other)),
            ));
        }
    };
    for (i, entry) in list.iter().enumerate() {
        let Value::Object(m) = entry else {
            return Err(at.err(
                format!("portMappings[{i}]"),
                format!("must be an object like {EXAMPLE}, got {}", show(entry)),
            ));
        };
        for key in ["hostPort", "containerPort"] {
            let field = format!("portMappings[{i}].{key}");
            match m.get(key) {
                None | Some(Value::Null) => {
                    return Err(at.err(field, "is required: a port from 1 to 65535"));
                }
                Some(p) if p.as_u64().is_some_and(|p| (1..=65535).contains(&p)) => {}
                Some(p) => {
                    return Err(at.err(
                        field,
                        format!("{} is not a port: an integer from 1 to 65535", show(p)),
                    ));
                }
            }
        }
        match m.get("protocol") {
            None | Some(Value::Null) => {}
            Some(Value::String(p))
                if ["tcp", "udp", "sctp"]
                    .iter()
                    .any(|ok| p.eq_ignore_ascii_case(ok)) => {}
            Some(p) => {
                return Err(at.err(
                    format!("portMappings[{i}].protocol"),
                    format!(
                        "{} is not a protocol: TCP, UDP or SCTP (any case; TCP when absent)",
                        show(p)
                    ),
                ));
            }
        }
        match m.get("hostIP") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s.is_empty() || s.parse::<IpAddr>().is_ok() => {}
            Some(ip) => {
                return Err(at.err(
                    format!("portMappings[{i}].hostIP"),
                    format!(
                        "{} is not an IPv4 or IPv6 address (without a prefix length)",
                        show(ip)
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// NPWG-32: rates and bursts are positive integers; a burst only with its rate.
fn check_bandwidth(at: &At, v: &Value) -> Result<(), AnnotationError> {
    const KEYS: [(&str, Option<&str>); 4] = [
        ("ingressRate", None),
        ("ingressBurst", Some("ingressRate")),
        ("egressRate", None),
        ("egressBurst", Some("egressRate")),
    ];
    let Value::Object(m) = v else {
        return Err(at.err(
            "bandwidth",
            format!(
                "must be an object like {{\"ingressRate\": 1000000, \"ingressBurst\": 100000}}, got {}",
                show(v)
            ),
        ));
    };
    let set = |key: &str| m.get(key).is_some_and(|v| !v.is_null());
    for (key, rate) in KEYS {
        let field = format!("bandwidth.{key}");
        let Some(value) = m.get(key).filter(|v| !v.is_null()) else {
            continue;
        };
        let max = i64::MAX as u64;
        if !value.as_u64().is_some_and(|n| n > 0 && n <= max) {
            return Err(at.err(
                field,
                format!(
                    "{} is not a positive integer (1 to {max}; rates in bit/s, bursts in bits)",
                    show(value)
                ),
            ));
        }
        if let Some(rate) = rate
            && !set(rate)
        {
            return Err(at.err(
                field,
                format!("is set without \"{rate}\"; a burst is only valid together with its rate"),
            ));
        }
    }
    Ok(())
}

/// NPWG-34: a list (possibly empty) of gateway addresses, at most one per family (no ECMP).
fn check_default_route(at: &At, v: &Value) -> Result<Vec<IpAddr>, AnnotationError> {
    let Value::Array(list) = v else {
        return Err(at.err(
            "default-route",
            format!(
                "must be a list of gateway addresses like [\"192.0.2.1\"], got {}",
                show(v)
            ),
        ));
    };
    let mut out: Vec<IpAddr> = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let field = format!("default-route[{i}]");
        let gw = item
            .as_str()
            .and_then(|s| s.parse::<IpAddr>().ok())
            .ok_or_else(|| {
                at.err(
                    field.clone(),
                    format!(
                        "{} is not an IPv4 or IPv6 gateway address (without a prefix length)",
                        show(item)
                    ),
                )
            })?;
        if let Some(earlier) = out.iter().find(|e| e.is_ipv4() == gw.is_ipv4()) {
            let family = if gw.is_ipv4() { "IPv4" } else { "IPv6" };
            return Err(at.err(
                field,
                format!(
                    "{gw} is a second {family} gateway after {earlier}; ECMP default routes are not supported: give at most one IPv4 and one IPv6 gateway"
                ),
            ));
        }
        out.push(gw);
    }
    Ok(out)
}

/// NPWG-29: merge `args` into `args.cni` of the conf, or of every plugin of a conflist. Existing
/// `args.cni` keys stay unless `args` has the same key, which wins; other keys and their order are
/// kept. Empty `args` returns the config unchanged. A non-object `args` or `args.cni` already in
/// the config is an error.
pub fn inject_cni_args(
    net: &NetworkConfig,
    args: &Map<String, Value>,
) -> Result<NetworkConfig, NetConfError> {
    if args.is_empty() {
        return Ok(net.clone());
    }
    let mut failure: Option<NetConfError> = None;
    let edited = net.edited(|top| {
        let result = match net.kind {
            Kind::Conf => merge_args(top, "", args),
            Kind::List => match top.get_mut("plugins") {
                Some(Value::Array(plugins)) => {
                    plugins
                        .iter_mut()
                        .enumerate()
                        .try_for_each(|(i, p)| match p {
                            Value::Object(p) => merge_args(p, &format!("plugins[{i}]."), args),
                            _ => Err(NetConfError::Field {
                                field: format!("plugins[{i}]"),
                                reason: "must be an object".into(),
                            }),
                        })
                }
                _ => Err(NetConfError::NeitherConfNorList),
            },
        };
        failure = result.err();
    })?;
    match failure {
        Some(e) => Err(e),
        None => Ok(edited),
    }
}

fn merge_args(
    plugin: &mut Map<String, Value>,
    at: &str,
    args: &Map<String, Value>,
) -> Result<(), NetConfError> {
    let outer = plugin
        .entry("args")
        .or_insert_with(|| Value::Object(Map::new()));
    if outer.is_null() {
        *outer = Value::Object(Map::new());
    }
    let Value::Object(outer) = outer else {
        return Err(NetConfError::Field {
            field: format!("{at}args"),
            reason: "must be an object to take the selection's cni-args (NPWG-29)".into(),
        });
    };
    let cni = outer
        .entry("cni")
        .or_insert_with(|| Value::Object(Map::new()));
    if cni.is_null() {
        *cni = Value::Object(Map::new());
    }
    let Value::Object(cni) = cni else {
        return Err(NetConfError::Field {
            field: format!("{at}args.cni"),
            reason: "must be an object to take the selection's cni-args (NPWG-29)".into(),
        });
    };
    for (k, v) in args {
        cni.insert(k.clone(), v.clone());
    }
    Ok(())
}

/// Whether the pod is a static (file or http) pod: `kubernetes.io/config.source` present and not
/// `api`. A static pod's mirror has another UID, which is not a mismatch (Multus #773).
pub fn is_static_pod(annotations: &BTreeMap<String, String>) -> bool {
    annotations
        .get(CONFIG_SOURCE_ANNOTATION)
        .is_some_and(|source| source != "api")
}

/// The pod annotations plexus reads, and only those. The API client reads a pod's annotations through this
/// type and the daemon's watch cache keeps exactly [`PodAnnotations::KEYS`], so a pod reads the same in thin
/// and daemon mode. Reading a key missing from the list is a bug that debug builds (every test) stop at,
/// rather than one that only the daemon's trimmed copy would hide.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodAnnotations(BTreeMap<String, String>);

impl PodAnnotations {
    /// Every pod annotation plexus reads. network-status is the daemon's reconcile's (what the node attached,
    /// against what the pod says).
    pub const KEYS: [&'static str; 4] = [
        NETWORKS_ANNOTATION,
        DEFAULT_NETWORK_ANNOTATION,
        CONFIG_SOURCE_ANNOTATION,
        NETWORK_STATUS_ANNOTATION,
    ];

    /// The annotations plexus reads among `all` (a pod's `metadata.annotations`).
    pub fn of(all: Option<&BTreeMap<String, String>>) -> PodAnnotations {
        let mut kept = all.cloned().unwrap_or_default();
        Self::keep_only(&mut kept);
        PodAnnotations(kept)
    }

    /// Drop every annotation plexus does not read from `all` (the daemon's watch cache).
    pub fn keep_only(all: &mut BTreeMap<String, String>) {
        all.retain(|k, _| Self::KEYS.contains(&k.as_str()));
    }

    /// The value of `key`, one of [`PodAnnotations::KEYS`].
    pub fn get(&self, key: &'static str) -> Option<&str> {
        debug_assert!(
            Self::KEYS.contains(&key),
            "pod annotation {key} is read but not in PodAnnotations::KEYS: the daemon's cache drops it"
        );
        self.0.get(key).map(String::as_str)
    }

    /// [`is_static_pod`].
    pub fn is_static_pod(&self) -> bool {
        is_static_pod(&self.0)
    }
}

/// Namespace isolation (NPWG-65, EXT-5): with `isolation` on, a pod may only select networks in
/// its own namespace or in one of `global`.
pub fn check_isolation(
    pod_ns: &str,
    target_ns: &str,
    isolation: bool,
    global: &[String],
) -> Result<(), String> {
    if !isolation || pod_ns == target_ns || global.iter().any(|g| g == target_ns) {
        return Ok(());
    }
    Err(format!(
        "namespace isolation enabled, annotation violates permission, pod is in namespace {pod_ns} but refers to target namespace {target_ns}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NS: &str = "pods";

    fn parse(v: &str) -> Vec<Selection> {
        parse_networks(v, NS).unwrap_or_else(|e| panic!("{v}: {e}"))
    }

    fn err(v: &str) -> String {
        match parse_networks(v, NS) {
            Ok(s) => panic!("{v}: accepted as {s:?}"),
            Err(e) => e.to_string(),
        }
    }

    /// One JSON element with `extra` merged into `{"name": "net"}`.
    fn one(extra: Value) -> Result<Selection, AnnotationError> {
        let mut obj = json!({"name": "net"});
        obj.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        parse_networks(&json!([obj]).to_string(), NS).map(|mut v| v.remove(0))
    }

    fn one_err(extra: Value) -> String {
        match one(extra.clone()) {
            Ok(s) => panic!("{extra}: accepted as {s:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn sel(ns: &str, name: &str, ifname: Option<&str>) -> Selection {
        Selection {
            namespace: ns.into(),
            name: name.into(),
            interface: ifname.map(str::to_string),
            ..Selection::default()
        }
    }

    // === Keys ===

    #[test]
    fn annotation_keys_are_the_standard_ones_npwg_14_npwg_41() {
        assert_eq!(NETWORKS_ANNOTATION, "k8s.v1.cni.cncf.io/networks");
        assert_eq!(
            NETWORK_STATUS_ANNOTATION,
            "k8s.v1.cni.cncf.io/network-status"
        );
        assert_eq!(
            DEFAULT_NETWORK_ANNOTATION,
            "v1.multus-cni.io/default-network"
        );
        assert_eq!(RESOURCE_NAME_ANNOTATION, "k8s.v1.cni.cncf.io/resourceName");
        assert_eq!(CONFIG_SOURCE_ANNOTATION, "kubernetes.io/config.source");
    }

    // === Text form (NPWG-17, EXT-1) ===

    #[test]
    fn text_form_valid_items_npwg_17() {
        type Want<'a> = &'a [(&'a str, &'a str, Option<&'a str>)];
        let cases: &[(&str, Want<'_>)] = &[
            ("net-a", &[(NS, "net-a", None)]),
            ("other/net-a", &[("other", "net-a", None)]),
            ("net-a@eth9", &[(NS, "net-a", Some("eth9"))]),
            ("other/net-a@ext0", &[("other", "net-a", Some("ext0"))]),
            (
                " a , b/c@x1 ,, d ",
                &[(NS, "a", None), ("b", "c", Some("x1")), (NS, "d", None)],
            ),
            (
                " other / net-a @ eth1 ",
                &[("other", "net-a", Some("eth1"))],
            ),
            // NPWG-38: the same network twice is two attachments.
            ("net-a,net-a", &[(NS, "net-a", None), (NS, "net-a", None)]),
            // Names may be DNS-1123 subdomains (docs/multus-compat.md, "Annotations").
            ("sriov.intel.com", &[(NS, "sriov.intel.com", None)]),
            ("0abc-9", &[(NS, "0abc-9", None)]),
            ("a,", &[(NS, "a", None)]),
        ];
        for (value, want) in cases {
            let want: Vec<Selection> = want.iter().map(|(ns, n, i)| sel(ns, n, *i)).collect();
            assert_eq!(parse(value), want, "{value}");
        }
    }

    #[test]
    fn empty_values_select_nothing() {
        for v in ["", "   ", "\t\n", ",", " , ,"] {
            assert_eq!(parse(v), Vec::<Selection>::new(), "{v:?}");
        }
        assert_eq!(parse("[]"), Vec::<Selection>::new());
        assert_eq!(parse(" [ ] "), Vec::<Selection>::new());
    }

    #[test]
    fn text_form_invalid_items_name_element_and_field() {
        let label = "is not a DNS-1123 label";
        let sub = "is not a DNS-1123 subdomain";
        let cases: &[(&str, &str)] = &[
            ("a/b/c", "element 0: \"a/b/c\" has more than one '/'"),
            ("ok,n@a@b", "element 1: \"n@a@b\" has more than one '@'"),
            ("Net", &format!("element 0: \"name\": \"Net\" {sub}")),
            ("net_a", &format!("element 0: \"name\": \"net_a\" {sub}")),
            ("-net", &format!("element 0: \"name\": \"-net\" {sub}")),
            ("net-", &format!("element 0: \"name\": \"net-\" {sub}")),
            ("a..b", &format!("element 0: \"name\": \"a..b\" {sub}")),
            ("a b", &format!("element 0: \"name\": \"a b\" {sub}")),
            ("x/", "element 0: \"name\": is empty in \"x/\""),
            ("@eth1", "element 0: \"name\": is empty in \"@eth1\""),
            ("/net", "element 0: \"namespace\": is empty before '/'"),
            (
                "Other/net",
                &format!("element 0: \"namespace\": \"Other\" {label}"),
            ),
            (
                "a.b/net",
                &format!("element 0: \"namespace\": \"a.b\" {label}"),
            ),
            (
                "x@y/net",
                &format!("element 0: \"namespace\": \"x@y\" {label}"),
            ),
            (
                "net@",
                "element 0 (pods/net): \"interface\": is empty after '@'",
            ),
            (
                "ok, net@a b",
                "element 1 (pods/net): \"interface\": interface name \"a b\" is invalid",
            ),
            (
                "net@0123456789abcdef",
                "element 0 (pods/net): \"interface\": interface name \"0123456789abcdef\" is 16 bytes",
            ),
            (
                "net@..",
                "element 0 (pods/net): \"interface\": interface name \"..\" is invalid",
            ),
            (
                "net@a:b",
                "element 0 (pods/net): \"interface\": interface name \"a:b\" is invalid",
            ),
        ];
        for (value, want) in cases {
            let got = err(value);
            assert!(
                got.starts_with(want),
                "{value}: got {got:?}, want prefix {want:?}"
            );
        }
    }

    #[test]
    fn name_and_namespace_lengths_npwg_9() {
        let ns63 = "n".repeat(63);
        let ns64 = "n".repeat(64);
        assert_eq!(parse(&format!("{ns63}/a"))[0].namespace, ns63);
        let e = err(&format!("{ns64}/a"));
        assert!(
            e.contains("is 64 characters long") && e.contains("\"namespace\""),
            "{e}"
        );
        let name253 = format!("{}.{}", "a".repeat(126), "b".repeat(126));
        assert_eq!(parse(&name253)[0].name, name253);
        let e = err(&format!("{name253}c"));
        assert!(
            e.contains("is 254 characters long") && e.contains("\"name\""),
            "{e}"
        );
        // Long values are cut in messages.
        assert!(e.len() < 400, "{e}");
    }

    // === JSON form (NPWG-18 to NPWG-36) ===

    #[test]
    fn json_form_full_element() {
        let v = json!([{
            "name": "macvlan",
            "namespace": "other",
            "interface": "ext0",
            "ips": ["192.0.2.10/24", "2001:db8::10", "198.51.100.1"],
            "mac": "02:AB:cd:00:00:01",
            "infiniband-guid": "C2-11-22-33-44-55-66-77",
            "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "192.0.2.1"}],
            "bandwidth": {"ingressRate": 1000, "ingressBurst": 10, "egressRate": 2000},
            "default-route": ["192.0.2.1", "2001:db8::1"],
            "cni-args": {"a": 1, "b": "x"},
            "deviceID": "0000:03:00.1",
            "ipam-claim-reference": "pod.net.ext0",
            "org.example.key": {"anything": true}
        }]);
        let s = parse(&v.to_string()).remove(0);
        assert_eq!(s.namespace, "other");
        assert_eq!(s.name, "macvlan");
        assert_eq!(s.qualified_name(), "other/macvlan");
        assert_eq!(s.interface.as_deref(), Some("ext0"));
        assert_eq!(
            s.requests.ips,
            ["192.0.2.10/24", "2001:db8::10", "198.51.100.1"]
        );
        assert_eq!(s.requests.mac.as_deref(), Some("02:ab:cd:00:00:01"));
        assert_eq!(
            s.requests.infiniband_guid.as_deref(),
            Some("c2:11:22:33:44:55:66:77")
        );
        assert_eq!(s.requests.port_mappings, Some(v[0]["portMappings"].clone()));
        assert_eq!(s.requests.bandwidth, Some(v[0]["bandwidth"].clone()));
        assert_eq!(
            s.requests.gateways,
            Some(vec!["192.0.2.1".into(), "2001:db8::1".into()])
        );
        assert_eq!(s.cni_args, v[0]["cni-args"].as_object().cloned());
        assert_eq!(s.requests.device_id.as_deref(), Some("0000:03:00.1"));
        assert_eq!(s.ipam_claim_reference.as_deref(), Some("pod.net.ext0"));
        // Dotted unknown keys are ignored silently (NPWG-18).
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    }

    #[test]
    fn json_form_minimal_and_defaults_npwg_20() {
        let s = parse(
            r#"[{"name": "a"}, {"name": "b", "namespace": ""}, {"name": "c", "namespace": null, "mac": "", "ips": [], "interface": null}]"#,
        );
        assert_eq!(
            s,
            vec![sel(NS, "a", None), sel(NS, "b", None), sel(NS, "c", None)]
        );
    }

    #[test]
    fn requests_map_the_selection() {
        let s = one(json!({
            "ips": ["192.0.2.10/24"], "mac": "02:00:00:00:00:01",
            "infiniband-guid": "00:11:22:33:44:55:66:77",
            "portMappings": [{"hostPort": 1, "containerPort": 2}],
            "bandwidth": {"egressRate": 5}, "deviceID": "dev0",
            "default-route": ["192.0.2.1"]
        }))
        .unwrap();
        assert_eq!(
            s.requests,
            Requests {
                mac: Some("02:00:00:00:00:01".into()),
                ips: vec!["192.0.2.10/24".into()],
                infiniband_guid: Some("00:11:22:33:44:55:66:77".into()),
                port_mappings: Some(json!([{"hostPort": 1, "containerPort": 2}])),
                bandwidth: Some(json!({"egressRate": 5})),
                device_id: Some("dev0".into()),
                gateways: Some(vec!["192.0.2.1".into()]),
                device_info_file: None,
            }
        );
        assert_eq!(
            one(json!({"default-route": []})).unwrap().requests.gateways,
            Some(vec![])
        );
        assert_eq!(sel(NS, "a", None).requests, Requests::default());
    }

    #[test]
    fn interface_and_legacy_interface_request_ext_2() {
        let s = one(json!({"interfaceRequest": "net7"})).unwrap();
        assert_eq!(s.interface.as_deref(), Some("net7"));
        let s = one(json!({"interface": "", "interfaceRequest": "net7"})).unwrap();
        assert_eq!(s.interface.as_deref(), Some("net7"));
        let s = one(json!({"interface": "a1", "interfaceRequest": "a1"})).unwrap();
        assert_eq!(s.interface.as_deref(), Some("a1"));
        assert!(s.warnings.is_empty());
        let s = one(json!({"interface": "a1", "interfaceRequest": "b1"})).unwrap();
        assert_eq!(s.interface.as_deref(), Some("a1"));
        assert_eq!(
            s.warnings,
            [
                "element 0 (pods/net): \"interfaceRequest\" \"b1\" ignored; \"interface\" \"a1\" is used"
            ]
        );
        let e = one_err(json!({"interfaceRequest": "bad/name"}));
        assert!(
            e.starts_with(
                "element 0 (pods/net): \"interfaceRequest\": interface name \"bad/name\""
            ),
            "{e}"
        );
    }

    #[test]
    fn unknown_undotted_keys_warn_npwg_18() {
        let s = one(json!({"gateway": ["1.2.3.4"], "x.y": 1})).unwrap();
        assert_eq!(
            s.warnings,
            [
                "element 0 (pods/net): unknown key \"gateway\" ignored; keys without a '.' are reserved by the NPWG spec (NPWG-18)"
            ]
        );
    }

    #[test]
    fn json_form_invalid_fields_name_element_and_field() {
        let cases: Vec<(Value, &str)> = vec![
            // name / namespace (NPWG-19, NPWG-20, NPWG-9)
            (
                json!({"name": null}),
                "element 0: \"name\": is required (NPWG-19)",
            ),
            (
                json!({"name": ""}),
                "element 0: \"name\": is required (NPWG-19) and may not be empty",
            ),
            (
                json!({"name": 5}),
                "element 0: \"name\": must be a string, got 5",
            ),
            (
                json!({"name": "Bad_Name"}),
                "element 0: \"name\": \"Bad_Name\" is not a DNS-1123 subdomain",
            ),
            (
                json!({"namespace": "a.b"}),
                "element 0: \"namespace\": \"a.b\" is not a DNS-1123 label",
            ),
            (
                json!({"namespace": 1}),
                "element 0: \"namespace\": must be a string, got 1",
            ),
            // interface (NPWG-25)
            (
                json!({"interface": "a b"}),
                "element 0 (pods/net): \"interface\": interface name \"a b\" is invalid",
            ),
            (
                json!({"interface": "."}),
                "element 0 (pods/net): \"interface\": interface name \".\" is invalid",
            ),
            (
                json!({"interface": "abcdefghijklmnop"}),
                "element 0 (pods/net): \"interface\": interface name \"abcdefghijklmnop\" is 16 bytes",
            ),
            (
                json!({"interface": true}),
                "element 0 (pods/net): \"interface\": must be a string, got true",
            ),
            // ips (NPWG-21)
            (
                json!({"ips": "192.0.2.1"}),
                "element 0 (pods/net): \"ips\": must be a list of addresses like [\"192.0.2.10/24\"], got \"192.0.2.1\"",
            ),
            (
                json!({"ips": ["192.0.2.1", 7]}),
                "element 0 (pods/net): \"ips[1]\": must be a string, got 7",
            ),
            (
                json!({"ips": ["192.0.2.300"]}),
                "element 0 (pods/net): \"ips[0]\": \"192.0.2.300\" is not an IPv4 or IPv6 address",
            ),
            (
                json!({"ips": ["192.0.2.1/33"]}),
                "element 0 (pods/net): \"ips[0]\": \"192.0.2.1/33\" is not",
            ),
            (
                json!({"ips": ["2001:db8::1/129"]}),
                "element 0 (pods/net): \"ips[0]\": \"2001:db8::1/129\" is not",
            ),
            (
                json!({"ips": ["fe80::1%eth0"]}),
                "element 0 (pods/net): \"ips[0]\": \"fe80::1%eth0\" is not",
            ),
            (
                json!({"ips": ["010.0.0.1"]}),
                "element 0 (pods/net): \"ips[0]\": \"010.0.0.1\" is not",
            ),
            (
                json!({"ips": [""]}),
                "element 0 (pods/net): \"ips[0]\": \"\" is not",
            ),
            // mac (NPWG-23)
            (
                json!({"mac": "zz:00"}),
                "element 0 (pods/net): \"mac\": \"zz:00\" is not a 6-byte Ethernet MAC address like 02:00:00:00:00:01",
            ),
            (
                json!({"mac": "02:00:00:00:00:01:02:03"}),
                "element 0 (pods/net): \"mac\": \"02:00:00:00:00:01:02:03\" is not a 6-byte",
            ),
            (
                json!({"mac": "02:00:00:00:00:1"}),
                "element 0 (pods/net): \"mac\": \"02:00:00:00:00:1\" is not a 6-byte",
            ),
            (
                json!({"mac": "02:00-00:00:00:01"}),
                "element 0 (pods/net): \"mac\": \"02:00-00:00:00:01\" is not a 6-byte",
            ),
            (
                json!({"mac": "01:00:5e:00:00:01"}),
                "element 0 (pods/net): \"mac\": \"01:00:5e:00:00:01\" is a multicast address",
            ),
            (
                json!({"mac": "ff:ff:ff:ff:ff:ff"}),
                "element 0 (pods/net): \"mac\": \"ff:ff:ff:ff:ff:ff\" is a multicast address",
            ),
            (
                json!({"mac": "00:00:00:00:00:00"}),
                "element 0 (pods/net): \"mac\": \"00:00:00:00:00:00\" is all zero",
            ),
            (
                json!({"mac": 2}),
                "element 0 (pods/net): \"mac\": must be a string, got 2",
            ),
            // infiniband-guid (NPWG-35)
            (
                json!({"infiniband-guid": "00:11:22:33:44:55"}),
                "element 0 (pods/net): \"infiniband-guid\": \"00:11:22:33:44:55\" is not an 8-byte InfiniBand GUID like 00:11:22:33:44:55:66:77",
            ),
            (
                json!({"infiniband-guid": "g0:11:22:33:44:55:66:77"}),
                "element 0 (pods/net): \"infiniband-guid\": \"g0:11:22:33:44:55:66:77\" is not an 8-byte",
            ),
            // portMappings (NPWG-30)
            (
                json!({"portMappings": []}),
                "element 0 (pods/net): \"portMappings\": is empty; it must list at least one mapping",
            ),
            (
                json!({"portMappings": {"hostPort": 1}}),
                "element 0 (pods/net): \"portMappings\": must be a list like",
            ),
            (
                json!({"portMappings": [5]}),
                "element 0 (pods/net): \"portMappings[0]\": must be an object like",
            ),
            (
                json!({"portMappings": [{"containerPort": 80}]}),
                "element 0 (pods/net): \"portMappings[0].hostPort\": is required: a port from 1 to 65535",
            ),
            (
                json!({"portMappings": [{"hostPort": 80}]}),
                "element 0 (pods/net): \"portMappings[0].containerPort\": is required",
            ),
            (
                json!({"portMappings": [{"hostPort": 1, "containerPort": 2}, {"hostPort": 0, "containerPort": 80}]}),
                "element 0 (pods/net): \"portMappings[1].hostPort\": 0 is not a port: an integer from 1 to 65535",
            ),
            (
                json!({"portMappings": [{"hostPort": 65536, "containerPort": 80}]}),
                "element 0 (pods/net): \"portMappings[0].hostPort\": 65536 is not a port",
            ),
            (
                json!({"portMappings": [{"hostPort": -1, "containerPort": 80}]}),
                "element 0 (pods/net): \"portMappings[0].hostPort\": -1 is not a port",
            ),
            (
                json!({"portMappings": [{"hostPort": 80.5, "containerPort": 80}]}),
                "element 0 (pods/net): \"portMappings[0].hostPort\": 80.5 is not a port",
            ),
            (
                json!({"portMappings": [{"hostPort": "80", "containerPort": 80}]}),
                "element 0 (pods/net): \"portMappings[0].hostPort\": \"80\" is not a port",
            ),
            (
                json!({"portMappings": [{"hostPort": 80, "containerPort": 80, "protocol": "icmp"}]}),
                "element 0 (pods/net): \"portMappings[0].protocol\": \"icmp\" is not a protocol: TCP, UDP or SCTP",
            ),
            (
                json!({"portMappings": [{"hostPort": 80, "containerPort": 80, "hostIP": "10.0.0.1/8"}]}),
                "element 0 (pods/net): \"portMappings[0].hostIP\": \"10.0.0.1/8\" is not an IPv4 or IPv6 address",
            ),
            // bandwidth (NPWG-32)
            (
                json!({"bandwidth": 5}),
                "element 0 (pods/net): \"bandwidth\": must be an object like",
            ),
            (
                json!({"bandwidth": {"ingressRate": 0}}),
                "element 0 (pods/net): \"bandwidth.ingressRate\": 0 is not a positive integer",
            ),
            (
                json!({"bandwidth": {"egressRate": -5}}),
                "element 0 (pods/net): \"bandwidth.egressRate\": -5 is not a positive integer",
            ),
            (
                json!({"bandwidth": {"egressRate": 1.5}}),
                "element 0 (pods/net): \"bandwidth.egressRate\": 1.5 is not a positive integer",
            ),
            (
                json!({"bandwidth": {"egressRate": "1"}}),
                "element 0 (pods/net): \"bandwidth.egressRate\": \"1\" is not a positive integer",
            ),
            (
                json!({"bandwidth": {"ingressRate": 9_223_372_036_854_775_808u64}}),
                "element 0 (pods/net): \"bandwidth.ingressRate\": 9223372036854775808 is not a positive integer",
            ),
            (
                json!({"bandwidth": {"ingressBurst": 10}}),
                "element 0 (pods/net): \"bandwidth.ingressBurst\": is set without \"ingressRate\"; a burst is only valid together with its rate",
            ),
            (
                json!({"bandwidth": {"ingressRate": 10, "egressBurst": 10}}),
                "element 0 (pods/net): \"bandwidth.egressBurst\": is set without \"egressRate\"",
            ),
            // default-route (NPWG-34)
            (
                json!({"default-route": "192.0.2.1"}),
                "element 0 (pods/net): \"default-route\": must be a list of gateway addresses",
            ),
            (
                json!({"default-route": ["192.0.2.1/24"]}),
                "element 0 (pods/net): \"default-route[0]\": \"192.0.2.1/24\" is not an IPv4 or IPv6 gateway address",
            ),
            (
                json!({"default-route": [1]}),
                "element 0 (pods/net): \"default-route[0]\": 1 is not",
            ),
            (
                json!({"default-route": ["192.0.2.1", "2001:db8::1", "192.0.2.2"]}),
                "element 0 (pods/net): \"default-route[2]\": 192.0.2.2 is a second IPv4 gateway after 192.0.2.1; ECMP default routes are not supported",
            ),
            (
                json!({"default-route": ["2001:db8::1", "2001:db8::2"]}),
                "element 0 (pods/net): \"default-route[1]\": 2001:db8::2 is a second IPv6 gateway after 2001:db8::1",
            ),
            // cni-args (NPWG-28)
            (
                json!({"cni-args": ["a"]}),
                "element 0 (pods/net): \"cni-args\": must be an object like {\"key\": \"value\"}, got [\"a\"]",
            ),
            // deviceID, ipam-claim-reference
            (
                json!({"deviceID": 5}),
                "element 0 (pods/net): \"deviceID\": must be a string, got 5",
            ),
            (
                json!({"ipam-claim-reference": "Bad Claim"}),
                "element 0 (pods/net): \"ipam-claim-reference\": must name an IPAMClaim: \"Bad Claim\" is not a DNS-1123 subdomain",
            ),
        ];
        for (extra, want) in cases {
            let got = one_err(extra.clone());
            assert!(
                got.starts_with(want),
                "{extra}:\n got  {got:?}\n want {want:?}"
            );
        }
    }

    #[test]
    fn valid_field_variants() {
        for mac in ["02-00-00-00-00-01", "0200.0000.0001", "02:00:00:00:00:01"] {
            assert_eq!(
                one(json!({"mac": mac})).unwrap().requests.mac.as_deref(),
                Some("02:00:00:00:00:01"),
                "{mac}"
            );
        }
        assert_eq!(
            one(json!({"infiniband-guid": "0011.2233.4455.6677"}))
                .unwrap()
                .requests
                .infiniband_guid
                .as_deref(),
            Some("00:11:22:33:44:55:66:77")
        );
        for proto in ["TCP", "udp", "Sctp"] {
            one(json!({"portMappings": [{"hostPort": 65535, "containerPort": 1, "protocol": proto, "hostIP": ""}]}))
                .unwrap();
        }
        one(json!({"portMappings": [{"hostPort": 1, "containerPort": 1, "hostIP": "2001:db8::1", "x": 1}]}))
            .unwrap();
        for bw in [
            json!({}),
            json!({"ingressRate": 1}),
            json!({"egressRate": 1, "egressBurst": 1, "ingressRate": null}),
            json!({"ingressRate": 9_223_372_036_854_775_807u64, "ingressBurst": 1}),
        ] {
            assert_eq!(
                one(json!({"bandwidth": bw.clone()}))
                    .unwrap()
                    .requests
                    .bandwidth,
                Some(bw)
            );
        }
        assert_eq!(
            one(json!({"default-route": []})).unwrap().requests.gateways,
            Some(vec![])
        );
        // An empty ips list is no request; ips with an IPAMClaim is accepted
        // (docs/multus-compat.md, "Annotations").
        let s = one(json!({"ips": ["192.0.2.1"], "ipam-claim-reference": "claim-1"})).unwrap();
        assert_eq!(s.requests.ips, ["192.0.2.1"]);
        assert_eq!(s.ipam_claim_reference.as_deref(), Some("claim-1"));
    }

    #[test]
    fn json_shape_errors() {
        let cases: &[(&str, &str)] = &[
            (
                r#"{"name": "a"}"#,
                "the value must be a JSON array of selection objects like [{\"name\": \"macvlan-conf\"}], not a single object",
            ),
            (
                r#""a""#,
                "the value must be a JSON array of selection objects like [{\"name\": \"macvlan-conf\"}], not a string",
            ),
            (
                r#"[{"name": "a"}"#,
                "the value is not valid JSON (EOF while parsing",
            ),
            (
                r#"[{"name": "a"},]"#,
                "the value is not valid JSON (trailing comma",
            ),
            ("[a]", "the value is not valid JSON ("),
            (
                r#"[{"name": "a"}, "b"]"#,
                "element 1: must be a JSON object like {\"name\": \"macvlan-conf\"}, got \"b\"",
            ),
            (
                r#"[{"name": "a"}, null]"#,
                "element 1: must be a JSON object like {\"name\": \"macvlan-conf\"}, got null",
            ),
            (r#"[["a"]]"#, "element 0: must be a JSON object"),
        ];
        for (value, want) in cases {
            let got = err(value);
            assert!(got.starts_with(want), "{value}: got {got:?}, want {want:?}");
        }
    }

    #[test]
    fn only_one_element_may_set_default_route_npwg_34() {
        let v = json!([
            {"name": "a", "default-route": []},
            {"name": "b"},
            {"name": "c", "namespace": "x", "default-route": ["192.0.2.1"]}
        ]);
        assert_eq!(
            err(&v.to_string()),
            "element 2 (x/c): \"default-route\": element 0 (pods/a) already sets \"default-route\"; at most one element may (NPWG-34)"
        );
        let v = json!([{"name": "a", "default-route": ["192.0.2.1", "2001:db8::1"]}, {"name": "b", "default-route": null}]);
        assert_eq!(parse(&v.to_string()).len(), 2);
    }

    #[test]
    fn errors_fail_closed_and_stop_at_the_first_bad_element_decide_a1() {
        let v = json!([{"name": "a"}, {"name": "b", "mac": "zz:00"}, {"name": "c", "ips": ["x"]}]);
        assert_eq!(
            parse_networks(&v.to_string(), "default").unwrap_err(),
            AnnotationError::Element {
                index: 1,
                network: Some("default/b".into()),
                field: Some("mac".into()),
                reason: "\"zz:00\" is not a 6-byte Ethernet MAC address like 02:00:00:00:00:01"
                    .into(),
            }
        );
    }

    // === Limits ===

    #[test]
    fn limits_against_hostile_input() {
        let too_big = "a,".repeat(MAX_ANNOTATION_BYTES / 2 + 1);
        assert_eq!(
            err(&too_big),
            format!(
                "the value is {} bytes; at most 262144 bytes (256 KiB) are allowed",
                too_big.len()
            )
        );
        let at_limit = vec!["a"; MAX_ELEMENTS].join(",");
        assert_eq!(parse(&at_limit).len(), MAX_ELEMENTS);
        let over = vec!["a"; MAX_ELEMENTS + 1].join(",");
        assert_eq!(
            err(&over),
            "the value selects 1025 networks; at most 1024 are allowed"
        );
        let json_over = Value::Array(vec![json!({"name": "a"}); MAX_ELEMENTS + 1]).to_string();
        assert_eq!(
            err(&json_over),
            "the value selects 1025 networks; at most 1024 are allowed"
        );
        let deep = format!(
            r#"[{{"name": "a", "cni-args": {{"x": {}1{}}}}}]"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        let e = err(&deep);
        assert!(
            e.starts_with("the value is not valid JSON (nesting is deeper than 128 levels"),
            "{e}"
        );
        // Messages quote at most 64 characters of a value.
        let e = one_err(json!({"mac": "a".repeat(10_000)}));
        assert!(e.len() < 200, "{e}");
        assert!(e.contains('…'), "{e}");
    }

    // === default-network (EXT-4) ===

    #[test]
    fn default_network_resolves_in_multus_namespace_ext_4() {
        assert_eq!(
            parse_default_network("calico", "kube-system").unwrap(),
            sel("kube-system", "calico", None)
        );
        assert_eq!(
            parse_default_network("other/calico@eth5", "kube-system").unwrap(),
            sel("other", "calico", Some("eth5"))
        );
        let s = parse_default_network(
            r#"[{"name": "calico", "ips": ["192.0.2.5"]}]"#,
            "kube-system",
        )
        .unwrap();
        assert_eq!(s.qualified_name(), "kube-system/calico");
        assert_eq!(s.requests.ips, ["192.0.2.5"]);
        assert_eq!(
            parse_default_network("a,b", "kube-system")
                .unwrap_err()
                .to_string(),
            "the value names 2 networks; it must name exactly one"
        );
        assert_eq!(
            parse_default_network(" ", "kube-system").unwrap_err(),
            AnnotationError::NotOneDefaultNetwork { count: 0 }
        );
        assert!(
            parse_default_network(r#"{"name": "calico"}"#, "kube-system")
                .unwrap_err()
                .to_string()
                .ends_with("not a single object")
        );
    }

    // === cni-args (NPWG-29) ===

    fn args(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn cni_args_merge_into_a_conf_npwg_29() {
        let net = NetworkConfig::from_value(json!({
            "cniVersion": "1.0.0", "name": "n", "type": "macvlan",
            "args": {"cni": {"keep": 1, "over": "nad"}, "other": true}, "master": "eth0"
        }))
        .unwrap();
        let out = inject_cni_args(&net, &args(json!({"over": "pod", "new": [1]}))).unwrap();
        assert_eq!(
            String::from_utf8(out.bytes.clone()).unwrap(),
            r#"{"cniVersion":"1.0.0","name":"n","type":"macvlan","args":{"cni":{"keep":1,"over":"pod","new":[1]},"other":true},"master":"eth0"}"#
        );
        assert_eq!(out.plugins[0].raw["args"]["cni"]["over"], "pod");

        let bare = NetworkConfig::from_value(json!({"name": "n", "type": "macvlan"})).unwrap();
        let out = inject_cni_args(&bare, &args(json!({"a": "b"}))).unwrap();
        assert_eq!(out.value["args"], json!({"cni": {"a": "b"}}));
        let nulls = NetworkConfig::from_value(
            json!({"name": "n", "type": "macvlan", "args": {"cni": null}}),
        )
        .unwrap();
        let out = inject_cni_args(&nulls, &args(json!({"a": "b"}))).unwrap();
        assert_eq!(out.value["args"], json!({"cni": {"a": "b"}}));

        // Nothing to merge: the config is returned as it was, bytes included.
        let bytes = br#"{ "name": "n", "type": "macvlan" }"#;
        let net = NetworkConfig::from_bytes(bytes).unwrap();
        assert_eq!(
            inject_cni_args(&net, &Map::new()).unwrap().bytes,
            bytes.to_vec()
        );
    }

    #[test]
    fn cni_args_merge_into_every_plugin_of_a_conflist_npwg_29() {
        let net = NetworkConfig::from_value(json!({
            "cniVersion": "1.0.0", "name": "l",
            "plugins": [
                {"type": "bridge", "args": {"cni": {"a": "nad", "z": 0}}},
                {"type": "tuning"},
                {"type": "portmap", "args": {"labels": []}}
            ]
        }))
        .unwrap();
        let out = inject_cni_args(&net, &args(json!({"a": "pod", "b": 2}))).unwrap();
        assert_eq!(
            out.value["plugins"],
            json!([
                {"type": "bridge", "args": {"cni": {"a": "pod", "z": 0, "b": 2}}},
                {"type": "tuning", "args": {"cni": {"a": "pod", "b": 2}}},
                {"type": "portmap", "args": {"labels": [], "cni": {"a": "pod", "b": 2}}}
            ])
        );
        assert!(out.value.get("args").is_none());
        assert_eq!(out.plugins.len(), 3);
        assert_eq!(out.plugins[1].raw["args"]["cni"]["b"], 2);
    }

    #[test]
    fn cni_args_into_a_non_object_args_is_an_error() {
        let net =
            NetworkConfig::from_value(json!({"name": "n", "type": "a", "args": "x"})).unwrap();
        assert_eq!(
            inject_cni_args(&net, &args(json!({"k": 1})))
                .unwrap_err()
                .to_string(),
            "args: must be an object to take the selection's cni-args (NPWG-29)"
        );
        let net = NetworkConfig::from_value(
            json!({"name": "n", "plugins": [{"type": "a"}, {"type": "b", "args": {"cni": 5}}]}),
        )
        .unwrap();
        assert_eq!(
            inject_cni_args(&net, &args(json!({"k": 1})))
                .unwrap_err()
                .to_string(),
            "plugins[1].args.cni: must be an object to take the selection's cni-args (NPWG-29)"
        );
    }

    // === Pods and isolation ===

    #[test]
    fn static_pods_by_config_source() {
        let mut a = BTreeMap::new();
        assert!(!is_static_pod(&a));
        a.insert(CONFIG_SOURCE_ANNOTATION.to_string(), "api".to_string());
        assert!(!is_static_pod(&a));
        for src in ["file", "http", ""] {
            a.insert(CONFIG_SOURCE_ANNOTATION.to_string(), src.to_string());
            assert!(is_static_pod(&a), "{src}");
        }
    }

    #[test]
    fn namespace_isolation_npwg_65() {
        let global = vec!["default".to_string(), "shared".to_string()];
        assert_eq!(check_isolation("a", "b", false, &global), Ok(()));
        assert_eq!(check_isolation("a", "a", true, &global), Ok(()));
        assert_eq!(check_isolation("a", "shared", true, &global), Ok(()));
        assert_eq!(check_isolation("a", "default", true, &global), Ok(()));
        assert_eq!(
            check_isolation("a", "b", true, &global),
            Err("namespace isolation enabled, annotation violates permission, pod is in namespace a but refers to target namespace b".into())
        );
        assert!(check_isolation("a", "default", true, &[]).is_err());
    }
}
