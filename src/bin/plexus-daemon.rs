//! `plexus-daemon`: the daemon mode's node agent, a binary of its own so the thin CNI binary carries no watch
//! caches, HTTP server or metrics. A thin entry over the library ([`plexus::edges::daemon::main`]).

fn main() -> std::process::ExitCode {
    plexus::edges::daemon::main(std::env::args().skip(1).collect())
}
