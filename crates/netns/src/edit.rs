//! Default-route edits inside a namespace: remove the zero-prefix routes of chosen families on chosen
//! links, then add default routes via gateways, over one rtnetlink socket on one thread.
//!
//! A default route is recognised by its prefix length (0), whatever the family, never by a missing
//! destination attribute: that is the bug of Go Multus's `DeleteDefaultGW` with netlink ≥ 1.3
//! (#1444, #1552; docs/multus-compat.md, "Default routes"), where default routes came back with a
//! zero destination and none matched.

use std::net::IpAddr;

use nix::errno::Errno;

use crate::NetnsError;
use crate::info::{IpFamily, RouteInfo};
use crate::netlink::Rtnl;

/// What to change. Removals run first, in order, then additions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DefaultRouteEdit {
    /// Remove every main-table default route of the family whose output link is the named one (a link
    /// that does not exist has none).
    pub remove: Vec<(String, IpFamily)>,
    /// Then add a main-table default route via the gateway out of the named link.
    pub add: Vec<(String, IpAddr)>,
}

impl DefaultRouteEdit {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.add.is_empty()
    }
}

/// What an edit did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DefaultRouteReport {
    /// The routes removed, with the name of their link.
    pub removed: Vec<(String, RouteInfo)>,
    /// The default routes added: link and gateway.
    pub added: Vec<(String, IpAddr)>,
}

/// Which of `routes` a removal of `family` on link index `oif` takes: default routes (prefix length 0) of
/// that family leaving through that link. Multipath routes (no single output link) are left alone.
pub(crate) fn to_remove(routes: &[RouteInfo], family: IpFamily, oif: u32) -> Vec<RouteInfo> {
    routes
        .iter()
        .filter(|r| r.family == family && r.is_default() && r.oif == Some(oif))
        .cloned()
        .collect()
}

/// Carry out `edit` over `rtnl` (already inside the namespace).
pub(crate) fn apply(
    rtnl: &mut Rtnl,
    edit: &DefaultRouteEdit,
) -> Result<DefaultRouteReport, NetnsError> {
    let links = rtnl.links()?;
    let path = rtnl.netns().to_path_buf();
    let index = |name: &str| {
        links
            .iter()
            .find(|l| l.name == name)
            .map(|l| l.index)
            .ok_or_else(|| NetnsError::Kernel {
                op: "route edit (link lookup)",
                path: path.clone(),
                errno: Errno::ENODEV,
            })
    };
    let mut report = DefaultRouteReport::default();
    if !edit.remove.is_empty() {
        let routes = rtnl.routes()?;
        for (ifname, family) in &edit.remove {
            // A link that is not there has no routes to remove.
            let Ok(oif) = index(ifname) else {
                continue;
            };
            for route in to_remove(&routes, *family, oif) {
                rtnl.delete_route(&route)?;
                report.removed.push((ifname.clone(), route));
            }
        }
    }
    for (ifname, gateway) in &edit.add {
        let oif = index(ifname)?;
        rtnl.add_default_route(*gateway, oif)?;
        report.added.push((ifname.clone(), *gateway));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::info::MAIN_TABLE;

    fn route(dst: &str, gw: Option<&str>, oif: Option<u32>) -> RouteInfo {
        let destination: ipnet::IpNet = dst.parse().unwrap();
        RouteInfo {
            family: IpFamily::of(&destination.addr()),
            destination,
            gateway: gw.map(|g| g.parse().unwrap()),
            oif,
            metric: None,
            table: MAIN_TABLE,
        }
    }

    #[test]
    fn zero_prefix_routes_of_the_family_on_the_link_only() {
        let routes = vec![
            route("0.0.0.0/0", Some("192.0.2.1"), Some(2)),
            route("0.0.0.0/0", Some("198.51.100.1"), Some(3)),
            route("::/0", Some("2001:db8::1"), Some(2)),
            route("192.0.2.0/24", None, Some(2)),
            // A /0 written with host bits is still a default route: the prefix length decides.
            route("10.0.0.0/0", Some("192.0.2.9"), Some(2)),
            // Multipath: no single link.
            route("0.0.0.0/0", None, None),
        ];
        let got = to_remove(&routes, IpFamily::V4, 2);
        assert_eq!(got, vec![routes[0].clone(), routes[4].clone()]);
        assert_eq!(to_remove(&routes, IpFamily::V6, 2), vec![routes[2].clone()]);
        assert_eq!(to_remove(&routes, IpFamily::V6, 3), vec![]);
    }
}
