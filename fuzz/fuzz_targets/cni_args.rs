//! `CNI_ARGS` (`crates/cni/src/args.rs`, CNI-49, CNI-51) and the whole `CNI_*` environment it arrives
//! in (`src/pure/request.rs`, CNI-7, CNI-8, CNI-53).
//!
//! Input: newline-separated `CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`, `CNI_ARGS`,
//! `CNI_PATH` values (a missing line is an unset variable); the whole input is also tried as one
//! `CNI_ARGS` value.
//!
//! Invariants: no panic; parsed args render and parse back to the same pairs; `get` returns the
//! last value of a key, `set` leaves one, `remove` none; an accepted environment has a valid
//! container ID and interface name (CNI-53), no `CNI_*` protocol variable in the passthrough, and a
//! pod only when both name and namespace are given; a refusal names the variable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plexus::pure::request::{CNI_VARS, CniEnv, Command};
use plexus_cni::{CniArgs, validate};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check_args(text);
    check_env(text);
});

fn check_args(s: &str) {
    let Ok(args) = CniArgs::parse(s) else {
        return;
    };
    for (k, v) in args.iter() {
        assert!(!k.is_empty() && !k.contains(['=', ';']) && !v.contains(';'));
    }
    let rendered = args.to_env_string();
    let again = CniArgs::parse(&rendered).expect("rendered args parse");
    assert_eq!(again, args, "rendered as {rendered:?}");
    assert_eq!(again.to_env_string(), rendered);
    let Some((key, last)) = args.pairs().first().map(|(k, _)| {
        let last = args
            .pairs()
            .iter()
            .rev()
            .find(|(x, _)| x == k)
            .map(|(_, v)| v.clone());
        (k.clone(), last)
    }) else {
        assert!(args.is_empty() && rendered.is_empty());
        return;
    };
    assert_eq!(args.get(&key), last.as_deref());
    let mut set = args.clone();
    set.set(key.clone(), "x");
    assert_eq!(set.get(&key), Some("x"));
    assert_eq!(set.iter().filter(|(k, _)| *k == key).count(), 1);
    let mut removed = args.clone();
    removed.remove(&key);
    assert_eq!(removed.get(&key), None);
    assert_eq!(
        removed.len() + args.iter().filter(|(k, _)| *k == key).count(),
        args.len()
    );
}

fn check_env(s: &str) {
    let mut vars: Vec<(String, String)> = CNI_VARS
        .iter()
        .zip(s.split('\n'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    vars.push(("PATH".into(), "/usr/bin".into()));
    match CniEnv::from_vars(vars) {
        Ok(None) => {}
        Ok(Some(env)) => {
            if let Some(id) = &env.container_id {
                validate::container_id(id).expect("accepted container id");
            }
            if let Some(ifname) = &env.ifname {
                validate::interface_name(ifname).expect("accepted ifname");
                assert!(ifname.len() <= 15);
            }
            if matches!(env.command, Command::Add | Command::Check) {
                assert!(env.netns.is_some() && env.container_id.is_some() && env.ifname.is_some());
            }
            for var in CNI_VARS {
                assert!(!env.passthrough.contains_key(var));
            }
            assert!(env.path.iter().all(|p| !p.as_os_str().is_empty()));
            if let Some(pod) = env.pod() {
                assert!(!pod.namespace.is_empty() && !pod.name.is_empty());
            }
            assert!(!env.who().is_empty());
            let _ = env.ifname();
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains("CNI_"), "{msg}");
        }
    }
}
