//! Synchronous rtnetlink (NETLINK_ROUTE) requests, made from a thread already inside the target namespace.
//!
//! A [`Rtnl`] socket belongs to the network namespace of the thread that
//! created it, so it must be opened inside the closure given to
//! [`crate::run_in_netns`] (see [`crate::with_rtnl`]). Requests go out one at
//! a time: [`Rtnl::dump`] reads multipart replies until NLMSG_DONE,
//! [`Rtnl::request`] asks for an ACK and reads until it; an NLMSG_ERROR
//! becomes [`NetnsError::Kernel`] with its errno.
//!
//! Route edits sit beside the queries: [`Rtnl::add_default_route`] sends
//! RTM_NEWROUTE with `NLM_F_CREATE | NLM_F_EXCL`, [`Rtnl::delete_route`]
//! RTM_DELROUTE naming exactly the route a dump returned. New operations
//! (moving links, say) follow the same pattern: build the message, pass it to
//! [`Rtnl::request`].

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::net::IpAddr;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader,
    NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::AddressFamily;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::address::AddressMessage;
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::{Socket, SocketAddr};
use nix::errno::Errno;
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;

use crate::NetnsError;
use crate::info::{
    AddressInfo, IpFamily, LinkInfo, MAIN_TABLE, RouteInfo, address_from_message,
    link_from_message, route_from_message,
};

/// How long to wait for any one reply datagram before giving up.
const RECV_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a dump that the kernel marked inconsistent (NLM_F_DUMP_INTR,
/// the table changed mid-dump) is retried.
const DUMP_ATTEMPTS: usize = 5;

/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
pub(crate) const MAX_IFNAME_LEN: usize = 15;

/// A NETLINK_ROUTE socket in the namespace of the thread that opened it.
pub(crate) struct Rtnl {
    socket: Socket,
    seq: u32,
    netns: PathBuf,
}

/// Why one exchange failed, before the operation and path are attached.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The kernel answered with this errno.
    Kernel(Errno),
    /// Anything else: socket errors, undecodable replies, timeouts.
    Local(String),
}

impl Failure {
    fn into_error(self, op: &'static str, netns: &Path) -> NetnsError {
        match self {
            Failure::Kernel(errno) => NetnsError::Kernel {
                op,
                path: netns.to_path_buf(),
                errno,
            },
            Failure::Local(detail) => NetnsError::Netlink {
                op,
                detail: format!("in network namespace {}: {detail}", netns.display()),
            },
        }
    }
}

impl Rtnl {
    /// Open and connect a NETLINK_ROUTE socket. Call only on a thread that has
    /// entered the namespace `netns` names; `netns` is used for error messages.
    pub(crate) fn open(netns: &Path) -> Result<Self, NetnsError> {
        let local = |step: &str, e: &dyn std::fmt::Display| {
            Failure::Local(format!("{step}: {e}")).into_error("socket setup", netns)
        };
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(|e| local("socket", &e))?;
        socket.bind_auto().map_err(|e| local("bind", &e))?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(|e| local("connect", &e))?;
        let timeout = TimeVal::new(RECV_TIMEOUT.as_secs() as _, 0);
        setsockopt(&socket, sockopt::ReceiveTimeout, &timeout)
            .map_err(|e| local("set receive timeout", &e))?;
        Ok(Rtnl {
            socket,
            seq: 0,
            netns: netns.to_path_buf(),
        })
    }

    /// The namespace path this socket was opened for (for error messages).
    pub(crate) fn netns(&self) -> &Path {
        &self.netns
    }

    /// Send a dump request (NLM_F_DUMP) and collect every reply until
    /// NLMSG_DONE, retrying when the kernel flags the dump as interrupted.
    pub(crate) fn dump(
        &mut self,
        op: &'static str,
        msg: RouteNetlinkMessage,
    ) -> Result<Vec<RouteNetlinkMessage>, NetnsError> {
        for _ in 0..DUMP_ATTEMPTS {
            let replies = self
                .exchange(msg.clone(), NLM_F_REQUEST | NLM_F_DUMP)
                .map_err(|f| f.into_error(op, &self.netns))?;
            if !replies.interrupted {
                return Ok(replies.messages);
            }
        }
        Err(Failure::Local(format!(
            "dump still inconsistent after {DUMP_ATTEMPTS} attempts (NLM_F_DUMP_INTR)"
        ))
        .into_error(op, &self.netns))
    }

