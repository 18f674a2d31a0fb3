//! `plexus install`, the DaemonSet's entrypoint, run as the built binary in a temporary host root (no root
//! needed; see `tests/install_support/mod.rs`), and the migration from Go Multus (issue 4 part 4, with
//! `tests/common/mod.rs` running plexus as the runtime does). References: docs/multus-compat.md,
//! "Installation" and "Daemon mode"; NPWG-58..60 and CNI-58 (docs/spec-ids.md).

mod common;
mod install_support;

use std::{fs, time::Duration};

use clap::CommandFactory;
use common::{Harness, merge, recorder_list};
use install_support::{Node, SERVER, mode, read_json, stamp, wait_until};
use nix::sys::signal::Signal;
use serde_json::{Value, json};

/// The CNI versions a primary may have, oldest first.
const VERSIONS: [&str; 7] = [
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];

fn conflist_from(v: &str) -> bool {
    VERSIONS.iter().position(|x| *x == v) >= VERSIONS.iter().position(|x| *x == "1.0.0")
}

/// A flannel-like conf.
fn primary_conf(v: &str) -> Value {
    json!({"cniVersion": v, "name": "cbr0", "type": "flannel",
           "delegate": {"hairpinMode": true}, "capabilities": {"portMappings": true, "ips": false}})
}

/// A calico-like conflist whose plugins declare different capabilities.
fn primary_list(v: &str) -> Value {
    json!({"cniVersion": v, "name": "k8s-pod-network", "plugins": [
        {"type": "calico", "ipam": {"type": "calico-ipam"}},
        {"type": "bandwidth", "capabilities": {"bandwidth": true}},
        {"type": "portmap", "snat": true, "capabilities": {"portMappings": true}},
        {"type": "tuning", "capabilities": {"mac": true, "ips": false}}
    ]})
}

/// The plexus plugin of a generated config (the config itself, or `plugins[0]` of a conflist).
fn plugin(conf: &Value) -> &Value {
    match conf.get("plugins") {
        Some(p) => &p[0],
        None => conf,
    }
}

/// What the runtime hands plexus for a generated file: a conf as is; a conflist's plugin with the list's
/// `name` and `cniVersion` injected (CNI-29).
fn as_runtime_gives_it(conf: &Value) -> Value {
    match conf.get("plugins") {
        Some(p) => {
            let mut c = p[0].clone();
            merge(
                &mut c,
                json!({"name": conf["name"], "cniVersion": conf["cniVersion"]}),
            );
            c
        }
        None => conf.clone(),
    }
}

fn assert_ok(status: std::process::ExitStatus, log: &str) {
    assert!(status.success(), "plexus install failed ({status}):\n{log}");
}

// ---------------------------------------------------------------------------------------------------
// Config generation
// ---------------------------------------------------------------------------------------------------

#[test]
fn generates_the_config_from_conf_and_conflist_primaries_of_every_version() {
    for v in VERSIONS {
        for list in [false, true] {
            let ctx = format!("cniVersion {v}, {}", if list { "conflist" } else { "conf" });
            let n = Node::new();
            let (file, primary) = if list {
                ("10-calico.conflist", primary_list(v))
            } else {
                ("10-flannel.conf", primary_conf(v))
            };
            n.write_conf(file, &primary);
            // A stale output of the other extension, from a primary of another version.
            let (ours, stale) = if conflist_from(v) {
                ("00-plexus.conflist", "00-plexus.conf")
            } else {
                ("00-plexus.conf", "00-plexus.conflist")
            };
            n.write_raw(
                stale,
                br#"{"cniVersion":"0.3.1","name":"old","type":"plexus","clusterNetwork":"/x"}"#,
            );

            let (status, log) = n.run_once(&[]);
            assert_ok(status, &log);
            assert!(
                !n.conf(stale).exists(),
                "{ctx}: the stale {stale} is removed"
            );
            let conf = read_json(&n.conf(ours));
            assert_eq!(conf["cniVersion"], v, "{ctx}");
            assert_eq!(conf["name"], "plexus-cni-network", "{ctx}");
            let p = plugin(&conf);
            if conflist_from(v) {
                assert_eq!(
                    conf["plugins"].as_array().unwrap().len(),
                    1,
                    "{ctx}: one plugin"
                );
                assert!(conf.get("type").is_none(), "{ctx}");
            }
            assert_eq!(p["type"], "plexus", "{ctx}");
            assert_eq!(
                p["kubeconfig"], "/etc/cni/net.d/plexus.d/plexus.kubeconfig",
                "{ctx}: the host path"
            );
            assert_eq!(
                p["clusterNetwork"],
                format!("/etc/cni/net.d/{file}"),
                "{ctx}: the host path"
            );
            assert_eq!(p["confDir"], "/etc/cni/multus/net.d", "{ctx}");
            assert!(
                p.get("cniConf").is_none(),
                "{ctx}: confDir, not cniConf (docs/multus-compat.md)"
            );
            let caps = if list {
                json!({"bandwidth": true, "mac": true, "portMappings": true})
            } else {
                json!({"portMappings": true})
            };
            assert_eq!(
                p["capabilities"], caps,
                "{ctx}: the union of the true capabilities (CNI-58)"
            );
            assert_eq!(mode(&n.conf(ours)), 0o644, "{ctx}");
            // plexus accepts what the runtime will hand it.
            let given = serde_json::to_vec(&as_runtime_gives_it(&conf)).unwrap();
            let cfg = plexus::pure::config::Config::from_bytes(&given)
                .unwrap_or_else(|e| panic!("{ctx}: plexus rejects the generated config: {e}"));
            assert_eq!(cfg.cni_version.as_str(), v, "{ctx}");
            assert!(
                !n.conf_names().iter().any(|f| f.starts_with('.')),
                "{ctx}: no temp file left: {:?}",
                n.conf_names()
            );
        }
    }
}

