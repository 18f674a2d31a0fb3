//! STATUS: ready when the readiness indicator exists and every network each pod gets (the cluster network
//! and `defaultNetworks` or static delegates) answers STATUS; a delegate's code 50/51 is passed on (CNI-20).
//! In daemon mode also: every plugin binary a cached NAD names is installed (issue 8).

use std::collections::BTreeMap;

use plexus_cni::{ErrorReply, codes};

use super::Ctx;
use crate::{error::Error, exec::ExecError, invoke::DelegateError, netconf::NetworkConfig};

pub(super) fn status(ctx: &Ctx<'_>) -> Result<(), Error> {
    ctx.wait_ready(true)?;
    // A network every pod needs that cannot be loaded makes the plugin unavailable, whatever the cause.
    let networks = ctx
        .node_networks(None)
        .map_err(|e| Error::NotAvailable(Box::new(e)))?;
    let invoker = ctx.invoker();
    for n in &networks {
        if let Err(mut source) = invoker.status(&n.network) {
            // A missing delegate binary means the network is not available on this node (code 50).
            if let DelegateError::Exec {
                plugin_type,
                source: ExecError::NotFound { .. },
            } = &source
            {
                let reply = ErrorReply::new(codes::NOT_AVAILABLE, source.to_string(), "");
                source = DelegateError::Exec {
                    plugin_type: plugin_type.clone(),
                    source: ExecError::Plugin {
                        plugin: Default::default(),
                        reply,
                        stderr: String::new(),
                    },
                };
            }
            return Err(Error::Delegate {
                who: ctx.who(),
                network: n.status_name.clone(),
                ifname: String::new(),
                verb: "getting status of",
                source,
            });
        }
    }
    missing_plugins(ctx)
}

/// Every plugin type the cached NADs name must be found in the search path. A NAD whose config does not
/// parse is left to fail its own ADD with its own error: it does not make the whole node unready.
fn missing_plugins(ctx: &Ctx<'_>) -> Result<(), Error> {
    let configs = ctx.seams.cluster.cached_network_configs();
    if configs.is_empty() {
        return Ok(());
    }
    let invoker = ctx.invoker();
    let mut missing: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (nad, config) in &configs {
        let Ok(network) = NetworkConfig::from_bytes(config.as_bytes()) else {
            continue;
        };
        for p in &network.plugins {
            if let Err(ExecError::NotFound { .. } | ExecError::InvalidType { .. }) =
                invoker.exec.find(&p.plugin_type, &invoker.search_path)
            {
                missing
                    .entry(p.plugin_type.clone())
                    .or_default()
                    .push(nad.clone());
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let dirs: Vec<String> = invoker
        .search_path
        .iter()
        .map(|d| d.display().to_string())
        .collect();
    let list: Vec<String> = missing
        .iter()
        .map(|(plugin, nads)| format!("{plugin} (used by {})", nads.join(", ")))
        .collect();
    Err(Error::PluginsMissing(format!(
        "plugins not installed in [{}]: {}",
        dirs.join(" "),
        list.join("; ")
    )))
}
