//! The `k8s.v1.cni.cncf.io/network-status` annotation (NPWG-40 to NPWG-54), in the shape the NAD
//! client writes and every consumer reads (docs/multus-compat.md, "Network status").
//! Pure: no I/O.
//!
//! ```text
//! CniResult ──statuses_for──▶ Vec<NetworkStatus> (per attachment) ──render──▶ annotation value
//! ```
//!
//! An entry serialises as `name`, `interface`, `ips`, `mac`, `mtu`, `default`, `dns`, `device-info`,
//! `gateway`, in that order; empty values are left out except `dns`, which is always written (`{}`
//! when empty), and `default`, which appears only when true (NPWG-50 DECIDE: the NAD client's
//! `omitempty`). `ips` are bare addresses (NPWG-48 DECIDE), the gateway key is `gateway` (NPWG-52
//! DECIDE).
//!
//! How [`statuses_for`] reads a result (the NAD client's `CreateNetworkStatuses`; docs/multus-compat.md,
//! "Network status"):
//! * **One interface:** one entry with every IP of the result; `interface`, `mac` and `mtu` come from
//!   the interface only when it has a `sandbox` (NPWG-47, NPWG-49); `default` is the network's flag.
//! * **Several interfaces:** one entry per sandbox interface, in order. An IP goes to the entry of
//!   the interface its `interface` index names; an IP with no index goes to the last entry; an IP
//!   whose index is negative or names a host-side or missing interface is dropped (as the NAD
//!   client). On the cluster network, `default` goes to the first sandbox interface named by an IP
//!   that has a gateway, else to the first sandbox interface. (The NAD client only looks at the first
//!   IP with a gateway; when that names a host-side interface it marks no entry at all. plexus falls
//!   back to the first sandbox interface, so NPWG-44 always holds.)
//! * **`gateway`:** the gateways of the result's default routes (`dst` with prefix length 0), in
//!   route order, on every entry of the result: routes in a CNI result are not tied to an interface,
//!   and the NAD client copies the whole list to each entry. Default routes without `gw` are skipped
//!   (Go would write `"<nil>"`). Gateways of `ips[]` are not used.
//! * **No entry from the result** (zero interfaces, e.g. a 0.1.0/0.2.0 result or a `tuning`-like
//!   plugin, or only host-side interfaces): the NAD client writes nothing. plexus does the same for
//!   secondary networks, but for the cluster network writes a minimal entry, because NPWG-44 says it
//!   MUST have one and NPWG-43 says a missing result SHOULD give `{name, default}`. That entry also
//!   carries what the result says without naming an interface: every IP, the default-route gateways,
//!   `dns` and the device info (NPWG-43 "use as much of the result as it can", NPWG-48 for results
//!   before 0.3.0). This is a deliberate divergence from the NAD client.
//!
//! [`render`] writes the annotation value as the NAD client's `SetNetworkStatus` does: each entry
//! as JSON indented by 4 spaces, entries joined by a bare `,`, inside `[` and `]`, with Go's string
//! escaping (`<`, `>`, `&`, U+2028, U+2029, backspace and form feed as `\u00XX`), so the bytes match
//! Go's `json.MarshalIndent`.

use std::{io, net::IpAddr};

use plexus_cni::CniResult;
use serde::{Deserialize, Serialize};
use serde_json::{
    Value,
    ser::{CharEscape, Formatter, PrettyFormatter},
};

/// The `dns` map of a status entry (NPWG-51); always written, `{}` when empty.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StatusDns {
    /// Name server addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// Local domain.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    /// Search domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// Resolver options (NAD client extension).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// One entry of `k8s.v1.cni.cncf.io/network-status` (NPWG-41 to NPWG-54).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct NetworkStatus {
    /// `<ns>/<nad>` for NAD networks, the CNI name otherwise (NPWG-46).
    pub name: String,
    /// The pod-side interface name (NPWG-47).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub interface: String,
    /// Bare addresses on the interface (NPWG-48).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
    /// The interface's hardware address (NPWG-49).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// The interface MTU (NAD client extension, NPWG-54).
    #[serde(default, skip_serializing_if = "mtu_unset")]
    pub mtu: Option<u32>,
    /// True on the cluster network's entry only (NPWG-50).
    #[serde(default, skip_serializing_if = "is_false")]
    pub default: bool,
    /// DNS settings of the result (NPWG-51).
    #[serde(default)]
    pub dns: StatusDns,
    /// The Device Information Spec map (NPWG-53, NPWG-73).
    #[serde(
        default,
        rename = "device-info",
        skip_serializing_if = "Option::is_none"
    )]
    pub device_info: Option<Value>,
    /// Gateways of the result's default routes (NPWG-52 as the NAD client writes it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateway: Vec<String>,
}

