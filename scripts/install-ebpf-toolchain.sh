#!/usr/bin/env bash
# Installs the toolchain that builds profiler-ebpf on a Debian-based machine without internet
# access beyond the package registries. Idempotent: every step checks before it acts.
#
# Why this route: rustup's nightly here lacks `rust-src` and cannot download it, so the usual
# `cargo +nightly build -Z build-std=core` is impossible. Debian ships a matched trio
# (rustc-web, cargo-web, rust-web-src) whose core sources compile with its own rustc, and
# bpf-linker links against the LLVM that rustup's stable toolchain already ships.
# On a machine with internet, the usual route works instead:
#   rustup toolchain install nightly --component rust-src && cargo install bpf-linker
set -euo pipefail

BPF_LLVM_PREFIX=${BPF_LLVM_PREFIX:-/opt/bpf-llvm}
BPF_LINKER_VERSION=0.13.0

log() { printf 'install-ebpf-toolchain: %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
    echo "install-ebpf-toolchain: must run as root (it installs Debian packages)" >&2
    exit 1
fi

if [ ! -x /usr/bin/rustc ] || [ ! -d /usr/lib/rustlib/src/rust/library/core ]; then
    log "installing Debian's rustc-web, cargo-web and rust-web-src"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rustc-web cargo-web rust-web-src >/dev/null
else
    log "Debian rustc-web trio present: $(/usr/bin/rustc --version)"
fi

if command -v bpf-linker >/dev/null 2>&1 && bpf-linker --version 2>/dev/null | grep -q "$BPF_LINKER_VERSION"; then
    log "bpf-linker present: $(bpf-linker --version)"
else
    sysroot_lib="$(rustc --print sysroot)/lib"
    llvm_so=$(ls "$sysroot_lib"/libLLVM.so.*-rust-* 2>/dev/null | head -n1 || true)
    if [ -z "$llvm_so" ]; then
        echo "install-ebpf-toolchain: rustup's toolchain ships no libLLVM.so under $sysroot_lib" >&2
        exit 1
    fi
    mkdir -p "$BPF_LLVM_PREFIX/lib"
    ln -sf "$llvm_so" "$BPF_LLVM_PREFIX/lib/libLLVM.so"
    ln -sf "$llvm_so" "$BPF_LLVM_PREFIX/lib/$(basename "$llvm_so")"
    log "building bpf-linker $BPF_LINKER_VERSION against $(basename "$llvm_so")"
    LLVM_PREFIX="$BPF_LLVM_PREFIX" cargo install bpf-linker --version "$BPF_LINKER_VERSION" --locked \
        --no-default-features --features llvm-22
fi
log "ready"
