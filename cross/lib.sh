# shellcheck shell=bash
# Shared by the cross/ scripts: the target table, and installing what a build needs.
# Everything is installed only when missing, and only as root; otherwise the script stops and
# names what to install.

# Variables here are used by the scripts that source this file.
# shellcheck disable=SC2034

# Pinned: the versions these scripts were checked with.
ZIGLANG_VERSION=0.17.1
CARGO_ZIGBUILD_VERSION=0.24.1

# Each binary must stay under this, stripped (no UPX: it costs RAM on routers).
SIZE_BUDGET=$((3584 * 1024)) # 3.5 MiB

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${MESHGATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshgate}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
OUT="$TARGET_DIR/cross"

say() { printf '\n== %s\n' "$*" >&2; }
die() {
  printf 'cross: %s\n' "$*" >&2
  exit 1
}

# short name -> Rust target triple
triple() {
  case $1 in
    x86_64) echo x86_64-unknown-linux-musl ;;
    aarch64) echo aarch64-unknown-linux-musl ;;
    armv7) echo armv7-unknown-linux-musleabihf ;;
    armv6) echo arm-unknown-linux-musleabihf ;;
    mipsel) echo mipsel-unknown-linux-musl ;;
    *) die "unknown target '$1' (expected one of: $ALL_TARGETS, or all)" ;;
  esac
}
ALL_TARGETS="x86_64 aarch64 armv7 armv6 mipsel"

# How a target is built: "stable" (rustup ships its std; system gcc/musl-gcc link it) or "zig"
# (no std from rustup for this machine: nightly -Zbuild-std, linked by cargo-zigbuild).
build_kind() {
  case $1 in
    x86_64 | aarch64) echo stable ;;
    *) echo zig ;;
  esac
}

# The command that runs a binary of this target on this machine (empty: natively).
runner() {
  case $1 in
    x86_64) echo "" ;;
    aarch64) echo "qemu-aarch64-static" ;;
    armv7) echo "qemu-arm-static -cpu cortex-a7" ;;
    armv6) echo "qemu-arm-static -cpu arm1176" ;;
    mipsel) echo "qemu-mipsel-static" ;;
  esac
}

is_root() { [ "$(id -u)" -eq 0 ]; }

APT_UPDATED=
# ensure_apt PACKAGE...: installs the Debian packages that are not installed.
ensure_apt() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  is_root || die "missing Debian packages: ${missing[*]}; run as root, or: apt-get install ${missing[*]}"
  say "apt-get install ${missing[*]}"
  if [ -z "$APT_UPDATED" ]; then
    apt-get update -qq
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# ensure_rustup_target TRIPLE: rust-std for the stable toolchain.
ensure_rustup_target() {
  command -v rustup >/dev/null || die "rustup is needed (https://rustup.rs)"
  rustup target list --installed | grep -qx "$1" && return 0
  say "rustup target add $1"
  rustup target add "$1"
}

ensure_nightly() {
  if ! rustup toolchain list | grep -q '^nightly'; then
    say "rustup toolchain install nightly"
    rustup toolchain install nightly --profile minimal --component rust-src
  fi
  rustup component list --toolchain nightly --installed | grep -q '^rust-src' ||
    rustup component add --toolchain nightly rust-src
}

# ensure_zig: zig (from PyPI's ziglang, in a venv of ours) and cargo-zigbuild. Puts both on PATH.
ensure_zig() {
  local venv="$CACHE/zig-venv"
  if ! "$venv/bin/python" -m ziglang version 2>/dev/null | grep -qx "$ZIGLANG_VERSION"; then
    say "pip install ziglang==$ZIGLANG_VERSION (venv $venv)"
    command -v python3 >/dev/null || ensure_apt python3
    mkdir -p "$CACHE"
    if ! python3 -m venv --clear "$venv" 2>/dev/null; then
      ensure_apt python3-venv
      python3 -m venv --clear "$venv"
    fi
    "$venv/bin/pip" install -q --disable-pip-version-check "ziglang==$ZIGLANG_VERSION"
  fi
  # cargo-zigbuild looks for `python3 -m ziglang` when there is no `zig` on PATH.
  PATH="$venv/bin:$PATH"
  export PATH
  if ! cargo-zigbuild --version 2>/dev/null | grep -q " $CARGO_ZIGBUILD_VERSION\$"; then
    say "cargo install cargo-zigbuild $CARGO_ZIGBUILD_VERSION"
    cargo install --locked --version "$CARGO_ZIGBUILD_VERSION" cargo-zigbuild
  fi
}

# ensure_build_tools SHORT: everything needed to build (and run) one target.
ensure_build_tools() {
  case $1 in
    x86_64)
      ensure_apt musl-tools
      ensure_rustup_target "$(triple x86_64)"
      ;;
    aarch64)
      # libc6-dev-arm64-cross is only a Recommends, and ring needs its headers.
      ensure_apt gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static
      ensure_rustup_target "$(triple aarch64)"
      ;;
    *)
      ensure_apt qemu-user-static
      ensure_nightly
      ensure_zig
      ;;
  esac
  ensure_apt python3 binutils
}
