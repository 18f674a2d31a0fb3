//! Running work on a fresh OS thread that has entered a network namespace.

use std::any::Any;
use std::fs::File;
use std::path::Path;

use nix::sched::{CloneFlags, setns};

use crate::NetnsError;

/// Run `f` on a fresh OS thread that has entered the network namespace at
/// `netns` (a path like `/var/run/netns/x` or `/proc/<pid>/ns/net`). The thread
/// exits afterwards.
///
/// setns(2) with `CLONE_NEWNET` changes only the calling thread, so the work
/// never runs on a pooled or async worker that could carry the namespace into
/// unrelated work, and the caller's own thread never changes namespace. The
/// call blocks until `f` has returned; async callers should wrap it in their
/// runtime's blocking facility. Threads that `f` spawns itself inherit the
/// namespace.
///
/// Errors: [`NetnsError::Open`] when the path cannot be opened,
/// [`NetnsError::Enter`] when it is not a network namespace (or entering is
/// not permitted), [`NetnsError::Thread`] when no thread could be spawned or
/// `f` panicked.
pub fn run_in_netns<F, T>(netns: &Path, f: F) -> Result<T, NetnsError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    spawn_in_netns(netns, f)?.join()
}

/// Work started by [`spawn_in_netns`] on its own thread; [`InNetns::join`] waits for its answer. Dropped
/// without a join, the thread finishes the work alone and exits.
#[must_use = "the work's answer comes from join"]
pub struct InNetns<T> {
    handle: std::thread::JoinHandle<Result<T, nix::Error>>,
    path: std::path::PathBuf,
}

impl<T> InNetns<T> {
    /// Wait for the work: its value, or the errors of [`run_in_netns`].
    pub fn join(self) -> Result<T, NetnsError> {
        match self.handle.join() {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(source)) => Err(NetnsError::Enter {
                path: self.path,
                source,
            }),
            Err(payload) => Err(NetnsError::Thread(format!(
                "work in network namespace {} panicked: {}",
                self.path.display(),
                panic_message(payload.as_ref())
            ))),
        }
    }
}

impl<T> InNetns<Result<T, NetnsError>> {
    /// [`InNetns::join`] for work that can fail itself: its error is returned as is.
    pub fn try_join(self) -> Result<T, NetnsError> {
        self.join()?
    }
}

/// [`run_in_netns`] without the wait: the thread is started (the namespace opened first, on the caller's
/// thread), and the caller goes on with other work until it [`InNetns::join`]s it.
pub fn spawn_in_netns<F, T>(netns: &Path, f: F) -> Result<InNetns<T>, NetnsError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    // Opened on the caller's thread: a missing path fails before any thread
    // exists, and the descriptor (O_CLOEXEC, as std always opens) moves into
    // the worker.
    let file = File::open(netns).map_err(|source| NetnsError::Open {
        path: netns.to_path_buf(),
        source,
    })?;

    let handle = std::thread::Builder::new()
        .name("plexus-netns".into())
        .spawn(move || {
            setns(&file, CloneFlags::CLONE_NEWNET)?;
            drop(file);
            Ok(f())
        })
        .map_err(|e| {
            NetnsError::Thread(format!(
                "cannot spawn a thread for network namespace {}: {e}",
                netns.display()
            ))
        })?;

    Ok(InNetns {
        handle,
        path: netns.to_path_buf(),
    })
}

/// Like [`run_in_netns`] for work that can fail itself: its error is returned
/// as is.
pub fn try_run_in_netns<F, T>(netns: &Path, f: F) -> Result<T, NetnsError>
where
    F: FnOnce() -> Result<T, NetnsError> + Send + 'static,
    T: Send + 'static,
{
    run_in_netns(netns, f)?
}

/// The text of a panic payload, for the two payload types `panic!` produces.
pub fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "non-string panic payload"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_message_reads_both_payload_kinds() {
        let a: Box<dyn Any + Send> = Box::new("static text");
        assert_eq!(panic_message(a.as_ref()), "static text");
        let b: Box<dyn Any + Send> = Box::new(String::from("formatted 7"));
        assert_eq!(panic_message(b.as_ref()), "formatted 7");
        let c: Box<dyn Any + Send> = Box::new(7_u32);
        assert_eq!(panic_message(c.as_ref()), "non-string panic payload");
    }
}
