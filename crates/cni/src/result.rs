//! The CNI ADD result in canonical 1.x form, parsed from and rendered to every spec version (CNI-34, CNI-35, CNI-36, CNI-37).
//!
//! [`CniResult`] holds the union of what all versions can say. [`CniResult::parse`]
//! reads any version; [`CniResult::to_value`] renders the shape of a chosen version:
//!
//! * 0.1.0 / 0.2.0: `{cniVersion, ip4: {ip, gateway, routes: [{dst, gw}]}, ip6: {..}, dns}`.
//! * 0.3.0 / 0.3.1 / 0.4.0: `{cniVersion, interfaces: [{name, mac, sandbox}],
//!   ips: [{version, interface, address, gateway}], routes: [{dst, gw}], dns}`.
//! * 1.0.0 / 1.1.0: as 0.4.0 without `ips[].version`; interfaces add `mtu`,
//!   `socketPath`, `pciID`; routes add `mtu`, `advmss`, `priority`, `table`, `scope`.
//!
//! Choice: the extra route fields are emitted only for 1.x. Go keeps them in 0.4
//! output because its 0.4 and 1.0 types share one route struct, but they are not
//! part of the 0.3/0.4 shape.
//!
//! Empty values are left out as Go's `omitempty` does (empty strings, absent
//! gateways, zero `mtu`/`advmss`/`priority`, empty lists); `dns` is written only
//! when it has content. Unknown keys of the top-level, interface, ip and route
//! objects are kept in `extra` and written back after the known keys; unknown keys
//! inside `dns` are dropped.

use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::{Map, Value};

use crate::version::CniVersion;

/// Unknown JSON keys of an object, kept for re-emission.
pub type Extra = Map<String, Value>;

/// Errors from parsing or rendering a result.
#[derive(Debug, thiserror::Error)]
pub enum ResultError {
    /// The bytes are not JSON.
    #[error("result is not valid JSON: {0}")]
    Json(#[source] serde_json::Error),
    /// The JSON is not an object.
    #[error("result is not a JSON object")]
    NotAnObject,
    /// The `cniVersion` string is not a version we know (CNI-36).
    #[error("unsupported CNI result version {0:?}")]
    UnsupportedVersion(String),
    /// A required field is missing.
    #[error("result field {0} is missing")]
    MissingField(String),
    /// A field has the wrong type or an unparsable value.
    #[error("result field {field} has invalid value {value}: {reason}")]
    InvalidField {
        /// Path of the field, e.g. `ips[0].address`.
        field: String,
        /// The offending JSON value.
        value: String,
        /// What was expected.
        reason: &'static str,
    },
    /// CNI-36: a 0.1.0/0.2.0 result needs at least one IP address.
    #[error("cannot convert: no valid IP addresses")]
    NoIpAddresses,
}

/// An interface in a result (CNI-34).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Interface {
    /// Interface name.
    pub name: String,
    /// Hardware address.
    pub mac: Option<String>,
    /// MTU (1.1.0).
    pub mtu: Option<u32>,
    /// The `CNI_NETNS` path for container interfaces; `None` for host interfaces.
    pub sandbox: Option<String>,
    /// vhost-user or similar socket path (1.1.0).
    pub socket_path: Option<String>,
    /// PCI address of the device (1.1.0).
    pub pci_id: Option<String>,
    /// Unknown keys.
    pub extra: Extra,
}

impl Interface {
    /// An interface with just a name.
    pub fn new(name: impl Into<String>) -> Interface {
        Interface {
            name: name.into(),
            ..Interface::default()
        }
    }
}

/// An IP address assignment (CNI-34).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    /// Address with prefix length, e.g. `10.1.2.3/24` (host bits kept).
    pub address: IpNet,
    /// Default gateway for this address, if any.
    pub gateway: Option<IpAddr>,
    /// Index into [`CniResult::interfaces`]; may be absent or `-1` (CNI-37).
    pub interface: Option<i64>,
    /// Unknown keys.
    pub extra: Extra,
}

impl IpConfig {
    /// An address with no gateway and no interface index.
    pub fn new(address: IpNet) -> IpConfig {
        IpConfig {
            address,
            gateway: None,
            interface: None,
            extra: Extra::new(),
        }
    }

    /// The interface index as a usable index: `None` when absent or negative (CNI-37).
    pub fn interface_index(&self) -> Option<usize> {
        self.interface.and_then(|i| usize::try_from(i).ok())
    }

    /// True for an IPv4 address.
    pub fn is_ipv4(&self) -> bool {
        matches!(self.address, IpNet::V4(_))
    }
}

/// A route (CNI-34).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination network.
    pub dst: IpNet,
    /// Next hop; `None` means the default gateway.
    pub gw: Option<IpAddr>,
    /// Route MTU (1.1.0).
    pub mtu: Option<u32>,
    /// Advertised MSS (1.1.0).
    pub advmss: Option<u32>,
    /// Route priority / metric (1.1.0).
    pub priority: Option<u32>,
    /// Routing table (1.1.0).
    pub table: Option<u32>,
    /// Route scope (1.1.0).
    pub scope: Option<u8>,
    /// Unknown keys.
    pub extra: Extra,
}

impl Route {
    /// A route to `dst` with nothing else set.
    pub fn new(dst: IpNet) -> Route {
        Route {
            dst,
            gw: None,
            mtu: None,
            advmss: None,
            priority: None,
            table: None,
            scope: None,
            extra: Extra::new(),
        }
    }

    /// True for a default route: a `dst` with prefix length 0 (`0.0.0.0/0`, `::/0`).
    pub fn is_default(&self) -> bool {
        self.dst.prefix_len() == 0
    }
}

