//! Hot-plug's diff, as a pure function: the networks a running pod's annotation selects now against the
//! pod networks its sandbox has attached, to what to attach (on which interface), what to detach, and what
//! is refused (docs/daemon.md, "Hot-plug"). No I/O: the caller reads the cache, the pod and its links.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::pure::{
    netconf::{Kind, NetworkConfig},
    plan::{Attachment, NetworkRequest, Requests},
};

/// The Warning event's reason for a hot-plug that failed or was refused (the message says which, and why).
pub const HOTPLUG_FAILED: &str = "HotplugFailed";

/// What to change on a running sandbox.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Diff {
    /// Desired networks to attach: the index in the desired list, and the interface it gets.
    pub attach: Vec<(usize, String)>,
    /// Attachments to detach: indexes in the current list, in reverse attach order (the last first).
    pub detach: Vec<usize>,
    /// Selections left as they are, with why (one Warning event each).
    pub refused: Vec<Refusal>,
}

impl Diff {
    /// Whether nothing is to be attached or detached.
    pub fn is_empty(&self) -> bool {
        self.attach.is_empty() && self.detach.is_empty()
    }
}

/// A selection hot-plug leaves alone, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The network's status name (`<namespace>/<name>`).
    pub network: String,
    /// Why, in words.
    pub reason: String,
}

/// The `args.cni` a network's delegate gets (a list's first plugin's): where a selection's `cni-args` land.
fn cni_args(net: &NetworkConfig) -> Option<&Value> {
    let top = match net.kind {
        Kind::Conf => &net.value,
        Kind::List => net.value.get("plugins")?.get(0)?.as_object()?,
    };
    top.get("args")?.get("cni")
}

/// The requests the annotation itself makes of an attachment: a device ID handed out from the NAD's
/// resource, and the device-info file, are plexus's doing, not the pod's.
fn asked(requests: &Requests, resource_name: Option<&String>) -> Requests {
    Requests {
        device_id: requests
            .device_id
            .clone()
            .filter(|_| resource_name.is_none()),
        device_info_file: None,
        ..requests.clone()
    }
}

/// What differs between an attachment and the selection that matches it, or `None` when they agree. The
/// NAD's own config is not compared: a NAD edited after the attach is no change of the pod's.
fn changed(have: &Attachment, want: &NetworkRequest) -> Option<String> {
    if asked(&have.requests, have.resource_name.as_ref())
        != asked(&want.requests, want.resource_name.as_ref())
    {
        return Some("its requests (ips, mac, default-route, …) changed".into());
    }
    if cni_args(&have.network) != cni_args(&want.network) {
        return Some("its cni-args changed".into());
    }
    None
}

/// The first `net<N>` (N from 1) not in `taken`.
pub fn next_free(taken: &BTreeSet<String>) -> String {
    (1..)
        .map(|i| format!("net{i}"))
        .find(|n| !taken.contains(n))
        .expect("some netN is free")
}

