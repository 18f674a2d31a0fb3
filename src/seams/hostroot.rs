//! The host's filesystem seen from a daemon in a container (`chrootDir`): host paths resolved inside the
//! host's root as the host would resolve them, delegates found there and started chrooted into it, and pod
//! network namespaces opened through it (docs/daemon.md, "Delegates run in the host's filesystem").

use std::{
    collections::VecDeque,
    ffi::OsString,
    path::{Component, Path, PathBuf},
    sync::Arc,
};

use plexus_netns::{DefaultRouteEdit, DefaultRouteReport, NetnsError, RouteInfo};

use crate::seams::{
    exec::{self, Exec, ExecError, ExecOutput, ExecRequest},
    netns::{KernelNetns, LinkNames, NetnsProbe},
};

/// The PATH a delegate gets on the host when the request carries none (a Go Multus shim sends only the CNI
/// variables): the usual root PATH, since the image's own PATH describes the image, not the host.
pub const HOST_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// More symlinks than this in one path is a loop (the kernel's own limit).
const MAX_LINKS: usize = 40;

/// The host's root directory as mounted in this process's view (for example `/hostroot`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoot {
    dir: PathBuf,
}

impl HostRoot {
    /// The host root mounted at `dir`; `None` for `/` (this process already sees the host).
    pub fn new(dir: impl Into<PathBuf>) -> Option<HostRoot> {
        let dir = dir.into();
        (dir.components().any(|c| matches!(c, Component::Normal(_)))).then_some(HostRoot { dir })
    }

    /// Where the host's root is mounted.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Host path `host_path` as this process opens it: every symlink on the way followed as the host would
    /// follow it (an absolute target starts again at the host's root, `..` stops there), so
    /// `/var/run/netns/x` resolves through the host's own `/var/run` link, whatever the image has. A final
    /// symlink with a relative target is left for the open to follow: procfs's `/proc/<pid>/ns/net` reads
    /// as `net:[…]`, which only the kernel can follow.
    pub fn resolve(&self, host_path: &Path) -> PathBuf {
        let mut queue: VecDeque<OsString> = names(host_path).collect();
        let mut at = PathBuf::new();
        let mut links = 0;
        while let Some(name) = queue.pop_front() {
            if name == ".." {
                at.pop();
                continue;
            }
            let here = self.dir.join(&at).join(&name);
            let target = std::fs::symlink_metadata(&here)
                .ok()
                .filter(|m| m.file_type().is_symlink() && links < MAX_LINKS)
                .and_then(|_| std::fs::read_link(&here).ok());
            match target {
                Some(t) if !queue.is_empty() || t.is_absolute() => {
                    links += 1;
                    if t.is_absolute() {
                        at.clear();
                    }
                    for n in names(&t).collect::<Vec<_>>().into_iter().rev() {
                        queue.push_front(n);
                    }
                }
                _ => at.push(name),
            }
        }
        self.dir.join(at)
    }
}

/// The names of `p`'s components (`..` kept, `/` and `.` dropped).
fn names(p: &Path) -> impl Iterator<Item = OsString> + '_ {
    p.components().filter_map(|c| match c {
        Component::Normal(n) => Some(n.to_os_string()),
        Component::ParentDir => Some("..".into()),
        _ => None,
    })
}

/// How a daemon reaches delegates and pod network namespaces: through the host's root `root` when it has
/// one (`chrootDir`), else in its own filesystem. Chosen once, at start, for every request and the
/// missing-plugin report alike.
pub fn seams(root: Option<&HostRoot>) -> (Arc<dyn Exec>, Arc<dyn NetnsProbe>) {
    match root {
        Some(root) => (
            Arc::new(HostExec { root: root.clone() }),
            Arc::new(HostNetns { root: root.clone() }),
        ),
        None => (Arc::new(exec::ProcessExec), Arc::new(KernelNetns)),
    }
}

/// Delegates found in the host's search path and run chrooted into the host's root, so they see what they
/// would see run by the runtime on the host: its programs (`iptables`), libraries, `/etc`, `/run`.
#[derive(Debug, Clone)]
pub struct HostExec {
    /// The host's root.
    pub root: HostRoot,
}

impl Exec for HostExec {
    fn find(&self, plugin_type: &str, dirs: &[PathBuf]) -> Result<PathBuf, ExecError> {
        exec::find_in_path_with(plugin_type, dirs, |p| self.root.resolve(p))
    }

