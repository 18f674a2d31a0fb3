//! `plexus-shim`: the CNI binary of daemon mode (being written).

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(1)
}
