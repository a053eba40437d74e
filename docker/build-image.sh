#!/usr/bin/env bash
# Builds the Docker image rivulet:dev (also tagged rivulet:latest) without a
# container registry: nothing is pulled. The image is FROM scratch and holds
# only the rivulet binary, the shared libraries `ldd` lists for it and the
# dynamic loader, so it runs on any machine with the same CPU architecture.
#
# Usage:
#   docker/build-image.sh                    # cargo build --release -p rivulet-cli, then build the image
#   docker/build-image.sh --binary <path>    # use this binary instead (no cargo build)
#
# Environment: CARGO_TARGET_DIR (where cargo puts target/release/rivulet),
# RIVULET_IMAGE_TAGS (default "rivulet:dev rivulet:latest").
#
# On a machine with a registry, docker/Dockerfile is the conventional
# alternative (rust builder stage, debian-slim runtime).
set -euo pipefail

usage() {
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
}

die() {
    echo "build-image: error: $*" >&2
    exit 1
}

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$script_dir/.." && pwd)
binary=""
while [ $# -gt 0 ]; do
    case "$1" in
        --binary)
            [ $# -ge 2 ] || die "--binary needs a path"
            binary=$2
            shift 2
            ;;
        --binary=*)
            binary=${1#--binary=}
            shift
            ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            usage >&2
            die "unknown argument: $1"
            ;;
    esac
done
read -r -a tags <<<"${RIVULET_IMAGE_TAGS:-rivulet:dev rivulet:latest}"
[ ${#tags[@]} -gt 0 ] || die "RIVULET_IMAGE_TAGS is empty"

command -v docker >/dev/null 2>&1 ||
    die "docker is not installed (no 'docker' on PATH); install Docker Engine first"
docker info >/dev/null 2>&1 ||
    die "cannot talk to the Docker daemon ('docker info' failed): is it running, and may this user use it?"
command -v ldd >/dev/null 2>&1 || die "ldd is missing (it comes with libc; package libc-bin)"
command -v tar >/dev/null 2>&1 || die "tar is missing"

if [ -z "$binary" ]; then
    target_dir=${CARGO_TARGET_DIR:-$repo_root/target}
    case "$target_dir" in
        /*) ;;
        *) target_dir=$repo_root/$target_dir ;; # cargo resolves a relative one from the cwd; we run it in the repo root
    esac
    echo "build-image: cargo build --release -p rivulet-cli (in $repo_root)"
    (cd "$repo_root" && cargo build --release -p rivulet-cli)
    binary=$target_dir/release/rivulet
fi
[ -f "$binary" ] || die "binary not found: $binary"
[ -x "$binary" ] || die "binary is not executable: $binary"
binary=$(cd "$(dirname "$binary")" && pwd)/$(basename "$binary")
echo "build-image: binary $binary ($(du -h "$binary" | cut -f1))"

context=$(mktemp -d "${TMPDIR:-/tmp}/rivulet-image.XXXXXX")
trap 'rm -rf "$context"' EXIT
rootfs=$context/rootfs
mkdir -p "$rootfs"

# Copies a file to the same path under the rootfs, following symlinks (the
# loader looks a library up by the path ldd found, so that path must be a
# real file in the image).
copy_in() {
    local src=$1
    mkdir -p "$rootfs$(dirname "$src")"
    cp -L "$src" "$rootfs$src"
    echo "build-image:   + $src"
}

echo "build-image: assembling the root filesystem in $rootfs"
cp "$binary" "$rootfs/rivulet"
chmod 0755 "$rootfs/rivulet"
echo "build-image:   + /rivulet"

# ldd lines look like
#   libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)
#   /lib64/ld-linux-x86-64.so.2 (0x...)
#   linux-vdso.so.1 (0x...)          <- provided by the kernel, no file
# and "not a dynamic executable" (exit 1) for a static binary.
if ldd_out=$(ldd "$binary" 2>&1); then
    if grep -q "not found" <<<"$ldd_out"; then
        die "ldd cannot resolve every library of $binary:"$'\n'"$ldd_out"
    fi
    while read -r lib; do
        copy_in "$lib"
    done < <(awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$ldd_out" | sort -u)
else
    if grep -qE "not a dynamic executable|statically linked" <<<"$ldd_out"; then
        echo "build-image:   (static binary: no libraries needed)"
    else
        die "ldd $binary failed: $ldd_out"
    fi
fi
# The loader named in the binary's PT_INTERP, should ldd's list differ.
if command -v readelf >/dev/null 2>&1; then
    interp=$(readelf -l "$binary" | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')
    if [ -n "$interp" ] && [ ! -e "$rootfs$interp" ]; then
        copy_in "$interp"
    fi
fi
mkdir -p "$rootfs/tmp" "$rootfs/data" "$rootfs/secret" "$rootfs/tls"
chmod 1777 "$rootfs/tmp"
chmod 0755 "$rootfs/data"
chmod 0700 "$rootfs/secret"
chmod 0755 "$rootfs/tls"

# Owners are set in the archive, not on disk, so this works without root:
# everything root-owned except /data, /secret (the cluster secret's shared
# volume) and /tls (docker/compose.tls.yml's certificates), which belong to the uid the container runs as (65532). ADD
# extracts the archive keeping these numeric owners.
echo "build-image: writing rootfs.tar (root-owned; /data, /secret and /tls owned by 65532:65532)"
# Fixed mtimes and order make the archive depend only on the files' contents,
# so rebuilding from an unchanged binary reuses Docker's cached layer.
tar_args=(--numeric-owner --sort=name --mtime=@0 -C "$rootfs")
tar "${tar_args[@]}" --owner=0 --group=0 --exclude=./data --exclude=./secret --exclude=./tls -cf "$context/rootfs.tar" .
tar "${tar_args[@]}" --owner=65532 --group=65532 --no-recursion -rf "$context/rootfs.tar" ./data ./secret ./tls
rm -rf "$rootfs"
cp "$script_dir/Dockerfile.scratch" "$context/Dockerfile"

tag_args=()
for t in "${tags[@]}"; do
    tag_args+=(-t "$t")
done
previous=$(docker image inspect --format '{{.Id}}' "${tags[0]}" 2>/dev/null || true)
echo "build-image: docker build ${tag_args[*]} (FROM scratch; nothing is pulled)"
# The legacy builder warns that it is deprecated when buildx is absent; the
# Dockerfile needs nothing BuildKit-specific, so either builder works.
docker build "${tag_args[@]}" "$context"
echo "build-image: built ${tags[*]}"
# The image these tags named before is now untagged: remove it rather than
# leave a dangling copy of the binary per build (not if a container uses it).
if [ -n "$previous" ] && [ "$previous" != "$(docker image inspect --format '{{.Id}}' "${tags[0]}")" ] &&
    [ "$(docker image inspect --format '{{len .RepoTags}}' "$previous" 2>/dev/null)" = "0" ]; then
    echo "build-image: removing the previous, now untagged image ${previous#sha256:}"
    docker image rm "$previous" >/dev/null 2>&1 || echo "build-image:   (still in use; left alone)"
fi
docker image ls "${tags[0]}"
