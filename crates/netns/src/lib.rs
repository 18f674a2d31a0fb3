//! Network-namespace work on dedicated OS threads, with netlink queries inside the namespace.
//!
//! setns(2) with `CLONE_NEWNET` changes only the calling thread, so every call
//! here spawns a fresh OS thread, enters the namespace on it, does the work
//! and lets the thread exit. The caller's thread never changes namespace, and
//! no pooled or async worker ever carries a namespace into unrelated work.
//!
//! - [`run_in_netns`] runs any closure that way; [`spawn_in_netns`] starts it
//!   and answers later.
//! - [`link_exists`], [`links`], [`addresses`] and [`routes`] ask the kernel
//!   over rtnetlink from a socket opened inside the namespace.
//! - [`default_routes`] lists the default routes with their links' names, and
//!   [`edit_default_routes`] removes and adds default routes (zero-prefix routes
//!   matched by prefix length, per family).
//!
//! All calls block until the work is done, except [`spawn_in_netns`] and
//! [`start_links`], which hand back an [`InNetns`] to join.

mod edit;
mod error;
mod info;
mod netlink;
mod thread;

use std::path::Path;

pub use edit::{DefaultRouteEdit, DefaultRouteReport};
pub use error::NetnsError;
pub use info::{AddressInfo, IpFamily, LinkInfo, MAIN_TABLE, OperState, RouteInfo};
/// The errno type carried by [`NetnsError`], re-exported so callers can match
/// on values like `Errno::EEXIST` without depending on `nix` themselves.
pub use nix::errno::Errno;
pub use thread::{InNetns, panic_message, run_in_netns, spawn_in_netns, try_run_in_netns};

use netlink::Rtnl;

/// Run `f` with a NETLINK_ROUTE socket opened inside the namespace at `netns`,
/// on a fresh thread that has entered it.
pub(crate) fn with_rtnl<F, T>(netns: &Path, f: F) -> Result<T, NetnsError>
where
    F: FnOnce(&mut Rtnl) -> Result<T, NetnsError> + Send + 'static,
    T: Send + 'static,
{
    let path = netns.to_path_buf();
    try_run_in_netns(netns, move || {
        let mut rtnl = Rtnl::open(&path)?;
        f(&mut rtnl)
    })
}

/// Whether a link named `ifname` exists in the namespace at `netns`
/// (RTM_GETLINK by name inside it; ENODEV means no). A name the kernel could
/// never give a link (empty, longer than 15 bytes, containing `/`, `:` or
/// whitespace) is reported absent.
pub fn link_exists(netns: &Path, ifname: &str) -> Result<bool, NetnsError> {
    let ifname = ifname.to_owned();
    with_rtnl(netns, move |rtnl| rtnl.link_exists(&ifname))
}

/// All links in the namespace at `netns`: name, index, MAC, MTU, up flag,
/// operational state and kind.
pub fn links(netns: &Path) -> Result<Vec<LinkInfo>, NetnsError> {
    with_rtnl(netns, |rtnl| rtnl.links())
}

/// [`links`], started now on its own thread and answered by
/// [`InNetns::try_join`]: the caller does other work meanwhile.
pub fn start_links(netns: &Path) -> Result<InNetns<Result<Vec<LinkInfo>, NetnsError>>, NetnsError> {
    let path = netns.to_path_buf();
    spawn_in_netns(netns, move || Rtnl::open(&path)?.links())
}

/// All IPv4 and IPv6 addresses in the namespace at `netns`, with the index and
/// name of the link holding each, and the address with its prefix length.
pub fn addresses(netns: &Path) -> Result<Vec<AddressInfo>, NetnsError> {
    with_rtnl(netns, |rtnl| rtnl.addresses())
}

/// IPv4 and IPv6 routes of the main table in the namespace at `netns`:
/// destination with prefix (a default route is `0.0.0.0/0` or `::/0`),
/// gateway, output link index, metric and family.
pub fn routes(netns: &Path) -> Result<Vec<RouteInfo>, NetnsError> {
    with_rtnl(netns, |rtnl| rtnl.routes())
}

/// Edit the default routes of the namespace at `netns` on one thread and one
/// rtnetlink socket: first remove, for each `(link, family)` of
/// `edit.remove`, every main-table default route (`0.0.0.0/0` or `::/0`, by
/// prefix length) of that family leaving through that link; then add a
/// default route via each `(link, gateway)` of `edit.add`. A removal on a link
/// that does not exist does nothing. Stops at the first failure (adding on a
/// link that does not exist is ENODEV; an unreachable gateway the kernel's
/// ENETUNREACH; an equal default route already there EEXIST), leaving the steps
/// before it done.
pub fn edit_default_routes(
    netns: &Path,
    edit: DefaultRouteEdit,
) -> Result<DefaultRouteReport, NetnsError> {
    with_rtnl(netns, move |rtnl| edit::apply(rtnl, &edit))
}

/// The main-table default routes (`0.0.0.0/0` and `::/0`, by prefix length) of
/// the namespace at `netns`, each with the name of its output link (empty for
/// a multipath route or a link that vanished meanwhile).
pub fn default_routes(netns: &Path) -> Result<Vec<(String, RouteInfo)>, NetnsError> {
    with_rtnl(netns, |rtnl| {
        let links = rtnl.links()?;
        Ok(rtnl
            .routes()?
            .into_iter()
            .filter(RouteInfo::is_default)
            .map(|r| {
                let name = links
                    .iter()
                    .find(|l| Some(l.index) == r.oif)
                    .map(|l| l.name.clone())
                    .unwrap_or_default();
                (name, r)
            })
            .collect())
    })
}
