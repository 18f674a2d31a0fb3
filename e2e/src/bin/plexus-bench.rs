//! `plexus-bench`: plexus's overhead over the bare delegates, its API requests and round trips, peak RSS,
//! binary size, a concurrent burst and the cost of unrelated NADs (issue 5); in daemon mode the same rows
//! with the runtime calling `plexus-shim` and `plexus daemon` serving it, API reads per ADD, the shim's
//! peak RSS and size, and a storm of pods after a daemon restart under a memory limit (issue 8). Not part
//! of the test suite:
//!
//! ```sh
//! sudo cargo run --profile tools -p plexus-e2e --bin plexus-bench -- [--mode thin|daemon|both] --json bench.json
//! ```
//!
//! See `BENCHMARKS.md` at the repository root for what it measures and how.

#[path = "../bench/mod.rs"]
mod bench;

fn main() -> std::process::ExitCode {
    bench::main()
}
