#!/usr/bin/env bash
# Installs what the test suite needs on Debian 12 (bookworm), and nothing when it is all there:
#   docker-registry, skopeo  - end-to-end pulls through the credential helper
#   containerd               - a real containerd 1.6 daemon pulling through the registry mirror
#                              (tests/e2e_mirror.rs: `ctr images pull --hosts-dir`, CRI PullImage)
#   systemd                  - systemd-analyze verify/security on the units (tests/packaging.rs)
#   openssl, ca-certificates - test certificates for the registry's token auth
#   promtool                 - `promtool check metrics` on /metrics; extracted from the
#                              prometheus .deb into /usr/local/bin WITHOUT installing the package
#                              (which would pull in ~218 MB of web-UI JavaScript)
# Idempotent: runs apt-get only when something is missing. Needs root (or sudo) for that.
set -euo pipefail

packages=(docker-registry skopeo containerd systemd openssl ca-certificates curl util-linux)
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

if command -v promtool >/dev/null 2>&1; then
    log "promtool present: $(command -v promtool)"
else
    log "extracting promtool from the prometheus package into $promtool_dest"
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
    dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$work" ./usr/bin/promtool
    as_root install -m 0755 "$work/usr/bin/promtool" "$promtool_dest"
fi

for tool in docker-registry skopeo containerd ctr systemd-analyze openssl promtool; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        log "still missing after install: $tool"
        exit 1
    fi
done
log "ok: docker-registry skopeo containerd ctr systemd-analyze openssl promtool"
