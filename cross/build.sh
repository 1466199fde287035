#!/usr/bin/env bash
# Static, stripped release binaries of meshgate for routers and boards, each smoke-tested under
# qemu-user, with a size report and a budget.
#
#   cross/build.sh                 all five: x86_64 aarch64 armv7 armv6 mipsel
#   cross/build.sh aarch64 armv6   just these
#   cross/build.sh --no-smoke ...  build and check only
#
# Binaries land in target/cross/meshgate-<target>, sizes in target/cross/sizes.txt (target/ is
# $CARGO_TARGET_DIR when set). Installs what it needs when run as root (Debian packages, rustup
# targets, nightly rust-src, zig from PyPI in a venv under ~/.cache/meshgate, cargo-zigbuild);
# otherwise it stops and names what to install.
set -euo pipefail
# shellcheck source=cross/lib.sh
. "$(dirname "$0")/lib.sh"
cd "$ROOT"

smoke=1
targets=()
for arg in "$@"; do
  case $arg in
    --no-smoke) smoke=0 ;;
    all) read -ra targets <<<"$ALL_TARGETS" ;;
    -h | --help)
      sed -n '2,12p' "$0"
      exit 0
      ;;
    -*) die "unknown option $arg" ;;
    *) targets+=("$arg") ;;
  esac
done
((${#targets[@]})) || read -ra targets <<<"$ALL_TARGETS"
for t in "${targets[@]}"; do triple "$t" >/dev/null; done

mkdir -p "$OUT"

# ELF machine name that readelf prints for each target.
machine() {
  case $1 in
    x86_64) echo "Advanced Micro Devices X86-64" ;;
    aarch64) echo "AArch64" ;;
    armv7 | armv6) echo "ARM" ;;
    mipsel) echo "MIPS R3000" ;;
  esac
}

build() {
  local t=$1 tr
  tr=$(triple "$t")
  say "build $t ($tr)"
  local start=$SECONDS
  rm -f "$OUT/meshgate-$t"
  case $(build_kind "$t") in
    stable)
      cargo build --locked -p meshgate --target "$tr" --release || return 1
      ;;
    zig)
      # rustup has no rust-std for these targets here: build std from source with nightly.
      RUSTUP_TOOLCHAIN=nightly cargo zigbuild --locked -p meshgate --target "$tr" \
        --release -Zbuild-std=std,panic_abort || return 1
      ;;
  esac
  echo "built $t in $((SECONDS - start)) s" >&2
  cp "$TARGET_DIR/$tr/release/meshgate" "$OUT/meshgate-$t" || return 1
}

# check_binary SHORT: static, stripped, for the right machine.
check_binary() {
  local t=$1 bin="$OUT/meshgate-$1" headers
  headers=$(readelf -hlSdW "$bin")
  grep -q "Machine: *$(machine "$t")" <<<"$headers" ||
    die "$bin is not a $(machine "$t") binary: $(grep Machine: <<<"$headers")"
  if grep -q 'Requesting program interpreter' <<<"$headers" || grep -q '(NEEDED)' <<<"$headers"; then
    die "$bin is not static: $(grep -E 'interpreter|NEEDED' <<<"$headers" | tr -s ' ')"
  fi
  if grep -q '\.symtab' <<<"$headers"; then
    die "$bin is not stripped (has .symtab): check strip = true in the release profile"
  fi
}

failed=()
built=()
for t in "${targets[@]}"; do
  ensure_build_tools "$t"
  # One target failing to build must not hide how the others fare.
  if ! build "$t"; then
    failed+=("$t: build failed (its errors are above)")
    continue
  fi
  check_binary "$t"
  built+=("$t")
  if ((smoke)); then
    say "smoke test $t"
    read -ra run_with <<<"$(runner "$t")"
    bash "$ROOT/cross/smoke.sh" "$OUT/meshgate-$t" "${run_with[@]}" || failed+=("$t: smoke test")
  fi
done

# --- size report -----------------------------------------------------------------------------------
say "size report (stripped, budget $SIZE_BUDGET bytes = 3.5 MiB)"
report=$(
  printf '%-8s %-32s %10s %9s  %s\n' target triple bytes MiB verdict
  for t in "${built[@]}"; do
    bytes=$(stat -c %s "$OUT/meshgate-$t")
    verdict=ok
    ((bytes <= SIZE_BUDGET)) || verdict="OVER BUDGET by $((bytes - SIZE_BUDGET)) bytes"
    printf '%-8s %-32s %10d %9s  %s\n' "$t" "$(triple "$t")" "$bytes" \
      "$(awk -v b="$bytes" 'BEGIN { printf "%.2f", b / 1048576 }')" "$verdict"
  done
)
echo "$report" | tee "$OUT/sizes.txt"
while read -r t _ _ _ verdict; do
  [ "$verdict" = ok ] || failed+=("$t: size $verdict")
done < <(tail -n +2 <<<"$report")

if ((${#failed[@]})); then
  printf 'cross/build.sh FAILED: %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "cross/build.sh: ${targets[*]}: built, static, within budget$( ((smoke)) && echo ", smoke tests passed")"