    fn run(&self, req: &ExecRequest<'_>) -> Result<ExecOutput, ExecError> {
        exec::run_process(req, Some(self.root.dir()))
    }
}

/// Pod network namespaces opened through the host's root: `CNI_NETNS` names a host path.
#[derive(Debug, Clone)]
pub struct HostNetns {
    /// The host's root.
    pub root: HostRoot,
}

impl NetnsProbe for HostNetns {
    fn link_names(&self, netns: &Path) -> Result<Vec<String>, NetnsError> {
        KernelNetns.link_names(&self.root.resolve(netns))
    }

    fn start_link_names(&self, netns: &Path) -> LinkNames {
        KernelNetns.start_link_names(&self.root.resolve(netns))
    }

    fn default_routes(&self, netns: &Path) -> Result<Vec<(String, RouteInfo)>, NetnsError> {
        KernelNetns.default_routes(&self.root.resolve(netns))
    }

    fn edit_default_routes(
        &self,
        netns: &Path,
        edit: DefaultRouteEdit,
    ) -> Result<DefaultRouteReport, NetnsError> {
        KernelNetns.edit_default_routes(&self.root.resolve(netns), edit)
    }

    fn is_own(&self, netns: &Path) -> bool {
        KernelNetns.is_own(&self.root.resolve(netns))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A fake host root: `/run/netns/x`, `/var/run -> /run`, `/opt/cni/bin/bridge -> /usr/lib/cni/bridge`.
    fn host() -> (tempfile::TempDir, HostRoot) {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        for d in ["run/netns", "var", "usr/lib/cni", "opt/cni/bin", "etc"] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        std::fs::write(r.join("run/netns/x"), "").unwrap();
        std::fs::write(r.join("usr/lib/cni/bridge"), "").unwrap();
        symlink("/run", r.join("var/run")).unwrap();
        symlink("/usr/lib/cni/bridge", r.join("opt/cni/bin/bridge")).unwrap();
        symlink("../../../../../run", r.join("etc/up")).unwrap();
        symlink("net:[4026531840]", r.join("run/netns/magic")).unwrap();
        let root = HostRoot::new(r).unwrap();
        (t, root)
    }

    #[test]
    fn absolute_links_start_again_at_the_host_root() {
        let (t, root) = host();
        assert_eq!(
            root.resolve(Path::new("/var/run/netns/x")),
            t.path().join("run/netns/x")
        );
        assert_eq!(
            root.resolve(Path::new("/run/netns/x")),
            t.path().join("run/netns/x")
        );
        // A final absolute link is followed too: a binary linked elsewhere on the host.
        assert_eq!(
            root.resolve(Path::new("/opt/cni/bin/bridge")),
            t.path().join("usr/lib/cni/bridge")
        );
    }

    #[test]
    fn dot_dot_never_leaves_the_host_root() {
        let (t, root) = host();
        assert_eq!(
            root.resolve(Path::new("/../../etc/up/netns/x")),
            t.path().join("run/netns/x")
        );
    }

    #[test]
    fn a_final_relative_link_is_left_to_the_kernel() {
        let (t, root) = host();
        assert_eq!(
            root.resolve(Path::new("/var/run/netns/magic")),
            t.path().join("run/netns/magic")
        );
        // Missing paths resolve as far as they exist, unchanged after.
        assert_eq!(
            root.resolve(Path::new("/var/run/netns/gone")),
            t.path().join("run/netns/gone")
        );
    }

    #[test]
    fn a_link_loop_ends() {
        let (t, root) = host();
        symlink("/loop", t.path().join("loop")).unwrap();
        assert_eq!(root.resolve(Path::new("/loop/x")), t.path().join("loop/x"));
    }

    #[test]
    fn the_slash_root_is_no_host_root() {
        assert!(HostRoot::new("/").is_none());
        assert!(HostRoot::new("").is_none());
        assert!(HostRoot::new("/hostroot").is_some());
    }

    #[test]
    fn delegates_are_found_through_the_host_root_and_named_by_host_path() {
        let (_t, root) = host();
        let exec = HostExec { root };
        assert_eq!(
            exec.find("bridge", &[PathBuf::from("/opt/cni/bin")])
                .unwrap(),
            PathBuf::from("/opt/cni/bin/bridge")
        );
        assert!(matches!(
            exec.find("macvlan", &[PathBuf::from("/opt/cni/bin")]),
            Err(ExecError::NotFound { .. })
        ));
    }
}
