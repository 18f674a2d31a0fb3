//! Building replies: CNI errors, the VERSION reply, and default ADD results in each spec version's shape.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde_json::{Map, Value, json};

/// Every CNI version the recorder claims to support.
pub const SUPPORTED_VERSIONS: [&str; 7] = [
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];

/// The version reported by VERSION when stdin names none.
pub const LATEST_VERSION: &str = "1.1.0";

/// A CNI error: code, message, details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    /// CNI error code (B.7).
    pub code: u32,
    /// Message.
    pub msg: String,
    /// Details; left out of the JSON when empty.
    pub details: String,
}

impl CniError {
    /// An error without details.
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    /// The error JSON `{"cniVersion","code","msg","details"}`.
    pub fn to_json(&self, cni_version: &str) -> Value {
        let mut map = Map::new();
        map.insert("cniVersion".to_owned(), json!(cni_version));
        map.insert("code".to_owned(), json!(self.code));
        map.insert("msg".to_owned(), json!(self.msg));
        if !self.details.is_empty() {
            map.insert("details".to_owned(), json!(self.details));
        }
        Value::Object(map)
    }
}

/// The VERSION reply, echoing the requested version.
pub fn version_reply(requested: Option<&str>) -> Value {
    json!({
        "cniVersion": requested.unwrap_or(LATEST_VERSION),
        "supportedVersions": SUPPORTED_VERSIONS,
    })
}

/// Sets `cniVersion` on a result object when it is missing (non-objects pass unchanged).
pub fn fill_version(mut result: Value, version: &str) -> Value {
    if let Value::Object(map) = &mut result {
        map.entry("cniVersion").or_insert_with(|| json!(version));
    }
    result
}

/// Sets `cniVersion` on a result object, replacing any present.
pub fn force_version(mut result: Value, version: &str) -> Value {
    if let Value::Object(map) = &mut result {
        map.insert("cniVersion".to_owned(), json!(version));
    }
    result
}

/// The three result layouts of the CNI spec history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// 0.1.0 and 0.2.0: `ip4` / `ip6` objects.
    Legacy,
    /// 0.3.0, 0.3.1, 0.4.0: `interfaces`, `ips` with `version`, `routes`.
    Versioned,
    /// 1.0.0 and 1.1.0: as `Versioned` without `ips[].version`.
    Current,
}

impl Shape {
    /// The shape of results in `version`, or `None` if unsupported.
    pub fn of(version: &str) -> Option<Self> {
        match version {
            "0.1.0" | "0.2.0" => Some(Shape::Legacy),
            "0.3.0" | "0.3.1" | "0.4.0" => Some(Shape::Versioned),
            "1.0.0" | "1.1.0" => Some(Shape::Current),
            _ => None,
        }
    }
}

/// The error for a config version the recorder does not know.
pub fn unsupported_version(version: &str) -> CniError {
    CniError::new(
        1,
        format!(
            "incompatible CNI versions: config is {version:?}, plugin supports {SUPPORTED_VERSIONS:?}"
        ),
    )
}

/// The attachment an ADD result describes.
#[derive(Debug, Clone, Copy)]
pub struct Attachment<'a> {
    /// `CNI_CONTAINERID`.
    pub container_id: &'a str,
    /// `CNI_IFNAME`.
    pub ifname: &'a str,
    /// `CNI_NETNS` (no `sandbox` in the result when empty).
    pub netns: &'a str,
}

/// An address with its prefix and the gateway the result reports.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Address {
    ip: IpAddr,
    prefix: u8,
    gateway: IpAddr,
}

impl Address {
    fn cidr(&self) -> String {
        format!("{}/{}", self.ip, self.prefix)
    }

    fn is_v4(&self) -> bool {
        self.ip.is_ipv4()
    }

    fn default_dst(&self) -> &'static str {
        if self.is_v4() { "0.0.0.0/0" } else { "::/0" }
    }
}