    /// Send a request with NLM_F_REQUEST | NLM_F_ACK | `flags` and collect any
    /// replies that precede the ACK.
    pub(crate) fn request(
        &mut self,
        op: &'static str,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, NetnsError> {
        self.exchange(msg, NLM_F_REQUEST | NLM_F_ACK | flags)
            .map(|r| r.messages)
            .map_err(|f| f.into_error(op, &self.netns))
    }

    fn exchange(&mut self, msg: RouteNetlinkMessage, flags: u16) -> Result<Replies, Failure> {
        self.seq = self.seq.wrapping_add(1);
        let bytes = encode(msg, flags, self.seq);
        let sent = self
            .socket
            .send(&bytes, 0)
            .map_err(|e| Failure::Local(format!("send: {e}")))?;
        if sent != bytes.len() {
            return Err(Failure::Local(format!(
                "send: wrote {sent} of {} bytes",
                bytes.len()
            )));
        }
        let mut replies = Replies::new(self.seq);
        loop {
            let datagram = match self.socket.recv_from_full() {
                Ok((buf, _)) => buf,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(Failure::Local(format!(
                        "no reply from the kernel within {}s",
                        RECV_TIMEOUT.as_secs()
                    )));
                }
                Err(e) => return Err(Failure::Local(format!("receive: {e}"))),
            };
            if datagram.is_empty() {
                return Err(Failure::Local("receive: socket closed".into()));
            }
            if replies.feed(&datagram)? {
                return Ok(replies);
            }
        }
    }

    /// Whether a link named `ifname` exists (RTM_GETLINK by IFLA_IFNAME).
    /// Names the kernel could never hold (empty, too long, with `/`, NUL or
    /// whitespace) are reported as absent without asking.
    pub(crate) fn link_exists(&mut self, ifname: &str) -> Result<bool, NetnsError> {
        if !plausible_ifname(ifname) {
            return Ok(false);
        }
        match self.request("link lookup", get_link_by_name(ifname), 0) {
            Ok(replies) => Ok(replies
                .iter()
                .any(|m| matches!(m, RouteNetlinkMessage::NewLink(_)))),
            Err(NetnsError::Kernel {
                errno: Errno::ENODEV,
                ..
            }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// All links.
    pub(crate) fn links(&mut self) -> Result<Vec<LinkInfo>, NetnsError> {
        let replies = self.dump("link dump", dump_links())?;
        Ok(replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(link_from_message(l)),
                _ => None,
            })
            .collect())
    }

    /// All IPv4 and IPv6 addresses, with their link names.
    pub(crate) fn addresses(&mut self) -> Result<Vec<AddressInfo>, NetnsError> {
        let names: HashMap<u32, String> = self
            .links()?
            .into_iter()
            .map(|l| (l.index, l.name))
            .collect();
        let replies = self.dump("address dump", dump_addresses())?;
        Ok(replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) => address_from_message(a),
                _ => None,
            })
            .map(|(index, label, address)| AddressInfo {
                index,
                ifname: names.get(&index).cloned().or(label).unwrap_or_default(),
                address,
            })
            .collect())
    }

    /// IPv4 and IPv6 routes of the main table.
    pub(crate) fn routes(&mut self) -> Result<Vec<RouteInfo>, NetnsError> {
        let replies = self.dump("route dump", dump_routes())?;
        Ok(replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) => route_from_message(r),
                _ => None,
            })
            .filter(|r| r.table == MAIN_TABLE)
            .collect())
    }

    /// Add a main-table default route via `gateway` out of link `oif`
    /// (RTM_NEWROUTE, `NLM_F_CREATE | NLM_F_EXCL`: an equal route already
    /// there is the kernel's EEXIST).
    pub(crate) fn add_default_route(
        &mut self,
        gateway: IpAddr,
        oif: u32,
    ) -> Result<(), NetnsError> {
        self.request(
            "route add",
            new_default_route(gateway, oif),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// Delete exactly `route` as a dump returned it. A route that is already
    /// gone (ESRCH) counts as deleted.
    pub(crate) fn delete_route(&mut self, route: &RouteInfo) -> Result<(), NetnsError> {
        match self.request("route delete", del_route(route), 0) {
            Ok(_)
            | Err(NetnsError::Kernel {
                errno: Errno::ESRCH,
                ..
            }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Whether the kernel could have a link of this name (dev_valid_name).
pub(crate) fn plausible_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_IFNAME_LEN
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace())
}

/// Serialize `msg` as one netlink message with the given flags and sequence number.
pub(crate) fn encode(msg: RouteNetlinkMessage, flags: u16, seq: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = seq;
    let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    buf
}

/// RTM_GETLINK for one link by name.
pub(crate) fn get_link_by_name(ifname: &str) -> RouteNetlinkMessage {
    let mut msg = LinkMessage::default();
    msg.attributes
        .push(LinkAttribute::IfName(ifname.to_owned()));
    RouteNetlinkMessage::GetLink(msg)
}

/// RTM_GETLINK dump of all links.
pub(crate) fn dump_links() -> RouteNetlinkMessage {
    RouteNetlinkMessage::GetLink(LinkMessage::default())
}

/// RTM_GETADDR dump of all addresses (every family).
pub(crate) fn dump_addresses() -> RouteNetlinkMessage {
    RouteNetlinkMessage::GetAddress(AddressMessage::default())
}

/// RTM_GETROUTE dump of all routes (every family, every table; filtered afterwards).
pub(crate) fn dump_routes() -> RouteNetlinkMessage {
    RouteNetlinkMessage::GetRoute(RouteMessage::default())
}

fn route_address(addr: IpAddr) -> RouteAddress {
    match addr {
        IpAddr::V4(a) => RouteAddress::Inet(a),
        IpAddr::V6(a) => RouteAddress::Inet6(a),
    }
}

fn netlink_family(family: IpFamily) -> AddressFamily {
    match family {
        IpFamily::V4 => AddressFamily::Inet,
        IpFamily::V6 => AddressFamily::Inet6,
    }
}

/// RTM_NEWROUTE for a default route (prefix length 0, no RTA_DST, as
/// `ip route add default` sends it) via `gateway` out of link `oif`, in the
/// main table, unicast, universe scope, protocol "boot" (what iproute2 uses).
pub(crate) fn new_default_route(gateway: IpAddr, oif: u32) -> RouteNetlinkMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = netlink_family(IpFamily::of(&gateway));
    msg.header.destination_prefix_length = 0;
    msg.header.table = RouteHeader::RT_TABLE_MAIN;
    msg.header.protocol = RouteProtocol::Boot;
    msg.header.scope = RouteScope::Universe;
    msg.header.kind = RouteType::Unicast;
    msg.attributes = vec![
        RouteAttribute::Table(MAIN_TABLE),
        RouteAttribute::Gateway(route_address(gateway)),
        RouteAttribute::Oif(oif),
    ];
    RouteNetlinkMessage::NewRoute(msg)
}

/// RTM_DELROUTE naming exactly `route`: its family, destination and prefix
/// length (a zero-prefix route is sent without RTA_DST, like iproute2), table,
/// and, when the dump had them, gateway, output link and metric, so no other
/// route of the same prefix is touched. Scope "nowhere" matches any scope.
pub(crate) fn del_route(route: &RouteInfo) -> RouteNetlinkMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = netlink_family(route.family);
    msg.header.destination_prefix_length = route.destination.prefix_len();
    msg.header.table = u8::try_from(route.table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
    msg.header.scope = RouteScope::NoWhere;
    msg.attributes.push(RouteAttribute::Table(route.table));
    if route.destination.prefix_len() > 0 {
        msg.attributes
            .push(RouteAttribute::Destination(route_address(
                route.destination.network(),
            )));
    }
    if let Some(gw) = route.gateway {
        msg.attributes
            .push(RouteAttribute::Gateway(route_address(gw)));
    }
    if let Some(oif) = route.oif {
        msg.attributes.push(RouteAttribute::Oif(oif));
    }
    if let Some(metric) = route.metric {
        msg.attributes.push(RouteAttribute::Priority(metric));
    }
    RouteNetlinkMessage::DelRoute(msg)
}

/// Collects the replies to one request from successive datagrams.
#[derive(Debug)]
pub(crate) struct Replies {
    seq: u32,
    /// The decoded replies, in order.
    pub(crate) messages: Vec<RouteNetlinkMessage>,
    /// Whether any part carried NLM_F_DUMP_INTR.
    pub(crate) interrupted: bool,
}

impl Replies {
    pub(crate) fn new(seq: u32) -> Self {
        Replies {
            seq,
            messages: Vec::new(),
            interrupted: false,
        }
    }

    /// Take in one datagram (one or more netlink messages). Returns whether
    /// the exchange is complete: NLMSG_DONE for a dump, the ACK otherwise.
    /// Messages with another sequence number are skipped.
    pub(crate) fn feed(&mut self, datagram: &[u8]) -> Result<bool, Failure> {
        let mut offset = 0;
        while offset < datagram.len() {
            let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&datagram[offset..])
                .map_err(|e| Failure::Local(format!("cannot decode reply: {e}")))?;
            let len = msg.header.length as usize;
            if len == 0 {
                return Err(Failure::Local("reply with zero length".into()));
            }
            offset += len.next_multiple_of(4);
            if msg.header.sequence_number != self.seq {
                continue;
            }
            if msg.header.flags & NLM_F_DUMP_INTR != 0 {
                self.interrupted = true;
            }
            match msg.payload {
                NetlinkPayload::InnerMessage(m) => self.messages.push(m),
                NetlinkPayload::Done(done) => {
                    if done.code != 0 {
                        return Err(Failure::Kernel(Errno::from_raw(done.code.abs())));
                    }
                    return Ok(true);
                }
                NetlinkPayload::Error(err) => {
                    return match err.code {
                        Some(code) => Err(Failure::Kernel(Errno::from_raw(code.get().abs()))),
                        // An ACK ends a plain request. In a dump it would be
                        // unexpected, but it still means nothing else follows.
                        None => Ok(true),
                    };
                }
                NetlinkPayload::Overrun(_) => {
                    return Err(Failure::Local("kernel reported an overrun".into()));
                }
                _ => {}
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{DoneMessage, ErrorMessage, NLM_F_MULTIPART};
    use std::num::NonZeroI32;

    fn packet(payload: NetlinkPayload<RouteNetlinkMessage>, seq: u32, flags: u16) -> Vec<u8> {
        let mut header = NetlinkHeader::default();
        header.sequence_number = seq;
        header.flags = flags;
        let mut p = NetlinkMessage::new(header, payload);
        p.finalize();
        let mut buf = vec![0; p.buffer_len()];
        p.serialize(&mut buf);
        buf
    }

    fn link(name: &str, index: u32) -> RouteNetlinkMessage {
        let mut l = LinkMessage::default();
        l.header.index = index;
        l.attributes.push(LinkAttribute::IfName(name.into()));
        RouteNetlinkMessage::NewLink(l)
    }

    fn done(code: i32) -> NetlinkPayload<RouteNetlinkMessage> {
        let mut d = DoneMessage::default();
        d.code = code;
        NetlinkPayload::Done(d)
    }

    fn error(code: i32) -> NetlinkPayload<RouteNetlinkMessage> {
        let mut e = ErrorMessage::default();
        e.code = NonZeroI32::new(code);
        e.header = vec![0; 16];
        NetlinkPayload::Error(e)
    }

    #[test]
    fn get_link_by_name_request_round_trips() {
        let bytes = encode(get_link_by_name("eth0"), NLM_F_REQUEST | NLM_F_ACK, 7);
        assert_eq!(bytes.len() % 4, 0);
        let parsed = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes).unwrap();
        assert_eq!(parsed.header.sequence_number, 7);
        assert_eq!(parsed.header.flags, NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(parsed.header.length as usize, bytes.len());
        match parsed.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::GetLink(l)) => {
                assert_eq!(l.header.index, 0);
                assert_eq!(l.attributes, vec![LinkAttribute::IfName("eth0".into())]);
            }
            other => panic!("unexpected payload {other:?}"),
        }
    }

    #[test]
    fn dump_requests_carry_dump_flags() {
        for msg in [dump_links(), dump_addresses(), dump_routes()] {
            let bytes = encode(msg.clone(), NLM_F_REQUEST | NLM_F_DUMP, 1);
            let parsed = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes).unwrap();
            assert_eq!(parsed.header.flags, NLM_F_REQUEST | NLM_F_DUMP);
            assert_eq!(parsed.payload, NetlinkPayload::InnerMessage(msg));
        }
    }

    fn route_of(bytes: &[u8]) -> (u16, RouteMessage) {
        let parsed = NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes).unwrap();
        let flags = parsed.header.flags;
        match parsed.payload {
            NetlinkPayload::InnerMessage(
                RouteNetlinkMessage::NewRoute(r) | RouteNetlinkMessage::DelRoute(r),
            ) => (flags, r),
            other => panic!("unexpected payload {other:?}"),
        }
    }

    #[test]
    fn default_route_add_is_a_zero_prefix_without_dst() {
        for (gw, family) in [
            ("192.0.2.1", AddressFamily::Inet),
            ("2001:db8::1", AddressFamily::Inet6),
        ] {
            let gw: IpAddr = gw.parse().unwrap();
            let msg = new_default_route(gw, 7);
            let bytes = encode(
                msg,
                NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
                3,
            );
            let (flags, r) = route_of(&bytes);
            assert_eq!(
                flags & (NLM_F_CREATE | NLM_F_EXCL),
                NLM_F_CREATE | NLM_F_EXCL
            );
            assert_eq!(r.header.address_family, family);
            assert_eq!(r.header.destination_prefix_length, 0);
            assert_eq!(r.header.table, RouteHeader::RT_TABLE_MAIN);
            assert_eq!(r.header.kind, RouteType::Unicast);
            assert!(
                !r.attributes
                    .iter()
                    .any(|a| matches!(a, RouteAttribute::Destination(_))),
                "{r:?}"
            );
            assert!(r.attributes.contains(&RouteAttribute::Oif(7)));
            assert!(
                r.attributes
                    .contains(&RouteAttribute::Gateway(route_address(gw)))
            );
            // Decoded back, it is a default route of its family.
            let info = route_from_message(&r).unwrap();
            assert!(info.is_default());
            assert_eq!(info.gateway, Some(gw));
        }
    }

    #[test]
    fn route_delete_names_exactly_the_dumped_route() {
        let dumped = RouteInfo {
            family: IpFamily::V6,
            destination: "::/0".parse().unwrap(),
            gateway: Some("2001:db8::1".parse().unwrap()),
            oif: Some(4),
            metric: Some(1024),
            table: MAIN_TABLE,
        };
        let (_, r) = route_of(&encode(del_route(&dumped), NLM_F_REQUEST | NLM_F_ACK, 1));
        assert_eq!(r.header.address_family, AddressFamily::Inet6);
        assert_eq!(r.header.destination_prefix_length, 0);
        assert_eq!(r.header.scope, RouteScope::NoWhere);
        assert_eq!(route_from_message(&r).unwrap(), dumped);

        let subnet = RouteInfo {
            family: IpFamily::V4,
            destination: "198.51.100.0/24".parse().unwrap(),
            gateway: None,
            oif: Some(2),
            metric: None,
            table: MAIN_TABLE,
        };
        let (_, r) = route_of(&encode(del_route(&subnet), NLM_F_REQUEST | NLM_F_ACK, 1));
        assert_eq!(route_from_message(&r).unwrap(), subnet);
    }

    #[test]
    fn multipart_dump_until_done() {
        let mut r = Replies::new(3);
        let mut first = packet(
            NetlinkPayload::InnerMessage(link("lo", 1)),
            3,
            NLM_F_MULTIPART,
        );
        first.extend(packet(
            NetlinkPayload::InnerMessage(link("a0", 2)),
            3,
            NLM_F_MULTIPART,
        ));
        assert_eq!(r.feed(&first), Ok(false));
        let mut second = packet(
            NetlinkPayload::InnerMessage(link("b0", 3)),
            3,
            NLM_F_MULTIPART,
        );
        second.extend(packet(done(0), 3, NLM_F_MULTIPART));
        assert_eq!(r.feed(&second), Ok(true));
        assert_eq!(
            r.messages,
            vec![link("lo", 1), link("a0", 2), link("b0", 3)]
        );
        assert!(!r.interrupted);
    }

    #[test]
    fn interrupted_dump_is_flagged_and_stale_sequence_skipped() {
        let mut r = Replies::new(9);
        let mut d = packet(
            NetlinkPayload::InnerMessage(link("old", 1)),
            8,
            NLM_F_MULTIPART,
        );
        d.extend(packet(
            NetlinkPayload::InnerMessage(link("a0", 2)),
            9,
            NLM_F_MULTIPART | NLM_F_DUMP_INTR,
        ));
        d.extend(packet(done(0), 9, NLM_F_MULTIPART));
        assert_eq!(r.feed(&d), Ok(true));
        assert_eq!(r.messages, vec![link("a0", 2)]);
        assert!(r.interrupted);
    }

    #[test]
    fn errors_map_to_errno() {
        let mut r = Replies::new(1);
        assert_eq!(
            r.feed(&packet(error(-19), 1, 0)),
            Err(Failure::Kernel(Errno::ENODEV))
        );
        let mut r = Replies::new(1);
        assert_eq!(
            r.feed(&packet(done(-16), 1, NLM_F_MULTIPART)),
            Err(Failure::Kernel(Errno::EBUSY))
        );
    }

    #[test]
    fn reply_then_ack_ends_a_request() {
        let mut r = Replies::new(2);
        let mut d = packet(NetlinkPayload::InnerMessage(link("a0", 2)), 2, 0);
        d.extend(packet(error(0), 2, 0));
        assert_eq!(r.feed(&d), Ok(true));
        assert_eq!(r.messages, vec![link("a0", 2)]);
    }

    #[test]
    fn garbage_is_a_local_failure() {
        let mut r = Replies::new(1);
        assert!(matches!(r.feed(&[1, 2, 3]), Err(Failure::Local(_))));
    }

    #[test]
    fn failures_become_errors_naming_the_path() {
        let e =
            Failure::Local("no reply".into()).into_error("link dump", Path::new("/run/netns/p"));
        assert_eq!(
            e.to_string(),
            "netlink link dump failed: in network namespace /run/netns/p: no reply"
        );
        let e = Failure::Kernel(Errno::ESRCH).into_error("route delete", Path::new("/run/netns/p"));
        assert!(matches!(
            e,
            NetnsError::Kernel {
                errno: Errno::ESRCH,
                ..
            }
        ));
    }

    #[test]
    fn ifname_plausibility() {
        assert!(plausible_ifname("eth0"));
        assert!(plausible_ifname("a-very-long-nm1"));
        assert!(!plausible_ifname("a-very-long-name"));
        assert!(!plausible_ifname(""));
        assert!(!plausible_ifname("a/b"));
        assert!(!plausible_ifname("a b"));
        assert!(!plausible_ifname(".."));
    }
}
