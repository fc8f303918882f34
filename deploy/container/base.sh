#!/usr/bin/env bash
# The base of the daemon's image, made from Debian packages: the C library and libgcc, which is
# all the daemon links against (no shell, no package manager), imported into podman's local
# storage. No registry is asked for anything; apt's mirror serves the packages.
#
#   deploy/container/base.sh [IMAGE]      # default localhost/syscall-profiler-base:bookworm
#
# MIRROR overrides the Debian mirror (default: http://deb.debian.org/debian).
set -euo pipefail
image=${1:-localhost/syscall-profiler-base:bookworm}
mirror=${MIRROR:-http://deb.debian.org/debian}
for tool in mmdebstrap podman; do
    command -v "$tool" >/dev/null ||
        { echo "base.sh: $tool is missing: apt-get install -y $tool" >&2; exit 1; }
done
# extract: unpack the packages, run no maintainer script; the image runs one program, linked against these two.
mmdebstrap --quiet --variant=extract --include=libc6,libgcc-s1 bookworm - "$mirror" |
    podman import --quiet - "$image" >/dev/null
echo "$image"