fn mtu_unset(mtu: &Option<u32>) -> bool {
    mtu.is_none_or(|m| m == 0)
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// An address as Go's `net.IP.String()` writes it: IPv4-mapped IPv6 addresses in dotted form.
fn go_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => v6.to_string(),
        },
        IpAddr::V4(v4) => v4.to_string(),
    }
}

fn dns_of(result: &CniResult) -> StatusDns {
    StatusDns {
        nameservers: result.dns.nameservers.clone(),
        domain: result.dns.domain.clone().unwrap_or_default(),
        search: result.dns.search.clone(),
        options: result.dns.options.clone(),
    }
}

fn default_route_gateways(result: &CniResult) -> Vec<String> {
    result
        .routes
        .iter()
        .filter(|r| r.is_default())
        .filter_map(|r| r.gw)
        .map(go_ip)
        .collect()
}

fn has_sandbox(iface: &plexus_cni::Interface) -> bool {
    iface.sandbox.as_deref().is_some_and(|s| !s.is_empty())
}

/// The status entries of one attachment's ADD result (NPWG-42, NPWG-43); see the module doc for
/// how each result shape maps. `is_default` marks the cluster network (NPWG-44, NPWG-50).
pub fn statuses_for(
    result: &CniResult,
    status_name: &str,
    is_default: bool,
    device_info: Option<Value>,
) -> Vec<NetworkStatus> {
    let base = NetworkStatus {
        name: status_name.to_string(),
        dns: dns_of(result),
        device_info,
        gateway: default_route_gateways(result),
        ..NetworkStatus::default()
    };
    let all_ips = || {
        result
            .ips
            .iter()
            .map(|ip| go_ip(ip.address.addr()))
            .collect()
    };

    if let [iface] = result.interfaces.as_slice() {
        let mut status = NetworkStatus {
            ips: all_ips(),
            default: is_default,
            ..base
        };
        if has_sandbox(iface) {
            status.interface = iface.name.clone();
            status.mac = iface.mac.clone().unwrap_or_default();
            status.mtu = iface.mtu;
        }
        return vec![status];
    }

    // Several interfaces (or none): one entry per sandbox interface.
    let sandboxes: Vec<usize> = (0..result.interfaces.len())
        .filter(|&i| has_sandbox(&result.interfaces[i]))
        .collect();
    if sandboxes.is_empty() {
        if !is_default {
            return Vec::new();
        }
        // NPWG-43/NPWG-44: the cluster network always has an entry.
        return vec![NetworkStatus {
            ips: all_ips(),
            default: true,
            ..base
        }];
    }
    let default_iface = is_default.then(|| {
        result
            .ips
            .iter()
            .filter(|ip| ip.gateway.is_some())
            .filter_map(|ip| ip.interface_index())
            .find(|i| sandboxes.contains(i))
            .unwrap_or(sandboxes[0])
    });
    let mut out: Vec<NetworkStatus> = sandboxes
        .iter()
        .map(|&i| {
            let iface = &result.interfaces[i];
            NetworkStatus {
                interface: iface.name.clone(),
                mac: iface.mac.clone().unwrap_or_default(),
                mtu: iface.mtu,
                default: default_iface == Some(i),
                ..base.clone()
            }
        })
        .collect();
    for ip in &result.ips {
        let entry = match ip.interface {
            None => out.last_mut(),
            Some(_) => ip
                .interface_index()
                .and_then(|i| sandboxes.iter().position(|&s| s == i))
                .map(|pos| &mut out[pos]),
        };
        if let Some(entry) = entry {
            entry.ips.push(go_ip(ip.address.addr()));
        }
    }
    out
}

/// Go's `encoding/json` escaping on top of 4-space pretty printing.
struct GoIndent<'a>(PrettyFormatter<'a>);

