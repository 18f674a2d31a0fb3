//! `plexus-shim`: the CNI binary of daemon mode, a thin entry over [`plexus_shim::entry`].

fn main() -> std::process::ExitCode {
    plexus_shim::entry::main()
}
