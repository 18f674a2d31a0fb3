//! The auxiliary chain (`auxiliaryCNIChainName`): the network Go Multus appends to every ADD, the internal
//! `passthru` followed by the plugin files of `<directory of clusterNetwork>/<name>/` (docs/multus-compat.md,
//! "Auxiliary chain").

use std::{
    ffi::OsStr,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
};

use plexus_cni::CniVersion;
use serde_json::json;

use super::Ctx;
use crate::{
    ops::error::Error,
    pure::{
        config::{NetworkRef, Primary},
        netconf::{NetConfError, NetworkConfig},
        plan::NetworkRequest,
    },
    seams::invoke::PASSTHRU,
    store::confdir,
};

/// Go's `filepath.Dir`: everything before the last `/`, cleaned (`/a/b/` gives `/a/b`, `x` gives `.`), so
/// the chain's directory is the one Go Multus reads.
fn go_dir(p: &Path) -> PathBuf {
    let bytes = p.as_os_str().as_bytes();
    match bytes.iter().rposition(|b| *b == b'/') {
        Some(0) => PathBuf::from("/"),
        Some(i) => crate::pure::config::clean(Path::new(OsStr::from_bytes(&bytes[..i]))),
        None => PathBuf::from("."),
    }
}

/// The chain's network when the config names one and its directory holds at least one plugin file; `None`
/// otherwise. It must run last, so the caller appends it after every other network (its interface is then
/// the next `net<index>`).
pub(super) fn chain(ctx: &Ctx<'_>) -> Result<Option<NetworkRequest>, Error> {
    let Some(name) = &ctx.config.auxiliary_chain else {
        return Ok(None);
    };
    let netconf = |reason: String| Error::NetConf {
        who: ctx.who(),
        network: name.clone(),
        source: NetConfError::Field {
            field: "auxiliaryCNIChainName".into(),
            reason,
        },
    };
    let cluster_file = match &ctx.config.primary {
        Primary::ClusterNetwork(NetworkRef::Path(p)) => p,
        Primary::ClusterNetwork(NetworkRef::Name(n)) => {
            return Err(netconf(format!(
                "the chain's directory is found next to the clusterNetwork file, but clusterNetwork is the network name {n:?}, not a path"
            )));
        }
        Primary::Delegates(_) => {
            return Err(netconf(
                "the chain's directory is found next to the clusterNetwork file, but the config has delegates, not a clusterNetwork path".into(),
            ));
        }
    };
    let dir = go_dir(cluster_file).join(name);
    let plugins = confdir::subdirectory_plugins(&dir).map_err(|source| Error::Lookup {
        who: ctx.who(),
        network: name.clone(),
        source,
    })?;
    if plugins.is_empty() {
        tracing::debug!(dir = %dir.display(), "auxiliary chain: no plugin file, nothing to run");
        return Ok(None);
    }
    // A chain hands results on through prevResult, which CNI has only from 0.3.0 on.
    let version = ctx.config.cni_version.max(CniVersion::V0_3_0);
    let mut list = vec![json!({ "type": PASSTHRU })];
    list.extend(plugins);
    let value = json!({"cniVersion": version.as_str(), "name": name, "plugins": list});
    let network = NetworkConfig::from_value(value).map_err(|source| Error::NetConf {
        who: ctx.who(),
        network: name.clone(),
        source,
    })?;
    tracing::debug!(dir = %dir.display(), plugins = network.plugins.len(), "auxiliary chain");
    Ok(Some(NetworkRequest::plain(network)))
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::{
        ops::{Seams, execute},
        pure::{config::Config, request::CniEnv},
        seams::{
            cluster::Cluster,
            devices::kubelet::NoKubelet,
            k8s::memory::MemoryApi,
            testing::{TestHost, fake_result},
        },
    };

    fn run(h: &TestHost, command: &str, config: &Config, cluster: &dyn Cluster) -> Vec<u8> {
        let env = CniEnv::from_vars([
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/run/netns/test-pod"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/usr/lib/cni"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=pod1;K8S_POD_UID=u1",
            ),
        ])
        .unwrap()
        .unwrap();
        let seams = Seams {
            exec: &h.exec,
            netns: &h.netns,
            cluster: Some(cluster),
            kubelet: &NoKubelet,
            defer_work: false,
        };
        execute(&env, config, &seams).unwrap().reply.to_stdout()
    }

    /// Issue 22: even when a chain plugin answers with an interface, the chain is no network of the pod's:
    /// network-status (NPWG-41) lists the cluster network and the others only, and the cache marks it.
    #[test]
    fn the_chain_is_left_out_of_network_status_and_marked_in_the_cache() {
        let h = TestHost::new();
        let conf = h.dir.path().join("net.d");
        std::fs::create_dir_all(conf.join("aux")).unwrap();
        let cluster = conf.join("10-cluster.conflist");
        std::fs::write(
            &cluster,
            json!({"cniVersion": "1.0.0", "name": "cluster", "plugins": [{"type": "bridge"}]})
                .to_string(),
        )
        .unwrap();
        std::fs::write(conf.join("aux/10-vendor.conf"), r#"{"type": "vendor"}"#).unwrap();
        let vendor = fake_result(
            plexus_cni::CniVersion::V1_0_0,
            "net1",
            "/run/netns/test-pod",
            9,
        );
        h.exec
            .reply("vendor", "ADD", &serde_json::to_vec(&vendor).unwrap());
        let config = Config::from_bytes(
            &serde_json::to_vec(&json!({"cniVersion": "1.0.0", "name": "p",
                "cniDir": h.cni_dir(), "clusterNetwork": cluster, "auxiliaryCNIChainName": "aux"}))
            .unwrap(),
        )
        .unwrap();
        let published = MemoryApi::new().with_pod("ns1", "pod1", "u1", &[]);
        run(&h, "ADD", &config, &published);
        let calls: Vec<(String, String)> = h
            .exec
            .calls()
            .iter()
            .map(|c| (c.network().to_string(), c.ifname().to_string()))
            .collect();
        assert_eq!(
            calls,
            [
                ("cluster".into(), "eth0".into()),
                ("aux".into(), "net1".into())
            ]
        );
        let statuses: Vec<(String, String)> = published.statuses()[0]
            .1
            .iter()
            .map(|s| (s.name.clone(), s.interface.clone()))
            .collect();
        assert_eq!(statuses, [("cluster".to_string(), "eth0".to_string())]);
        let cache: Value =
            serde_json::from_slice(&std::fs::read(h.cni_dir().join("c1")).unwrap()).unwrap();
        assert_eq!(cache[1]["plexusAuxiliaryChain"], true, "{cache}");
        assert_eq!(cache[0].get("plexusAuxiliaryChain"), None, "{cache}");
    }

    #[test]
    fn go_dir_matches_go_filepath_dir() {
        for (p, want) in [
            ("/etc/cni/net.d/10-x.conflist", "/etc/cni/net.d"),
            ("/etc/cni/net.d/", "/etc/cni/net.d"),
            ("/etc/cni/net.d", "/etc/cni"),
            ("/x", "/"),
            ("net.d/x.conf", "net.d"),
            ("/a/./b/../c/x.conf", "/a/c"),
        ] {
            assert_eq!(go_dir(Path::new(p)), PathBuf::from(want), "{p}");
        }
    }
}