#[test]
fn the_version_can_be_overridden_and_options_are_written() {
    let n = Node::new();
    n.write_conf("10-flannel.conf", &primary_conf("0.3.1"));
    let (status, log) = n.run_once(&[
        "--wait-timeout=300ms",
        "--cni-version=1.1.0",
        "--namespace-isolation",
        "--global-namespaces=default,shared",
        "--readiness-indicator-file=/run/flannel/subnet.env",
        "--log-level=verbose",
        "--log-file=/var/log/plexus.log",
        "--log-to-stderr=false",
        "--additional-bin-dir=/opt/extra/bin",
        "--network-name=my-net",
    ]);
    // The readiness indicator is not there: bounded wait, then failure.
    assert!(!status.success());
    assert!(log.contains("/run/flannel/subnet.env"), "{log}");
    assert!(
        n.conf_names().iter().all(|f| !f.starts_with("00-plexus")),
        "nothing before ready (NPWG-58)"
    );
    fs::create_dir_all(n.root.join("host/run/flannel")).unwrap();
    fs::write(
        n.root.join("host/run/flannel/subnet.env"),
        "FLANNEL_NETWORK=10.244.0.0/16\n",
    )
    .unwrap();
    let (status, log) = n.run_once(&[
        "--cni-version=1.1.0",
        "--namespace-isolation",
        "--global-namespaces=default,shared",
        "--readiness-indicator-file=/run/flannel/subnet.env",
        "--log-level=verbose",
        "--log-file=/var/log/plexus.log",
        "--log-to-stderr=false",
        "--additional-bin-dir=/opt/extra/bin",
        "--network-name=my-net",
        "--strict-capabilities=false",
    ]);
    assert_ok(status, &log);
    let conf = read_json(&n.conf("00-plexus.conflist"));
    assert_eq!(conf["cniVersion"], "1.1.0");
    assert_eq!(conf["name"], "my-net");
    let p = plugin(&conf);
    assert_eq!(p["namespaceIsolation"], true);
    assert_eq!(p["globalNamespaces"], "default,shared");
    assert_eq!(p["readinessindicatorfile"], "/run/flannel/subnet.env");
    assert_eq!(p["logLevel"], "verbose");
    assert_eq!(p["logFile"], "/var/log/plexus.log");
    assert_eq!(p["logToStderr"], false);
    assert_eq!(p["binDir"], "/opt/extra/bin");
    assert_eq!(p["strictCapabilities"], false);
    let given = serde_json::to_vec(&as_runtime_gives_it(&conf)).unwrap();
    let cfg = plexus::pure::config::Config::from_bytes(&given).unwrap();
    assert!(cfg.namespace_isolation && !cfg.strict_capabilities);
    assert_eq!(cfg.global_namespaces, ["default", "shared"]);
}

#[test]
fn the_kubeconfig_holds_the_api_server_ca_and_token_with_mode_0600() {
    let n = Node::new();
    n.write_conf("10-flannel.conf", &primary_conf("0.4.0"));
    let (status, log) = n.run_once(&[]);
    assert_ok(status, &log);
    let k = n.kubeconfig("plexus");
    assert_eq!(mode(&k), 0o600);
    let kc = kube::config::Kubeconfig::read_from(&k).unwrap();
    let cluster = kc.clusters[0].cluster.as_ref().unwrap();
    assert_eq!(cluster.server.as_deref(), Some(SERVER));
    use base64::Engine as _;
    let ca = base64::engine::general_purpose::STANDARD
        .decode(cluster.certificate_authority_data.as_deref().unwrap())
        .unwrap();
    assert_eq!(ca, b"ca-1");
    let user = serde_json::to_value(kc.auth_infos[0].auth_info.as_ref().unwrap()).unwrap();
    assert_eq!(user["token"], "token-1");
    assert!(
        n.root.join("host/etc/cni/multus/net.d").is_dir(),
        "confDir is created"
    );

    // --no-kubeconfig: none written, none referenced.
    let n = Node::new();
    n.write_conf("10-flannel.conf", &primary_conf("0.4.0"));
    let (status, log) = n.run_once(&["--no-kubeconfig"]);
    assert_ok(status, &log);
    assert!(!n.kubeconfig("plexus").exists());
    assert!(
        read_json(&n.conf("00-plexus.conf"))
            .get("kubeconfig")
            .is_none()
    );
}

#[test]
fn a_second_run_touches_nothing() {
    // #1220: no churn. Every step compares before writing.
    let n = Node::new();
    n.write_conf("10-calico.conflist", &primary_list("1.0.0"));
    assert_ok(n.run_once(&[]).0, "");
    let files = [
        n.conf("00-plexus.conflist"),
        n.kubeconfig("plexus"),
        n.bin("plexus"),
    ];
    let before: Vec<_> = files.iter().map(|f| stamp(f)).collect();
    std::thread::sleep(Duration::from_millis(20));
    let (status, log) = n.run_once(&[]);
    assert_ok(status, &log);
    let after: Vec<_> = files.iter().map(|f| stamp(f)).collect();
    assert_eq!(before, after, "{log}");
    assert!(log.contains("up to date"), "{log}");
}

// ---------------------------------------------------------------------------------------------------
// Choosing the primary
// ---------------------------------------------------------------------------------------------------

