//! Tests against real network namespaces (need root and iproute2) plus the error paths that need neither.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use plexus_netns::{
    DefaultRouteEdit, Errno, IpFamily, NetnsError, addresses, default_routes as listed_defaults,
    edit_default_routes, link_exists, links, routes, run_in_netns, spawn_in_netns, start_links,
    try_run_in_netns,
};

/// A uniquely named namespace under /var/run/netns, deleted on drop (also on panic).
struct TestNetns {
    name: String,
    path: PathBuf,
}

impl TestNetns {
    fn new() -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("plexus-netns-test-{}-{n}", std::process::id());
        ip(&["netns", "add", &name]);
        TestNetns {
            path: PathBuf::from(format!("/var/run/netns/{name}")),
            name,
        }
    }

    /// Run `ip -n <name> ARGS...`, panicking on failure.
    fn ip(&self, args: &[&str]) {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        ip(&full);
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The inode of the network namespace of the calling thread.
fn thread_netns_inode() -> u64 {
    std::fs::metadata("/proc/thread-self/ns/net")
        .expect("stat /proc/thread-self/ns/net")
        .ino()
}

/// A namespace with a veth pair a0/b0 inside, TEST-NET addresses on a0 and
/// default routes via gateways on a0's subnets.
fn configured_netns() -> TestNetns {
    let ns = TestNetns::new();
    ns.ip(&["link", "add", "a0", "type", "veth", "peer", "name", "b0"]);
    ns.ip(&["addr", "add", "192.0.2.2/24", "dev", "a0"]);
    ns.ip(&["addr", "add", "2001:db8:99::2/64", "dev", "a0", "nodad"]);
    ns.ip(&["link", "set", "lo", "up"]);
    ns.ip(&["link", "set", "a0", "up"]);
    ns.ip(&["link", "set", "b0", "up"]);
    ns.ip(&["route", "add", "default", "via", "192.0.2.1", "dev", "a0"]);
    ns.ip(&[
        "-6",
        "route",
        "add",
        "default",
        "via",
        "2001:db8:99::1",
        "dev",
        "a0",
    ]);
    ns
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn queries_see_the_namespace_contents() {
    let before = thread_netns_inode();
    let ns = configured_netns();

    assert!(link_exists(&ns.path, "a0").unwrap());
    assert!(link_exists(&ns.path, "b0").unwrap());
    assert!(link_exists(&ns.path, "lo").unwrap());
    assert!(!link_exists(&ns.path, "nope").unwrap());
    assert!(!link_exists(&ns.path, "").unwrap());
    assert!(!link_exists(&ns.path, "much-too-long-for-ifnamsiz").unwrap());

    let all = links(&ns.path).unwrap();
    let names: Vec<&str> = all.iter().map(|l| l.name.as_str()).collect();
    assert!(names.contains(&"lo"), "{names:?}");
    let a0 = all.iter().find(|l| l.name == "a0").expect("a0 listed");
    assert!(a0.up);
    assert_eq!(a0.kind.as_deref(), Some("veth"));
    let mac = a0.mac.as_deref().expect("veth has a MAC");
    assert_eq!(mac.len(), 17, "{mac}");
    assert!(a0.index > 1);
    let lo = all.iter().find(|l| l.name == "lo").unwrap();
    assert_eq!(lo.index, 1);
    assert!(lo.up);
    assert!(names.contains(&"b0"), "{names:?}");

    let addrs = addresses(&ns.path).unwrap();
    let has = |ifname: &str, cidr: &str| {
        addrs
            .iter()
            .any(|a| a.ifname == ifname && a.address.to_string() == cidr && a.index > 0)
    };
    assert!(has("a0", "192.0.2.2/24"), "{addrs:?}");
    assert!(has("a0", "2001:db8:99::2/64"), "{addrs:?}");
    assert!(has("lo", "127.0.0.1/8"), "{addrs:?}");
    assert!(
        addrs
            .iter()
            .all(|a| a.ifname != "b0" || a.address.addr().is_ipv6()),
        "b0 has no IPv4 address: {addrs:?}"
    );

    let rts = routes(&ns.path).unwrap();
    let v4_default = rts
        .iter()
        .find(|r| r.destination.to_string() == "0.0.0.0/0")
        .unwrap_or_else(|| panic!("no IPv4 default route in {rts:?}"));
    assert_eq!(v4_default.family, IpFamily::V4);
    assert_eq!(v4_default.gateway, Some("192.0.2.1".parse().unwrap()));
    assert_eq!(v4_default.oif, Some(a0.index));
    assert!(v4_default.is_default());
    let v6_default = rts
        .iter()
        .find(|r| r.destination.to_string() == "::/0")
        .unwrap_or_else(|| panic!("no IPv6 default route in {rts:?}"));
    assert_eq!(v6_default.family, IpFamily::V6);
    assert_eq!(v6_default.gateway, Some("2001:db8:99::1".parse().unwrap()));
    assert_eq!(v6_default.oif, Some(a0.index));
    assert!(
        rts.iter()
            .any(|r| r.destination.to_string() == "192.0.2.0/24" && r.gateway.is_none()),
        "{rts:?}"
    );
    assert!(rts.iter().all(|r| r.table == plexus_netns::MAIN_TABLE));
    // Local-table routes (127.0.0.0/8 local, the host's own addresses) are not main-table routes.
    assert!(
        !rts.iter()
            .any(|r| r.destination.to_string() == "127.0.0.0/8"),
        "{rts:?}"
    );

    assert_eq!(
        thread_netns_inode(),
        before,
        "caller's thread changed namespace"
    );
}

/// The default routes of a namespace as (family, gateway, link name), sorted.
fn default_routes(ns: &TestNetns) -> Vec<(IpFamily, String, String)> {
    let names = links(&ns.path).unwrap();
    let name = |i: Option<u32>| {
        names
            .iter()
            .find(|l| Some(l.index) == i)
            .map(|l| l.name.clone())
            .unwrap_or_default()
    };
    let mut v: Vec<(IpFamily, String, String)> = routes(&ns.path)
        .unwrap()
        .into_iter()
        .filter(|r| r.is_default())
        .map(|r| {
            (
                r.family,
                r.gateway.map(|g| g.to_string()).unwrap_or_default(),
                name(r.oif),
            )
        })
        .collect();
    v.sort_by_key(|(f, g, l)| (*f == IpFamily::V6, g.clone(), l.clone()));
    v
}

/// docs/multus-compat.md, "Default routes": default routes are found by prefix length, per family.
#[test]
#[ignore = "needs root: creates network namespaces"]
fn default_routes_move_per_family() {
    let ns = configured_netns();
    ns.ip(&["link", "add", "c0", "type", "veth", "peer", "name", "d0"]);
    ns.ip(&["addr", "add", "198.51.100.2/24", "dev", "c0"]);
    ns.ip(&["addr", "add", "2001:db8:98::2/64", "dev", "c0", "nodad"]);
    ns.ip(&["link", "set", "c0", "up"]);
    ns.ip(&["link", "set", "d0", "up"]);
    let v4 = |gw: &str, l: &str| (IpFamily::V4, gw.to_string(), l.to_string());
    let v6 = |gw: &str, l: &str| (IpFamily::V6, gw.to_string(), l.to_string());
    assert_eq!(
        default_routes(&ns),
        [v4("192.0.2.1", "a0"), v6("2001:db8:99::1", "a0")]
    );

    // Only IPv4 moves: a0 keeps its IPv6 default route.
    let report = edit_default_routes(
        &ns.path,
        DefaultRouteEdit {
            remove: vec![("a0".into(), IpFamily::V4), ("c0".into(), IpFamily::V4)],
            add: vec![("c0".into(), "198.51.100.1".parse().unwrap())],
        },
    )
    .unwrap();
    assert_eq!(report.removed.len(), 1, "{report:?}");
    assert_eq!(report.removed[0].0, "a0");
    assert_eq!(
        default_routes(&ns),
        [v4("198.51.100.1", "c0"), v6("2001:db8:99::1", "a0")]
    );

    // Then IPv6.
    edit_default_routes(
        &ns.path,
        DefaultRouteEdit {
            remove: vec![("a0".into(), IpFamily::V6)],
            add: vec![("c0".into(), "2001:db8:98::1".parse().unwrap())],
        },
    )
    .unwrap();
    assert_eq!(
        default_routes(&ns),
        [v4("198.51.100.1", "c0"), v6("2001:db8:98::1", "c0")]
    );
    let mut listed: Vec<(String, String)> = listed_defaults(&ns.path)
        .unwrap()
        .into_iter()
        .map(|(l, r)| (l, r.gateway.unwrap().to_string()))
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        [
            ("c0".to_string(), "198.51.100.1".to_string()),
            ("c0".to_string(), "2001:db8:98::1".to_string())
        ]
    );

    // A gateway no subnet reaches, an unknown link, and a second equal route are the kernel's errors.
    let err = |edit: DefaultRouteEdit| edit_default_routes(&ns.path, edit).unwrap_err();
    let add = |l: &str, gw: &str| DefaultRouteEdit {
        remove: vec![],
        add: vec![(l.into(), gw.parse().unwrap())],
    };
    let e = err(add("a0", "203.0.113.1"));
    assert_eq!(e.errno(), Some(Errno::ENETUNREACH), "{e}");
    let e = err(add("nope0", "192.0.2.1"));
    assert_eq!(e.errno(), Some(Errno::ENODEV), "{e}");
    let e = err(add("c0", "198.51.100.1"));
    assert_eq!(e.errno(), Some(Errno::EEXIST), "{e}");
    assert!(e.to_string().contains(&ns.name), "{e}");
    // Nothing to remove (or no such link) is not an error.
    edit_default_routes(
        &ns.path,
        DefaultRouteEdit {
            remove: vec![
                ("a0".into(), IpFamily::V4),
                ("a0".into(), IpFamily::V6),
                ("gone0".into(), IpFamily::V4),
            ],
            add: vec![],
        },
    )
    .unwrap();
    assert_eq!(default_routes(&ns).len(), 2);
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn closure_runs_inside_and_caller_stays_outside() {
    let before = thread_netns_inode();
    let ns = TestNetns::new();
    let target = std::fs::metadata(&ns.path).unwrap().ino();
    assert_ne!(target, before);

    let inside = run_in_netns(&ns.path, thread_netns_inode).unwrap();
    assert_eq!(inside, target);
    assert_eq!(thread_netns_inode(), before);

    // Each call gets a fresh thread: a second call in the host's namespace
    // (by /proc/<pid>/ns/net of this process) is not polluted by the first.
    let host = PathBuf::from(format!("/proc/{}/ns/net", std::process::id()));
    let host_inode = std::fs::metadata(&host).unwrap().ino();
    assert_eq!(run_in_netns(&host, thread_netns_inode).unwrap(), host_inode);

    let name = run_in_netns(&ns.path, || {
        std::thread::current().name().map(str::to_owned)
    })
    .unwrap();
    assert_eq!(name.as_deref(), Some("plexus-netns"));

    let err: Result<(), _> =
        try_run_in_netns(&ns.path, || Err(NetnsError::Thread("inner failure".into())));
    assert!(matches!(err, Err(NetnsError::Thread(m)) if m == "inner failure"));
    assert_eq!(thread_netns_inode(), before);
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn started_work_runs_inside_while_the_caller_goes_on() {
    let before = thread_netns_inode();
    let ns = configured_netns();
    let target = std::fs::metadata(&ns.path).unwrap().ino();

    // The work waits for the caller: it can only finish once the caller, still in its own namespace,
    // has gone on past the spawn.
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let started = spawn_in_netns(&ns.path, move || {
        wait.recv().unwrap();
        thread_netns_inode()
    })
    .unwrap();
    assert_eq!(thread_netns_inode(), before);
    go.send(()).unwrap();
    assert_eq!(started.join().unwrap(), target);

    // The started link dump answers as `links` does.
    let pending = start_links(&ns.path).unwrap();
    let mut now: Vec<String> = links(&ns.path)
        .unwrap()
        .into_iter()
        .map(|l| l.name)
        .collect();
    let mut later: Vec<String> = pending
        .try_join()
        .unwrap()
        .into_iter()
        .map(|l| l.name)
        .collect();
    now.sort();
    later.sort();
    assert_eq!(later, now);
    assert!(later.contains(&"a0".to_string()), "{later:?}");

    // Errors: a missing namespace fails at the start, a panic at the join.
    let gone = ns.path.with_file_name("plexus-no-such-netns");
    assert!(matches!(start_links(&gone), Err(NetnsError::Open { .. })));
    let err = spawn_in_netns(&ns.path, || -> u8 { panic!("late {}", 7) })
        .unwrap()
        .join()
        .unwrap_err();
    assert!(
        matches!(&err, NetnsError::Thread(m) if m.contains("late 7")),
        "{err:?}"
    );
    assert_eq!(thread_netns_inode(), before);
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn panic_in_closure_is_a_thread_error() {
    let ns = TestNetns::new();
    let err = run_in_netns(&ns.path, || -> u32 { panic!("boom {}", 42) }).unwrap_err();
    match &err {
        NetnsError::Thread(msg) => {
            assert!(msg.contains("boom 42"), "{msg}");
            assert!(msg.contains(&ns.name), "{msg}");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn deleted_namespace_is_an_open_error() {
    let ns = TestNetns::new();
    let path = ns.path.clone();
    drop(ns);
    let err = links(&path).unwrap_err();
    assert!(matches!(err, NetnsError::Open { .. }), "{err:?}");
}

#[test]
fn nonexistent_path_is_an_open_error_naming_it() {
    let path = Path::new("/var/run/netns/plexus-netns-test-does-not-exist");
    for err in [
        link_exists(path, "lo").unwrap_err(),
        links(path).unwrap_err(),
        addresses(path).unwrap_err(),
        routes(path).unwrap_err(),
        run_in_netns(path, || ()).unwrap_err(),
    ] {
        match &err {
            NetnsError::Open { path: p, source } => {
                assert_eq!(p, path);
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            }
            other => panic!("unexpected {other:?}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains("/var/run/netns/plexus-netns-test-does-not-exist"),
            "{msg}"
        );
        assert!(msg.starts_with("cannot open network namespace"), "{msg}");
    }
}

#[test]
fn plain_file_is_an_enter_error_naming_it() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let err = run_in_netns(file.path(), || ()).unwrap_err();
    match &err {
        NetnsError::Enter { path, source } => {
            assert_eq!(path, file.path());
            assert_eq!(*source, plexus_netns::Errno::EINVAL);
        }
        other => panic!("unexpected {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.starts_with("cannot enter network namespace "), "{msg}");
    assert!(msg.contains(&file.path().display().to_string()), "{msg}");
}

#[test]
fn other_namespace_kind_is_an_enter_error() {
    // A UTS namespace file is an nsfs file, just not a network namespace.
    let err = links(Path::new("/proc/self/ns/uts")).unwrap_err();
    assert!(matches!(err, NetnsError::Enter { .. }), "{err:?}");
    assert!(err.to_string().contains("/proc/self/ns/uts"));
}
