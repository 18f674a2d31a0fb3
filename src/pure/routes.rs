//! `default-route` (NPWG-34), the pure part: whether a pod's request is valid, which default routes move
//! where, and how the delegates' results change so the caches, CHECK and the network-status say what the
//! pod's namespace holds. The namespace work itself goes through [`crate::seams::netns::NetnsProbe`].
//!
//! What plexus does, after every delegate's ADD succeeded:
//!
//! * **At most one attachment** may carry `default-route` (NPWG-34). The annotation parser already refuses
//!   a second element; [`validate`] refuses it again for every source, before anything is attached (fail
//!   closed, docs/multus-compat.md, "Invalid annotations"), naming both networks. Gateways must be
//!   IP addresses, at most one per family (plexus, like Go Multus, adds no ECMP default routes).
//! * **Gateways given** (`"default-route": ["192.0.2.1", "2001:db8::1"]`): for each family the gateways
//!   cover, and only those, every default route of that family on every attachment's interfaces is
//!   removed, the cluster network's `eth0` included and the chosen attachment's own too, then a default
//!   route via each gateway is added on the chosen attachment's interface. A family no gateway covers is
//!   left as the delegates made it.
//! * **Empty list** (`"default-route": []`): NPWG-34 says the key "explicitly selects which attachment will
//!   receive the default route" and that "the list may be empty". plexus reads that as: the chosen
//!   attachment keeps the default routes its own delegate made (its result's `0.0.0.0/0` and `::/0`
//!   routes), and for each of those families every other attachment's default routes are removed. When
//!   the chosen attachment's result has no default route of a family, nothing of that family changes, so
//!   an empty list never leaves the pod without a default route (Go Multus removes them everywhere, eth0's
//!   included, which is its issue #1011;
//!   docs/multus-compat.md, "Default routes").
//! * A default route is a route whose prefix length is 0, per family, never "a route without a
//!   destination" (docs/multus-compat.md, "Default routes").
//! * **Results:** the same removals and additions are made to the attachments' results, which are then
//!   cached (`<cniDir>/results/…`, for CHECK's `prevResult` and DEL), published as the network-status
//!   (whose `gateway` lists the default routes of a result, so it moves to the chosen network) and, for
//!   the cluster network, returned to the runtime. Go Multus leaves the returned result unchanged.
//! * **CHECK** runs [`decide`] again on the cached results and [`verify`]s the pod's default routes
//!   against it (the reference plugins' own CHECK does not look at default routes).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use plexus_cni::{CniResult, Route};
use plexus_netns::{DefaultRouteEdit, IpFamily, NetnsError, RouteInfo};

use crate::pure::plan::Attachment;

/// A `default-route` request that cannot be carried out.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// Two attachments ask for the default route (NPWG-34).
    #[error(
        "networks {first:?} and {second:?} both set \"default-route\"; at most one network may (NPWG-34)"
    )]
    Twice {
        /// The first network asking.
        first: String,
        /// The second.
        second: String,
    },
    /// A gateway is not an IP address.
    #[error(
        "network {network:?}: \"default-route\" gateway {value:?} is not an IPv4 or IPv6 address"
    )]
    Gateway {
        /// The network.
        network: String,
        /// What was given.
        value: String,
    },
    /// Two gateways of one family (ECMP).
    #[error(
        "network {network:?}: \"default-route\" gives more than one {family} gateway; at most one per family (no ECMP default routes)"
    )]
    PerFamily {
        /// The network.
        network: String,
        /// The family.
        family: &'static str,
    },
    /// CHECK: the pod's default routes are no longer what `default-route` made them.
    #[error("network {network:?}: {reason}")]
    Drift {
        /// The network that asked.
        network: String,
        /// What differs.
        reason: String,
    },
    /// The pod's namespace refused the change.
    #[error(
        "network {network:?}: cannot move the default route to interface {ifname}{}: {source}",
        via_list(gateways)
    )]
    Apply {
        /// The network that asked.
        network: String,
        /// Its interface.
        ifname: String,
        /// The gateways asked for (none for an empty list).
        gateways: Vec<IpAddr>,
        /// Why.
        source: NetnsError,
    },
}

