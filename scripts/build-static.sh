#!/usr/bin/env bash
# Builds the two release binaries as static executables for every architecture the image ships:
#   scripts/build-static.sh              # amd64 and arm64
#   ARCHES=amd64 scripts/build-static.sh # one of them
#   PIE=1 scripts/build-static.sh        # position-independent (see below)
# Output: target/static/<arch>/{acr-broker,docker-credential-acr-broker} (override with OUT=DIR).
#
# Static glibc (`-C target-feature=+crt-static` on the *-linux-gnu targets), not musl: Debian ships
# a cross gcc for aarch64-linux-gnu (needed to compile ring's C and assembly) but no musl cross
# toolchain, so one recipe covers both architectures; glibc's allocator is also faster than
# musl's. glibc 2.34+ builds its `files` and `dns` NSS modules into libc, so host names still
# resolve (from /etc/hosts and /etc/resolv.conf) in an image with no userland.
#
# Not position-independent by default (`-C relocation-model=static`). A static-pie binary relocates
# itself at every start: ~13,000 relocations and ~55 copy-on-write page faults for the 13 MB
# daemon binary, which the kubelet runs once per image it has not cached (`acr-broker
# kubelet-plugin`). Measured with benches/helper_floor.rs: the plugin went from floor + 0.56 ms
# to floor + 0.04 ms. The cost is ASLR of the binary's own code and data (stack, heap, mmap and
# thread stacks stay randomized); Go-built kubelet plugins make the same choice. PIE=1 keeps the
# binaries position-independent for whoever prefers that to the plugin's start-up time.
#
# Needs: rustup targets x86_64-unknown-linux-gnu and aarch64-unknown-linux-gnu, and for arm64
# Debian's gcc-aarch64-linux-gnu (scripts/install-test-deps.sh installs both).
set -euo pipefail
cd "$(dirname "$0")/.."

out="${OUT:-target/static}"
read -r -a arches <<<"${ARCHES:-amd64 arm64}"

log() { printf 'build-static: %s\n' "$*" >&2; }

triple_of() {
    case "$1" in
        amd64) echo x86_64-unknown-linux-gnu ;;
        arm64) echo aarch64-unknown-linux-gnu ;;
        *)
            log "unknown architecture $1 (want amd64 or arm64)"
            exit 64
            ;;
    esac
}

for arch in "${arches[@]}"; do
    triple="$(triple_of "$arch")"
    started=$SECONDS
    env_args=()
    if [ "$arch" = arm64 ] && [ "$(uname -m)" != aarch64 ]; then
        if ! command -v aarch64-linux-gnu-gcc >/dev/null 2>&1; then
            log "aarch64-linux-gnu-gcc not found: apt-get install gcc-aarch64-linux-gnu"
            exit 1
        fi
        env_args+=(
            CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
            CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
            AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
        )
    fi
    # With --target, RUSTFLAGS reach only the target's code, not build scripts or proc macros.
    # Symbols are stripped for size; panics still name the file and line.
    rustflags="-C target-feature=+crt-static -C strip=symbols"
    if [ "${PIE:-0}" != 1 ]; then
        rustflags+=" -C relocation-model=static"
    fi
    env "${env_args[@]}" RUSTFLAGS="$rustflags" \
        cargo build --release --locked --target "$triple" \
        --bin acr-broker --bin docker-credential-acr-broker
    mkdir -p "$out/$arch"
    for bin in acr-broker docker-credential-acr-broker; do
        # cp onto a temporary name and rename: a running copy is never rewritten in place.
        cp "target/$triple/release/$bin" "$out/$arch/.$bin.tmp"
        mv -f "$out/$arch/.$bin.tmp" "$out/$arch/$bin"
    done
    log "$arch ($triple): $out/$arch in $((SECONDS - started)) s"
done