/// The diff of `desired` (the pod's networks annotation, resolved, in order) against `current` (the pod
/// networks the sandbox has, in attach order). A selection matches the first unmatched attachment of the
/// same network with the same interface request; a match whose parameters changed is refused, not
/// re-plugged. `busy` is every interface name that stays in the pod whatever happens here (the node's
/// networks, links no attachment made): a new attachment gets its requested name, or the first free
/// `net<N>`; a requested name in use, or a `default-route` request, is refused.
pub fn diff(current: &[Attachment], desired: &[NetworkRequest], busy: &BTreeSet<String>) -> Diff {
    let mut matched = vec![false; current.len()];
    let mut out = Diff::default();
    let mut new = Vec::new();
    for (i, want) in desired.iter().enumerate() {
        let found = current.iter().enumerate().position(|(j, have)| {
            !matched[j]
                && have.status_name == want.status_name
                && have.ifname_request == want.ifname_request
        });
        match found {
            Some(j) => {
                matched[j] = true;
                if let Some(why) = changed(&current[j], want) {
                    out.refused.push(Refusal {
                        network: want.status_name.clone(),
                        reason: format!(
                            "the attachment on {} is kept as it is: {why}, and a changed attachment is not re-plugged (remove it from the annotation, then add it again)",
                            current[j].ifname
                        ),
                    });
                }
            }
            None => new.push(i),
        }
    }
    out.detach = (0..current.len()).rev().filter(|&j| !matched[j]).collect();
    let mut taken: BTreeSet<String> = busy.clone();
    taken.extend(
        current
            .iter()
            .zip(&matched)
            .filter(|(_, m)| **m)
            .map(|(a, _)| a.ifname.clone()),
    );
    // Requested names first, so an automatic name never takes one a later selection asked for.
    let mut requested = BTreeSet::new();
    for &i in &new {
        if let Some(r) = &desired[i].ifname_request {
            requested.insert(r.clone());
        }
    }
    for i in new {
        let want = &desired[i];
        let refuse = |reason: String| Refusal {
            network: want.status_name.clone(),
            reason,
        };
        if want.requests.gateways.is_some() {
            out.refused.push(refuse(
                "default-route is not hot-plugged: the pod's default route is set when its sandbox is created"
                    .into(),
            ));
            continue;
        }
        let ifname = match &want.ifname_request {
            Some(r) if taken.contains(r) => {
                out.refused.push(refuse(format!(
                    "interface {r:?} is already in use in the pod"
                )));
                continue;
            }
            Some(r) => r.clone(),
            None => {
                let mut all = taken.clone();
                all.extend(requested.iter().cloned());
                next_free(&all)
            }
        };
        taken.insert(ifname.clone());
        out.attach.push((i, ifname));
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn request(nad: &str, ifname: Option<&str>) -> NetworkRequest {
        let net = NetworkConfig::from_value(
            json!({"cniVersion": "1.0.0", "name": nad.rsplit('/').next().unwrap(), "type": "macvlan"}),
        )
        .unwrap();
        NetworkRequest {
            status_name: nad.into(),
            ifname_request: ifname.map(str::to_string),
            ..NetworkRequest::plain(net)
        }
    }

    fn attached(nad: &str, ifname: &str, requested: bool) -> Attachment {
        let mut r = request(nad, requested.then_some(ifname));
        r.ifname_request = requested.then(|| ifname.to_string());
        Attachment {
            network: r.network,
            ifname: ifname.into(),
            master: false,
            status_name: r.status_name,
            ifname_request: r.ifname_request,
            requests: r.requests,
            resource_name: None,
            auxiliary: false,
            pod_network: true,
            hotplugged: false,
        }
    }

    fn busy(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn an_added_network_gets_the_first_free_net_n_and_a_removed_one_is_detached() {
        let current = [
            attached("ns/a", "net1", false),
            attached("ns/b", "net2", false),
        ];
        // b stays, a goes, c comes: c takes net1, freed by a.
        let d = diff(
            &current,
            &[request("ns/b", None), request("ns/c", None)],
            &busy(&["eth0"]),
        );
        assert_eq!(d.detach, [0]);
        assert_eq!(d.attach, [(1, "net1".to_string())]);
        assert!(d.refused.is_empty());
        // Nothing changed: nothing to do.
        let d = diff(
            &current,
            &[request("ns/a", None), request("ns/b", None)],
            &busy(&["eth0"]),
        );
        assert!(d.is_empty() && d.refused.is_empty(), "{d:?}");
    }

    #[test]
    fn a_requested_name_is_used_reserved_from_automatic_names_and_refused_when_busy() {
        let d = diff(
            &[],
            &[request("ns/a", None), request("ns/b", Some("net1"))],
            &busy(&["eth0"]),
        );
        assert_eq!(d.attach, [(0, "net2".into()), (1, "net1".into())]);
        let d = diff(
            &[attached("ns/a", "net1", false)],
            &[request("ns/a", None), request("ns/b", Some("net1"))],
            &busy(&["eth0"]),
        );
        assert!(d.attach.is_empty());
        assert_eq!(d.refused.len(), 1);
        assert_eq!(d.refused[0].network, "ns/b");
        assert!(d.refused[0].reason.contains("\"net1\""), "{d:?}");
        // A link no attachment made (busy) is never taken.
        let d = diff(&[], &[request("ns/a", None)], &busy(&["eth0", "net1"]));
        assert_eq!(d.attach, [(0, "net2".into())]);
    }

    #[test]
    fn the_same_nad_twice_matches_in_order_and_a_new_interface_request_is_another_attachment() {
        let current = [
            attached("ns/a", "net1", false),
            attached("ns/a", "net2", false),
        ];
        let d = diff(&current, &[request("ns/a", None)], &busy(&["eth0"]));
        assert_eq!(d.detach, [1], "the later one goes");
        let d = diff(
            &current,
            &[request("ns/a", None), request("ns/a", Some("x0"))],
            &busy(&[]),
        );
        assert_eq!(d.detach, [1]);
        assert_eq!(d.attach, [(1, "x0".into())]);
        // Detached last first.
        let d = diff(&current, &[], &busy(&[]));
        assert_eq!(d.detach, [1, 0]);
    }

    #[test]
    fn changed_parameters_are_refused_and_the_attachment_kept() {
        let current = [attached("ns/a", "net1", false)];
        let mut want = request("ns/a", None);
        want.requests.ips = vec!["10.0.0.5/24".into()];
        let d = diff(&current, &[want], &busy(&[]));
        assert!(d.is_empty(), "neither detached nor re-attached: {d:?}");
        assert_eq!(d.refused.len(), 1);
        assert!(d.refused[0].reason.contains("requests"), "{d:?}");

        let mut want = request("ns/a", None);
        want.network = crate::pure::annotations::inject_cni_args(
            &want.network,
            json!({"k": "v"}).as_object().unwrap(),
        )
        .unwrap();
        let d = diff(&current, &[want], &busy(&[]));
        assert!(d.is_empty());
        assert!(d.refused[0].reason.contains("cni-args"), "{d:?}");

        // A device handed out from the NAD's resource is not the pod's request.
        let mut have = attached("ns/a", "net1", false);
        have.resource_name = Some("r".into());
        have.requests.device_id = Some("0000:03:00.2".into());
        have.requests.device_info_file = Some("/x".into());
        let mut want = request("ns/a", None);
        want.resource_name = Some("r".into());
        let d = diff(&[have], &[want], &busy(&[]));
        assert!(d.is_empty() && d.refused.is_empty(), "{d:?}");
    }

    #[test]
    fn default_route_is_never_hot_plugged() {
        let mut want = request("ns/a", None);
        want.requests.gateways = Some(vec!["10.0.0.1".into()]);
        let d = diff(&[], &[want], &busy(&[]));
        assert!(d.attach.is_empty());
        assert!(d.refused[0].reason.contains("default-route"), "{d:?}");
    }

    #[test]
    fn next_free_skips_what_is_taken() {
        assert_eq!(next_free(&busy(&[])), "net1");
        assert_eq!(next_free(&busy(&["net1", "net3"])), "net2");
    }
}
