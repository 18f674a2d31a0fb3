//! The `plexus` CNI binary, built inside the e2e package so its suite runs a fresh build of it: the same
//! thin entry as plexus's own `src/main.rs` (`plexus::edges::cli::main`).

fn main() -> std::process::ExitCode {
    plexus::edges::cli::main()
}
