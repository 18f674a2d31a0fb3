//! The netns seam: what plexus asks of a pod's network namespace (interface-name collisions, NPWG-26, CNI-12)
//! and the one change it makes there itself (default routes, NPWG-34).

use std::path::Path;

use plexus_netns::{DefaultRouteEdit, DefaultRouteReport, NetnsError, RouteInfo};

/// Questions about (and the default-route edit of) a pod's network namespace; the real answers come over
/// netlink on a dedicated thread.
pub trait NetnsProbe: Send + Sync {
    /// The names of the links in the namespace at `netns` (one dump).
    fn link_names(&self, netns: &Path) -> Result<Vec<String>, NetnsError>;

    /// [`NetnsProbe::link_names`], asked now and answered by [`LinkNames::wait`]: the real probe's thread
    /// dumps the links while the caller does other work. By default, asked and answered at once.
    fn start_link_names(&self, netns: &Path) -> LinkNames {
        LinkNames::ready(self.link_names(netns))
    }

    /// The default routes in the namespace at `netns`, each with its link's name.
    fn default_routes(&self, netns: &Path) -> Result<Vec<(String, RouteInfo)>, NetnsError>;

    /// Remove and add default routes in the namespace at `netns` as `edit` says (see
    /// [`plexus_netns::edit_default_routes`]).
    fn edit_default_routes(
        &self,
        netns: &Path,
        edit: DefaultRouteEdit,
    ) -> Result<DefaultRouteReport, NetnsError>;

    /// Whether `netns` is this process's own network namespace (skel refuses it, CNI-59).
    fn is_own(&self, netns: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        let ino = |p: &Path| std::fs::metadata(p).map(|m| (m.dev(), m.ino())).ok();
        matches!((ino(netns), ino(Path::new("/proc/self/ns/net"))), (Some(a), Some(b)) if a == b)
    }
}

/// Link names on their way ([`NetnsProbe::start_link_names`]).
pub struct LinkNames(Box<dyn FnOnce() -> Result<Vec<String>, NetnsError> + Send>);

impl LinkNames {
    /// An answer already known.
    pub fn ready(answer: Result<Vec<String>, NetnsError>) -> LinkNames {
        LinkNames(Box::new(move || answer))
    }

    /// The answer, once it is there.
    pub fn wait(self) -> Result<Vec<String>, NetnsError> {
        (self.0)()
    }
}

fn names(links: Vec<plexus_netns::LinkInfo>) -> Vec<String> {
    links.into_iter().map(|l| l.name).collect()
}

/// Asks the kernel (netlink inside the namespace, on a fresh thread).
#[derive(Debug, Default, Clone, Copy)]
pub struct KernelNetns;

impl NetnsProbe for KernelNetns {
    fn link_names(&self, netns: &Path) -> Result<Vec<String>, NetnsError> {
        plexus_netns::links(netns).map(names)
    }

    fn start_link_names(&self, netns: &Path) -> LinkNames {
        match plexus_netns::start_links(netns) {
            Ok(pending) => LinkNames(Box::new(move || pending.try_join().map(names))),
            Err(e) => LinkNames::ready(Err(e)),
        }
    }

    fn default_routes(&self, netns: &Path) -> Result<Vec<(String, RouteInfo)>, NetnsError> {
        plexus_netns::default_routes(netns)
    }

    fn edit_default_routes(
        &self,
        netns: &Path,
        edit: DefaultRouteEdit,
    ) -> Result<DefaultRouteReport, NetnsError> {
        plexus_netns::edit_default_routes(netns, edit)
    }
}
