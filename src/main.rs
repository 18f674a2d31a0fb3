//! The `plexus` CNI binary: a thin entry over the library.

fn main() -> std::process::ExitCode {
    plexus::edges::cli::main()
}
