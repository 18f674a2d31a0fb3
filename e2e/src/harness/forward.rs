//! A TCP forwarder from inside a network namespace to an address in the machine's namespace.
//!
//! plexus runs in the test's "host" namespace, whose loopback cannot reach the API server (the stand-in
//! listens on 127.0.0.1 of the machine's namespace; a real server may be anywhere the machine can reach).
//! A socket belongs to the namespace it was created in, so the listener is created on a thread that has
//! entered the host namespace ([`plexus_netns::run_in_netns`]) and bound to 127.0.0.1:0 there. Accepting
//! then works from any thread: the accept loop runs in the machine's namespace and hands each connection
//! over a channel to a connector thread (also in the machine's namespace), which dials the upstream and
//! copies bytes both ways. TLS passes through untouched; the kubeconfig plexus gets names the forwarder's
//! port and keeps the server's name for certificate checks (`tls-server-name`).
//!
//! The upstream can be changed at any time ([`Forwarder::redirect`]): pointing it at a closed port makes
//! the API unreachable for plexus without touching the server.

use std::{
    io,
    net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream},
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
        mpsc,
    },
    thread::{self, JoinHandle},
    time::Duration,
};

/// How long the connector waits for the upstream to accept.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A running forwarder; stops (and closes every forwarded connection) on drop.
#[derive(Debug)]
pub struct Forwarder {
    port: u16,
    upstream: Arc<Mutex<SocketAddr>>,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Forwarder {
    /// Listen on 127.0.0.1:0 inside the namespace at `netns` and forward to `upstream`.
    pub fn start(netns: &Path, upstream: SocketAddr) -> io::Result<Forwarder> {
        let listener = plexus_netns::run_in_netns(netns, || {
            TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
        })
        .map_err(io::Error::other)??;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let upstream = Arc::new(Mutex::new(upstream));
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (tx, rx) = mpsc::channel::<TcpStream>();

        let accept = {
            let (stop, accepted) = (stop.clone(), accepted.clone());
            thread::Builder::new()
                .name("e2e-fwd-accept".into())
                .spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        match listener.accept() {
                            Ok((s, _)) => {
                                accepted.fetch_add(1, Ordering::SeqCst);
                                if tx.send(s).is_err() {
                                    break;
                                }
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                thread::sleep(Duration::from_millis(5));
                            }
                            Err(_) => thread::sleep(Duration::from_millis(20)),
                        }
                    }
                })?
        };
        let connect = {
            let (upstream, open) = (upstream.clone(), open.clone());
            thread::Builder::new()
                .name("e2e-fwd-connect".into())
                .spawn(move || {
                    for client in rx {
                        let target = *upstream.lock().unwrap_or_else(|e| e.into_inner());
                        // An unreachable upstream: the client sees its connection closed.
                        let Ok(server) = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT)
                        else {
                            let _ = client.shutdown(Shutdown::Both);
                            continue;
                        };
                        let _ = client.set_nonblocking(false);
                        let _ = client.set_nodelay(true);
                        let _ = server.set_nodelay(true);
                        if let (Ok(c), Ok(s)) = (client.try_clone(), server.try_clone()) {
                            let mut list = open.lock().unwrap_or_else(|e| e.into_inner());
                            list.retain(|s| s.peer_addr().is_ok());
                            list.extend([c, s]);
                        }
                        pipe(&client, &server);
                        pipe(&server, &client);
                    }
                })?
        };
        Ok(Forwarder {
            port,
            upstream,
            stop,
            accepted,
            open,
            threads: vec![accept, connect],
        })
    }

    /// The port it listens on (127.0.0.1 inside the namespace).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Forward new connections to `upstream` from now on.
    pub fn redirect(&self, upstream: SocketAddr) {
        *self.upstream.lock().unwrap_or_else(|e| e.into_inner()) = upstream;
    }

    /// Where new connections go.
    pub fn upstream(&self) -> SocketAddr {
        *self.upstream.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many connections were accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Copy `from` → `to` on a thread; at EOF (or error) half-close `to` so the other side sees the end.
fn pipe(from: &TcpStream, to: &TcpStream) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    let _ = thread::Builder::new()
        .name("e2e-fwd-pipe".into())
        .spawn(move || {
            let _ = io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Write);
            let _ = from.shutdown(Shutdown::Read);
        });
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for s in self
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            let _ = s.shutdown(Shutdown::Both);
        }
        // The accept loop polls `stop`; the connector ends when the accept loop drops the channel.
        for t in self.threads.drain(..) {
            let _ = t.join();
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