fn via_list(gateways: &[IpAddr]) -> String {
    if gateways.is_empty() {
        return String::new();
    }
    let list: Vec<String> = gateways.iter().map(IpAddr::to_string).collect();
    format!(" via {}", list.join(" and "))
}

/// The default-route change of one ADD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePlan {
    /// Index of the attachment that gets the default route.
    pub selected: usize,
    /// The families whose default route moves to it.
    pub families: Vec<IpFamily>,
    /// The requested gateways; empty to keep the attachment's own default routes.
    pub gateways: Vec<IpAddr>,
    /// What to do in the pod's namespace.
    pub edit: DefaultRouteEdit,
}

fn family_name(f: IpFamily) -> &'static str {
    match f {
        IpFamily::V4 => "IPv4",
        IpFamily::V6 => "IPv6",
    }
}

fn family_of_net(n: &IpNet) -> IpFamily {
    IpFamily::of(&n.addr())
}

/// The gateways of `a`'s request, parsed, at most one per family; `None` without a request.
fn gateways(a: &Attachment) -> Result<Option<Vec<IpAddr>>, RouteError> {
    let Some(list) = &a.requests.gateways else {
        return Ok(None);
    };
    let mut out: Vec<IpAddr> = Vec::with_capacity(list.len());
    for value in list {
        let gw: IpAddr = value.trim().parse().map_err(|_| RouteError::Gateway {
            network: a.status_name.clone(),
            value: value.clone(),
        })?;
        if out.iter().any(|g| IpFamily::of(g) == IpFamily::of(&gw)) {
            return Err(RouteError::PerFamily {
                network: a.status_name.clone(),
                family: family_name(IpFamily::of(&gw)),
            });
        }
        out.push(gw);
    }
    Ok(Some(out))
}

/// Check a plan's `default-route` requests before anything is attached: at most one attachment, valid
/// gateways, at most one per family.
pub fn validate(attachments: &[Attachment]) -> Result<(), RouteError> {
    let mut first: Option<&Attachment> = None;
    for a in attachments {
        if gateways(a)?.is_none() {
            continue;
        }
        if let Some(f) = first {
            return Err(RouteError::Twice {
                first: f.status_name.clone(),
                second: a.status_name.clone(),
            });
        }
        first = Some(a);
    }
    Ok(())
}

/// The pod-side interfaces of an attachment: its `CNI_IFNAME` and every interface of its result that has
/// a sandbox, each once.
fn interfaces(a: &Attachment, result: &CniResult) -> Vec<String> {
    let mut out = vec![a.ifname.clone()];
    for i in &result.interfaces {
        if i.sandbox.as_deref().is_some_and(|s| !s.is_empty()) && !out.contains(&i.name) {
            out.push(i.name.clone());
        }
    }
    out
}

/// The families of a result's default routes, IPv4 first.
fn default_families(result: &CniResult) -> Vec<IpFamily> {
    [IpFamily::V4, IpFamily::V6]
        .into_iter()
        .filter(|f| {
            result
                .routes
                .iter()
                .any(|r| r.is_default() && family_of_net(&r.dst) == *f)
        })
        .collect()
}

/// Decide the change for the attached networks; `None` when no attachment asks for the default route.
pub fn decide(attached: &[(Attachment, CniResult)]) -> Result<Option<RoutePlan>, RouteError> {
    let mut chosen: Option<(usize, Vec<IpAddr>)> = None;
    for (i, (a, _)) in attached.iter().enumerate() {
        if let Some(gws) = gateways(a)? {
            if let Some((j, _)) = chosen {
                let first = &attached[j].0;
                return Err(RouteError::Twice {
                    first: first.status_name.clone(),
                    second: a.status_name.clone(),
                });
            }
            chosen = Some((i, gws));
        }
    }
    let Some((selected, gateways)) = chosen else {
        return Ok(None);
    };
    let (sel, sel_result) = &attached[selected];
    let families: Vec<IpFamily> = if gateways.is_empty() {
        default_families(sel_result)
    } else {
        [IpFamily::V4, IpFamily::V6]
            .into_iter()
            .filter(|f| gateways.iter().any(|g| IpFamily::of(g) == *f))
            .collect()
    };
    let mut edit = DefaultRouteEdit::default();
    for (i, (a, result)) in attached.iter().enumerate() {
        // With an empty list the chosen attachment keeps its own default routes.
        if i == selected && gateways.is_empty() {
            continue;
        }
        for ifname in interfaces(a, result) {
            for f in &families {
                edit.remove.push((ifname.clone(), *f));
            }
        }
    }
    edit.add = gateways.iter().map(|g| (sel.ifname.clone(), *g)).collect();
    Ok(Some(RoutePlan {
        selected,
        families,
        gateways,
        edit,
    }))
}

