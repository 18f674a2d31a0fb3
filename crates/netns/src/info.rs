//! Plain descriptions of links, addresses and routes, decoded from rtnetlink messages.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{self, LinkAttribute, LinkFlags, LinkMessage, State};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteVia};

/// The main routing table's id (RT_TABLE_MAIN).
pub const MAIN_TABLE: u32 = 254;

/// An IP address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpFamily {
    /// IPv4 (AF_INET).
    V4,
    /// IPv6 (AF_INET6).
    V6,
}

impl IpFamily {
    /// The family of an address.
    pub fn of(addr: &IpAddr) -> Self {
        match addr {
            IpAddr::V4(_) => IpFamily::V4,
            IpAddr::V6(_) => IpFamily::V6,
        }
    }

    /// The unspecified address of this family (0.0.0.0 or ::).
    pub fn unspecified(self) -> IpAddr {
        match self {
            IpFamily::V4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpFamily::V6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        }
    }

    fn from_netlink(family: AddressFamily) -> Option<Self> {
        match family {
            AddressFamily::Inet => Some(IpFamily::V4),
            AddressFamily::Inet6 => Some(IpFamily::V6),
            _ => None,
        }
    }
}

impl fmt::Display for IpFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IpFamily::V4 => "ipv4",
            IpFamily::V6 => "ipv6",
        })
    }
}

/// A link's RFC 2863 operational state (IFLA_OPERSTATE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OperState {
    /// The state cannot be determined (loopback and many virtual links report this).
    Unknown,
    /// Some component is missing.
    NotPresent,
    /// Down.
    Down,
    /// Down because a lower layer is (e.g. a veth whose peer is down).
    LowerLayerDown,
    /// In a test mode.
    Testing,
    /// Not up, waiting for an external event.
    Dormant,
    /// Up and ready to pass packets.
    Up,
    /// A value this crate does not know.
    Other(u8),
}

impl From<State> for OperState {
    fn from(state: State) -> Self {
        match state {
            State::Unknown => OperState::Unknown,
            State::NotPresent => OperState::NotPresent,
            State::Down => OperState::Down,
            State::LowerLayerDown => OperState::LowerLayerDown,
            State::Testing => OperState::Testing,
            State::Dormant => OperState::Dormant,
            State::Up => OperState::Up,
            State::Other(v) => OperState::Other(v),
            // `State` is non-exhaustive; keep its raw value.
            other => OperState::Other(u8::from(other)),
        }
    }
}

impl fmt::Display for OperState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OperState::Unknown => f.write_str("unknown"),
            OperState::NotPresent => f.write_str("notpresent"),
            OperState::Down => f.write_str("down"),
            OperState::LowerLayerDown => f.write_str("lowerlayerdown"),
            OperState::Testing => f.write_str("testing"),
            OperState::Dormant => f.write_str("dormant"),
            OperState::Up => f.write_str("up"),
            OperState::Other(v) => write!(f, "other({v})"),
        }
    }
}

/// One network link (interface) in a namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    /// Interface name, e.g. `eth0`.
    pub name: String,
    /// Interface index (unique within the namespace).
    pub index: u32,
    /// Hardware address as lower-case colon-separated hex (`02:42:ac:11:00:02`),
    /// `None` when the link has none (e.g. ipip tunnels). Loopback reports
    /// `00:00:00:00:00:00`.
    pub mac: Option<String>,
    /// MTU, when reported.
    pub mtu: Option<u32>,
    /// Administratively up (IFF_UP).
    pub up: bool,
    /// Operational state.
    pub oper_state: OperState,
    /// Link kind from IFLA_INFO_KIND (`veth`, `bridge`, `macvlan`, ...), `None`
    /// for links without one (loopback, physical NICs).
    pub kind: Option<String>,
}

/// One IP address assigned to a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressInfo {
    /// Index of the link that holds the address.
    pub index: u32,
    /// Name of that link (empty if it vanished between the link and address dumps).
    pub ifname: String,
    /// The address with its prefix length, e.g. `192.0.2.2/24`.
    pub address: IpNet,
}

