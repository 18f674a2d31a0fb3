//! `plexus-daemon`, built inside the e2e package so its suite runs a fresh build of it: the same thin entry
//! as plexus's own `src/bin/plexus-daemon.rs` (`plexus::edges::daemon::main`).

fn main() -> std::process::ExitCode {
    plexus::edges::daemon::main(std::env::args().skip(1).collect())
}
