#!/usr/bin/env bash
# Build and run plexus's cargo-fuzz targets (fuzz/, docs/fuzzing.md).
#
#   bash scripts/fuzz.sh brief [SECONDS]   # build every target, run each SECONDS (default 10): what CI does
#   bash scripts/fuzz.sh long [RUNS]       # run each target RUNS executions (default 1000000)
#   bash scripts/fuzz.sh build             # build only
#   bash scripts/fuzz.sh list              # the targets
#
# TARGETS="annotation config" limits a run to some targets. Seeds come from fuzz/corpus/<target>/ (committed, read-only);
# new inputs go to fuzz/corpus-work/<target>/ (not committed). A crash stops the script with libFuzzer's
# report, the input under fuzz/artifacts/<target>/, and the command that reproduces it.
#
# The toolchain is stable: cargo-fuzz needs nightly flags, which RUSTC_BOOTSTRAP=1 allows. The code under
# test has no `unsafe`, so the targets are built without a sanitizer (faster) but with debug assertions
# (integer overflow panics). Brief runs use an unoptimised build (`--dev`: less than half the build time
# of the large instrumented dependency tree, which is most of CI's cost); long runs an optimised one
# (`fuzz/Cargo.toml` [profile.release]) that runs several times faster. Each is built once.
set -euo pipefail
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO_ROOT"
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

export RUSTC_BOOTSTRAP=1
FUZZ_FLAGS=(--sanitizer none --debug-assertions)
# Inputs past this length add little for these parsers; the size limits have unit tests of their own.
MAX_LEN=${MAX_LEN:-8192}

ensure_cargo_fuzz() {
    command -v cargo >/dev/null || { echo "cargo is not installed" >&2; exit 1; }
    if ! cargo fuzz --version >/dev/null 2>&1; then
        banner "Installing cargo-fuzz (cargo install cargo-fuzz --locked)"
        cargo install cargo-fuzz --locked
    fi
}

targets() {
    if [ -n "${TARGETS:-}" ]; then
        # shellcheck disable=SC2086 # a space-separated list, split on purpose
        printf '%s\n' $TARGETS
    else
        (cd fuzz && cargo fuzz list)
    fi
}

build() {
    banner "Building the fuzz targets"
    (cd fuzz && cargo fuzz build "${FUZZ_FLAGS[@]}")
}

# Build and run with these extra cargo-fuzz flags.
with_flags() {
    FUZZ_FLAGS+=("$@")
}

# run TARGET LIBFUZZER-ARGS...: run one target on its seeds; prints "TARGET: N execs" from libFuzzer's stats.
run() {
    local target=$1
    shift
    mkdir -p "fuzz/corpus/$target" "fuzz/corpus-work/$target"
    local log
    log=$(mktemp)
    if ! (cd fuzz && cargo fuzz run "${FUZZ_FLAGS[@]}" "$target" "corpus-work/$target" "corpus/$target" -- \
        -max_len="$MAX_LEN" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 "$@") >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        rm -f "$log"
        echo "fuzz target $target failed; see above" >&2
        exit 1
    fi
    local execs
    execs=$(awk '/stat::number_of_executed_units/ {n += $2} END {print n + 0}' "$log")
    local cov
    cov=$(grep -Eo 'cov: [0-9]+' "$log" | tail -n 1 | cut -d' ' -f2 || true)
    printf '%-12s %12s execs  coverage %s  corpus %s files\n' "$target" "$execs" "${cov:-?}" \
        "$(find "fuzz/corpus-work/$target" "fuzz/corpus/$target" -type f | wc -l)"
    rm -f "$log"
}

mode=${1:-brief}
case "$mode" in
    list)
        ensure_cargo_fuzz
        targets
        ;;
    build)
        ensure_cargo_fuzz
        build
        ;;
    brief)
        seconds=${2:-10}
        ensure_cargo_fuzz
        with_flags --dev
        build
        banner "Fuzzing each target for ${seconds}s"
        for t in $(targets); do
            run "$t" -max_total_time="$seconds"
        done
        ;;
    long)
        runs=${2:-1000000}
        ensure_cargo_fuzz
        build
        banner "Fuzzing each target for $runs executions"
        for t in $(targets); do
            run "$t" -runs="$runs"
        done
        ;;
    *)
        sed -n '2,8p' "$0" >&2
        exit 2
        ;;
esac
