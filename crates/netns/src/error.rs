//! The error type of every netns operation.

use std::io;
use std::path::PathBuf;

use nix::errno::Errno;

/// Why work in a network namespace failed.
///
/// Every message is lower-case and, where a namespace is involved, names its path.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The namespace file could not be opened (typically: it does not exist).
    #[error("cannot open network namespace {}: {source}", path.display())]
    Open {
        /// The namespace path as given.
        path: PathBuf,
        /// The error from open(2).
        #[source]
        source: io::Error,
    },
    /// setns(2) refused the file: it is not a network namespace (EINVAL), or
    /// the process lacks CAP_SYS_ADMIN (EPERM).
    #[error("cannot enter network namespace {}: {source}", path.display())]
    Enter {
        /// The namespace path as given.
        path: PathBuf,
        /// The errno from setns(2).
        #[source]
        source: Errno,
    },
    /// A netlink exchange failed locally: the socket could not be used, the
    /// reply could not be decoded, or it never came. `detail` names the
    /// namespace path.
    #[error("netlink {op} failed: {detail}")]
    Netlink {
        /// The operation, e.g. "link dump".
        op: &'static str,
        /// What went wrong, naming the namespace path.
        detail: String,
    },
    /// The kernel answered a netlink request with an error (NLMSG_ERROR or an
    /// error in NLMSG_DONE). `errno` lets callers tell e.g. EEXIST or ESRCH
    /// apart.
    #[error("netlink {op} in network namespace {}: kernel answered {errno}", path.display())]
    Kernel {
        /// The operation, e.g. "link lookup".
        op: &'static str,
        /// The namespace path as given.
        path: PathBuf,
        /// The (positive) errno the kernel reported.
        errno: Errno,
    },
    /// The worker thread could not be spawned, or the work panicked.
    #[error("network namespace worker thread: {0}")]
    Thread(String),
}

impl NetnsError {
    /// The errno behind this error, when there is one (setns or a kernel
    /// netlink answer; for open(2) the raw OS error).
    pub fn errno(&self) -> Option<Errno> {
        match self {
            NetnsError::Open { source, .. } => source.raw_os_error().map(Errno::from_raw),
            NetnsError::Enter { source, .. } => Some(*source),
            NetnsError::Kernel { errno, .. } => Some(*errno),
            NetnsError::Netlink { .. } | NetnsError::Thread(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_path_and_are_lower_case() {
        let open = NetnsError::Open {
            path: PathBuf::from("/var/run/netns/x"),
            source: io::Error::from_raw_os_error(libc_enoent()),
        };
        let msg = open.to_string();
        assert!(
            msg.starts_with("cannot open network namespace /var/run/netns/x: "),
            "{msg}"
        );
        assert_eq!(open.errno(), Some(Errno::ENOENT));

        let enter = NetnsError::Enter {
            path: PathBuf::from("/proc/1/ns/net"),
            source: Errno::EINVAL,
        };
        let msg = enter.to_string();
        assert!(
            msg.starts_with("cannot enter network namespace /proc/1/ns/net: "),
            "{msg}"
        );
        assert!(msg.contains("EINVAL"), "{msg}");

        let kernel = NetnsError::Kernel {
            op: "route add",
            path: PathBuf::from("/var/run/netns/pod"),
            errno: Errno::EEXIST,
        };
        let msg = kernel.to_string();
        assert!(
            msg.starts_with(
                "netlink route add in network namespace /var/run/netns/pod: kernel answered EEXIST"
            ),
            "{msg}"
        );
        assert_eq!(kernel.errno(), Some(Errno::EEXIST));

        let nl = NetnsError::Netlink {
            op: "link dump",
            detail: "in network namespace /x: no reply".into(),
        };
        assert_eq!(
            nl.to_string(),
            "netlink link dump failed: in network namespace /x: no reply"
        );
        assert_eq!(nl.errno(), None);

        let t = NetnsError::Thread("closure panicked: boom".into());
        assert_eq!(
            t.to_string(),
            "network namespace worker thread: closure panicked: boom"
        );
    }

    fn libc_enoent() -> i32 {
        Errno::ENOENT as i32
    }
}
