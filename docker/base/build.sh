#!/usr/bin/env bash
# Build the local base image (default fercodec-base:py3.11) that stands in for python:3.11-slim:
#   docker/base/build.sh [NAME]
# Needs root, debootstrap and a running dockerd; reaches deb.debian.org only. Both steps are
# cached: the debootstrap'd Debian (fercodec-debian:bookworm) is imported once and reused, and
# the Python layer is an ordinary cached docker build.
set -euo pipefail
NAME=${1:-fercodec-base:py3.11}
DEBIAN=${FERCODEC_DEBIAN_IMAGE:-fercodec-debian:bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
here=$(cd "$(dirname "$0")" && pwd)

if ! docker image inspect "$DEBIAN" >/dev/null 2>&1; then
  root=$(mktemp -d /var/tmp/fercodec-debootstrap.XXXXXX)
  trap 'rm -rf "$root"' EXIT
  echo "debootstrap --variant=minbase bookworm -> $DEBIAN" >&2
  debootstrap --variant=minbase bookworm "$root" "$MIRROR" >"$root.log" 2>&1 || { tail -20 "$root.log" >&2; exit 1; }
  rm -f "$root.log"
  # Slim like Debian's own slim images: no package caches, docs, man pages or translations.
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin "$root"/var/lib/apt/lists/* "$root"/var/log/* \
         "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/*
  find "$root"/usr/share/doc -mindepth 2 ! -name copyright -delete 2>/dev/null || true
  tar -C "$root" -c . | docker import --change 'CMD ["bash"]' - "$DEBIAN" >/dev/null
  rm -rf "$root"
  trap - EXIT
fi

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir "$ctx/extra-ca"
cp "$here/Dockerfile" "$ctx/"
for crt in /usr/local/share/ca-certificates/*.crt; do [ -f "$crt" ] && cp "$crt" "$ctx/extra-ca/"; done
docker build --force-rm --network host -q --build-arg DEBIAN="$DEBIAN" -t "$NAME" "$ctx" >/dev/null
echo "$NAME"
