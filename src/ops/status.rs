//! STATUS: ready when the readiness indicator exists and every network each pod gets (the cluster network
//! and `defaultNetworks` or static delegates) answers STATUS; a delegate's code 50/51 is passed on (CNI-20).
//! The same in both modes: NADs are what some pods select, not what the node must serve for every pod, so a
//! NAD naming a missing plugin fails the ADD of the pods selecting it (`add`), never STATUS (issue 16).

use plexus_cni::{ErrorReply, codes};

use super::Ctx;
use crate::{
    ops::error::Error,
    seams::{exec::ExecError, invoke::DelegateError},
};

pub(super) fn status(ctx: &Ctx<'_>) -> Result<(), Error> {
    ctx.wait_ready(true)?;
    // A network every pod needs that cannot be loaded makes the plugin unavailable, whatever the cause.
    let networks = ctx
        .node_networks(None)
        .map_err(|e| Error::NotAvailable(Box::new(e)))?;
    let invoker = ctx.invoker();
    for n in &networks {
        if let Err(mut source) = invoker.status(&n.network) {
            // A missing (or refused: `exec::check_binary`) delegate binary means the network is not
            // available on this node (code 50).
            if let DelegateError::Exec {
                plugin_type,
                source: ExecError::NotFound { .. } | ExecError::Unsafe { .. },
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
    Ok(())
}
