#!/usr/bin/env bash
# The whole check, as CI runs it (.ci/run): test dependencies, formatting, lints, tests.
#   scripts/test.sh            # from anywhere in the repository
# Exits non-zero on the first failing step and prints a summary of what ran either way.
set -euo pipefail
cd "$(dirname "$0")/.."

steps=()
current=""
started=0

begin() {
    current="$1"
    started=$SECONDS
    printf '\n==> %s\n' "$current"
}

done_step() {
    steps+=("ok    $(printf '%4ss' $((SECONDS - started)))  $current")
    current=""
}

summary() {
    local rc=$?
    printf '\n==================== summary ====================\n'
    local s
    for s in "${steps[@]+"${steps[@]}"}"; do
        printf '%s\n' "$s"
    done
    if [ -n "$current" ]; then
        printf 'FAIL  %4ss  %s (exit %s)\n' $((SECONDS - started)) "$current" "$rc"
    fi
    if [ "$rc" -eq 0 ]; then
        printf 'result: PASS\n'
    else
        printf 'result: FAIL\n'
    fi
    exit "$rc"
}
trap summary EXIT

begin "install test dependencies (scripts/install-test-deps.sh)"
scripts/install-test-deps.sh
done_step

begin "cargo fmt --all -- --check"
cargo fmt --all -- --check
done_step

begin "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
done_step

begin "cargo deny check licenses bans sources"
# advisories need the RustSec database from the network; see deny.toml for where to run them.
cargo deny check --hide-inclusion-graph licenses bans sources
done_step

# Built once here; tests/image.rs puts them in the image instead of building them again.
begin "static release binaries, amd64 + arm64 (scripts/build-static.sh)"
scripts/build-static.sh
export ACR_BROKER_STATIC_DIR="$PWD/target/static"
done_step

if command -v cargo-nextest >/dev/null 2>&1; then
    # nextest does not run doctests; run them first so nextest's summary closes the output.
    begin "cargo test --workspace --doc"
    cargo test --workspace --doc
    done_step
    begin "cargo nextest run --workspace"
    cargo nextest run --workspace
    done_step
else
    begin "cargo test --workspace"
    cargo test --workspace
    done_step
fi
