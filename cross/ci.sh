#!/usr/bin/env bash
# What CI runs for the embedded side (scripts/test.sh calls this): the aarch64 static release
# build with its size budget and qemu smoke test, the workspace's tests built for aarch64 and run
# under qemu-user, and the systemd/procd checks. The other four targets take longer to build
# (std from source with nightly): `cross/build.sh` builds and smoke-tests all five.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
bash cross/build.sh aarch64
bash cross/test.sh
bash systemd/check.sh "${CARGO_TARGET_DIR:-target}/cross/meshgate-aarch64"
echo "cross/ci.sh: done in $((SECONDS - start)) s"
