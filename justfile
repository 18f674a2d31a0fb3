# The README's commands, and the checks CI runs (`just --list`). Everything also works without `just`:
# each recipe is one line to copy.

# The demo: a pod with several networks on the API stand-in, its network-status, teardown (root).
demo:
    sudo bash scripts/demo.sh

# Every test (real network namespaces included when root), then the linters and the fuzz targets: what CI runs.
test:
    sudo bash scripts/test.sh

# Unit and binary-level tests only (no root, no network namespaces).
unit:
    cargo test --workspace

# The e2e suite's scenarios in daemon mode (root).
e2e-daemon:
    sudo E2E_MODE=daemon cargo test -p plexus-e2e --test suite --test isolation --test devices -- --include-ignored

# Linters: clippy with warnings as errors, rustfmt, licenses and duplicate crate versions.
lint:
    cargo clippy --workspace --all-targets -- -D warnings
    cargo fmt --all -- --check
    cargo deny check licenses bans

# The benchmark (BENCHMARKS.md); pass its flags after `--`, e.g. `just bench -- --help`.
bench *ARGS:
    cargo run --profile tools -p plexus-e2e --bin plexus-bench -- {{ARGS}}

# The fuzz targets, briefly (`long` for a long run: docs/fuzzing.md).
fuzz MODE="brief":
    bash scripts/fuzz.sh {{MODE}}
