#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and integration tests, real third-party peers.
# Run it as root on a fresh Debian 12 machine and it installs what it needs; as another user it
# fails, naming what to install, when something is missing. .ci/run runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n== %s\n' "$*"; }

# --- packages the tests use (Debian names) -------------------------------------------------------
# program:package pairs; a test that needs a missing program fails with this same advice.
needs=(
  openssl:openssl
  ip:iproute2
  python3:python3
  turnutils_uclient:coturn
  stun:stun-client
  sshd:openssh-server
  ssh:openssh-client
  nsenter:util-linux
  avahi-daemon:avahi-daemon
  avahi-browse:avahi-utils
  dbus-daemon:dbus
  chromium:chromium
  node:nodejs
  npm:npm
)
missing=()
for pair in "${needs[@]}"; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/test.sh: missing packages: ${missing[*]}; run as root, or: apt-get install ${missing[*]}" >&2
    exit 1
  fi
  say "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  # libnss-mdns (avahi-daemon's recommendation) edits /etc/nsswitch.conf: never keep it.
  if dpkg -s libnss-mdns >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq libnss-mdns
  fi
  # The tests run avahi-daemon in namespaces of their own; the one the package starts would
  # announce this machine on its real interfaces.
  if [[ " ${missing[*]} " == *" avahi-daemon "* ]] && [ -d /run/systemd/system ]; then
    systemctl disable --now avahi-daemon.socket avahi-daemon.service || true
  fi
fi
python3 -m venv --help >/dev/null 2>&1 || {
  [ "$(id -u)" -eq 0 ] || { echo "scripts/test.sh: needs python3-venv: apt-get install python3-venv" >&2; exit 1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv
}
# Python peers (aioice, aiortc) live in a venv of their own under target/.
if ! target/pyvenv/bin/python -c "import aioice, aiortc" >/dev/null 2>&1; then
  say "python venv with aioice and aiortc"
  python3 -m venv target/pyvenv
  target/pyvenv/bin/pip install -q aioice aiortc
fi
# The Chromium driver (agent/tests/browser/chromium.cjs) attaches to Debian's chromium over CDP
# with playwright-core from target/npm (no browser download); pinned so that a new release
# cannot change the driver under us.
PLAYWRIGHT_CORE=1.65.1
if [ "$(node -p "require('./target/npm/node_modules/playwright-core/package.json').version" 2>/dev/null)" != "$PLAYWRIGHT_CORE" ]; then
  say "npm: playwright-core@$PLAYWRIGHT_CORE into target/npm"
  npm install --prefix target/npm --no-audit --no-fund --loglevel=error "playwright-core@$PLAYWRIGHT_CORE"
fi
for component in rustfmt clippy; do
  rustup component list --installed 2>/dev/null | grep -q "^$component" || rustup component add "$component"
done

say "cargo fmt --check"
cargo fmt --all -- --check

say "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

say "cargo test"
cargo test --workspace --locked

# --- embedded delivery (issue 6) ------------------------------------------------------------------
# The aarch64 static release build (size budget, static/stripped checks) with its qemu-user smoke
# test, the workspace's tests built for aarch64 and run under qemu-user, and the systemd unit and
# procd script checks: about 8 min on a cold target dir, 80 s warm (2 cores). The other four
# targets: `bash cross/build.sh` (see cross/README.md).
say "cross: aarch64 build + qemu smoke test, aarch64 tests under qemu, systemd checks"
bash cross/ci.sh

# A fuzz run prints three lines when it passes; when it fails (a crash, or a build that broke)
# it prints the end of the log, the crashing input in base64 (libFuzzer's own line) and the free
# disk space, so that a CI log alone says what happened.
fuzz_run() {
  local target=$1 seconds=$2 log
  log="$(pwd)/target/fuzz-$target.log"
  mkdir -p target
  if (cd fuzz && cargo +nightly fuzz run "$target" -- -max_total_time="$seconds" -print_final_stats=1) \
      >"$log" 2>&1; then
    tail -n 3 "$log"
  else
    echo "fuzz target $target FAILED; the end of its log ($log):"
    grep -v '^\s*[0-9]*: \|^\s*at ' "$log" | tail -n 60
    df -h . | tail -n 1
    return 1
  fi
}

say "fuzz: the shared port's parsing path, 30 s"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked cargo-fuzz
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
fuzz_run shared_port 30

say "fuzz: the frame codec (one SCTP message, and a byte stream in chunks), 20 s"
fuzz_run frame 20