#[test]
fn self_delegation_is_refused_meta_plugin_configs_are_skipped() {
    // Go Multus #1324/#1108 (docs/multus-compat.md, "Installation"): never wrap a meta-plugin, plexus itself
    // included.
    let n = Node::new();
    n.write_raw("00-multus.conf", br#"{"cniVersion":"0.3.1","name":"multus-cni-network","type":"multus","kubeconfig":"/etc/cni/net.d/multus.d/multus.kubeconfig","delegates":[{"cniVersion":"0.3.1","name":"cbr0","type":"flannel"}]}"#);
    n.write_raw(
        "01-thick.conflist",
        br#"{"cniVersion":"1.0.0","name":"multus-cni-network","plugins":[{"type":"multus-shim"}]}"#,
    );
    n.write_raw("05-old-plexus.conf", br#"{"cniVersion":"1.0.0","name":"x","type":"plexus","clusterNetwork":"/etc/cni/net.d/10-calico.conflist"}"#);
    n.write_raw("10-calico.conflist.bak", b"{}");
    n.write_raw(".10-hidden.conf", b"{}");
    n.write_conf("10-calico.conflist", &primary_list("1.0.0"));
    let (status, log) = n.run_once(&[]);
    assert_ok(status, &log);
    let conf = read_json(&n.conf("00-plexus.conflist"));
    assert_eq!(
        plugin(&conf)["clusterNetwork"],
        "/etc/cni/net.d/10-calico.conflist"
    );
    for skipped in ["00-multus.conf", "01-thick.conflist", "05-old-plexus.conf"] {
        assert!(
            log.contains(&format!("skipped: {skipped} is a")),
            "{skipped}: {log}"
        );
    }
    // The runtime uses the lexically first file: a leftover Go Multus config shadows ours, and the log says so.
    assert!(
        log.contains("00-multus.conf sort(s) before 00-plexus.conflist"),
        "{log}"
    );

    // Our own previous output is never taken for the primary either, whatever it holds.
    let (status, log) = n.run_once(&[]);
    assert_ok(status, &log);
    assert_eq!(
        plugin(&read_json(&n.conf("00-plexus.conflist")))["clusterNetwork"],
        "/etc/cni/net.d/10-calico.conflist"
    );

    // Pinning a meta-plugin config fails at once, with a message.
    let (status, log) = n.run_once(&["--primary-conf=00-multus.conf"]);
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("never wraps a meta-plugin"), "{log}");

    // Only meta-plugin configs: no primary, bounded wait, non-zero exit naming the problem.
    let n = Node::new();
    n.write_raw(
        "00-multus.conf",
        br#"{"cniVersion":"0.3.1","name":"m","type":"multus","delegates":[]}"#,
    );
    let (status, log) = n.run_once(&["--wait-timeout=300ms"]);
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("gave up after") && log.contains("no primary CNI config"),
        "{log}"
    );
    assert!(!n.conf("00-plexus.conf").exists() && !n.conf("00-plexus.conflist").exists());
}

#[test]
fn a_pinned_primary_is_used_instead_of_the_first() {
    let n = Node::new();
    n.write_conf("05-kube-ovn.conflist", &primary_list("1.0.0"));
    n.write_conf("10-cilium.conf", &primary_conf("0.4.0"));
    let (status, log) = n.run_once(&["--primary-conf=10-cilium.conf"]);
    assert_ok(status, &log);
    assert_eq!(
        read_json(&n.conf("00-plexus.conf"))["clusterNetwork"],
        "/etc/cni/net.d/10-cilium.conf"
    );
}

// ---------------------------------------------------------------------------------------------------
// Waiting and watching
// ---------------------------------------------------------------------------------------------------

#[test]
fn a_missing_primary_is_waited_for_then_the_config_is_written() {
    let n = Node::new();
    let run = n.start(&[]);
    n.wait_for_log("waiting (0s, giving up after 20s): no primary CNI config");
    // A half-written primary (a CNI installer that does not write atomically) is not taken (#1155, #1499).
    fs::write(n.conf("05-cilium.conflist"), b"{\"cniVersion\": \"1.0.").unwrap();
    n.write_conf("10-calico.conflist", &primary_list("1.0.0"));
    n.wait_for_log("primary 05-cilium.conflist is not a CNI network config (yet)");
    assert!(
        !n.conf("00-plexus.conflist").exists(),
        "never a half-set-up node (NPWG-58)"
    );
    n.write_conf("05-cilium.conflist", &primary_list("1.1.0"));
    let conf = n.wait_for_conf("00-plexus.conflist");
    assert_eq!(
        plugin(&conf)["clusterNetwork"],
        "/etc/cni/net.d/05-cilium.conflist"
    );
    assert_eq!(conf["cniVersion"], "1.1.0");
    assert!(run.signal(Signal::SIGTERM).success(), "{}", n.log());
}

#[test]
fn the_readiness_indicator_is_waited_for() {
    let n = Node::new();
    n.write_conf("10-flannel.conf", &primary_conf("0.3.1"));
    let run = n.start(&["--readiness-indicator-file=/run/flannel/subnet.env"]);
    n.wait_for_log("the readiness indicator file /run/flannel/subnet.env does not exist yet");
    assert!(!n.conf("00-plexus.conf").exists());
    fs::create_dir_all(n.root.join("host/run/flannel")).unwrap();
    fs::write(n.root.join("host/run/flannel/subnet.env"), "x").unwrap();
    let conf = n.wait_for_conf("00-plexus.conf");
    assert_eq!(conf["readinessindicatorfile"], "/run/flannel/subnet.env");
    assert!(run.signal(Signal::SIGTERM).success());
}

