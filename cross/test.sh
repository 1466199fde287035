#!/usr/bin/env bash
# The workspace's tests, built for aarch64-unknown-linux-musl and run under qemu-user:
#   cross/test.sh [-- CARGO_TEST_ARGS...]
#
# cargo runs each test binary through qemu-aarch64-static (`runner` in .cargo/config.toml). Tests
# that start the meshgate binary exec an aarch64 ELF themselves, which the kernel can only do
# through binfmt_misc: as root, this script mounts it if needed and registers qemu-aarch64-static
# for aarch64 ELF files for the duration of the run, and removes that registration on exit. As
# another user it needs a handler registered already (binfmt-support).
set -euo pipefail
# shellcheck source=cross/lib.sh
. "$(dirname "$0")/lib.sh"
cd "$ROOT"

[ "${1:-}" = "--" ] && shift
ensure_build_tools aarch64
# The tests' own third-party peers, as scripts/test.sh prepares them (keep the two in step).
ensure_apt openssl iproute2 coturn stun-client python3-venv
if ! "$ROOT/target/pyvenv/bin/python" -c "import aioice" >/dev/null 2>&1; then
  say "python venv with aioice (target/pyvenv)"
  python3 -m venv "$ROOT/target/pyvenv"
  "$ROOT/target/pyvenv/bin/pip" install -q aioice
fi

QEMU=/usr/bin/qemu-aarch64-static
BINFMT=/proc/sys/fs/binfmt_misc
entry=
mounted=
cleanup() {
  [ -n "$entry" ] && [ -e "$BINFMT/$entry" ] && echo -1 >"$BINFMT/$entry"
  if [ -n "$mounted" ] && [ "$(find "$BINFMT" -mindepth 1 -maxdepth 1 | wc -l)" -le 2 ]; then
    umount "$BINFMT" || true
  fi
}
trap cleanup EXIT

# aarch64 ELF header, as qemu's own binfmt configuration matches it.
MAGIC='7f454c460201010000000000000000000200b700'
has_handler() {
  local f
  for f in "$BINFMT"/*; do
    case ${f##*/} in register | status) continue ;; esac
    grep -q '^enabled' "$f" 2>/dev/null && grep -q "^magic $MAGIC" "$f" 2>/dev/null && return 0
  done
  return 1
}
if [ ! -e "$BINFMT/register" ]; then
  is_root || die "binfmt_misc is not mounted, so tests cannot exec aarch64 binaries; run as root"
  mount -t binfmt_misc binfmt_misc "$BINFMT"
  mounted=1
fi
# As root, always a registration of our own, even next to an existing one: a concurrent run that
# removes its own on exit must not pull the handler from under this one.
if is_root; then
  entry="meshgate-aarch64-$$"
  # F: the kernel opens the interpreter now, so it works inside any mount namespace.
  printf '%s\n' ":$entry:M::\\x7fELF\\x02\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\xb7\\x00:\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfe\\xff\\xff\\xff:$QEMU:F" >"$BINFMT/register"
  echo "registered binfmt_misc handler $entry -> $QEMU (removed on exit)" >&2
elif ! has_handler; then
  die "no binfmt_misc handler for aarch64 ELF files; run as root (or: apt-get install binfmt-support qemu-user-static)"
fi

say "cargo test --workspace --target aarch64-unknown-linux-musl (under qemu-user)"
start=$SECONDS
# The bulk session test moves 1 GiB each way natively; through two emulated nodes that alone took
# ~5 min, so under qemu it moves 128 MiB each way (the same code path, a shorter run).
# The mDNS discovery tests (agent/tests/discovery.rs) cannot pass emulated: qemu-user (Debian 12's
# 7.2) answers setsockopt IP_MULTICAST_IF and IPV6_MULTICAST_IF with "Unsupported setsockopt"
# (seen with `qemu-aarch64-static -d unimp`), and mdns-sd needs them to send on each interface,
# so nothing is ever announced. A real ARM kernel has them; the tests run natively in
# scripts/test.sh. Skipped here by name, and said so.
qemu_skip=(
  three_nodes_find_each_other_over_mdns
  nodes_listening_on_ipv6_only_keep_their_sessions
  a_node_of_another_mesh_is_announced_but_never_listed
  a_node_fails_over_to_the_other_gateway
  a_gateway_that_vanishes_is_dropped
)
echo "under qemu-user, skipping the mDNS discovery tests (no IP_MULTICAST_IF in qemu-user): ${qemu_skip[*]}" >&2
skip_args=()
for t in "${qemu_skip[@]}"; do skip_args+=(--skip "$t"); done
MESHGATE_TEST_BULK_MIB=${MESHGATE_TEST_BULK_MIB:-128} \
  cargo test --workspace --locked --target "$(triple aarch64)" "$@" -- "${skip_args[@]}"
echo "aarch64 tests under qemu-user: $((SECONDS - start)) s (build included)" >&2