/// DNS settings (CNI-34).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dns {
    /// Name server addresses.
    pub nameservers: Vec<String>,
    /// Local domain.
    pub domain: Option<String>,
    /// Search domains.
    pub search: Vec<String>,
    /// Resolver options.
    pub options: Vec<String>,
}

impl Dns {
    /// True when nothing is set; such a `dns` is not written.
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.as_deref().is_none_or(str::is_empty)
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

/// A CNI result of any version, held in the 1.x shape (CNI-34).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniResult {
    /// The version the result was parsed from (or created for).
    pub cni_version: CniVersion,
    /// Interfaces; empty for results from 0.1.0/0.2.0 and IPAM plugins (CNI-33).
    pub interfaces: Vec<Interface>,
    /// IP addresses.
    pub ips: Vec<IpConfig>,
    /// Routes.
    pub routes: Vec<Route>,
    /// DNS settings.
    pub dns: Dns,
    /// Unknown top-level keys.
    pub extra: Extra,
}

/// An empty result tagged with version `v`.
pub fn empty_result(v: CniVersion) -> CniResult {
    CniResult {
        cni_version: v,
        interfaces: Vec::new(),
        ips: Vec::new(),
        routes: Vec::new(),
        dns: Dns::default(),
        extra: Extra::new(),
    }
}

const TOP_KEYS: &[&str] = &[
    "cniVersion",
    "interfaces",
    "ips",
    "routes",
    "dns",
    "ip4",
    "ip6",
];
const INTERFACE_KEYS: &[&str] = &["name", "mac", "mtu", "sandbox", "socketPath", "pciID"];
const IP_KEYS: &[&str] = &["address", "gateway", "interface", "version", "ip", "routes"];
const ROUTE_KEYS: &[&str] = &["dst", "gw", "mtu", "advmss", "priority", "table", "scope"];

// ---------- parsing helpers ----------

fn invalid(field: impl Into<String>, value: &Value, reason: &'static str) -> ResultError {
    ResultError::InvalidField {
        field: field.into(),
        value: value.to_string(),
        reason,
    }
}

fn object<'a>(v: &'a Value, path: &str) -> Result<&'a Map<String, Value>, ResultError> {
    v.as_object()
        .ok_or_else(|| invalid(path, v, "expected a JSON object"))
}

/// A present, non-null value at `key`.
fn present<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    m.get(key).filter(|v| !v.is_null())
}

/// An optional string; `""` counts as absent.
fn opt_string(
    m: &Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<String>, ResultError> {
    match present(m, key) {
        None => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(invalid(format!("{path}.{key}"), other, "expected a string")),
    }
}

fn opt_uint<T: TryFrom<u64>>(
    m: &Map<String, Value>,
    key: &str,
    path: &str,
    reason: &'static str,
) -> Result<Option<T>, ResultError> {
    match present(m, key) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| T::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| invalid(format!("{path}.{key}"), v, reason)),
    }
}

fn string_list(m: &Map<String, Value>, key: &str, path: &str) -> Result<Vec<String>, ResultError> {
    let Some(v) = present(m, key) else {
        return Ok(Vec::new());
    };
    let items = v
        .as_array()
        .ok_or_else(|| invalid(format!("{path}.{key}"), v, "expected an array of strings"))?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            item.as_str()
                .map(str::to_owned)
                .ok_or_else(|| invalid(format!("{path}.{key}[{i}]"), item, "expected a string"))
        })
        .collect()
}