/// 64-bit FNV-1a: stable across runs and Rust versions, unlike `DefaultHasher`.
fn fnv1a(data: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in data {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

fn attachment_hash(att: &Attachment<'_>) -> [u8; 8] {
    let key = format!("{}/{}", att.container_id, att.ifname);
    fnv1a(key.as_bytes()).to_be_bytes()
}

/// A locally administered unicast MAC derived from container ID and ifname.
pub fn derive_mac(att: &Attachment<'_>) -> String {
    let h = attachment_hash(att);
    let first = (h[0] & 0xfe) | 0x02;
    format!(
        "{first:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        h[1], h[2], h[3], h[4], h[5]
    )
}

/// `10.77.X.Y/24` derived from container ID and ifname, with gateway `10.77.X.1`.
fn derive_address(att: &Attachment<'_>) -> Address {
    let h = attachment_hash(att);
    let third = h[6];
    let fourth = 2 + h[7] % 253; // 2..=254
    Address {
        ip: IpAddr::V4(Ipv4Addr::new(10, 77, third, fourth)),
        prefix: 24,
        gateway: IpAddr::V4(Ipv4Addr::new(10, 77, third, 1)),
    }
}

/// Parses the config's `ip` (`a.b.c.d[/n]` or IPv6 `[/n]`); the gateway is the
/// address with its last octet (IPv4) or last group (IPv6) set to 1.
fn parse_address(text: &str) -> Result<Address, CniError> {
    let invalid = || CniError::new(7, format!("invalid config key \"ip\": {text:?}"));
    let (ip_text, prefix_text) = match text.split_once('/') {
        Some((ip, prefix)) => (ip, Some(prefix)),
        None => (text, None),
    };
    let ip: IpAddr = ip_text.trim().parse().map_err(|_| invalid())?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix_text {
        Some(p) => p.trim().parse::<u8>().map_err(|_| invalid())?,
        None if ip.is_ipv4() => 24,
        None => 64,
    };
    if prefix > max {
        return Err(invalid());
    }
    let gateway = match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            IpAddr::V4(Ipv4Addr::new(a, b, c, 1))
        }
        IpAddr::V6(v6) => {
            let mut seg = v6.segments();
            seg[7] = 1;
            IpAddr::V6(Ipv6Addr::from(seg))
        }
    };
    Ok(Address {
        ip,
        prefix,
        gateway,
    })
}

