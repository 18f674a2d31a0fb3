//! The process entry of `plexus-shim` (also built into the e2e suite's shim under test).

use std::{
    ffi::OsString,
    io::{self, Write},
    process::ExitCode,
};

use crate::shim::{self, Inputs};

fn lossy(v: OsString) -> String {
    v.into_string()
        .unwrap_or_else(|v| v.to_string_lossy().into_owned())
}

/// The whole process: arguments, environment and stdin in, one reply on stdout, the exit status out.
pub fn main() -> ExitCode {
    if let Some(arg) = std::env::args_os().nth(1) {
        let arg = lossy(arg);
        if matches!(arg.as_str(), "-v" | "-version" | "--version") {
            let _ = writeln!(io::stdout(), "plexus-shim {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        eprintln!(
            "{}\nusage: run by the container runtime with CNI_COMMAND set and the network config on stdin",
            shim::ABOUT
        );
        return ExitCode::from(2);
    }
    let out = shim::run(Inputs {
        vars: std::env::vars_os()
            .map(|(k, v)| (lossy(k), lossy(v)))
            .collect(),
        stdin: &mut io::stdin().lock(),
        exe: std::env::current_exe().ok(),
    });
    if !out.stderr.is_empty() {
        let _ = io::stderr().write_all(out.stderr.as_bytes());
    }
    let mut stdout = io::stdout().lock();
    // A closed stdout (the runtime gave up) is not worth a panic.
    let _ = stdout.write_all(&out.stdout).and_then(|()| stdout.flush());
    ExitCode::from(out.code)
}