/// One route of the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteInfo {
    /// Address family.
    pub family: IpFamily,
    /// Destination with prefix; a default route is `0.0.0.0/0` or `::/0`.
    pub destination: IpNet,
    /// Next-hop gateway, if the route has a single one (multipath routes
    /// report `None` here and in `oif`).
    pub gateway: Option<IpAddr>,
    /// Output link index (RTA_OIF).
    pub oif: Option<u32>,
    /// Route priority / metric (RTA_PRIORITY), if set.
    pub metric: Option<u32>,
    /// Routing table id.
    pub table: u32,
}

impl RouteInfo {
    /// Whether this is a default route (prefix length 0).
    pub fn is_default(&self) -> bool {
        self.destination.prefix_len() == 0
    }
}

/// Format a hardware address as lower-case colon-separated hex.
pub(crate) fn format_mac(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Decode an RTM_NEWLINK message.
pub(crate) fn link_from_message(msg: &LinkMessage) -> LinkInfo {
    let mut info = LinkInfo {
        name: String::new(),
        index: msg.header.index,
        mac: None,
        mtu: None,
        up: msg.header.flags.contains(LinkFlags::Up),
        oper_state: OperState::Unknown,
        kind: None,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(name) => info.name = name.clone(),
            LinkAttribute::Address(bytes) if !bytes.is_empty() => {
                info.mac = Some(format_mac(bytes));
            }
            LinkAttribute::Mtu(mtu) => info.mtu = Some(*mtu),
            LinkAttribute::OperState(state) => info.oper_state = (*state).into(),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let link::LinkInfo::Kind(kind) = i {
                        info.kind = Some(kind.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    info
}

/// Decode an RTM_NEWADDR message into (link index, IFA_LABEL, address).
/// `None` for non-IP families or a malformed prefix.
pub(crate) fn address_from_message(msg: &AddressMessage) -> Option<(u32, Option<String>, IpNet)> {
    let mut local = None;
    let mut address = None;
    let mut label = None;
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            AddressAttribute::Label(l) => label = Some(l.clone()),
            _ => {}
        }
    }
    IpFamily::from_netlink(msg.header.family)?;
    // On point-to-point links IFA_ADDRESS is the peer; IFA_LOCAL is ours.
    let ip = local.or(address)?;
    let net = IpNet::new(ip, msg.header.prefix_len).ok()?;
    Some((msg.header.index, label, net))
}

fn route_addr(addr: &RouteAddress) -> Option<IpAddr> {
    match addr {
        RouteAddress::Inet(a) => Some(IpAddr::V4(*a)),
        RouteAddress::Inet6(a) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

/// Decode an RTM_NEWROUTE message (any table). `None` for non-IP families or
/// a destination that does not fit its prefix.
pub(crate) fn route_from_message(msg: &RouteMessage) -> Option<RouteInfo> {
    let family = IpFamily::from_netlink(msg.header.address_family)?;
    let mut destination = None;
    let mut gateway = None;
    let mut oif = None;
    let mut metric = None;
    let mut table = u32::from(msg.header.table);
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(a) => destination = route_addr(a),
            RouteAttribute::Gateway(a) => gateway = route_addr(a),
            RouteAttribute::Via(RouteVia::Inet(a)) => gateway = Some(IpAddr::V4(*a)),
            RouteAttribute::Via(RouteVia::Inet6(a)) => gateway = Some(IpAddr::V6(*a)),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Priority(p) => metric = Some(*p),
            RouteAttribute::Table(t) => table = *t,
            _ => {}
        }
    }
    // A default route carries no RTA_DST at all: it is the unspecified
    // address with prefix length 0.
    let dst = destination.unwrap_or_else(|| family.unspecified());
    let destination = IpNet::new(dst, msg.header.destination_prefix_length).ok()?;
    Some(RouteInfo {
        family,
        destination,
        gateway,
        oif,
        metric,
        table,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::route::RouteHeader;

    #[test]
    fn mac_formatting() {
        assert_eq!(
            format_mac(&[0x02, 0x42, 0xac, 0x11, 0, 2]),
            "02:42:ac:11:00:02"
        );
        assert_eq!(format_mac(&[]), "");
    }

    #[test]
    fn link_decoding() {
        let mut msg = LinkMessage::default();
        msg.header.index = 3;
        msg.header.flags = LinkFlags::Up | LinkFlags::Broadcast;
        msg.attributes = vec![
            LinkAttribute::IfName("a0".into()),
            LinkAttribute::Address(vec![0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff]),
            LinkAttribute::Mtu(1500),
            LinkAttribute::OperState(State::LowerLayerDown),
            LinkAttribute::LinkInfo(vec![link::LinkInfo::Kind(link::InfoKind::Veth)]),
        ];
        let info = link_from_message(&msg);
        assert_eq!(
            info,
            LinkInfo {
                name: "a0".into(),
                index: 3,
                mac: Some("aa:bb:cc:dd:ee:ff".into()),
                mtu: Some(1500),
                up: true,
                oper_state: OperState::LowerLayerDown,
                kind: Some("veth".into()),
            }
        );
        assert_eq!(info.oper_state.to_string(), "lowerlayerdown");
    }

    #[test]
    fn address_prefers_local_over_peer() {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.prefix_len = 32;
        msg.header.index = 5;
        msg.attributes = vec![
            AddressAttribute::Address("198.51.100.1".parse().unwrap()),
            AddressAttribute::Local("192.0.2.2".parse().unwrap()),
            AddressAttribute::Label("tun0".into()),
        ];
        let (index, label, net) = address_from_message(&msg).unwrap();
        assert_eq!(index, 5);
        assert_eq!(label.as_deref(), Some("tun0"));
        assert_eq!(net, "192.0.2.2/32".parse::<IpNet>().unwrap());

        let mut v6 = AddressMessage::default();
        v6.header.family = AddressFamily::Inet6;
        v6.header.prefix_len = 64;
        v6.attributes = vec![AddressAttribute::Address("2001:db8::2".parse().unwrap())];
        let (_, label, net) = address_from_message(&v6).unwrap();
        assert_eq!(label, None);
        assert_eq!(net.to_string(), "2001:db8::2/64");
    }

    fn route(family: AddressFamily, prefix: u8, attrs: Vec<RouteAttribute>) -> RouteMessage {
        let mut msg = RouteMessage::default();
        msg.header.address_family = family;
        msg.header.destination_prefix_length = prefix;
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.attributes = attrs;
        msg
    }

    #[test]
    fn default_routes_come_back_as_zero_prefixes() {
        let v4 = route(
            AddressFamily::Inet,
            0,
            vec![
                RouteAttribute::Table(MAIN_TABLE),
                RouteAttribute::Gateway(RouteAddress::Inet("192.0.2.1".parse().unwrap())),
                RouteAttribute::Oif(2),
            ],
        );
        let r = route_from_message(&v4).unwrap();
        assert_eq!(r.destination.to_string(), "0.0.0.0/0");
        assert!(r.is_default());
        assert_eq!(r.gateway, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(r.oif, Some(2));
        assert_eq!(r.family, IpFamily::V4);
        assert_eq!(r.table, MAIN_TABLE);
        assert_eq!(r.metric, None);

        let v6 = route(
            AddressFamily::Inet6,
            0,
            vec![
                RouteAttribute::Gateway(RouteAddress::Inet6("2001:db8::1".parse().unwrap())),
                RouteAttribute::Priority(1024),
            ],
        );
        let r = route_from_message(&v6).unwrap();
        assert_eq!(r.destination.to_string(), "::/0");
        assert_eq!(r.family, IpFamily::V6);
        assert_eq!(r.metric, Some(1024));
        assert_eq!(r.table, MAIN_TABLE);
    }

    #[test]
    fn prefix_routes_and_other_families() {
        let subnet = route(
            AddressFamily::Inet,
            24,
            vec![RouteAttribute::Destination(RouteAddress::Inet(
                "192.0.2.0".parse().unwrap(),
            ))],
        );
        let r = route_from_message(&subnet).unwrap();
        assert_eq!(r.destination.to_string(), "192.0.2.0/24");
        assert!(!r.is_default());
        assert_eq!(r.gateway, None);

        let via = route(
            AddressFamily::Inet,
            0,
            vec![RouteAttribute::Via(RouteVia::Inet6(
                "fe80::1".parse().unwrap(),
            ))],
        );
        assert_eq!(
            route_from_message(&via).unwrap().gateway,
            Some("fe80::1".parse().unwrap())
        );

        let mpls = route(AddressFamily::Mpls, 20, vec![]);
        assert_eq!(route_from_message(&mpls), None);
    }
}