impl Formatter for GoIndent<'_> {
    fn begin_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_array(w)
    }
    fn end_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array(w)
    }
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.0.begin_array_value(w, first)
    }
    fn end_array_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array_value(w)
    }
    fn begin_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_object(w)
    }
    fn end_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object(w)
    }
    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.0.begin_object_key(w, first)
    }
    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_object_value(w)
    }
    fn end_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object_value(w)
    }

    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            let escaped = match c {
                '<' => "\\u003c",
                '>' => "\\u003e",
                '&' => "\\u0026",
                '\u{2028}' => "\\u2028",
                '\u{2029}' => "\\u2029",
                _ => continue,
            };
            w.write_all(&fragment.as_bytes()[start..i])?;
            w.write_all(escaped.as_bytes())?;
            start = i + c.len_utf8();
        }
        w.write_all(&fragment.as_bytes()[start..])
    }

    fn write_char_escape<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        escape: CharEscape,
    ) -> io::Result<()> {
        let s: &[u8] = match escape {
            CharEscape::Quote => b"\\\"",
            CharEscape::ReverseSolidus => b"\\\\",
            CharEscape::Solidus => b"\\/",
            CharEscape::LineFeed => b"\\n",
            CharEscape::CarriageReturn => b"\\r",
            CharEscape::Tab => b"\\t",
            CharEscape::Backspace => b"\\u0008",
            CharEscape::FormFeed => b"\\u000c",
            CharEscape::AsciiControl(byte) => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let buf = [
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(byte >> 4)],
                    HEX[usize::from(byte & 0xf)],
                ];
                return w.write_all(&buf);
            }
        };
        w.write_all(s)
    }
}

fn render_entry(status: &NetworkStatus) -> String {
    let mut buf = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(
        &mut buf,
        GoIndent(PrettyFormatter::with_indent(b"    ")),
    );
    // Serialising this struct cannot fail: every map key is a string and writing to a Vec does not
    // fail. An error would be a bug, so it is surfaced in debug builds only.
    let written = status.serialize(&mut ser);
    debug_assert!(written.is_ok(), "{written:?}");
    // serde_json writes UTF-8 only, so the fallback is never taken.
    String::from_utf8(buf).unwrap_or_default()
}

/// The annotation value for a pod's attachments, in order: each attachment's entries
/// ([`statuses_for`]), with its device information from `device_info` (NPWG-73), rendered.
pub fn render_attached(
    attached: &[(crate::pure::plan::Attachment, CniResult)],
    device_info: impl Fn(&crate::pure::plan::Attachment) -> Option<Value>,
) -> String {
    let entries: Vec<NetworkStatus> = attached
        .iter()
        .flat_map(|(a, result)| statuses_for(result, &a.status_name, a.master, device_info(a)))
        .collect();
    render(&entries)
}

/// The annotation value for `statuses` (NPWG-41): `[` + entries indented by 4 spaces, joined by `,`
/// + `]`, byte for byte what the NAD client's `SetNetworkStatus` writes (`[]` for none).
pub fn render(statuses: &[NetworkStatus]) -> String {
    let entries: Vec<String> = statuses.iter().map(render_entry).collect();
    format!("[{}]", entries.join(","))
}

/// The merge patch of `pods/status` that sets the network-status annotation to `rendered` and touches
/// nothing else. With the pod's `uid`, the write is a precondition: a recreated pod of the same name is
/// never written to.
pub fn patch(rendered: String, uid: Option<String>) -> Value {
    let mut metadata = serde_json::json!({"annotations": {super::annotations::NETWORK_STATUS_ANNOTATION: rendered}});
    if let Some(uid) = uid {
        metadata["uid"] = Value::String(uid);
    }
    serde_json::json!({ "metadata": metadata })
}