fn default_dst(gw: &IpAddr) -> IpNet {
    match gw {
        IpAddr::V4(_) => IpNet::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        IpAddr::V6(_) => IpNet::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
    }
    .unwrap_or_default()
}

/// Make the result of attachment `index` say what [`decide`]'s plan does to the namespace: drop its
/// default routes of the moved families (unless it is the chosen attachment keeping its own), and give the
/// chosen attachment a default route via each gateway. Returns whether the result changed.
pub fn rewrite(plan: &RoutePlan, index: usize, result: &mut CniResult) -> bool {
    if index == plan.selected && plan.gateways.is_empty() {
        return false;
    }
    let before = result.routes.len();
    result
        .routes
        .retain(|r| !(r.is_default() && plan.families.contains(&family_of_net(&r.dst))));
    let mut changed = result.routes.len() != before;
    if index == plan.selected {
        for gw in &plan.gateways {
            let mut route = Route::new(default_dst(gw));
            route.gw = Some(*gw);
            result.routes.push(route);
            changed = true;
        }
    }
    changed
}

/// CHECK (CNI-27): whether the pod's default routes (`actual`, each with its link's name) are still what
/// `plan` made them: a default route via each gateway on the chosen interface, and no other default route
/// of a moved family on any interface the plan took them from.
pub fn verify(
    plan: &RoutePlan,
    attached: &[(Attachment, CniResult)],
    actual: &[(String, RouteInfo)],
) -> Result<(), RouteError> {
    let sel = &attached[plan.selected].0;
    let drift = |reason: String| RouteError::Drift {
        network: sel.status_name.clone(),
        reason,
    };
    for gw in &plan.gateways {
        if !actual
            .iter()
            .any(|(l, r)| *l == sel.ifname && r.gateway == Some(*gw))
        {
            return Err(drift(format!(
                "the default route via {gw} on {} is missing",
                sel.ifname
            )));
        }
    }
    for (ifname, family) in &plan.edit.remove {
        for (l, r) in actual
            .iter()
            .filter(|(l, r)| l == ifname && r.family == *family)
        {
            if *l == sel.ifname && r.gateway.is_some_and(|g| plan.gateways.contains(&g)) {
                continue;
            }
            let via = r.gateway.map(|g| format!(" via {g}")).unwrap_or_default();
            return Err(drift(format!(
                "{l} has an {} default route{via}, but \"default-route\" gives that family's default route to {}",
                family_name(*family),
                sel.ifname
            )));
        }
    }
    Ok(())
}

