//! `plexus-bench`: plexus's overhead over the bare delegates, its API requests and round trips, peak RSS,
//! binary size, a concurrent burst and the cost of unrelated NADs (issue 5). Not part of the test suite:
//!
//! ```sh
//! sudo cargo run --release -p plexus-e2e --bin plexus-bench -- --json bench.json
//! ```
//!
//! See `BENCHMARKS.md` at the repository root for what it measures and how.

#[path = "../bench/mod.rs"]
mod bench;

fn main() -> std::process::ExitCode {
    bench::main()
}