fn array<'a>(m: &'a Map<String, Value>, key: &str, path: &str) -> Result<&'a [Value], ResultError> {
    match present(m, key) {
        None => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(other) => Err(invalid(join(path, key), other, "expected an array")),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn cidr(m: &Map<String, Value>, key: &str, path: &str) -> Result<IpNet, ResultError> {
    let field = join(path, key);
    let v = present(m, key).ok_or_else(|| ResultError::MissingField(field.clone()))?;
    v.as_str()
        .and_then(|s| s.parse::<IpNet>().ok())
        .ok_or_else(|| {
            invalid(
                field,
                v,
                "expected an address in CIDR form, e.g. 10.1.2.3/24",
            )
        })
}

fn opt_ip(m: &Map<String, Value>, key: &str, path: &str) -> Result<Option<IpAddr>, ResultError> {
    match present(m, key) {
        None => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(v) => v
            .as_str()
            .and_then(|s| s.parse::<IpAddr>().ok())
            .map(Some)
            .ok_or_else(|| invalid(join(path, key), v, "expected an IP address, e.g. 10.1.2.1")),
    }
}

fn extra_of(m: &Map<String, Value>, known: &[&str]) -> Extra {
    m.iter()
        .filter(|(k, _)| !known.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn parse_interface(v: &Value, path: &str) -> Result<Interface, ResultError> {
    let m = object(v, path)?;
    Ok(Interface {
        name: opt_string(m, "name", path)?.unwrap_or_default(),
        mac: opt_string(m, "mac", path)?,
        mtu: opt_uint(m, "mtu", path, "expected an integer from 0 to 4294967295")?,
        sandbox: opt_string(m, "sandbox", path)?,
        socket_path: opt_string(m, "socketPath", path)?,
        pci_id: opt_string(m, "pciID", path)?,
        extra: extra_of(m, INTERFACE_KEYS),
    })
}

fn parse_ip(v: &Value, path: &str) -> Result<IpConfig, ResultError> {
    let m = object(v, path)?;
    let interface = match present(m, "interface") {
        None => None,
        Some(i) => Some(i.as_i64().ok_or_else(|| {
            invalid(
                join(path, "interface"),
                i,
                "expected an integer interface index",
            )
        })?),
    };
    Ok(IpConfig {
        address: cidr(m, "address", path)?,
        gateway: opt_ip(m, "gateway", path)?,
        interface,
        extra: extra_of(m, IP_KEYS),
    })
}

fn parse_route(v: &Value, path: &str) -> Result<Route, ResultError> {
    let m = object(v, path)?;
    const U32: &str = "expected an integer from 0 to 4294967295";
    Ok(Route {
        dst: cidr(m, "dst", path)?,
        gw: opt_ip(m, "gw", path)?,
        mtu: opt_uint(m, "mtu", path, U32)?,
        advmss: opt_uint(m, "advmss", path, U32)?,
        priority: opt_uint(m, "priority", path, U32)?,
        table: opt_uint(m, "table", path, U32)?,
        scope: opt_uint(m, "scope", path, "expected an integer from 0 to 255")?,
        extra: extra_of(m, ROUTE_KEYS),
    })
}

/// 0.1.0/0.2.0 `ip4`/`ip6` object: `{ip, gateway, routes}`.
fn parse_legacy_ip(v: &Value, path: &str) -> Result<(IpConfig, Vec<Route>), ResultError> {
    let m = object(v, path)?;
    let ip = IpConfig {
        address: cidr(m, "ip", path)?,
        gateway: opt_ip(m, "gateway", path)?,
        interface: None,
        extra: extra_of(m, IP_KEYS),
    };
    let routes = array(m, "routes", path)?
        .iter()
        .enumerate()
        .map(|(i, r)| parse_route(r, &format!("{path}.routes[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((ip, routes))
}

fn parse_dns(m: &Map<String, Value>) -> Result<Dns, ResultError> {
    let Some(v) = present(m, "dns") else {
        return Ok(Dns::default());
    };
    let d = object(v, "dns")?;
    Ok(Dns {
        nameservers: string_list(d, "nameservers", "dns")?,
        domain: opt_string(d, "domain", "dns")?,
        search: string_list(d, "search", "dns")?,
        options: string_list(d, "options", "dns")?,
    })
}

// ---------- rendering helpers ----------

fn put_str(m: &mut Map<String, Value>, key: &str, v: &Option<String>) {
    if let Some(s) = v.as_deref().filter(|s| !s.is_empty()) {
        m.insert(key.to_owned(), Value::from(s));
    }
}

/// Go `omitempty` on a plain int: zero is left out.
fn put_nonzero(m: &mut Map<String, Value>, key: &str, v: Option<u32>) {
    if let Some(n) = v.filter(|n| *n != 0) {
        m.insert(key.to_owned(), Value::from(n));
    }
}

fn put_extra(m: &mut Map<String, Value>, extra: &Extra, known: &[&str]) {
    for (k, v) in extra {
        if !known.contains(&k.as_str()) && !m.contains_key(k) {
            m.insert(k.clone(), v.clone());
        }
    }
}

fn string_array(items: &[String]) -> Value {
    Value::Array(items.iter().map(|s| Value::from(s.as_str())).collect())
}

fn dns_value(d: &Dns) -> Value {
    let mut m = Map::new();
    if !d.nameservers.is_empty() {
        m.insert("nameservers".into(), string_array(&d.nameservers));
    }
    put_str(&mut m, "domain", &d.domain);
    if !d.search.is_empty() {
        m.insert("search".into(), string_array(&d.search));
    }
    if !d.options.is_empty() {
        m.insert("options".into(), string_array(&d.options));
    }
    Value::Object(m)
}

fn interface_value(i: &Interface, v: CniVersion) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), Value::from(i.name.as_str()));
    put_str(&mut m, "mac", &i.mac);
    if v >= CniVersion::V1_0_0 {
        put_nonzero(&mut m, "mtu", i.mtu);
    }
    put_str(&mut m, "sandbox", &i.sandbox);
    if v >= CniVersion::V1_0_0 {
        put_str(&mut m, "socketPath", &i.socket_path);
        put_str(&mut m, "pciID", &i.pci_id);
    }
    put_extra(&mut m, &i.extra, INTERFACE_KEYS);
    Value::Object(m)
}

fn ip_value(ip: &IpConfig, v: CniVersion) -> Value {
    let mut m = Map::new();
    if v < CniVersion::V1_0_0 {
        m.insert(
            "version".into(),
            Value::from(if ip.is_ipv4() { "4" } else { "6" }),
        );
    }
    if let Some(i) = ip.interface {
        m.insert("interface".into(), Value::from(i));
    }
    m.insert("address".into(), Value::from(ip.address.to_string()));
    if let Some(gw) = ip.gateway {
        m.insert("gateway".into(), Value::from(gw.to_string()));
    }
    put_extra(&mut m, &ip.extra, IP_KEYS);
    Value::Object(m)
}

fn route_value(r: &Route, v: CniVersion) -> Value {
    let mut m = Map::new();
    m.insert("dst".into(), Value::from(r.dst.to_string()));
    if let Some(gw) = r.gw {
        m.insert("gw".into(), Value::from(gw.to_string()));
    }
    if v >= CniVersion::V1_0_0 {
        put_nonzero(&mut m, "mtu", r.mtu);
        put_nonzero(&mut m, "advmss", r.advmss);
        put_nonzero(&mut m, "priority", r.priority);
        if let Some(t) = r.table {
            m.insert("table".into(), Value::from(t));
        }
        if let Some(s) = r.scope {
            m.insert("scope".into(), Value::from(s));
        }
    }
    put_extra(&mut m, &r.extra, ROUTE_KEYS);
    Value::Object(m)
}

fn legacy_ip_value(ip: &IpConfig, routes: &[&Route], v: CniVersion) -> Value {
    let mut m = Map::new();
    m.insert("ip".into(), Value::from(ip.address.to_string()));
    if let Some(gw) = ip.gateway {
        m.insert("gateway".into(), Value::from(gw.to_string()));
    }
    if !routes.is_empty() {
        let list = routes.iter().map(|r| route_value(r, v)).collect();
        m.insert("routes".into(), Value::Array(list));
    }
    put_extra(&mut m, &ip.extra, IP_KEYS);
    Value::Object(m)
}

impl CniResult {
    /// Parse a result of any version; the version comes from its `cniVersion`
    /// key, and when that is missing or empty, from `fallback` (CNI-35, libcni #895).
    pub fn parse(bytes: &[u8], fallback: CniVersion) -> Result<CniResult, ResultError> {
        let value: Value = serde_json::from_slice(bytes).map_err(ResultError::Json)?;
        CniResult::from_value(&value, fallback)
    }

    /// As [`CniResult::parse`], from a decoded value.
    ///
    /// 0.1.0/0.2.0 results become `ips` from `ip4` then `ip6` (no interface index)
    /// and `routes` from `ip4.routes` then `ip6.routes`, with no interfaces (CNI-36).
    /// `ips[].version` is not kept; it is derived from the address when rendering.
    pub fn from_value(v: &Value, fallback: CniVersion) -> Result<CniResult, ResultError> {
        let m = v.as_object().ok_or(ResultError::NotAnObject)?;
        let version = match present(m, "cniVersion") {
            None => fallback,
            Some(Value::String(s)) if s.is_empty() => fallback,
            Some(Value::String(s)) => s
                .parse()
                .map_err(|_| ResultError::UnsupportedVersion(s.clone()))?,
            Some(other) => return Err(invalid("cniVersion", other, "expected a version string")),
        };
        let mut result = empty_result(version);
        if version.has_rich_result() {
            for (i, item) in array(m, "interfaces", "")?.iter().enumerate() {
                result
                    .interfaces
                    .push(parse_interface(item, &format!("interfaces[{i}]"))?);
            }
            for (i, item) in array(m, "ips", "")?.iter().enumerate() {
                result.ips.push(parse_ip(item, &format!("ips[{i}]"))?);
            }
            for (i, item) in array(m, "routes", "")?.iter().enumerate() {
                result
                    .routes
                    .push(parse_route(item, &format!("routes[{i}]"))?);
            }
        } else {
            for key in ["ip4", "ip6"] {
                if let Some(obj) = present(m, key) {
                    let (ip, routes) = parse_legacy_ip(obj, key)?;
                    result.ips.push(ip);
                    result.routes.extend(routes);
                }
            }
        }
        result.dns = parse_dns(m)?;
        result.extra = extra_of(m, TOP_KEYS);
        Ok(result)
    }

    /// Render in the shape of version `v`, with `cniVersion` set to `v` (CNI-36).
    ///
    /// For 0.1.0/0.2.0 only the first IPv4 and the first IPv6 address are kept,
    /// routes go under the `ip4`/`ip6` of their family (routes of a family with no
    /// address are dropped), and interfaces are dropped; with no address at all this
    /// fails with [`ResultError::NoIpAddresses`].
    pub fn to_value(&self, v: CniVersion) -> Result<Value, ResultError> {
        let mut m = Map::new();
        m.insert("cniVersion".into(), Value::from(v.as_str()));
        if v.has_rich_result() {
            if !self.interfaces.is_empty() {
                let list = self
                    .interfaces
                    .iter()
                    .map(|i| interface_value(i, v))
                    .collect();
                m.insert("interfaces".into(), Value::Array(list));
            }
            if !self.ips.is_empty() {
                let list = self.ips.iter().map(|ip| ip_value(ip, v)).collect();
                m.insert("ips".into(), Value::Array(list));
            }
            if !self.routes.is_empty() {
                let list = self.routes.iter().map(|r| route_value(r, v)).collect();
                m.insert("routes".into(), Value::Array(list));
            }
        } else {
            let ip4 = self.ips.iter().find(|ip| ip.is_ipv4());
            let ip6 = self.ips.iter().find(|ip| !ip.is_ipv4());
            if ip4.is_none() && ip6.is_none() {
                return Err(ResultError::NoIpAddresses);
            }
            for (key, ip, want_v4) in [("ip4", ip4, true), ("ip6", ip6, false)] {
                if let Some(ip) = ip {
                    let routes: Vec<&Route> = self
                        .routes
                        .iter()
                        .filter(|r| matches!(r.dst, IpNet::V4(_)) == want_v4)
                        .collect();
                    m.insert(key.into(), legacy_ip_value(ip, &routes, v));
                }
            }
        }
        if !self.dns.is_empty() {
            m.insert("dns".into(), dns_value(&self.dns));
        }
        put_extra(&mut m, &self.extra, TOP_KEYS);
        Ok(Value::Object(m))
    }

    /// [`CniResult::to_value`] as compact JSON.
    pub fn to_json(&self, v: CniVersion) -> Result<String, ResultError> {
        Ok(self.to_value(v)?.to_string())
    }

    /// Index of the first interface with a non-empty `sandbox`, i.e. the first
    /// container-side interface.
    pub fn first_sandbox_interface(&self) -> Option<usize> {
        self.interfaces
            .iter()
            .position(|i| i.sandbox.as_deref().is_some_and(|s| !s.is_empty()))
    }

    /// The IPs whose `interface` index points at `index`.
    pub fn ips_for_interface(&self, index: usize) -> impl Iterator<Item = &IpConfig> {
        self.ips
            .iter()
            .filter(move |ip| ip.interface_index() == Some(index))
    }

    /// Gateways of default routes (`0.0.0.0/0`, `::/0`), then the gateways of
    /// `ips`, without duplicates, in order of appearance.
    pub fn default_gateways(&self) -> Vec<IpAddr> {
        let mut out: Vec<IpAddr> = Vec::new();
        let candidates = self
            .routes
            .iter()
            .filter(|r| r.is_default())
            .filter_map(|r| r.gw)
            .chain(self.ips.iter().filter_map(|ip| ip.gateway));
        for gw in candidates {
            if !out.contains(&gw) {
                out.push(gw);
            }
        }
        out
    }
}

/// Convert a result of any version to version `to` in one step (CNI-35, CNI-37):
/// parse with `fallback` for a missing `cniVersion`, then render.
pub fn convert(value: &Value, fallback: CniVersion, to: CniVersion) -> Result<Value, ResultError> {
    CniResult::from_value(value, fallback)?.to_value(to)
}

#[cfg(test)]
mod tests {
    use super::*;
    use CniVersion::*;
    use serde_json::json;

    /// Regression, fuzz target `result` (issue 6): unknown keys are written back, and a number among them
    /// must parse back to the same value (serde_json's `float_roundtrip`; without it
    /// 3.3333333333333334e31 came back as 3.333333333333334e31).
    #[test]
    fn numbers_in_unknown_keys_survive_a_round_trip_exactly() {
        let text =
            r#"{"cniVersion":"1.0.0","x.rate":33333333333333333333333333330000,"y":[0.1,2.5e300]}"#;
        let r = CniResult::parse(text.as_bytes(), V1_0_0).unwrap();
        let once = r.to_json(V1_0_0).unwrap();
        let again = CniResult::parse(once.as_bytes(), V1_0_0).unwrap();
        assert_eq!(again, r);
        assert_eq!(again.to_json(V1_0_0).unwrap(), once);
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn addr(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A dual-stack result with every 1.1.0 field set, two addresses per family.
    fn rich() -> CniResult {
        let mut r = empty_result(V1_1_0);
        r.interfaces = vec![
            Interface {
                name: "br0".into(),
                mac: Some("aa:bb:cc:dd:ee:00".into()),
                ..Interface::default()
            },
            Interface {
                name: "eth0".into(),
                mac: Some("aa:bb:cc:dd:ee:01".into()),
                mtu: Some(1450),
                sandbox: Some("/var/run/netns/x".into()),
                socket_path: Some("/run/vhost.sock".into()),
                pci_id: Some("0000:04:00.5".into()),
                extra: Extra::new(),
            },
        ];
        r.ips = vec![
            IpConfig {
                interface: Some(1),
                gateway: Some(addr("fd00::1")),
                ..IpConfig::new(net("fd00::5/64"))
            },
            IpConfig {
                interface: Some(1),
                gateway: Some(addr("10.1.0.1")),
                ..IpConfig::new(net("10.1.0.5/24"))
            },
            IpConfig {
                interface: Some(-1),
                ..IpConfig::new(net("10.2.0.5/24"))
            },
            IpConfig::new(net("fd01::5/64")),
        ];
        r.routes = vec![
            Route {
                gw: Some(addr("10.1.0.1")),
                mtu: Some(1400),
                advmss: Some(1360),
                priority: Some(10),
                table: Some(100),
                scope: Some(0),
                ..Route::new(net("0.0.0.0/0"))
            },
            Route::new(net("fd00::/8")),
            Route {
                gw: Some(addr("10.2.0.1")),
                ..Route::new(net("192.168.0.0/16"))
            },
        ];
        r.dns = Dns {
            nameservers: vec!["10.1.0.53".into()],
            domain: Some("example.local".into()),
            search: vec!["svc.example.local".into()],
            options: vec!["ndots:5".into()],
        };
        r
    }

    #[test]
    fn renders_1_1_0_shape_exactly_cni_34() {
        let got = rich().to_json(V1_1_0).unwrap();
        let want = r#"{"cniVersion":"1.1.0","interfaces":[{"name":"br0","mac":"aa:bb:cc:dd:ee:00"},{"name":"eth0","mac":"aa:bb:cc:dd:ee:01","mtu":1450,"sandbox":"/var/run/netns/x","socketPath":"/run/vhost.sock","pciID":"0000:04:00.5"}],"ips":[{"interface":1,"address":"fd00::5/64","gateway":"fd00::1"},{"interface":1,"address":"10.1.0.5/24","gateway":"10.1.0.1"},{"interface":-1,"address":"10.2.0.5/24"},{"address":"fd01::5/64"}],"routes":[{"dst":"0.0.0.0/0","gw":"10.1.0.1","mtu":1400,"advmss":1360,"priority":10,"table":100,"scope":0},{"dst":"fd00::/8"},{"dst":"192.168.0.0/16","gw":"10.2.0.1"}],"dns":{"nameservers":["10.1.0.53"],"domain":"example.local","search":["svc.example.local"],"options":["ndots:5"]}}"#;
        assert_eq!(got, want);
    }

    #[test]
    fn renders_0_4_0_shape_exactly_cni_36() {
        let got = rich().to_json(V0_4_0).unwrap();
        let want = r#"{"cniVersion":"0.4.0","interfaces":[{"name":"br0","mac":"aa:bb:cc:dd:ee:00"},{"name":"eth0","mac":"aa:bb:cc:dd:ee:01","sandbox":"/var/run/netns/x"}],"ips":[{"version":"6","interface":1,"address":"fd00::5/64","gateway":"fd00::1"},{"version":"4","interface":1,"address":"10.1.0.5/24","gateway":"10.1.0.1"},{"version":"4","interface":-1,"address":"10.2.0.5/24"},{"version":"6","address":"fd01::5/64"}],"routes":[{"dst":"0.0.0.0/0","gw":"10.1.0.1"},{"dst":"fd00::/8"},{"dst":"192.168.0.0/16","gw":"10.2.0.1"}],"dns":{"nameservers":["10.1.0.53"],"domain":"example.local","search":["svc.example.local"],"options":["ndots:5"]}}"#;
        assert_eq!(got, want);
    }

    #[test]
    fn renders_0_2_0_first_v4_and_first_v6_cni_36() {
        let got = rich().to_json(V0_2_0).unwrap();
        let want = r#"{"cniVersion":"0.2.0","ip4":{"ip":"10.1.0.5/24","gateway":"10.1.0.1","routes":[{"dst":"0.0.0.0/0","gw":"10.1.0.1"},{"dst":"192.168.0.0/16","gw":"10.2.0.1"}]},"ip6":{"ip":"fd00::5/64","gateway":"fd00::1","routes":[{"dst":"fd00::/8"}]},"dns":{"nameservers":["10.1.0.53"],"domain":"example.local","search":["svc.example.local"],"options":["ndots:5"]}}"#;
        assert_eq!(got, want);
    }

    #[test]
    fn legacy_drops_routes_of_a_family_without_address() {
        let mut r = empty_result(V1_0_0);
        r.ips = vec![IpConfig::new(net("10.0.0.2/24"))];
        r.routes = vec![Route::new(net("::/0")), Route::new(net("10.9.0.0/16"))];
        let v = r.to_value(V0_1_0).unwrap();
        assert_eq!(
            v,
            json!({"cniVersion": "0.1.0", "ip4": {"ip": "10.0.0.2/24", "routes": [{"dst": "10.9.0.0/16"}]}})
        );
        assert!(v.get("ip6").is_none());
    }

    #[test]
    fn no_ip_cannot_become_legacy_cni_36() {
        let mut r = empty_result(V1_0_0);
        r.interfaces = vec![Interface::new("eth0")];
        for v in [V0_1_0, V0_2_0] {
            let err = r.to_value(v).unwrap_err();
            assert!(matches!(err, ResultError::NoIpAddresses));
            assert_eq!(err.to_string(), "cannot convert: no valid IP addresses");
        }
        for v in [V0_3_0, V0_3_1, V0_4_0, V1_0_0, V1_1_0] {
            let out = r.to_value(v).unwrap();
            assert_eq!(out["interfaces"][0]["name"], "eth0");
            assert!(out.get("ips").is_none());
        }
    }

    /// Every (from, to) pair of the seven versions: render `rich()` as `from`,
    /// parse it back, render as `to`, and check what survives.
    #[test]
    fn conversion_table_every_pair_cni_36() {
        let base = rich();
        for from in CniVersion::ALL {
            let src = base.to_value(from).unwrap();
            let parsed = CniResult::from_value(&src, V0_1_0).unwrap();
            assert_eq!(parsed.cni_version, from);
            for to in CniVersion::ALL {
                let out = parsed.to_value(to).unwrap();
                let ctx = format!("{from} -> {to}: {out}");
                assert_eq!(out["cniVersion"], to.as_str(), "{ctx}");
                let back = CniResult::from_value(&out, V0_1_0).unwrap();
                assert_eq!(back.dns, base.dns, "{ctx}");
                let both_rich = from.has_rich_result() && to.has_rich_result();
                if to.has_rich_result() {
                    assert!(
                        out.get("ip4").is_none() && out.get("ip6").is_none(),
                        "{ctx}"
                    );
                    let has_version = out["ips"][0].get("version").is_some();
                    assert_eq!(has_version, to < V1_0_0, "{ctx}");
                } else {
                    assert!(
                        out.get("ips").is_none() && out.get("interfaces").is_none(),
                        "{ctx}"
                    );
                    assert_eq!(out["ip4"]["ip"], "10.1.0.5/24", "{ctx}");
                    assert_eq!(out["ip6"]["ip"], "fd00::5/64", "{ctx}");
                }
                if both_rich {
                    // Addresses, indices (-1 included) and order survive.
                    assert_eq!(back.ips, base.ips, "{ctx}");
                    assert_eq!(back.interfaces.len(), 2, "{ctx}");
                    assert_eq!(
                        back.interfaces[1].sandbox, base.interfaces[1].sandbox,
                        "{ctx}"
                    );
                    let full = from >= V1_0_0 && to >= V1_0_0;
                    assert_eq!(back.interfaces == base.interfaces, full, "{ctx}");
                    assert_eq!(back.routes == base.routes, full, "{ctx}");
                    assert_eq!(back.routes.len(), 3, "{ctx}");
                } else {
                    // Through a legacy shape: first v4 then first v6, no index, no interfaces.
                    let got: Vec<IpNet> = back.ips.iter().map(|ip| ip.address).collect();
                    assert_eq!(got, [net("10.1.0.5/24"), net("fd00::5/64")], "{ctx}");
                    assert!(back.ips.iter().all(|ip| ip.interface.is_none()), "{ctx}");
                    assert!(back.interfaces.is_empty(), "{ctx}");
                    let dsts: Vec<String> = back.routes.iter().map(|r| r.dst.to_string()).collect();
                    assert_eq!(dsts, ["0.0.0.0/0", "192.168.0.0/16", "fd00::/8"], "{ctx}");
                    assert!(back.routes.iter().all(|r| r.mtu.is_none()), "{ctx}");
                }
            }
        }
    }

    #[test]
    fn round_trip_is_byte_identical_for_each_version() {
        let fixtures = [
            (
                V0_1_0,
                r#"{"cniVersion":"0.1.0","ip4":{"ip":"10.0.0.2/24","gateway":"10.0.0.1","routes":[{"dst":"0.0.0.0/0"}]},"dns":{"nameservers":["8.8.8.8"]}}"#,
            ),
            (
                V0_2_0,
                r#"{"cniVersion":"0.2.0","ip4":{"ip":"10.0.0.2/24"},"ip6":{"ip":"2001:db8::2/64","gateway":"2001:db8::1","routes":[{"dst":"::/0","gw":"2001:db8::1"}]}}"#,
            ),
            (
                V0_3_0,
                r#"{"cniVersion":"0.3.0","interfaces":[{"name":"eth0","sandbox":"/proc/1/ns/net"}],"ips":[{"version":"4","interface":0,"address":"10.0.0.2/24"}]}"#,
            ),
            (
                V0_3_1,
                r#"{"cniVersion":"0.3.1","ips":[{"version":"6","address":"2001:db8::2/64","gateway":"2001:db8::1"}],"routes":[{"dst":"::/0"}]}"#,
            ),
            (
                V0_4_0,
                r#"{"cniVersion":"0.4.0","interfaces":[{"name":"eth0","mac":"02:00:00:00:00:01"}],"ips":[{"version":"4","interface":0,"address":"10.0.0.2/24","gateway":"10.0.0.1"}],"dns":{"domain":"x"}}"#,
            ),
            (
                V1_0_0,
                r#"{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","mtu":9000}],"ips":[{"interface":0,"address":"10.0.0.2/24"}],"routes":[{"dst":"10.0.0.0/8","table":5}]}"#,
            ),
            (
                V1_1_0,
                r#"{"cniVersion":"1.1.0","interfaces":[{"name":"net1","pciID":"0000:01:00.1"}],"ips":[{"interface":0,"address":"10.0.0.2/24"}],"routes":[{"dst":"0.0.0.0/0","gw":"10.0.0.1","scope":253}]}"#,
            ),
        ];
        for (v, text) in fixtures {
            let r = CniResult::parse(text.as_bytes(), V0_1_0).unwrap();
            assert_eq!(r.cni_version, v);
            assert_eq!(r.to_json(v).unwrap(), text, "{v}");
        }
    }

    #[test]
    fn legacy_input_becomes_rich_cni_36() {
        let text = br#"{"cniVersion":"0.2.0","ip4":{"ip":"10.0.0.2/24","gateway":"10.0.0.1","routes":[{"dst":"0.0.0.0/0"}]},"ip6":{"ip":"2001:db8::2/64","routes":[{"dst":"::/0","gw":"2001:db8::1"}]}}"#;
        let r = CniResult::parse(text, V1_0_0).unwrap();
        let out = r.to_value(V1_0_0).unwrap();
        assert_eq!(
            out,
            json!({
                "cniVersion": "1.0.0",
                "ips": [
                    {"address": "10.0.0.2/24", "gateway": "10.0.0.1"},
                    {"address": "2001:db8::2/64"}
                ],
                "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0", "gw": "2001:db8::1"}]
            })
        );
        assert!(out.get("interfaces").is_none());
    }

    #[test]
    fn missing_or_empty_version_uses_fallback_cni_35() {
        let r = CniResult::parse(br#"{"ips":[{"address":"10.0.0.2/24"}]}"#, V0_4_0).unwrap();
        assert_eq!(r.cni_version, V0_4_0);
        assert_eq!(r.ips[0].address, net("10.0.0.2/24"));
        let r =
            CniResult::parse(br#"{"cniVersion":"","ip4":{"ip":"10.0.0.2/24"}}"#, V0_2_0).unwrap();
        assert_eq!(r.cni_version, V0_2_0);
        assert_eq!(r.ips.len(), 1);
        // The fallback decides the shape: a legacy fallback reads ip4, not ips.
        let r = CniResult::parse(br#"{"ips":[{"address":"10.0.0.2/24"}]}"#, V0_1_0).unwrap();
        assert!(r.ips.is_empty());
        assert!(
            r.extra.is_empty(),
            "ips is a known key of another shape, not extra"
        );
    }

    #[test]
    fn minus_one_and_missing_interface_index_cni_37() {
        let r = CniResult::parse(
            br#"{"cniVersion":"0.4.0","interfaces":[{"name":"eth0","sandbox":"/ns"}],"ips":[{"version":"4","interface":-1,"address":"10.0.0.2/24"},{"version":"4","address":"10.0.0.3/24"},{"version":"4","interface":0,"address":"10.0.0.4/24"}]}"#,
            V1_0_0,
        )
        .unwrap();
        assert_eq!(r.ips[0].interface, Some(-1));
        assert_eq!(r.ips[0].interface_index(), None);
        assert_eq!(r.ips[1].interface, None);
        assert_eq!(r.ips[2].interface_index(), Some(0));
        let on_eth0: Vec<_> = r.ips_for_interface(0).map(|ip| ip.address).collect();
        assert_eq!(on_eth0, [net("10.0.0.4/24")]);
        let out = r.to_value(V1_0_0).unwrap();
        assert_eq!(out["ips"][0]["interface"], -1);
        assert!(out["ips"][1].get("interface").is_none());
    }

    #[test]
    fn unknown_keys_are_kept() {
        let text = br#"{"cniVersion":"0.4.0","vendor":{"a":1},"interfaces":[{"name":"eth0","x-if":true}],"ips":[{"version":"4","address":"10.0.0.2/24","x-ip":"y"}],"routes":[{"dst":"0.0.0.0/0","x-rt":3}],"dns":{"weird":1}}"#;
        let r = CniResult::parse(text, V1_0_0).unwrap();
        assert_eq!(r.extra["vendor"], json!({"a": 1}));
        assert_eq!(r.interfaces[0].extra["x-if"], true);
        assert_eq!(r.ips[0].extra["x-ip"], "y");
        assert_eq!(r.routes[0].extra["x-rt"], 3);
        let out = r.to_json(V1_1_0).unwrap();
        assert_eq!(
            out,
            r#"{"cniVersion":"1.1.0","interfaces":[{"name":"eth0","x-if":true}],"ips":[{"address":"10.0.0.2/24","x-ip":"y"}],"routes":[{"dst":"0.0.0.0/0","x-rt":3}],"vendor":{"a":1}}"#
        );
        // In the legacy shape the ip and route extras follow their objects.
        let legacy = r.to_value(V0_2_0).unwrap();
        assert_eq!(legacy["ip4"]["x-ip"], "y");
        assert_eq!(legacy["ip4"]["routes"][0]["x-rt"], 3);
        assert_eq!(legacy["vendor"], json!({"a": 1}));
    }

    #[test]
    fn version_key_of_ips_is_not_kept_as_extra() {
        let r = CniResult::parse(
            br#"{"cniVersion":"0.3.1","ips":[{"version":"4","address":"10.0.0.2/24"}]}"#,
            V1_0_0,
        )
        .unwrap();
        assert!(r.ips[0].extra.is_empty());
        assert!(
            r.to_value(V1_0_0).unwrap()["ips"][0]
                .get("version")
                .is_none()
        );
    }

    #[test]
    fn strict_field_errors_name_field_and_value() {
        let cases: [(&[u8], &str); 8] = [
            (
                br#"{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.300/24"}]}"#,
                r#"result field ips[0].address has invalid value "10.0.0.300/24""#,
            ),
            (
                br#"{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.3"}]}"#,
                r#"result field ips[0].address has invalid value "10.0.0.3""#,
            ),
            (
                br#"{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.3/24","gateway":"nope"}]}"#,
                r#"result field ips[0].gateway has invalid value "nope""#,
            ),
            (
                br#"{"cniVersion":"1.0.0","routes":[{"dst":"0.0.0.0/0","gw":"1.2.3"}]}"#,
                r#"result field routes[0].gw has invalid value "1.2.3""#,
            ),
            (
                br#"{"cniVersion":"0.2.0","ip4":{"ip":"bad"}}"#,
                r#"result field ip4.ip has invalid value "bad""#,
            ),
            (
                br#"{"cniVersion":"1.0.0","ips":[{"gateway":"10.0.0.1"}]}"#,
                "result field ips[0].address is missing",
            ),
            (
                br#"{"cniVersion":"1.1.0","routes":[{"dst":"::/0","scope":300}]}"#,
                "result field routes[0].scope has invalid value 300",
            ),
            (
                br#"{"cniVersion":"9.9.9"}"#,
                r#"unsupported CNI result version "9.9.9""#,
            ),
        ];
        for (text, want) in cases {
            let err = CniResult::parse(text, V1_0_0).unwrap_err();
            assert!(err.to_string().starts_with(want), "{err} vs {want}");
        }
        assert!(matches!(
            CniResult::parse(b"[]", V1_0_0),
            Err(ResultError::NotAnObject)
        ));
        assert!(matches!(
            CniResult::parse(b"{", V1_0_0),
            Err(ResultError::Json(_))
        ));
        assert!(matches!(
            CniResult::parse(br#"{"cniVersion":1}"#, V1_0_0),
            Err(ResultError::InvalidField { .. })
        ));
        assert!(matches!(
            CniResult::parse(br#"{"cniVersion":"1.0.0","interfaces":{}}"#, V1_0_0),
            Err(ResultError::InvalidField { .. })
        ));
    }

    #[test]
    fn empty_strings_and_zeros_are_omitted_like_go() {
        let r = CniResult::parse(
            br#"{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","mac":"","sandbox":"","mtu":0}],"ips":[{"address":"10.0.0.2/24","gateway":""}],"routes":[{"dst":"0.0.0.0/0","gw":null,"priority":0,"table":0}],"dns":{}}"#,
            V1_0_0,
        )
        .unwrap();
        assert_eq!(r.interfaces[0].mac, None);
        assert_eq!(r.interfaces[0].sandbox, None);
        assert_eq!(r.ips[0].gateway, None);
        assert_eq!(
            r.to_json(V1_0_0).unwrap(),
            r#"{"cniVersion":"1.0.0","interfaces":[{"name":"eth0"}],"ips":[{"address":"10.0.0.2/24"}],"routes":[{"dst":"0.0.0.0/0","table":0}]}"#
        );
    }

    #[test]
    fn helpers() {
        let r = rich();
        assert_eq!(r.first_sandbox_interface(), Some(1));
        assert_eq!(
            r.default_gateways(),
            [addr("10.1.0.1"), addr("fd00::1")],
            "route gateway first, the duplicate ip gateway dropped"
        );
        assert_eq!(empty_result(V1_0_0).first_sandbox_interface(), None);
        assert!(empty_result(V1_0_0).default_gateways().is_empty());
        assert!(Route::new(net("::/0")).is_default());
        assert!(Route::new(net("0.0.0.0/0")).is_default());
        assert!(!Route::new(net("0.0.0.0/1")).is_default());
    }

    #[test]
    fn convert_helper_uses_fallback() {
        let out = convert(&json!({"ip4": {"ip": "10.0.0.2/24"}}), V0_2_0, V0_4_0).unwrap();
        assert_eq!(
            out,
            json!({"cniVersion": "0.4.0", "ips": [{"version": "4", "address": "10.0.0.2/24"}]})
        );
    }
}
