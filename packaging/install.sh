#!/usr/bin/env bash
# Installs syscall-profiler as a systemd service: the binary, the unit and an example config
# (an existing config is never overwritten). Idempotent. Run as root for a real install.
#
#   packaging/install.sh                 # cargo build --release, install under /usr/local
#   packaging/install.sh --bin PATH      # install an already built binary
#
# Environment: PREFIX (/usr/local), SYSCONFDIR (/etc), UNITDIR (/etc/systemd/system) and
# DESTDIR (staging root, prefixed to all three) place the files; the unit's paths follow
# PREFIX and SYSCONFDIR.
set -euo pipefail
cd "$(dirname "$0")/.."

PREFIX=${PREFIX:-/usr/local}
SYSCONFDIR=${SYSCONFDIR:-/etc}
UNITDIR=${UNITDIR:-/etc/systemd/system}
DESTDIR=${DESTDIR:-}
BIN=

while [ $# -gt 0 ]; do
    case $1 in
        --bin) BIN=${2:?--bin needs a path}; shift 2 ;;
        *) echo "install.sh: unknown argument '$1' (known: --bin PATH)" >&2; exit 2 ;;
    esac
done

if [ -z "$BIN" ]; then
    cargo build --release -p profiler
    BIN=target/release/syscall-profiler
fi
[ -x "$BIN" ] || { echo "install.sh: $BIN is not an executable" >&2; exit 1; }

bin_path=$PREFIX/bin/syscall-profiler
config_path=$SYSCONFDIR/syscall-profiler/config.toml
doc_dir=$PREFIX/share/doc/syscall-profiler

install -D -m 0755 "$BIN" "$DESTDIR$bin_path"
install -D -m 0644 README.md "$DESTDIR$doc_dir/README.md"
# The README links into docs/: keep the same layout so the links resolve.
for doc in docs/*.md docs/*.png; do
    install -D -m 0644 "$doc" "$DESTDIR$doc_dir/$doc"
done

unit=$(mktemp)
trap 'rm -f "$unit"' EXIT
sed -e "s|/usr/local/bin/syscall-profiler|$bin_path|" \
    -e "s|/etc/syscall-profiler/config.toml|$config_path|" \
    -e "s|/usr/local/share/doc/syscall-profiler|$doc_dir|" \
    packaging/syscall-profiler.service >"$unit"
install -D -m 0644 "$unit" "$DESTDIR$UNITDIR/syscall-profiler.service"

if [ -e "$DESTDIR$config_path" ]; then
    echo "install.sh: keeping the existing $DESTDIR$config_path"
else
    install -D -m 0644 packaging/config.toml "$DESTDIR$config_path"
fi

echo "install.sh: installed $DESTDIR$bin_path and $DESTDIR$UNITDIR/syscall-profiler.service"
# Only a real install on a host run by systemd gets the manager told.
if [ -z "$DESTDIR" ] && [ "$UNITDIR" = /etc/systemd/system ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    echo "install.sh: start it with: systemctl enable --now syscall-profiler"
fi
