//! A TCP forwarder from inside a network namespace to an address in the machine's namespace.
//!
//! plexus runs in a test's "host" namespace, whose loopback cannot reach an API server listening in the
//! machine's namespace (the stand-in on its 127.0.0.1, or a real server anywhere the machine can reach).
//! A socket belongs to the namespace it was created in, so the listener is created on a thread that has
//! entered the host namespace ([`plexus_netns::run_in_netns`]) and bound to 127.0.0.1:0 there. Accepting
//! then works from any thread: the accept loop runs in the machine's namespace, and each connection gets a
//! thread (also there) that dials the upstream and copies bytes both ways. TLS passes through untouched;
//! the kubeconfig plexus gets names the forwarder's port and keeps the server's name for certificate
//! checks.
//!
//! The accept loop waits in poll(2): a connection is taken at once (no polling delay on a measured path),
//! and a stop is seen within [`STOP_LATENCY`]. The upstream can be changed at any time
//! ([`Forwarder::redirect`]): pointing it at a closed port makes the API unreachable for plexus without
//! touching the server.

use std::{
    io,
    net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream},
    os::fd::AsFd,
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread::{self, JoinHandle},
    time::Duration,
};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

/// How long the forwarder waits for the upstream to accept.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a stopped forwarder's accept loop may go on waiting before it sees the stop.
pub const STOP_LATENCY: Duration = Duration::from_millis(100);

/// A running forwarder; stops (and closes every forwarded connection) on drop.
#[derive(Debug)]
pub struct Forwarder {
    port: u16,
    upstream: Arc<Mutex<SocketAddr>>,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    accept: Option<JoinHandle<()>>,
}

impl Forwarder {
    /// Listen on 127.0.0.1:0 inside the namespace at `netns` and forward to `upstream`.
    pub fn start(netns: &Path, upstream: SocketAddr) -> io::Result<Forwarder> {
        let listener = plexus_netns::run_in_netns(netns, || {
            TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
        })
        .map_err(io::Error::other)??;
        let port = listener.local_addr()?.port();
        let upstream = Arc::new(Mutex::new(upstream));
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let accept = {
            let (upstream, stop, accepted, open) = (
                upstream.clone(),
                stop.clone(),
                accepted.clone(),
                open.clone(),
            );
            thread::Builder::new()
                .name("fwd-accept".into())
                .spawn(move || accept_loop(&listener, &upstream, &stop, &accepted, &open))?
        };
        Ok(Forwarder {
            port,
            upstream,
            stop,
            accepted,
            open,
            accept: Some(accept),
        })
    }

    /// The port it listens on (127.0.0.1 inside the namespace).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Forward new connections to `upstream` from now on.
    pub fn redirect(&self, upstream: SocketAddr) {
        *lock(&self.upstream) = upstream;
    }

    /// Close every connection forwarded so far. With [`Forwarder::redirect`] to a closed port, the API is
    /// down also for a client that keeps its connections open (a daemon's watches and pooled requests).
    pub fn sever(&self) {
        for s in lock(&self.open).drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Where new connections go.
    pub fn upstream(&self) -> SocketAddr {
        *lock(&self.upstream)
    }

    /// How many connections were accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// A lock whose holder cannot leave the data half-changed (plain assignments), so poisoning is ignored.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn accept_loop(
    listener: &TcpListener,
    upstream: &Arc<Mutex<SocketAddr>>,
    stop: &AtomicBool,
    accepted: &AtomicUsize,
    open: &Arc<Mutex<Vec<TcpStream>>>,
) {
    let timeout = PollTimeout::try_from(STOP_LATENCY).unwrap_or(PollTimeout::MAX);
    while !stop.load(Ordering::SeqCst) {
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => {
                thread::sleep(STOP_LATENCY);
                continue;
            }
        }
        let Ok((client, _)) = listener.accept() else {
            continue;
        };
        accepted.fetch_add(1, Ordering::SeqCst);
        let target = *lock(upstream);
        let open = open.clone();
        let _ = thread::Builder::new()
            .name("fwd-connect".into())
            .spawn(move || connect(client, target, &open));
    }
}

/// Dial `target` for `client` and copy both ways; an unreachable upstream closes the client's connection.
fn connect(client: TcpStream, target: SocketAddr, open: &Mutex<Vec<TcpStream>>) {
    let Ok(server) = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    if let (Ok(c), Ok(s)) = (client.try_clone(), server.try_clone()) {
        let mut list = lock(open);
        list.retain(|s| s.peer_addr().is_ok());
        list.extend([c, s]);
    }
    pipe(&client, &server);
    pipe(&server, &client);
}

/// Copy `from` → `to` on a thread; at EOF (or error) half-close `to` so the other side sees the end.
fn pipe(from: &TcpStream, to: &TcpStream) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    let _ = thread::Builder::new()
        .name("fwd-pipe".into())
        .spawn(move || {
            let _ = io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Write);
            let _ = from.shutdown(Shutdown::Read);
        });
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        // After the accept loop ended: a connection it took just before the stop is in the list by now,
        // unless its upstream has not answered yet (then it ends within CONNECT_TIMEOUT on its own).
        for s in lock(&self.open).drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// A local port with nothing listening on it (bound and released at once): connections to it are refused.
pub fn closed_port() -> SocketAddr {
    let l = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    let addr = l.local_addr().expect("local addr");
    drop(l);
    addr
}
