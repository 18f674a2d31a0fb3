//! The thin binary's answer to a panic: one CNI error reply (code 999) on stdout and exit status 1, from
//! whichever thread panicked, unless the real reply has already gone out.
//!
//! The thin `plexus` is built with `panic = "abort"` (Cargo.toml, `[profile.release-thin]`), so a panic on
//! the namespace thread, a tokio worker or the main thread ends the process at once: no join turns it into an
//! error reply. The runtime still gets a reply it can read: the hook writes it before the process ends. The
//! same hook runs in unwinding (debug) builds, so both behave alike.

use std::{
    io::{self, Write},
    panic::PanicHookInfo,
    sync::atomic::{AtomicBool, Ordering},
};

use plexus_cni::{ErrorReply, codes};

use crate::pure::request::CniEnv;

/// Set by whoever writes to stdout first: the process's reply, or the hook's error reply. Never both.
static STDOUT_TAKEN: AtomicBool = AtomicBool::new(false);

/// What the error reply of a panic says about the request, taken before any work starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PanicContext {
    cni_version: String,
    command: String,
    who: String,
    network: String,
}

impl PanicContext {
    /// From the request's environment and stdin (the network config), read leniently: a request too broken
    /// to parse is answered by its own error long before any panic could matter.
    pub fn new(vars: &[(String, String)], stdin: &[u8]) -> PanicContext {
        let env = CniEnv::from_vars(vars.iter().cloned()).ok().flatten();
        #[derive(serde::Deserialize, Default)]
        struct Head {
            #[serde(rename = "cniVersion", default)]
            cni_version: String,
            #[serde(default)]
            name: String,
        }
        let head: Head = serde_json::from_slice(stdin).unwrap_or_default();
        PanicContext {
            cni_version: head.cni_version,
            command: env
                .as_ref()
                .map_or_else(|| "request".to_string(), |e| e.command.to_string()),
            who: env.map_or_else(|| "plexus".to_string(), |e| e.who()),
            network: head.name,
        }
    }

    /// The error reply for a panic whose message is `what` (with its source location).
    pub fn reply(&self, what: &str) -> ErrorReply {
        ErrorReply::new(
            codes::INTERNAL,
            format!(
                "plexus failed unexpectedly (a panic) in {} for {}, network {:?}",
                self.command, self.who, self.network
            ),
            what,
        )
        .with_cni_version(self.cni_version.clone())
    }
}

/// The panic's message and where it was raised.
fn describe(info: &PanicHookInfo<'_>) -> String {
    let message = plexus_netns::panic_message(info.payload());
    match info.location() {
        Some(at) => format!("{message} (at {at})"),
        None => message.to_string(),
    }
}

/// Install the hook for this process: after the default hook's message on stderr, a panic before the reply
/// prints the error reply of `context` and exits with status 1. Call once, before any work.
pub fn reply_to_panics(context: PanicContext) {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        previous(info);
        if STDOUT_TAKEN.swap(true, Ordering::SeqCst) {
            // The reply is out (or going out): a second JSON document would corrupt it.
            return;
        }
        let json = context.reply(&describe(info)).to_json();
        let mut out = io::stdout().lock();
        let _ = out.write_all(json.as_bytes()).and_then(|()| out.flush());
        std::process::exit(1);
    }));
}

/// Take stdout for the process's own reply. False when a panic's reply took it first: that thread is about
/// to end the process, so the caller must not write.
pub fn take_stdout() -> bool {
    !STDOUT_TAKEN.swap(true, Ordering::SeqCst)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_reply_names_the_command_pod_network_and_version() {
        let ctx = PanicContext::new(
            &vars(&[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "c1"),
                ("CNI_NETNS", "/run/netns/x"),
                ("CNI_IFNAME", "eth0"),
                ("CNI_ARGS", "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p"),
            ]),
            br#"{"cniVersion":"0.4.0","name":"multus-net","type":"plexus"}"#,
        );
        let r = ctx.reply("boom (at src/x.rs:1:2)");
        assert_eq!(r.code, 999);
        assert_eq!(r.cni_version, "0.4.0");
        assert!(r.msg.contains("ADD for ns/p"), "{}", r.msg);
        assert!(r.msg.contains("network \"multus-net\""), "{}", r.msg);
        assert_eq!(r.details, "boom (at src/x.rs:1:2)");
    }

    #[test]
    fn a_broken_request_still_gets_a_reply() {
        let ctx = PanicContext::new(&vars(&[("CNI_COMMAND", "NOPE")]), b"not json");
        let r = ctx.reply("boom");
        assert_eq!(r.code, 999);
        assert!(r.msg.contains("request for plexus"), "{}", r.msg);
        assert!(r.cni_version.is_empty());
    }
}