/// Go Multus's per-delegate `IsFilterV4Gateway`/`IsFilterV6Gateway` cache flags for the plan: true where a
/// family's default route was taken away from that attachment.
pub fn filter_flags(plan: &RoutePlan, count: usize) -> Vec<(bool, bool)> {
    (0..count)
        .map(|i| {
            if i == plan.selected {
                (false, false)
            } else {
                (
                    plan.families.contains(&IpFamily::V4),
                    plan.families.contains(&IpFamily::V6),
                )
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pure::{
        netconf::NetworkConfig,
        plan::{NetworkRequest, plan},
    };
    use plexus_cni::CniVersion;
    use serde_json::json;

    fn request(name: &str, gateways: Option<&[&str]>) -> NetworkRequest {
        let n = NetworkConfig::from_value(
            json!({"cniVersion": "1.0.0", "name": name, "type": "bridge"}),
        )
        .unwrap();
        let mut r = NetworkRequest::plain(n);
        r.status_name = format!("ns/{name}");
        r.requests.gateways = gateways.map(|g| g.iter().map(|s| s.to_string()).collect());
        r
    }

    /// A one-interface result on `ifname` with the given routes (`dst` or `dst via gw`).
    fn result(ifname: &str, addrs: &[&str], routes: &[&str]) -> CniResult {
        let v = json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": ifname, "sandbox": "/run/netns/pod"}],
            "ips": addrs.iter().map(|a| json!({"address": a, "interface": 0})).collect::<Vec<_>>(),
            "routes": routes.iter().map(|r| match r.split_once(" via ") {
                Some((dst, gw)) => json!({"dst": dst, "gw": gw}),
                None => json!({"dst": r}),
            }).collect::<Vec<_>>(),
        });
        CniResult::from_value(&v, CniVersion::V1_0_0).unwrap()
    }

    fn routes(r: &CniResult) -> Vec<String> {
        r.routes
            .iter()
            .map(|r| match r.gw {
                Some(gw) => format!("{} via {gw}", r.dst),
                None => r.dst.to_string(),
            })
            .collect()
    }

    /// eth0 (cluster: IPv4 and IPv6 defaults), net1 (asks), net2 (its own IPv4 default).
    fn attached(gws: Option<&[&str]>) -> Vec<(Attachment, CniResult)> {
        let a = plan(
            "eth0",
            vec![
                request("cluster", None),
                request("mv", gws),
                request("other", None),
            ],
        )
        .unwrap();
        let results = vec![
            result(
                "eth0",
                &["192.0.2.2/24", "2001:db8::2/64"],
                &[
                    "0.0.0.0/0 via 192.0.2.1",
                    "::/0 via 2001:db8::1",
                    "10.0.0.0/8 via 192.0.2.1",
                ],
            ),
            result(
                "net1",
                &["198.51.100.2/24"],
                &["203.0.113.0/24 via 198.51.100.1"],
            ),
            result("net2", &["203.0.113.5/24"], &["0.0.0.0/0 via 203.0.113.1"]),
        ];
        a.into_iter().zip(results).collect()
    }

    fn v4(l: &str) -> (String, IpFamily) {
        (l.into(), IpFamily::V4)
    }

    #[test]
    fn no_request_no_plan() {
        assert_eq!(decide(&attached(None)).unwrap(), None);
    }

    #[test]
    fn an_ipv4_gateway_moves_only_ipv4_npwg_34() {
        let mut att = attached(Some(&["198.51.100.1"]));
        let p = decide(&att).unwrap().unwrap();
        assert_eq!(p.selected, 1);
        assert_eq!(p.families, [IpFamily::V4]);
        assert_eq!(p.edit.remove, [v4("eth0"), v4("net1"), v4("net2")]);
        assert_eq!(
            p.edit.add,
            [("net1".to_string(), "198.51.100.1".parse().unwrap())]
        );
        let changed: Vec<bool> = att
            .iter_mut()
            .enumerate()
            .map(|(i, (_, r))| rewrite(&p, i, r))
            .collect();
        assert_eq!(changed, [true, true, true]);
        assert_eq!(
            routes(&att[0].1),
            ["::/0 via 2001:db8::1", "10.0.0.0/8 via 192.0.2.1"],
            "eth0 keeps its IPv6 default route and its other routes"
        );
        assert_eq!(
            routes(&att[1].1),
            [
                "203.0.113.0/24 via 198.51.100.1",
                "0.0.0.0/0 via 198.51.100.1"
            ]
        );
        assert_eq!(routes(&att[2].1), Vec::<String>::new());
        // The network-status's `gateway` (NPWG-52) is the gateways of a result's default routes
        // (`k8s::status`): it follows the results (`ops::default_route` checks the published status).
        let gw = |i: usize| -> Vec<String> {
            att[i]
                .1
                .routes
                .iter()
                .filter(|r| r.is_default())
                .filter_map(|r| r.gw.map(|g| g.to_string()))
                .collect()
        };
        assert_eq!(gw(0), ["2001:db8::1"]);
        assert_eq!(gw(1), ["198.51.100.1"]);
        assert_eq!(gw(2), Vec::<String>::new());
        assert_eq!(
            filter_flags(&p, 3),
            [(true, false), (false, false), (true, false)]
        );
    }

    #[test]
    fn both_families() {
        let mut att = attached(Some(&["2001:db8:1::1", "198.51.100.1"]));
        let p = decide(&att).unwrap().unwrap();
        assert_eq!(p.families, [IpFamily::V4, IpFamily::V6]);
        assert_eq!(p.edit.remove.len(), 6);
        assert!(rewrite(&p, 0, &mut att[0].1));
        assert_eq!(routes(&att[0].1), ["10.0.0.0/8 via 192.0.2.1"]);
        rewrite(&p, 1, &mut att[1].1);
        assert_eq!(
            routes(&att[1].1),
            [
                "203.0.113.0/24 via 198.51.100.1",
                "::/0 via 2001:db8:1::1",
                "0.0.0.0/0 via 198.51.100.1"
            ],
            "gateways in request order"
        );
        assert_eq!(filter_flags(&p, 3)[0], (true, true));
    }

    #[test]
    fn empty_list_keeps_the_chosen_networks_own_defaults() {
        // net2 asks with an empty list; its own result has an IPv4 default route.
        let a = plan(
            "eth0",
            vec![
                request("cluster", None),
                request("mv", None),
                request("other", Some(&[])),
            ],
        )
        .unwrap();
        let base = attached(None);
        let mut att: Vec<(Attachment, CniResult)> = a
            .into_iter()
            .zip(base.into_iter().map(|(_, r)| r))
            .collect();
        let p = decide(&att).unwrap().unwrap();
        assert_eq!(p.selected, 2);
        assert_eq!(p.families, [IpFamily::V4]);
        assert_eq!(
            p.edit.remove,
            [v4("eth0"), v4("net1")],
            "net2 keeps its own"
        );
        assert!(p.edit.add.is_empty());
        assert!(rewrite(&p, 0, &mut att[0].1));
        assert!(!rewrite(&p, 2, &mut att[2].1));
        assert_eq!(routes(&att[2].1), ["0.0.0.0/0 via 203.0.113.1"]);
        assert_eq!(
            routes(&att[0].1),
            ["::/0 via 2001:db8::1", "10.0.0.0/8 via 192.0.2.1"]
        );

        // A chosen network without any default route of its own: nothing moves, eth0 keeps its defaults.
        let att = attached(Some(&[]));
        let p = decide(&att).unwrap().unwrap();
        assert_eq!(p.families, []);
        assert!(p.edit.is_empty());
        assert_eq!(filter_flags(&p, 3), [(false, false); 3]);
    }

    #[test]
    fn zero_prefix_routes_match_by_prefix_length() {
        // A /0 whose address is not all zeros is still a default route
        // (docs/multus-compat.md, "Default routes").
        let mut att = attached(Some(&["198.51.100.1"]));
        att[0].1.routes[0].dst = "10.1.2.3/0".parse().unwrap();
        let p = decide(&att).unwrap().unwrap();
        rewrite(&p, 0, &mut att[0].1);
        assert_eq!(
            routes(&att[0].1),
            ["::/0 via 2001:db8::1", "10.0.0.0/8 via 192.0.2.1"]
        );
    }

    #[test]
    fn result_interfaces_are_included_once() {
        let mut att = attached(Some(&["198.51.100.1"]));
        // A result with a host-side and a second pod-side interface.
        att[2].1 = CniResult::from_value(
            &json!({"cniVersion": "1.0.0", "interfaces": [
                {"name": "vethhost"}, {"name": "net2", "sandbox": "/p"}, {"name": "extra0", "sandbox": "/p"}
            ]}),
            CniVersion::V1_0_0,
        )
        .unwrap();
        let p = decide(&att).unwrap().unwrap();
        assert_eq!(
            p.edit.remove,
            [v4("eth0"), v4("net1"), v4("net2"), v4("extra0")]
        );
    }

    #[test]
    fn refusals_name_the_networks() {
        let a = plan(
            "eth0",
            vec![
                request("cluster", None),
                request("a", Some(&[])),
                request("b", Some(&["192.0.2.1"])),
            ],
        )
        .unwrap();
        let e = validate(&a).unwrap_err();
        assert_eq!(
            e.to_string(),
            "networks \"ns/a\" and \"ns/b\" both set \"default-route\"; at most one network may (NPWG-34)"
        );
        let att: Vec<(Attachment, CniResult)> =
            a.into_iter().map(|a| (a, result("x", &[], &[]))).collect();
        assert!(matches!(decide(&att), Err(RouteError::Twice { .. })));

        let a = plan(
            "eth0",
            vec![
                request("cluster", None),
                request("a", Some(&["192.0.2.1", "192.0.2.9"])),
            ],
        )
        .unwrap();
        assert!(
            validate(&a)
                .unwrap_err()
                .to_string()
                .contains("more than one IPv4 gateway"),
        );
        let a = plan(
            "eth0",
            vec![
                request("cluster", None),
                request("a", Some(&["192.0.2.1/24"])),
            ],
        )
        .unwrap();
        assert_eq!(
            validate(&a).unwrap_err().to_string(),
            "network \"ns/a\": \"default-route\" gateway \"192.0.2.1/24\" is not an IPv4 or IPv6 address"
        );
        let a = plan(
            "eth0",
            vec![
                request("cluster", None),
                request("a", Some(&["192.0.2.1", "2001:db8::1"])),
            ],
        )
        .unwrap();
        validate(&a).unwrap();
    }

    fn actual(routes: &[(&str, &str)]) -> Vec<(String, RouteInfo)> {
        routes
            .iter()
            .map(|(l, gw)| {
                let gw: IpAddr = gw.parse().unwrap();
                (
                    l.to_string(),
                    RouteInfo {
                        family: IpFamily::of(&gw),
                        destination: default_dst(&gw),
                        gateway: Some(gw),
                        oif: Some(2),
                        metric: None,
                        table: plexus_netns::MAIN_TABLE,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn check_verifies_the_pods_default_routes_cni_27() {
        let mut att = attached(Some(&["198.51.100.1"]));
        let p = decide(&att).unwrap().unwrap();
        for (i, (_, r)) in att.iter_mut().enumerate() {
            rewrite(&p, i, r);
        }
        // Decided again from the rewritten (cached) results: the same plan.
        assert_eq!(decide(&att).unwrap().unwrap(), p);
        let ok = actual(&[("net1", "198.51.100.1"), ("eth0", "2001:db8::1")]);
        verify(&p, &att, &ok).unwrap();
        let e = verify(&p, &att, &actual(&[("eth0", "2001:db8::1")])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "network \"ns/mv\": the default route via 198.51.100.1 on net1 is missing"
        );
        let e = verify(
            &p,
            &att,
            &actual(&[("net1", "198.51.100.1"), ("eth0", "192.0.2.1")]),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "network \"ns/mv\": eth0 has an IPv4 default route via 192.0.2.1, but \"default-route\" gives that family's default route to net1"
        );
        assert!(
            verify(
                &p,
                &att,
                &actual(&[("net1", "198.51.100.1"), ("net1", "198.51.100.9")])
            )
            .is_err()
        );
    }

    #[test]
    fn results_of_every_version_are_rewritten() {
        // 0.2.0 results have ip4/ip6 sections; plexus holds them in one form and writes each version back.
        let v = json!({"cniVersion": "0.2.0",
            "ip4": {"ip": "192.0.2.2/24", "gateway": "192.0.2.1", "routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.0.0.0/8"}]}});
        let mut r = CniResult::from_value(&v, CniVersion::V0_2_0).unwrap();
        let p = RoutePlan {
            selected: 1,
            families: vec![IpFamily::V4],
            gateways: vec!["198.51.100.1".parse().unwrap()],
            edit: DefaultRouteEdit::default(),
        };
        assert!(rewrite(&p, 0, &mut r));
        let back = r.to_value(CniVersion::V0_2_0).unwrap();
        assert_eq!(
            back["ip4"]["routes"],
            json!([{"dst": "10.0.0.0/8"}]),
            "{back}"
        );
    }
}
