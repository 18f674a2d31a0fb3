//! The `plexus-shim` binary, built inside the e2e package so its daemon-mode suite runs a fresh build of it:
//! the same entry as `crates/shim/src/main.rs` (`plexus_shim::entry::main`).

fn main() -> std::process::ExitCode {
    plexus_shim::entry::main()
}
