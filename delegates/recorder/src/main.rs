//! plexus-recorder: a CNI delegate plugin that records every invocation to a file and replies as its config says.

mod config;
mod exec;
mod plan;
mod record;
mod reply;

use std::collections::BTreeMap;
use std::io::{self, Read};

use config::Stdin;
use plan::Plan;
use reply::CniError;

fn main() {
    std::process::exit(run());
}

/// One invocation: read inputs, record, decide, act. Returns the exit status.
fn run() -> i32 {
    let env: BTreeMap<String, String> = std::env::vars_os()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        })
        .collect();
    let command = match env.get("CNI_COMMAND") {
        Some(c) if !c.is_empty() => c.clone(),
        _ => {
            eprintln!(
                "plexus-recorder {}: a recording CNI delegate for plexus tests; CNI versions {}",
                env!("CARGO_PKG_VERSION"),
                reply::SUPPORTED_VERSIONS.join(", ")
            );
            return 0;
        }
    };
    let mut raw = Vec::new();
    if let Err(e) = io::stdin().read_to_end(&mut raw) {
        let err = CniError::new(5, format!("error reading stdin: {e}"));
        return exec::carry_out(Plan::failure(&err, reply::LATEST_VERSION));
    }
    let stdin = Stdin::parse(&String::from_utf8_lossy(&raw));
    if let Some(path) = record::target(&stdin, &env) {
        let line =
            record::record_value(&command, &env, &stdin, std::process::id(), record::now_ms());
        if let Err(e) = record::append(&path, &line) {
            eprintln!("plexus-recorder: cannot append to {}: {e}", path.display());
            let mut err = CniError::new(5, "plexus-recorder: cannot write the record file");
            err.details = format!("{}: {e}", path.display());
            return exec::carry_out(Plan::failure(&err, plan::reply_version(&command, &stdin)));
        }
    }
    exec::carry_out(plan::decide(&command, &env, &stdin))
}