#[test]
fn a_changed_or_replaced_primary_regenerates_the_config() {
    let n = Node::new();
    n.write_conf("10-flannel.conf", &primary_conf("0.4.0"));
    let run = n.start(&[]);
    n.wait_for_conf("00-plexus.conf");

    // The primary's content changes: its version crosses 1.0.0, so the output becomes a conflist and the
    // .conf goes.
    n.write_conf("10-flannel.conf", &primary_conf("1.0.0"));
    let conf = n.wait_for_conf("00-plexus.conflist");
    wait_until(
        "the stale .conf to go",
        || !n.conf("00-plexus.conf").exists(),
        || n.log(),
    );
    assert_eq!(conf["cniVersion"], "1.0.0");

    // A lexically earlier primary appears (the cluster network was replaced): it wins.
    n.write_conf("05-cilium.conflist", &primary_list("1.1.0"));
    n.wait_for_log("the primary is now 05-cilium.conflist");
    let conf = read_json(&n.conf("00-plexus.conflist"));
    assert_eq!(
        plugin(&conf)["clusterNetwork"],
        "/etc/cni/net.d/05-cilium.conflist"
    );
    assert_eq!(
        plugin(&conf)["capabilities"],
        json!({"bandwidth": true, "mac": true, "portMappings": true})
    );

    // Every primary disappears: the config is kept (pods being deleted must still tear down) and logged.
    fs::remove_file(n.conf("05-cilium.conflist")).unwrap();
    fs::remove_file(n.conf("10-flannel.conf")).unwrap();
    n.wait_for_log("is gone and no other was found; keeping the current plexus config");
    let kept = stamp(&n.conf("00-plexus.conflist"));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        stamp(&n.conf("00-plexus.conflist")),
        kept,
        "never emptied (#1155)"
    );

    // A new primary appears: regenerated from it.
    n.write_conf(
        "20-bridge.conf",
        &json!({"cniVersion": "1.0.0", "name": "br", "type": "bridge"}),
    );
    wait_until(
        "regeneration from 20-bridge.conf",
        || {
            plugin(&read_json(&n.conf("00-plexus.conflist")))["clusterNetwork"]
                == "/etc/cni/net.d/20-bridge.conf"
        },
        || n.log(),
    );
    // Someone deletes our config (a CNI that claims the directory, #972): it is restored.
    fs::remove_file(n.conf("00-plexus.conflist")).unwrap();
    n.wait_for_log("restored the missing config");
    assert!(n.conf("00-plexus.conflist").exists());
    assert!(run.signal(Signal::SIGTERM).success(), "{}", n.log());
}

#[test]
fn skip_config_watch_leaves_the_config_alone() {
    let n = Node::new();
    n.write_conf("10-flannel.conf", &primary_conf("0.4.0"));
    let run = n.start(&["--skip-config-watch"]);
    n.wait_for_conf("00-plexus.conf");
    n.wait_for_log("is not watched (--skip-config-watch)");
    let before = stamp(&n.conf("00-plexus.conf"));
    n.write_conf("10-flannel.conf", &primary_conf("1.0.0"));
    // The token is still watched (rke2 #9313: a watch tied to other flags let tokens expire).
    n.set_token("token-2");
    wait_until(
        "the kubeconfig to carry token-2",
        || {
            fs::read_to_string(n.kubeconfig("plexus"))
                .unwrap_or_default()
                .contains("token-2")
        },
        || n.log(),
    );
    assert_eq!(stamp(&n.conf("00-plexus.conf")), before);
    assert!(!n.conf("00-plexus.conflist").exists());
    assert!(run.signal(Signal::SIGTERM).success());
}

#[test]
fn token_and_ca_rotation_rewrite_the_kubeconfig_and_nothing_else() {
    // Go Multus #852 (docs/multus-compat.md, "Installation"): bound tokens expire; the plugin on the host
    // cannot read the projected token, so the installer rewrites the kubeconfig when the token (or CA)
    // changes.
    let n = Node::new();
    n.write_conf("10-calico.conflist", &primary_list("1.0.0"));
    let run = n.start(&[]);
    n.wait_for_conf("00-plexus.conflist");
    n.wait_for_log("watching every");
    let k = n.kubeconfig("plexus");
    let others = [
        n.conf("00-plexus.conflist"),
        n.bin("plexus"),
        n.conf("10-calico.conflist"),
    ];
    let before: Vec<_> = others.iter().map(|f| stamp(f)).collect();
    let k_before = stamp(&k);

    n.set_token("token-2");
    wait_until(
        "the kubeconfig to carry token-2",
        || fs::read_to_string(&k).unwrap().contains("token-2"),
        || n.log(),
    );
    let text = fs::read_to_string(&k).unwrap();
    assert!(!text.contains("token-1"));
    assert_ne!(stamp(&k), k_before);
    assert_eq!(mode(&k), 0o600);
    n.wait_for_log(
        "rewrote the kubeconfig /etc/cni/net.d/plexus.d/plexus.kubeconfig: the token or CA changed",
    );

    n.set_ca("ca-2");
    use base64::Engine as _;
    let ca2 = base64::engine::general_purpose::STANDARD.encode("ca-2");
    wait_until(
        "the kubeconfig to carry ca-2",
        || fs::read_to_string(&k).unwrap().contains(&ca2),
        || n.log(),
    );

    // Quiet ticks rewrite nothing.
    let settled = stamp(&k);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(stamp(&k), settled, "no churn between rotations (#1220)");
    let after: Vec<_> = others.iter().map(|f| stamp(f)).collect();
    assert_eq!(before, after, "only the kubeconfig was touched");
    assert!(run.signal(Signal::SIGTERM).success());
}

// ---------------------------------------------------------------------------------------------------
// Signals and exit status
// ---------------------------------------------------------------------------------------------------