/// The default ADD result for `version`: a plausible result for the attachment,
/// using `ip` from the config when given.
pub fn default_add_result(
    version: &str,
    att: &Attachment<'_>,
    ip: Option<&str>,
) -> Result<Value, CniError> {
    let shape = Shape::of(version).ok_or_else(|| unsupported_version(version))?;
    let addr = match ip {
        Some(text) => parse_address(text)?,
        None => derive_address(att),
    };
    let route = json!({"dst": addr.default_dst(), "gw": addr.gateway.to_string()});
    if shape == Shape::Legacy {
        let family = if addr.is_v4() { "ip4" } else { "ip6" };
        let mut result = Map::new();
        result.insert("cniVersion".to_owned(), json!(version));
        result.insert(
            family.to_owned(),
            json!({
                "ip": addr.cidr(),
                "gateway": addr.gateway.to_string(),
                "routes": [route],
            }),
        );
        return Ok(Value::Object(result));
    }
    let mut iface = Map::new();
    iface.insert("name".to_owned(), json!(att.ifname));
    iface.insert("mac".to_owned(), json!(derive_mac(att)));
    if !att.netns.is_empty() {
        iface.insert("sandbox".to_owned(), json!(att.netns));
    }
    let mut ip_entry = Map::new();
    if shape == Shape::Versioned {
        ip_entry.insert(
            "version".to_owned(),
            json!(if addr.is_v4() { "4" } else { "6" }),
        );
    }
    ip_entry.insert("address".to_owned(), json!(addr.cidr()));
    ip_entry.insert("gateway".to_owned(), json!(addr.gateway.to_string()));
    ip_entry.insert("interface".to_owned(), json!(0));
    Ok(json!({
        "cniVersion": version,
        "interfaces": [Value::Object(iface)],
        "ips": [Value::Object(ip_entry)],
        "routes": [route],
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ATT: Attachment<'static> = Attachment {
        container_id: "abc123",
        ifname: "net1",
        netns: "/var/run/netns/x",
    };

    fn is_local_unicast(mac: &str) -> bool {
        let first = u8::from_str_radix(&mac[..2], 16).expect("hex");
        first & 0x02 == 0x02 && first & 0x01 == 0
    }

    #[test]
    fn mac_is_deterministic_local_unicast() {
        let mac = derive_mac(&ATT);
        assert_eq!(mac, derive_mac(&ATT));
        assert_eq!(mac.len(), 17);
        assert!(is_local_unicast(&mac), "{mac}");
        let other = Attachment {
            ifname: "net2",
            ..ATT
        };
        assert_ne!(mac, derive_mac(&other));
        assert!(is_local_unicast(&derive_mac(&other)));
    }

    #[test]
    fn derived_address_range() {
        for i in 0..200 {
            let id = format!("c{i}");
            let att = Attachment {
                container_id: &id,
                ..ATT
            };
            let a = derive_address(&att);
            let IpAddr::V4(v4) = a.ip else {
                panic!("not v4")
            };
            let o = v4.octets();
            assert_eq!((o[0], o[1]), (10, 77));
            assert!((2..=254).contains(&o[3]), "{v4}");
            assert_eq!(a.gateway, IpAddr::V4(Ipv4Addr::new(10, 77, o[2], 1)));
            assert!(is_local_unicast(&derive_mac(&att)));
        }
    }

    #[test]
    fn shape_1x() {
        for v in ["1.0.0", "1.1.0"] {
            let r = default_add_result(v, &ATT, Some("192.168.5.7/24")).expect("ok");
            assert_eq!(
                r,
                json!({
                    "cniVersion": v,
                    "interfaces": [{"name": "net1", "mac": derive_mac(&ATT), "sandbox": "/var/run/netns/x"}],
                    "ips": [{"address": "192.168.5.7/24", "gateway": "192.168.5.1", "interface": 0}],
                    "routes": [{"dst": "0.0.0.0/0", "gw": "192.168.5.1"}],
                })
            );
        }
    }

    #[test]
    fn shape_03x_04() {
        for v in ["0.3.0", "0.3.1", "0.4.0"] {
            let r = default_add_result(v, &ATT, Some("192.168.5.7/24")).expect("ok");
            assert_eq!(r["cniVersion"], json!(v));
            assert_eq!(
                r["ips"],
                json!([{"version": "4", "address": "192.168.5.7/24", "gateway": "192.168.5.1", "interface": 0}])
            );
            assert_eq!(r["interfaces"][0]["name"], json!("net1"));
            assert_eq!(r["interfaces"][0]["sandbox"], json!("/var/run/netns/x"));
            assert_eq!(
                r["routes"],
                json!([{"dst": "0.0.0.0/0", "gw": "192.168.5.1"}])
            );
            assert!(r.get("dns").is_none());
            assert!(r.get("ip4").is_none());
        }
    }

    #[test]
    fn shape_legacy() {
        for v in ["0.1.0", "0.2.0"] {
            let r = default_add_result(v, &ATT, Some("192.168.5.7/24")).expect("ok");
            assert_eq!(
                r,
                json!({
                    "cniVersion": v,
                    "ip4": {
                        "ip": "192.168.5.7/24",
                        "gateway": "192.168.5.1",
                        "routes": [{"dst": "0.0.0.0/0", "gw": "192.168.5.1"}]
                    }
                })
            );
        }
    }

    #[test]
    fn default_address_when_no_ip() {
        let r = default_add_result("1.0.0", &ATT, None).expect("ok");
        let address = r["ips"][0]["address"].as_str().expect("string");
        assert!(
            address.starts_with("10.77.") && address.ends_with("/24"),
            "{address}"
        );
        let gw = r["ips"][0]["gateway"].as_str().expect("string");
        assert!(gw.starts_with("10.77.") && gw.ends_with(".1"), "{gw}");
        assert_eq!(r, default_add_result("1.0.0", &ATT, None).expect("ok"));
    }

    #[test]
    fn no_sandbox_without_netns() {
        let att = Attachment { netns: "", ..ATT };
        let r = default_add_result("1.1.0", &att, None).expect("ok");
        assert!(r["interfaces"][0].get("sandbox").is_none());
    }

    #[test]
    fn ipv6_config_address() {
        let r = default_add_result("0.4.0", &ATT, Some("fd00::5")).expect("ok");
        assert_eq!(
            r["ips"],
            json!([{"version": "6", "address": "fd00::5/64", "gateway": "fd00::1", "interface": 0}])
        );
        assert_eq!(r["routes"][0]["dst"], json!("::/0"));
        let legacy = default_add_result("0.2.0", &ATT, Some("fd00::5/120")).expect("ok");
        assert_eq!(legacy["ip6"]["ip"], json!("fd00::5/120"));
        assert!(legacy.get("ip4").is_none());
    }

    #[test]
    fn bad_inputs() {
        let e = default_add_result("0.5.0", &ATT, None).unwrap_err();
        assert_eq!(e.code, 1);
        assert!(e.msg.contains("0.5.0"));
        for bad in ["nope", "10.0.0.1/33", "10.0.0.1/x"] {
            let e = default_add_result("1.0.0", &ATT, Some(bad)).unwrap_err();
            assert_eq!(e.code, 7, "{bad}");
        }
    }

    #[test]
    fn error_json() {
        let mut e = CniError::new(7, "bad");
        assert_eq!(
            e.to_json("1.0.0"),
            json!({"cniVersion": "1.0.0", "code": 7, "msg": "bad"})
        );
        e.details = "why".into();
        assert_eq!(e.to_json("0.4.0")["details"], json!("why"));
    }

    #[test]
    fn version_reply_echoes() {
        assert_eq!(version_reply(Some("0.4.0"))["cniVersion"], json!("0.4.0"));
        let r = version_reply(None);
        assert_eq!(r["cniVersion"], json!("1.1.0"));
        assert_eq!(r["supportedVersions"].as_array().map(Vec::len), Some(7));
    }

    #[test]
    fn version_filling() {
        assert_eq!(
            fill_version(json!({"a": 1}), "1.0.0"),
            json!({"a": 1, "cniVersion": "1.0.0"})
        );
        assert_eq!(
            fill_version(json!({"cniVersion": "0.3.1"}), "1.0.0"),
            json!({"cniVersion": "0.3.1"})
        );
        assert_eq!(
            force_version(json!({"cniVersion": "0.3.1"}), "1.0.0"),
            json!({"cniVersion": "1.0.0"})
        );
        assert_eq!(fill_version(json!([1]), "1.0.0"), json!([1]));
    }
}
