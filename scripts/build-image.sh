#!/usr/bin/env bash
# Builds the static binaries and the acr-broker container image for amd64 and arm64, with
# whichever engine is installed (podman or docker), plus a CycloneDX SBOM of the Rust dependencies:
#   scripts/build-image.sh
#   IMAGE=registry.example.com/acr/acr-broker:0.1.0 PUSH=1 scripts/build-image.sh
#
# Environment (all optional):
#   IMAGE         image reference (default localhost/acr-broker:<version in Cargo.toml>); each
#                 architecture is also tagged <IMAGE>-<arch>
#   ARCHES        architectures, default "amd64 arm64"
#   ENGINE        podman or docker (default: podman when installed, else docker)
#   BINARIES      directory holding <arch>/acr-broker and <arch>/docker-credential-acr-broker
#                 already built by scripts/build-static.sh: skips cargo (the test command builds
#                 them once and reuses them); default: build them now into target/static
#   SBOM_DIR      where the SBOMs go (default target/image)
#   IMAGE_SOURCE  org.opencontainers.image.source (default: the git remote `origin`, if a URL)
#   PUSH=1        push the per-architecture images and the manifest list to IMAGE's registry
# The engine's own settings apply unchanged (CONTAINERS_STORAGE_CONF, CONTAINERS_CONF, DOCKER_HOST…).
#
# With podman, IMAGE is a local multi-arch manifest list. docker's classic image store cannot hold
# one locally: IMAGE is then the host architecture's image, and the manifest list is made on push.
#
# Prints, last: one `image=REF id=ID size=BYTES` line per architecture and `manifest=REF …`.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'build-image: %s\n' "$*" >&2; }
die() {
    log "$*"
    exit 1
}

version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)"
[ -n "$version" ] || die "no version = \"…\" in Cargo.toml"
image="${IMAGE:-localhost/acr-broker:$version}"
# A reference without a tag gets :latest, so that <IMAGE>-<arch> is a tag, not a new repository.
case "${image##*/}" in
    *:* | *@*) ;;
    *) image="$image:latest" ;;
esac
case "$image" in *@*) die "IMAGE=$image: give a tag, not a digest" ;; esac
read -r -a arches <<<"${ARCHES:-amd64 arm64}"
sbom_dir="${SBOM_DIR:-target/image}"

engine="${ENGINE:-}"
if [ -z "$engine" ]; then
    if command -v podman >/dev/null 2>&1; then
        engine=podman
    elif command -v docker >/dev/null 2>&1; then
        engine=docker
    else
        die "neither podman nor docker is installed (apt-get install podman runc)"
    fi
fi
case "$engine" in podman | docker) ;; *) die "ENGINE=$engine: want podman or docker" ;; esac

revision="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
if [ "$revision" != unknown ] && [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    revision="$revision-dirty"
fi
source_url="${IMAGE_SOURCE:-$(git remote get-url origin 2>/dev/null || true)}"
case "$source_url" in
    https://* | http://*) ;;
    *) source_url=unknown ;;
esac

# ---- binaries ----
started=$SECONDS
if [ -n "${BINARIES:-}" ]; then
    binaries="$BINARIES"
    log "using prebuilt binaries in $binaries"
else
    binaries=target/static
    ARCHES="${arches[*]}" OUT="$binaries" scripts/build-static.sh
fi
for arch in "${arches[@]}"; do
    for bin in acr-broker docker-credential-acr-broker; do
        [ -x "$binaries/$arch/$bin" ] || die "missing $binaries/$arch/$bin (run scripts/build-static.sh)"
    done
done
binaries_took=$((SECONDS - started))

# ---- SBOM (one per architecture: the dependency graph can differ by target) ----
command -v cargo-cyclonedx >/dev/null 2>&1 || die "cargo-cyclonedx not found: cargo install --locked cargo-cyclonedx"
mkdir -p "$sbom_dir"
for arch in "${arches[@]}"; do
    case "$arch" in
        amd64) triple=x86_64-unknown-linux-gnu ;;
        arm64) triple=aarch64-unknown-linux-gnu ;;
        *) die "unknown architecture $arch" ;;
    esac
    # cargo-cyclonedx writes <name>.json next to every workspace member's Cargo.toml.
    name="acr-broker-sbom-$$"
    cargo cyclonedx --quiet --format json --spec-version 1.5 --no-build-deps --target "$triple" \
        --override-filename "$name"
    mv -f "$name.json" "$sbom_dir/acr-broker-$version-$arch.cdx.json"
    rm -f "emulator/$name.json"
done

# ---- image ----
# The build context holds only the binaries (never the repository or target/).
context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
for arch in "${arches[@]}"; do
    mkdir -p "$context/$arch"
    cp "$binaries/$arch/acr-broker" "$binaries/$arch/docker-credential-acr-broker" "$context/$arch/"
done

started=$SECONDS
for arch in "${arches[@]}"; do
    # TARGETARCH is passed explicitly as well: docker's classic builder does not set it.
    "$engine" build --quiet --platform "linux/$arch" --build-arg "TARGETARCH=$arch" \
        --build-arg "VERSION=$version" --build-arg "REVISION=$revision" --build-arg "SOURCE=$source_url" \
        -f docker/Dockerfile -t "$image-$arch" "$context" >/dev/null
done

host_arch=amd64
[ "$(uname -m)" = aarch64 ] && host_arch=arm64
if [ "$engine" = podman ]; then
    # Start from an empty list: `manifest add` onto an old list would keep its stale entries.
    if podman manifest exists "$image" 2>/dev/null; then
        podman manifest rm "$image" >/dev/null
    elif podman image exists "$image"; then
        podman rmi "$image" >/dev/null
    fi
    podman manifest create "$image" >/dev/null
    for arch in "${arches[@]}"; do
        podman manifest add "$image" "containers-storage:$image-$arch" >/dev/null
    done
    if [ "${PUSH:-0}" = 1 ]; then
        podman manifest push --all "$image" "docker://$image"
    fi
else
    for arch in "${arches[@]}"; do
        [ "$arch" = "$host_arch" ] && docker tag "$image-$arch" "$image"
    done
    if [ "${PUSH:-0}" = 1 ]; then
        list=()
        for arch in "${arches[@]}"; do
            docker push "$image-$arch"
            list+=("$image-$arch")
        done
        docker manifest create --amend "$image" "${list[@]}"
        docker manifest push "$image"
    fi
fi
image_took=$((SECONDS - started))

log "binaries ${binaries_took}s, image ${image_took}s; SBOM: $sbom_dir/acr-broker-$version-<arch>.cdx.json"
for arch in "${arches[@]}"; do
    "$engine" image inspect --format "image=$image-$arch id={{.Id}} size={{.Size}}" "$image-$arch"
done
if [ "$engine" = podman ]; then
    printf 'manifest=%s arches=%s\n' "$image" "$(podman manifest inspect "$image" |
        python3 -c 'import json,sys; print(",".join(m["platform"]["architecture"] for m in json.load(sys.stdin)["manifests"]))')"
fi
