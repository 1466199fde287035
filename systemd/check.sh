#!/usr/bin/env bash
# Offline checks of the service files (PID 1 need not be systemd):
#   systemd/check.sh [BINARY]
# - `systemd-analyze verify systemd/meshgate.service`: nothing at all on stderr;
# - `systemd-analyze security --offline=yes`: overall exposure 2.0 or below;
# - shellcheck on the OpenWrt procd script and the cross/ scripts.
# verify wants ExecStart's binary to exist, so the unit is checked in a copy whose paths point at
# BINARY (default: a copy of /bin/true; the path is all verify looks at).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
MAX_EXPOSURE=2.0

need() { # program package
  command -v "$1" >/dev/null 2>&1 && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "systemd/check.sh: $1 is missing; run as root, or: apt-get install $2" >&2
    exit 1
  fi
  echo "== apt-get install $2" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2"
}
need systemd-analyze systemd
need shellcheck shellcheck

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp "${1:-/bin/true}" "$tmp/meshgate"
chmod 0755 "$tmp/meshgate"
sed "s|/usr/local/bin/meshgate|$tmp/meshgate|g" "$root/systemd/meshgate.service" >"$tmp/meshgate.service"
grep -q "^ExecStart=$tmp/meshgate " "$tmp/meshgate.service" ||
  { echo "systemd/check.sh: ExecStart is not /usr/local/bin/meshgate; update this script" >&2; exit 1; }

echo "== systemd-analyze verify meshgate.service"
# Warnings exit 0, so any stderr at all is a failure.
if ! (cd "$tmp" && systemd-analyze verify ./meshgate.service) >"$tmp/verify.out" 2>"$tmp/verify.err" ||
  [ -s "$tmp/verify.err" ]; then
  cat "$tmp/verify.out" "$tmp/verify.err" >&2
  echo "systemd/check.sh: systemd-analyze verify complained about systemd/meshgate.service" >&2
  exit 1
fi
echo "ok: no warnings"

echo "== systemd-analyze security --offline=yes meshgate.service"
(cd "$tmp" && systemd-analyze security --offline=yes --no-pager ./meshgate.service) >"$tmp/security.out" 2>&1 || true
exposure=$(sed -n 's/.*Overall exposure level for meshgate.service: \([0-9.]*\).*/\1/p' "$tmp/security.out")
if [ -z "$exposure" ]; then
  cat "$tmp/security.out" >&2
  echo "systemd/check.sh: no exposure level in systemd-analyze security's output" >&2
  exit 1
fi
grep '✗' "$tmp/security.out" | sed 's/  */ /g' || true
if awk -v e="$exposure" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(e > m) }'; then
  echo "systemd/check.sh: exposure $exposure is above $MAX_EXPOSURE: harden systemd/meshgate.service" >&2
  exit 1
fi
echo "ok: exposure $exposure (at most $MAX_EXPOSURE)"

echo "== procd script, dry run with procd stubbed (dash standing in for busybox ash)"
# shellcheck disable=SC2016  # the $-expressions are for the inner sh
procd_out=$(sh -c '
  mkdir() { echo "mkdir $*"; }
  chmod() { echo "chmod $*"; }
  procd_open_instance() { echo "open"; }
  procd_close_instance() { echo "close"; }
  procd_set_param() { echo "param $*"; }
  procd_send_signal() { echo "signal $*"; }
  . "$1"
  CONFIG=/nonexistent/meshgate.toml
  start_service
  reload_service
  CONFIG=$2 # any existing file stands in for the config
  start_service
  PROG=true reload_service
  PROG=false reload_service 2>/dev/null || echo "reload refused"' \
  sh "$root/systemd/meshgate.init" "$tmp/meshgate.service")
for want in "mkdir -p /etc/meshgate/state" "open" \
  "param command /usr/bin/meshgate run --state-dir /etc/meshgate/state" \
  "param command /usr/bin/meshgate run --config $tmp/meshgate.service --state-dir /etc/meshgate/state" \
  "param respawn 3600 5 5" "close" "signal meshgate * HUP" "reload refused"; do
  grep -qxF -- "$want" <<<"$procd_out" || {
    printf '%s\n' "$procd_out" >&2
    echo "systemd/check.sh: meshgate.init did not do: $want" >&2
    exit 1
  }
done
echo "ok: start_service and reload_service make the expected procd calls"

echo "== shellcheck"
(cd "$root" && shellcheck -x systemd/meshgate.init systemd/check.sh cross/*.sh)
echo "ok: systemd/meshgate.init and the scripts are shellcheck-clean"
