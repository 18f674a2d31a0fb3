# shellcheck shell=bash
# Shared helpers for scripts/*.sh (sourced, not run).

# A visible step banner.
banner() {
    if [ -t 1 ]; then
        printf '\n\033[1m==> %s\033[0m\n' "$*"
    else
        printf '\n==> %s\n' "$*"
    fi
}

is_root() {
    [ "$(id -u)" -eq 0 ]
}

# ensure_packages CHECK PACKAGE [CHECK PACKAGE ...]
# CHECK is a command name or an absolute path. Installs the packages whose check fails, with a single
# `apt-get update` first, and only when something is missing. Without root it only says what is missing.
ensure_packages() {
    local missing=()
    while [ "$#" -ge 2 ]; do
        local check=$1 pkg=$2
        shift 2
        if [[ $check == /* ]]; then
            [ -e "$check" ] && continue
        else
            command -v "$check" >/dev/null 2>&1 && continue
        fi
        missing+=("$pkg")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    if ! is_root; then
        echo "missing packages: ${missing[*]} (run as root to have them installed)" >&2
        return 1
    fi
    banner "Installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq </dev/null >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null
}

# The directory cargo builds into.
target_dir() {
    if [ -n "${CARGO_TARGET_DIR:-}" ]; then
        echo "$CARGO_TARGET_DIR"
    else
        echo "$REPO_ROOT/target"
    fi
}
