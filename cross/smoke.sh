#!/usr/bin/env bash
# Smoke test of one meshgate binary, natively or under qemu-user:
#   cross/smoke.sh BINARY [RUNNER...]      e.g. cross/smoke.sh target/cross/meshgate-armv6 qemu-arm-static -cpu arm1176
# 1. `meshgate --version`, and `meshgate id --json` twice on a temp state dir (same identity);
# 2. `meshgate run` on 127.0.0.1:0 logs "started" and binds;
# 3. the node answers a STUN Binding request on loopback (cross/stun_binding.py);
# 4. SIGTERM: it logs "stopped" and exits 0.
# Every wait is bounded; the node is killed by PID whatever happens.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

[ $# -ge 1 ] || {
  echo "usage: $0 BINARY [RUNNER...]" >&2
  exit 2
}
bin=$1
shift
runner=("$@")
[ -x "$bin" ] || {
  echo "smoke: $bin is not an executable file" >&2
  exit 1
}
command -v python3 >/dev/null || {
  echo "smoke: python3 is needed for the STUN check: apt-get install python3" >&2
  exit 1
}
if ((${#runner[@]})); then
  command -v "${runner[0]}" >/dev/null || {
    echo "smoke: ${runner[0]} is missing: apt-get install qemu-user-static" >&2
    exit 1
  }
fi

name="$(basename "$bin")${runner:+ under ${runner[*]}}"
tmp=$(mktemp -d)
node_pid=
cleanup() {
  if [ -n "$node_pid" ] && kill -0 "$node_pid" 2>/dev/null; then
    kill -KILL "$node_pid" 2>/dev/null || true
    wait "$node_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

fail() {
  echo "smoke FAIL ($name): $*" >&2
  if [ -s "$tmp/node.log" ]; then
    echo "--- node stderr:" >&2
    cat "$tmp/node.log" >&2
  fi
  exit 1
}

mg() { timeout 60 "${runner[@]}" "$bin" "$@"; }

# --- 1. version and identity -----------------------------------------------------------------------
version=$(mg --version) || fail "--version failed"
id1=$(mg id --state-dir "$tmp/state" --json) || fail "meshgate id failed"
id2=$(mg id --state-dir "$tmp/state" --json) || fail "meshgate id (second time) failed"
check_ids() {
  python3 - "$id1" "$id2" <<'EOF'
import json, sys
a, b = (json.loads(s) for s in sys.argv[1:3])
assert set(a) >= {"id", "short_id", "ipv6", "fingerprint"}, a
assert len(a["id"]) == 52 and a["id"].startswith(a["short_id"]), a
assert a == b, f"identity changed between runs: {a} != {b}"
print(a["short_id"])
EOF
}
short_id=$(check_ids) || fail "meshgate id --json: unexpected output: $id1 / $id2"
[ "$(stat -c %a "$tmp/state/identity/key.pem")" = 600 ] || fail "identity/key.pem is not mode 0600"

# --- 2. run: starts and binds ----------------------------------------------------------------------
cat >"$tmp/meshgate.toml" <<'EOF'
listen = "127.0.0.1:0"
api = "127.0.0.1:0"
log = "info"
[discovery]
mdns = false
EOF
env -u RUST_LOG -u NOTIFY_SOCKET -u WATCHDOG_USEC \
  "${runner[@]}" "$bin" run --config "$tmp/meshgate.toml" --state-dir "$tmp/state" \
  2>"$tmp/node.log" >/dev/null &
node_pid=$!

port=
for _ in $(seq 300); do # 30 s: qemu-user is slow to start a big binary
  port=$(sed -n 's/.* started .* udp 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$tmp/node.log" | head -n1)
  [ -n "$port" ] && break
  kill -0 "$node_pid" 2>/dev/null || fail "meshgate run exited before logging \"started\""
  sleep 0.1
done
[ -n "$port" ] || fail "no \"started ... udp 127.0.0.1:PORT\" line within 30 s"
[ "$port" != 0 ] || fail "logged udp port 0"

# --- 3. STUN Binding on loopback -------------------------------------------------------------------
stun_check() {
  local out
  out=$(python3 "$here/stun_binding.py" 127.0.0.1 "$port" 6 2>&1) || fail "${out#stun_binding: }"
  echo "  $out"
}
stun_check

# --- 4. SIGTERM: clean stop ------------------------------------------------------------------------
kill -TERM "$node_pid"
status=
for _ in $(seq 150); do # 15 s
  if ! kill -0 "$node_pid" 2>/dev/null; then
    status=0
    wait "$node_pid" || status=$?
    break
  fi
  sleep 0.1
done
[ -n "$status" ] || fail "meshgate run did not stop within 15 s of SIGTERM"
node_pid=
[ "$status" = 0 ] || fail "meshgate run exited $status on SIGTERM, expected 0"
grep -q 'stopped' "$tmp/node.log" || fail "no \"stopped\" log line after SIGTERM"

echo "smoke ok ($name): $version, node $short_id, udp 127.0.0.1:$port, clean stop"