/// Read an annotation value back (e.g. one written by Go Multus).
pub fn parse(value: &str) -> Result<Vec<NetworkStatus>, serde_json::Error> {
    serde_json::from_str(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use plexus_cni::{CniVersion, Interface, IpConfig, Route, result::empty_result};
    use serde_json::json;

    fn ip(addr: &str, iface: Option<i64>, gw: Option<&str>) -> IpConfig {
        IpConfig {
            interface: iface,
            gateway: gw.map(|g| g.parse().unwrap()),
            ..IpConfig::new(addr.parse().unwrap())
        }
    }

    fn iface(name: &str, sandbox: bool) -> Interface {
        Interface {
            mac: Some(format!("02:00:00:00:00:{:02x}", name.len())),
            sandbox: sandbox.then(|| "/var/run/netns/p".to_string()),
            ..Interface::new(name)
        }
    }

    fn route(dst: &str, gw: Option<&str>) -> Route {
        Route {
            gw: gw.map(|g| g.parse().unwrap()),
            ..Route::new(dst.parse().unwrap())
        }
    }

    fn result(interfaces: Vec<Interface>, ips: Vec<IpConfig>, routes: Vec<Route>) -> CniResult {
        CniResult {
            interfaces,
            ips,
            routes,
            ..empty_result(CniVersion::V1_0_0)
        }
    }

    fn to_json(s: &[NetworkStatus]) -> Value {
        serde_json::from_str(&render(s)).unwrap()
    }

    #[test]
    fn single_interface_gets_every_ip_npwg_47_npwg_48() {
        let mut eth0 = iface("eth0", true);
        eth0.mtu = Some(1450);
        let mut r = result(
            vec![eth0],
            vec![
                ip("10.1.1.11/24", Some(0), Some("10.1.1.1")),
                ip("fd00::5/64", None, None),
            ],
            vec![
                route("0.0.0.0/0", Some("10.1.1.1")),
                route("::/0", Some("fd00::1")),
                route("10.2.0.0/16", Some("10.1.1.254")),
                route("0.0.0.0/0", None),
            ],
        );
        r.dns.nameservers = vec!["10.96.0.10".into()];
        r.dns.search = vec!["svc.cluster.local".into()];
        let s = statuses_for(&r, "kube-system/calico", true, None);
        assert_eq!(
            to_json(&s),
            json!([{
                "name": "kube-system/calico", "interface": "eth0",
                "ips": ["10.1.1.11", "fd00::5"], "mac": "02:00:00:00:00:04", "mtu": 1450,
                "default": true,
                "dns": {"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]},
                "gateway": ["10.1.1.1", "fd00::1"]
            }])
        );
        // Not the cluster network: no "default" key at all (NPWG-50 DECIDE).
        let s = statuses_for(&r, "ns/net", false, None);
        assert!(!s[0].default);
        assert!(to_json(&s)[0].get("default").is_none());
    }

    #[test]
    fn single_host_side_interface_leaves_interface_empty() {
        let r = result(
            vec![iface("veth123", false)],
            vec![ip("192.0.2.5/24", Some(0), None)],
            vec![],
        );
        let s = statuses_for(&r, "ns/net", false, None);
        assert_eq!(
            to_json(&s),
            json!([{"name": "ns/net", "ips": ["192.0.2.5"], "dns": {}}])
        );
    }

    #[test]
    fn several_interfaces_map_ips_by_index() {
        // bridge-style: host veth, bridge, then two container interfaces.
        let r = result(
            vec![
                iface("cni0", false),
                iface("net1", true),
                iface("veth1", false),
                iface("net2", true),
            ],
            vec![
                ip("192.0.2.10/24", Some(1), None),
                ip("192.0.2.1/24", Some(0), None), // host side: dropped
                ip("198.51.100.7/24", Some(3), None),
                ip("2001:db8::7/64", None, None), // no index: last entry
                ip("203.0.113.1/24", Some(-1), None), // negative: dropped
                ip("203.0.113.2/24", Some(9), None), // out of range: dropped
            ],
            vec![route("0.0.0.0/0", Some("192.0.2.1"))],
        );
        let s = statuses_for(&r, "ns/br", false, None);
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s[0].interface.as_str(), s[1].interface.as_str()),
            ("net1", "net2")
        );
        assert_eq!(s[0].ips, ["192.0.2.10"]);
        assert_eq!(s[1].ips, ["198.51.100.7", "2001:db8::7"]);
        assert!(s.iter().all(|e| !e.default));
        // Gateways of the result's default routes go to every entry, as the NAD client does.
        assert!(s.iter().all(|e| e.gateway == ["192.0.2.1"]));
    }

    #[test]
    fn default_flag_goes_to_the_gateway_interface_else_the_first_sandbox_npwg_44() {
        let ifaces = || {
            vec![
                iface("host0", false),
                iface("eth0", true),
                iface("eth1", true),
            ]
        };
        let r = result(
            ifaces(),
            vec![
                ip("192.0.2.10/24", Some(1), None),
                ip("198.51.100.7/24", Some(2), Some("198.51.100.1")),
            ],
            vec![],
        );
        let s = statuses_for(&r, "calico", true, None);
        assert_eq!(
            s.iter().map(|e| e.default).collect::<Vec<_>>(),
            [false, true]
        );
        // Only for the cluster network.
        let s = statuses_for(&r, "calico", false, None);
        assert!(s.iter().all(|e| !e.default));

        // No IP with a gateway: the first sandbox interface.
        let r = result(ifaces(), vec![ip("192.0.2.10/24", Some(2), None)], vec![]);
        let s = statuses_for(&r, "calico", true, None);
        assert_eq!(
            s.iter().map(|e| e.default).collect::<Vec<_>>(),
            [true, false]
        );

        // The first IP with a gateway names the host side: plexus still marks an entry.
        let r = result(
            ifaces(),
            vec![
                ip("192.0.2.1/24", Some(0), Some("192.0.2.254")),
                ip("192.0.2.10/24", Some(2), Some("192.0.2.1")),
            ],
            vec![],
        );
        let s = statuses_for(&r, "calico", true, None);
        assert_eq!(
            s.iter().map(|e| e.default).collect::<Vec<_>>(),
            [false, true]
        );
        let r = result(
            ifaces(),
            vec![ip("192.0.2.1/24", Some(0), Some("192.0.2.254"))],
            vec![],
        );
        let s = statuses_for(&r, "calico", true, None);
        assert_eq!(
            s.iter().map(|e| e.default).collect::<Vec<_>>(),
            [true, false]
        );
    }

    #[test]
    fn no_interfaces_give_no_entry_for_secondary_networks() {
        // tuning-like result, and a multi-interface result with only host-side interfaces.
        let r = result(vec![], vec![ip("192.0.2.5/24", None, None)], vec![]);
        assert!(statuses_for(&r, "ns/tuning", false, None).is_empty());
        let r = result(vec![iface("a", false), iface("b", false)], vec![], vec![]);
        assert!(statuses_for(&r, "ns/x", false, None).is_empty());
        assert!(statuses_for(&empty_result(CniVersion::V1_0_0), "ns/x", false, None).is_empty());
    }

    #[test]
    fn cluster_network_without_interfaces_gets_a_minimal_entry_npwg_43_npwg_44() {
        let s = statuses_for(&empty_result(CniVersion::V1_0_0), "cluster", true, None);
        assert_eq!(
            render(&s),
            "[{\n    \"name\": \"cluster\",\n    \"default\": true,\n    \"dns\": {}\n}]"
        );
    }

    #[test]
    fn converted_0_2_0_results_npwg_48() {
        let r = CniResult::parse(
            br#"{"cniVersion": "0.2.0",
                 "ip4": {"ip": "10.0.0.5/24", "gateway": "10.0.0.1", "routes": [{"dst": "0.0.0.0/0"}]},
                 "ip6": {"ip": "fd00::5/64", "routes": [{"dst": "::/0", "gw": "fd00::1"}]},
                 "dns": {"nameservers": ["10.0.0.2"], "domain": "example.test"}}"#,
            CniVersion::V0_2_0,
        )
        .unwrap();
        // A secondary network: no entry, as the NAD client.
        assert!(statuses_for(&r, "ns/old", false, None).is_empty());
        // The cluster network: a minimal entry with what the result says.
        assert_eq!(
            to_json(&statuses_for(&r, "old", true, None)),
            json!([{
                "name": "old", "ips": ["10.0.0.5", "fd00::5"], "default": true,
                "dns": {"nameservers": ["10.0.0.2"], "domain": "example.test"},
                "gateway": ["fd00::1"]
            }])
        );
    }

    #[test]
    fn dual_stack_and_ipv4_mapped_addresses() {
        let r = result(
            vec![iface("net1", true)],
            vec![
                ip("192.0.2.5/24", Some(0), Some("192.0.2.1")),
                ip("2001:db8::5/64", Some(0), Some("2001:db8::1")),
                ip("::ffff:198.51.100.5/128", Some(0), None),
            ],
            vec![
                route("0.0.0.0/0", Some("192.0.2.1")),
                route("::/0", Some("2001:db8::1")),
                route("::/0", Some("::ffff:192.0.2.9")),
            ],
        );
        let s = statuses_for(&r, "ns/ds", false, None);
        assert_eq!(s[0].ips, ["192.0.2.5", "2001:db8::5", "198.51.100.5"]);
        assert_eq!(s[0].gateway, ["192.0.2.1", "2001:db8::1", "192.0.2.9"]);
    }

    #[test]
    fn dns_is_always_present_and_device_info_is_kept() {
        let dev =
            json!({"type": "pci", "version": "1.1.0", "pci": {"pci-address": "0000:03:00.1"}});
        let r = result(vec![iface("net1", true)], vec![], vec![]);
        let v = to_json(&statuses_for(&r, "ns/sriov", false, Some(dev.clone())));
        assert_eq!(v[0]["dns"], json!({}));
        assert_eq!(v[0]["device-info"], dev);
        assert_eq!(
            v[0].as_object().unwrap().keys().collect::<Vec<_>>(),
            ["name", "interface", "mac", "dns", "device-info"]
        );
        let r = result(vec![iface("a", true), iface("b", true)], vec![], vec![]);
        let v = to_json(&statuses_for(&r, "ns/m", false, Some(dev.clone())));
        assert!(
            v.as_array()
                .unwrap()
                .iter()
                .all(|e| e["dns"] == json!({}) && e["device-info"] == dev)
        );
    }

    #[test]
    fn mtu_zero_and_empty_fields_are_left_out() {
        let s = NetworkStatus {
            name: "n".into(),
            mtu: Some(0),
            ..NetworkStatus::default()
        };
        assert_eq!(
            render(&[s]),
            "[{\n    \"name\": \"n\",\n    \"dns\": {}\n}]"
        );
        assert_eq!(render(&[]), "[]");
    }

    #[test]
    fn two_entries_render_exactly_like_the_nad_client() {
        let statuses = vec![
            NetworkStatus {
                name: "kube-system/calico".into(),
                interface: "eth0".into(),
                ips: vec!["10.1.1.11".into(), "fd00::5".into()],
                mac: "02:00:00:00:00:01".into(),
                mtu: Some(1450),
                default: true,
                dns: StatusDns {
                    nameservers: vec!["10.96.0.10".into()],
                    domain: "cluster.local".into(),
                    search: vec!["svc.cluster.local".into()],
                    options: vec!["ndots:5".into()],
                },
                device_info: None,
                gateway: vec!["10.1.1.1".into()],
            },
            NetworkStatus {
                name: "pods/sriov".into(),
                interface: "net1".into(),
                ips: vec!["192.0.2.10".into()],
                mac: "02:00:00:00:00:02".into(),
                device_info: Some(json!({
                    "type": "pci", "version": "1.1.0", "pci": {"pci-address": "0000:03:00.1"}
                })),
                ..NetworkStatus::default()
            },
        ];
        let want = include_str!("testdata/network-status-two-entries.json");
        assert_eq!(render(&statuses), want.trim_end_matches('\n'));
        assert_eq!(parse(&render(&statuses)).unwrap(), statuses);
    }

    #[test]
    fn strings_are_escaped_as_go_does() {
        let s = NetworkStatus {
            name: "a<b>&c\u{2028}\u{2029}\u{8}\u{c}\u{1}\n\"\\/é".into(),
            ..NetworkStatus::default()
        };
        let out = render(std::slice::from_ref(&s));
        assert_eq!(
            out,
            "[{\n    \"name\": \"a\\u003cb\\u003e\\u0026c\\u2028\\u2029\\u0008\\u000c\\u0001\\n\\\"\\\\/é\",\n    \"dns\": {}\n}]"
        );
        assert_eq!(parse(&out).unwrap(), vec![s]);
    }

    #[test]
    fn go_multus_annotations_read_back() {
        let v = r#"[{
    "name": "cbr0",
    "interface": "eth0",
    "ips": ["10.244.1.5"],
    "mac": "0a:58:0a:f4:01:05",
    "default": true,
    "dns": {},
    "gateway": ["10.244.1.1"]
},{
    "name": "default/macvlan",
    "interface": "net1",
    "ips": ["192.0.2.7"],
    "mac": "c2:b0:57:49:47:f1",
    "dns": {}
}]"#;
        let s = parse(v).unwrap();
        assert_eq!(s.len(), 2);
        assert!(s[0].default && !s[1].default);
        assert_eq!(s[1].name, "default/macvlan");
        assert_eq!(s[0].gateway, ["10.244.1.1"]);
    }
}