#[test]
fn sigterm_and_sigint_keep_the_config() {
    // Go Multus #1527 (docs/multus-compat.md, "Installation"): pods deleted during an upgrade must still be
    // torn down, so the config stays.
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        let n = Node::new();
        n.write_conf("10-calico.conflist", &primary_list("1.0.0"));
        let run = n.start(&[]);
        n.wait_for_conf("00-plexus.conflist");
        n.wait_for_log("watching every");
        let status = run.signal(sig);
        assert_eq!(status.code(), Some(0), "{sig}: {}", n.log());
        assert!(n.conf("00-plexus.conflist").exists(), "{sig}");
        assert!(n.kubeconfig("plexus").exists(), "{sig}");
        assert!(
            n.log().contains(&format!("received {sig}: keeping")),
            "{}",
            n.log()
        );
    }
}

#[test]
fn cleanup_config_on_exit_removes_the_config_and_kubeconfig() {
    let n = Node::new();
    n.write_conf("10-flannel.conf", &primary_conf("0.3.1"));
    let run = n.start(&["--cleanup-config-on-exit"]);
    n.wait_for_conf("00-plexus.conf");
    n.wait_for_log("watching every");
    assert_eq!(run.signal(Signal::SIGTERM).code(), Some(0), "{}", n.log());
    assert!(!n.conf("00-plexus.conf").exists());
    assert!(!n.kubeconfig("plexus").exists());
    assert!(
        n.conf("10-flannel.conf").exists(),
        "the primary is not ours"
    );
    assert!(n.bin("plexus").exists(), "the binary stays");
}

#[test]
fn a_signal_during_the_wait_stops_promptly() {
    let n = Node::new();
    let run = n.start(&["--wait-timeout=0"]);
    n.wait_for_log("no limit");
    assert_eq!(run.signal(Signal::SIGTERM).code(), Some(0));
}

#[test]
fn an_unwritable_target_exits_non_zero_with_a_message() {
    // The config's target is a directory.
    let n = Node::new();
    n.write_conf("10-flannel.conf", &primary_conf("0.4.0"));
    fs::create_dir(n.conf("00-plexus.conf")).unwrap();
    fs::write(n.conf("00-plexus.conf").join("x"), b"").unwrap();
    let (status, log) = n.run_once(&[]);
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("error: cannot write the config"), "{log}");

    // The bin "directory" is a file.
    let n = Node::new();
    n.write_conf("10-flannel.conf", &primary_conf("0.4.0"));
    let r = n.root.display().to_string();
    fs::write(n.root.join("not-a-dir"), b"").unwrap();
    let (status, log) = n.run_once(&[&format!("--cni-bin-dir={r}/not-a-dir")]);
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("error: cannot install the binary"), "{log}");

    // The kubeconfig directory cannot be created.
    let n = Node::new();
    n.write_conf("10-flannel.conf", &primary_conf("0.4.0"));
    fs::write(n.conf("plexus.d"), b"in the way").unwrap();
    let (status, log) = n.run_once(&[]);
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("error: cannot create directory"), "{log}");

    // No binary to install.
    let n = Node::new();
    let (status, log) = n.run_once(&["--binary=/nonexistent/plexus"]);
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("error: cannot read the binary to install /nonexistent/plexus"),
        "{log}"
    );

    // No service account.
    let n = Node::new();
    fs::remove_file(n.root.join("sa/token")).unwrap();
    let (status, log) = n.run_once(&[]);
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("service-account token"), "{log}");

    // A usage error is status 2.
    let (status, log) = Node::new().run_once(&["--no-such-flag"]);
    assert_eq!(status.code(), Some(2), "{log}");
}

// ---------------------------------------------------------------------------------------------------
// The binary
// ---------------------------------------------------------------------------------------------------

#[test]
fn the_running_executable_is_installed_by_default_and_only_once() {
    let n = Node::new();
    n.write_conf("10-flannel.conf", &primary_conf("0.4.0"));
    let r = n.root.display().to_string();
    let (status, log) = n.run_once(&[
        "--binary=/proc/self/exe",
        &format!("--cni-bin-dir={r}/host/opt/cni/bin"),
    ]);
    assert_ok(status, &log);
    let installed = n.bin("plexus");
    assert_eq!(
        fs::read(&installed).unwrap(),
        fs::read(install_support::plexus_bin()).unwrap()
    );
    assert_eq!(mode(&installed), 0o755);
    let before = stamp(&installed);
    let (status, log) = n.run_once(&["--binary=/proc/self/exe"]);
    assert_ok(status, &log);
    assert!(log.contains("is up to date"), "{log}");
    assert_eq!(stamp(&installed), before);
    // The installed copy runs.
    let out = std::process::Command::new(&installed)
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("plexus "));
}

