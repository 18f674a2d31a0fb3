//! The thin binary's panic hook (`plexus::edges::panicked`) in a real process: this test runs itself as the child
//! (no libtest harness, so nothing else reaches the child's stdout) and reads the child's stdout and status.

use std::{
    io::Write,
    process::{Command, ExitCode},
};

use plexus::edges::panicked::{PanicContext, reply_to_panics, take_stdout};

const CHILD: &str = "PLEXUS_PANIC_REPLY_CHILD";
const CONFIG: &str = r#"{"cniVersion":"1.0.0","name":"macvlan-a","type":"plexus"}"#;

fn request_vars() -> Vec<(String, String)> {
    [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c0ffee"),
        ("CNI_NETNS", "/run/netns/x"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_ARGS", "K8S_POD_NAMESPACE=team;K8S_POD_NAME=web-1"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The child: install the hook as `plexus` does, then panic the way `case` says.
fn child(case: &str) -> ExitCode {
    reply_to_panics(PanicContext::new(&request_vars(), CONFIG.as_bytes()));
    match case {
        // Like the namespace thread or a tokio worker: not the main thread.
        "worker" => {
            let _ = std::thread::spawn(|| panic!("netlink answer out of range")).join();
            // Reached only when the hook did not end the process.
            ExitCode::SUCCESS
        }
        "main" => panic!("the plan lost an interface"),
        // The reply is out first: the panic must not add a second document.
        "after-reply" => {
            assert!(take_stdout());
            let mut out = std::io::stdout().lock();
            out.write_all(br#"{"cniVersion":"1.0.0"}"#).unwrap();
            out.flush().unwrap();
            drop(out);
            let _ = std::thread::spawn(|| panic!("event sender")).join();
            ExitCode::from(7)
        }
        other => panic!("unknown case {other}"),
    }
}

fn run(case: &str) -> (String, Option<i32>) {
    let out = Command::new(std::env::current_exe().unwrap())
        .env(CHILD, case)
        .output()
        .unwrap();
    (String::from_utf8(out.stdout).unwrap(), out.status.code())
}

fn check_panic_reply(case: &str, message: &str) -> Result<(), String> {
    let (stdout, code) = run(case);
    if code != Some(1) {
        return Err(format!(
            "{case}: exit status {code:?}, want 1 (stdout {stdout:?})"
        ));
    }
    // Exactly one JSON document: a stream reader finds one value and nothing after it.
    let docs: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&stdout)
        .into_iter()
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{case}: stdout is not JSON ({e}): {stdout:?}"))?;
    let [reply] = docs.as_slice() else {
        return Err(format!(
            "{case}: {} JSON documents on stdout: {stdout:?}",
            docs.len()
        ));
    };
    let msg = reply["msg"].as_str().unwrap_or_default();
    let details = reply["details"].as_str().unwrap_or_default();
    let ok = reply["code"] == 999
        && reply["cniVersion"] == "1.0.0"
        && msg.contains("ADD for team/web-1")
        && msg.contains("\"macvlan-a\"")
        && details.contains(message)
        && details.contains("panic_reply.rs");
    if !ok {
        return Err(format!("{case}: unexpected reply {reply}"));
    }
    Ok(())
}

fn check_after_reply() -> Result<(), String> {
    let (stdout, code) = run("after-reply");
    if stdout != r#"{"cniVersion":"1.0.0"}"# {
        return Err(format!(
            "after-reply: stdout {stdout:?}, want the reply alone"
        ));
    }
    if code != Some(7) {
        return Err(format!(
            "after-reply: exit status {code:?}, want the process's own 7"
        ));
    }
    Ok(())
}

fn main() -> ExitCode {
    if let Ok(case) = std::env::var(CHILD) {
        return child(&case);
    }
    let results = [
        (
            "a panic on another thread",
            check_panic_reply("worker", "netlink answer out of range"),
        ),
        (
            "a panic on the main thread",
            check_panic_reply("main", "the plan lost an interface"),
        ),
        ("a panic after the reply", check_after_reply()),
    ];
    let mut failed = 0;
    for (name, result) in &results {
        match result {
            Ok(()) => eprintln!("ok: {name}"),
            Err(e) => {
                failed += 1;
                eprintln!("FAILED: {name}: {e}");
            }
        }
    }
    eprintln!("{} passed, {failed} failed", results.len() - failed);
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
