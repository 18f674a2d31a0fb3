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
    confdir,
    config::{NetworkRef, Primary},
    error::Error,
    invoke::PASSTHRU,
    netconf::{NetConfError, NetworkConfig},
    plan::NetworkRequest,
};

/// Go's `filepath.Dir`: everything before the last `/`, cleaned (`/a/b/` gives `/a/b`, `x` gives `.`), so
/// the chain's directory is the one Go Multus reads.
fn go_dir(p: &Path) -> PathBuf {
    let bytes = p.as_os_str().as_bytes();
    match bytes.iter().rposition(|b| *b == b'/') {
        Some(0) => PathBuf::from("/"),
        Some(i) => crate::config::clean(Path::new(OsStr::from_bytes(&bytes[..i]))),
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
    use super::*;

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