#[test]
fn a_running_binary_is_replaced_without_text_file_busy() {
    // #1221: `cp` over a running binary fails with ETXTBSY; the installer renames a new file over it.
    let n = Node::new();
    n.write_conf("10-flannel.conf", &primary_conf("0.4.0"));
    let sleep = ["/usr/bin/sleep", "/bin/sleep"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("a sleep binary");
    let src = n.root.join("sleep-v1");
    fs::copy(sleep, &src).unwrap();
    let src_arg = format!("--binary={}", src.display());
    assert_ok(n.run_once(&[&src_arg, "--binary-name=busy"]).0, "");
    let mut running = std::process::Command::new(n.bin("busy"))
        .arg("30")
        .spawn()
        .unwrap();
    let exe = format!("/proc/{}/exe", running.id());
    wait_until(
        "the installed binary to run",
        || fs::read_link(&exe).is_ok_and(|p| p == n.bin("busy")),
        String::new,
    );
    // A new version: trailing bytes keep the ELF runnable.
    let mut v2 = fs::read(sleep).unwrap();
    v2.extend_from_slice(b"v2");
    fs::write(&src, &v2).unwrap();
    let (status, log) = n.run_once(&[&src_arg, "--binary-name=busy"]);
    assert_ok(status, &log);
    assert!(log.contains("replaced the binary"), "{log}");
    assert_eq!(fs::read(n.bin("busy")).unwrap(), v2);
    assert!(
        running.try_wait().unwrap().is_none(),
        "the running copy is unharmed"
    );
    let _ = running.kill();
    let _ = running.wait();
}

#[test]
fn daemon_mode_installs_the_shim_beside_the_running_binary_and_needs_no_credentials() {
    // As in the image: /usr/local/bin/plexus and /usr/local/bin/plexus-shim side by side; the installer
    // runs the first and, by default, finds the second next to itself.
    let n = Node::new();
    n.write_conf("10-flannel.conflist", &primary_list("1.0.0"));
    fs::remove_dir_all(n.root.join("sa")).unwrap();
    let img = n.root.join("img");
    fs::create_dir_all(&img).unwrap();
    fs::copy(install_support::plexus_bin(), img.join("plexus")).unwrap();
    fs::write(img.join("plexus-shim"), b"#!/bin/sh\necho shim stand-in\n").unwrap();
    let r = n.root.display().to_string();
    let run = |extra: &[&str]| {
        let out = std::process::Command::new(img.join("plexus"))
            .arg("install")
            .arg(format!("--cni-conf-dir={r}/host/etc/cni/net.d"))
            .arg(format!("--cni-bin-dir={r}/host/opt/cni/bin"))
            .arg(format!("--plexus-conf-dir={r}/host/etc/cni/multus/net.d"))
            .arg(format!("--host-prefix={r}/host"))
            .arg(format!("--service-account-dir={r}/sa"))
            .arg("--wait-timeout=20s")
            .args(extra)
            // No KUBERNETES_SERVICE_* and no service account: daemon mode needs neither.
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .output()
            .unwrap();
        (
            out.status,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (status, log) = run(&["--daemon", "--once"]);
    assert_ok(status, &log);
    assert_eq!(
        fs::read(n.bin("plexus")).unwrap(),
        fs::read(install_support::plexus_bin()).unwrap()
    );
    assert_eq!(
        fs::read(n.bin("plexus-shim")).unwrap(),
        b"#!/bin/sh\necho shim stand-in\n"
    );
    assert_eq!(mode(&n.bin("plexus-shim")), 0o755);
    let conf = read_json(&n.conf("00-plexus.conflist"));
    let p = plugin(&conf);
    assert_eq!(p["type"], "plexus-shim");
    assert_eq!(p["daemonSocketDir"], "/run/plexus");
    assert_eq!(p["cniDir"], "/var/lib/cni/multus");
    assert_eq!(p["clusterNetwork"], "/etc/cni/net.d/10-flannel.conflist");
    assert!(p.get("kubeconfig").is_none(), "{p}");
    assert!(!n.kubeconfig("plexus").exists());
    assert!(log.contains("writing no kubeconfig (--daemon)"), "{log}");
    // The probe of each mode sees only its own config.
    assert_eq!(run(&["--check", "--daemon"]).0.code(), Some(0));
    assert_eq!(run(&["--check"]).0.code(), Some(1));
    // Without a shim next to it and no --shim-binary, nothing is written.
    fs::remove_file(img.join("plexus-shim")).unwrap();
    fs::remove_file(n.conf("00-plexus.conflist")).unwrap();
    let (status, log) = run(&["--daemon", "--once"]);
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("--shim-binary"), "{log}");
    assert!(!n.conf("00-plexus.conflist").exists());
}

// ---------------------------------------------------------------------------------------------------
// The readiness probe and --help
// ---------------------------------------------------------------------------------------------------

#[test]
fn check_succeeds_only_once_the_config_is_in_place() {
    let n = Node::new();
    let check = |extra: &[&str]| {
        let mut args = vec!["--check"];
        args.extend_from_slice(extra);
        n.run(&args).0.code()
    };
    assert_eq!(check(&[]), Some(1));
    n.write_conf("10-flannel.conf", &primary_conf("1.0.0"));
    assert_ok(n.run_once(&[]).0, "");
    assert_eq!(check(&[]), Some(0));
    assert_eq!(
        check(&["--binary-name=multus"]),
        Some(1),
        "another binary's config is not ours"
    );
}

#[test]
fn help_documents_every_flag() {
    let out = std::process::Command::new(install_support::plexus_bin())
        .args(["install", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    let cmd = plexus::edges::install::Args::command();
    for arg in cmd.get_arguments() {
        if let Some(long) = arg.get_long() {
            assert!(
                help.contains(&format!("--{long}")),
                "--{long} is not in --help:\n{help}"
            );
        }
    }
    for topic in [
        "KUBERNETES_SERVICE_HOST",
        "SIGTERM",
        "meta-plugin",
        "Daemon mode",
        "plexus-shim",
        "[default: /run/plexus]",
        "[default: /host/opt/cni/bin]",
    ] {
        assert!(help.contains(topic), "{topic}:\n{help}");
    }
}

// ---------------------------------------------------------------------------------------------------
// Migration from Go Multus (issue 4 part 4; docs/migration.md)
// ---------------------------------------------------------------------------------------------------

/// Add the harness's state and bin directories to a config (a Go Multus config may set both keys; the real
/// defaults are the host's /var/lib/cni/multus and /opt/cni/bin).
fn in_harness(h: &Harness, mut conf: Value) -> Value {
    merge(&mut conf, json!({"cniDir": h.cni, "binDir": h.bin}));
    conf
}

/// ADD then DEL `conf` through the harness; the delegate calls of each.
fn add_then_del(h: &Harness, conf: &Value, ctx: &str) -> (Vec<String>, Vec<String>) {
    let add = h.cmd("ADD").config(conf).run();
    add.ok();
    assert!(add.json().get("cniVersion").is_some(), "{ctx}: a result");
    let added = h.take_calls();
    assert!(
        h.cache_file(common::CID).is_file(),
        "{ctx}: the cache is written"
    );
    h.cmd("DEL").config(conf).run().ok();
    let deleted = h.take_calls();
    h.assert_no_trace(common::CID, ctx);
    (added, deleted)
}

#[test]
fn installed_as_multus_the_generated_00_multus_config_runs() {
    // (a) --binary-name multus writes 00-multus.conf (< 1.0.0) or 00-multus.conflist (≥ 1.0.0), and plexus,
    // run as the runtime runs it, uses it.
    for v in ["0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
        let ctx = format!("cniVersion {v}");
        let h = Harness::new();
        let net_d = h.path("net.d");
        fs::create_dir_all(&net_d).unwrap();
        let primary = recorder_list(
            "cluster",
            v,
            vec![
                json!({"type": "plexus-recorder", "step": 1}),
                json!({"type": "plexus-recorder", "step": 2, "capabilities": {"portMappings": true}}),
            ],
        );
        fs::write(
            net_d.join("10-cluster.conflist"),
            serde_json::to_vec(&primary).unwrap(),
        )
        .unwrap();
        let (file, other) = if conflist_from(v) {
            ("00-multus.conflist", "00-multus.conf")
        } else {
            ("00-multus.conf", "00-multus.conflist")
        };
        // What Go Multus's thin entrypoint left: its config (the cluster network inline) and its binary.
        let go_conf = json!({"cniVersion": v, "name": "multus-cni-network", "type": "multus",
                             "kubeconfig": "/etc/cni/net.d/multus.d/multus.kubeconfig",
                             "cniConf": "/host/etc/cni/multus/net.d", "delegates": [primary]});
        fs::write(net_d.join(file), serde_json::to_vec(&go_conf).unwrap()).unwrap();
        fs::write(h.bin.join("multus"), b"go multus").unwrap();
        let n = Node::new();
        let d = net_d.display().to_string();
        let mut cmd = n.command(&[
            "--once",
            "--binary-name=multus",
            &format!("--cni-conf-dir={d}"),
            // The test's "host" is this machine: the paths written are the real ones.
            &format!("--host-cni-conf-dir={d}"),
            &format!("--cni-bin-dir={}", h.bin.display()),
        ]);
        let out = cmd.output().unwrap();
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{ctx}: {log}");
        assert!(
            log.contains(&format!("rewrote {d}/{file} (it held something else)")),
            "{ctx}: {log}"
        );
        assert!(log.contains("replaced the binary"), "{ctx}: {log}");
        assert!(!net_d.join(other).exists(), "{ctx}");
        let conf = read_json(&net_d.join(file));
        assert_eq!(conf["name"], "multus-cni-network", "{ctx}");
        let p = plugin(&conf);
        assert_eq!(p["type"], "multus", "{ctx}");
        assert_eq!(
            p["kubeconfig"],
            format!("{d}/multus.d/multus.kubeconfig"),
            "{ctx}"
        );
        assert!(net_d.join("multus.d/multus.kubeconfig").is_file(), "{ctx}");
        assert_eq!(p["capabilities"], json!({"portMappings": true}), "{ctx}");
        assert_eq!(
            fs::read(h.bin.join("multus")).unwrap(),
            fs::read(n.root.join("plexus-src")).unwrap(),
            "{ctx}: installed as multus"
        );
        assert!(
            p.get("delegates").is_none() && p.get("cniConf").is_none(),
            "{ctx}"
        );
        assert_eq!(
            p["clusterNetwork"],
            format!("{d}/10-cluster.conflist"),
            "{ctx}"
        );

        let given = in_harness(&h, as_runtime_gives_it(&conf));
        let (added, deleted) = add_then_del(&h, &given, &ctx);
        assert_eq!(
            added,
            ["ADD cluster eth0 #1", "ADD cluster eth0 #2"],
            "{ctx}"
        );
        assert_eq!(
            deleted,
            ["DEL cluster eth0 #2", "DEL cluster eth0 #1"],
            "{ctx}"
        );
    }
}

/// A Go Multus thin-entrypoint config as found on a node (docs/multus-compat.md, "Installation"):
/// `type: multus`, the cluster network inline in `delegates`, the host kubeconfig path, logging
/// keys, and the `cniConf` typo.
fn go_multus_conf(h: &Harness, v: &str, cluster: Value) -> Value {
    in_harness(
        h,
        json!({
            "cniVersion": v,
            "name": "multus-cni-network",
            "type": "multus",
            "capabilities": {"portMappings": true},
            "cniConf": "/host/etc/cni/multus/net.d",
            "kubeconfig": "/etc/cni/net.d/multus.d/multus.kubeconfig",
            "logLevel": "verbose",
            "logFile": h.path("multus.log"),
            "logToStderr": false,
            "delegates": [cluster],
        }),
    )
}

#[test]
fn a_go_multus_thin_config_is_read_unchanged() {
    // (b) plexus installed as multus reads the existing 00-multus.conf: with `delegates` and with
    // `clusterNetwork`, the kubeconfig key (unused without pod arguments), logging keys, the cniConf typo.
    for v in ["0.3.1", "0.4.0", "1.0.0"] {
        let ctx = format!("cniVersion {v}");
        let h = Harness::new();
        let cluster = recorder_list(
            "k8s-pod-network",
            v,
            vec![
                json!({"type": "plexus-recorder", "step": 1}),
                json!({"type": "plexus-recorder", "step": 2, "capabilities": {"portMappings": true}}),
            ],
        );
        let conf = go_multus_conf(&h, v, cluster.clone());
        let (added, deleted) = add_then_del(&h, &conf, &format!("{ctx}, delegates"));
        assert_eq!(
            added,
            ["ADD k8s-pod-network eth0 #1", "ADD k8s-pod-network eth0 #2"],
            "{ctx}"
        );
        assert_eq!(
            deleted,
            ["DEL k8s-pod-network eth0 #2", "DEL k8s-pod-network eth0 #1"],
            "{ctx}"
        );
        let log = fs::read_to_string(h.path("multus.log")).unwrap_or_default();
        assert!(!log.is_empty(), "{ctx}: logFile and logLevel are honoured");

        // The clusterNetwork form (a path, as the thick daemon and newer configs write it).
        let file = h.write_conf("10-calico.conflist", &cluster);
        let mut conf = go_multus_conf(&h, v, json!(null));
        merge(
            &mut conf,
            json!({"delegates": null, "clusterNetwork": file}),
        );
        let (added, _) = add_then_del(&h, &conf, &format!("{ctx}, clusterNetwork"));
        assert_eq!(
            added,
            ["ADD k8s-pod-network eth0 #1", "ADD k8s-pod-network eth0 #2"],
            "{ctx}"
        );

        // The thin entrypoint's 1.0.0+ form: 00-multus.conflist with one multus plugin.
        if conflist_from(v) {
            let mut plugin = go_multus_conf(&h, v, cluster.clone());
            merge(&mut plugin, json!({"cniVersion": null, "name": null}));
            let list = json!({"cniVersion": v, "name": "multus-cni-network", "plugins": [plugin]});
            let (added, _) =
                add_then_del(&h, &as_runtime_gives_it(&list), &format!("{ctx}, conflist"));
            assert_eq!(added.len(), 2, "{ctx}");
        }
    }
}

/// On a host, outside a pod (docs/install-on-host.md): with `--host-prefix=/` and each `--host-*` path the
/// same as the path written to, the config names the paths the installer wrote, the readiness indicator is
/// looked for at its own path, and the kubeconfig's server is the `KUBERNETES_SERVICE_*` given by hand.
#[test]
fn on_a_host_the_paths_written_are_the_paths_named() {
    let n = Node::new();
    n.write_conf("10-flannel.conf", &primary_conf("1.0.0"));
    let r = n.root.display().to_string();
    let (conf_dir, bin_dir, plexus_dir) = (
        format!("{r}/host/etc/cni/net.d"),
        format!("{r}/host/opt/cni/bin"),
        format!("{r}/host/etc/cni/multus/net.d"),
    );
    let ready = format!("{r}/run/flannel/subnet.env");
    fs::create_dir_all(n.root.join("run/flannel")).unwrap();
    fs::write(&ready, "FLANNEL_NETWORK=10.244.0.0/16\n").unwrap();
    let out = n
        .command(&[
            "--once",
            "--host-prefix=/",
            &format!("--host-cni-conf-dir={conf_dir}"),
            &format!("--host-cni-bin-dir={bin_dir}"),
            &format!("--host-plexus-conf-dir={plexus_dir}"),
            &format!("--readiness-indicator-file={ready}"),
            "--log-level=verbose",
            "--log-file=/var/log/plexus.log",
            "--wait-timeout=2s",
        ])
        .env("KUBERNETES_SERVICE_HOST", "192.0.2.10")
        .env("KUBERNETES_SERVICE_PORT", "6443")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert_ok(out.status, &log);
    let conf = read_json(&n.conf("00-plexus.conflist"));
    let p = plugin(&conf);
    assert_eq!(p["clusterNetwork"], format!("{conf_dir}/10-flannel.conf"));
    assert_eq!(p["confDir"], plexus_dir);
    let kubeconfig = n.kubeconfig("plexus");
    assert_eq!(p["kubeconfig"], kubeconfig.display().to_string());
    assert_eq!(p["readinessindicatorfile"], ready);
    assert_eq!(
        (&p["logLevel"], &p["logFile"]),
        (&json!("verbose"), &json!("/var/log/plexus.log"))
    );
    let kc = fs::read_to_string(&kubeconfig).unwrap();
    assert!(kc.contains("server: https://192.0.2.10:6443"), "{kc}");
    assert!(n.bin("plexus").is_file(), "{log}");
}

/// The default `--host-token=node` as the DaemonSet runs it: the node's name from `PLEXUS_NODE_NAME`, the
/// ServiceAccount from the pod's token. With the API unreachable at the first start, the pod's own token
/// stands in (with a warning) and the install completes; without a node name it stops at once.
#[test]
fn the_node_bound_token_names_plexus_node_name_and_an_unreachable_api_leaves_the_pods_token() {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    let n = Node::new();
    n.write_conf("10-flannel.conf", &primary_conf("1.0.0"));
    let claims = json!({"sub": "system:serviceaccount:kube-system:plexus", "kubernetes.io": {"pod": {"name": "p"}}});
    let pod_token = format!("e30.{}.c2ln", URL_SAFE_NO_PAD.encode(claims.to_string()));
    n.set_token(&pod_token);
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = n
        .command(&["--once", "--host-token=node"])
        .env("KUBERNETES_SERVICE_PROTOCOL", "http")
        .env("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        .env("KUBERNETES_SERVICE_PORT", closed.port().to_string())
        .env("PLEXUS_NODE_NAME", "node-7")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains(
            "cannot get a token of serviceaccount kube-system/plexus bound to Node node-7: "
        ),
        "{log}"
    );
    assert!(
        log.contains("warning: no live Node-bound token: the kubeconfig gets this pod's own token"),
        "{log}"
    );
    let kc = fs::read_to_string(n.kubeconfig("plexus")).unwrap();
    assert!(kc.contains(&pod_token), "{kc}");

    let out = n
        .command(&["--once", "--host-token=node"])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(
        log.contains("this node's name is unknown: set PLEXUS_NODE_NAME"),
        "{log}"
    );
}
