#!/usr/bin/env bash
# Benchmark: meshgate's embedded TURN server against coturn, one after the other, under the same
# turnutils_uclient load relaying to turnutils_peer, all on loopback. Prints, for each server:
# messages/s (peak and mean over the sending seconds), loss, mean RTT, the server's CPU seconds
# and peak RSS, and the meshgate/coturn ratios. Record the output in BENCHMARKS.md.
#
#   bash bench/turn-vs-coturn.sh            # defaults: M=20 clients, L=1000 B, N=5000 msgs each, Z=1 ms
#   M=30 N=3000 bash bench/turn-vs-coturn.sh
set -euo pipefail
cd "$(dirname "$0")/.."

M=${M:-20}     # clients (uclient -m)
L=${L:-1000}   # message length (-l)
N=${N:-5000}   # messages per client (-n)
Z=${Z:-1}      # ms between messages per client (-z)
PORT=${PORT:-37478}
PEER=${PEER:-37490}

for p in turnserver turnutils_uclient turnutils_peer; do
  command -v "$p" >/dev/null || { echo "needs $p: apt-get install coturn" >&2; exit 1; }
done
cargo build --release -p meshgate >&2
BIN=$(realpath "${CARGO_TARGET_DIR:-target}")/release/meshgate
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

turnutils_peer -L 127.0.0.1 -p "$PEER" >/dev/null 2>&1 &
pids+=($!)

clk=$(getconf CLK_TCK)
cpu_s() { awk -v t="$clk" '{ printf "%.2f", ($14 + $15) / t }' "/proc/$1/stat"; }
hwm_kib() { awk '/VmHWM/ { print $2 }' "/proc/$1/status"; }

start_coturn() {
  turnserver -n --listening-ip=127.0.0.1 --relay-ip=127.0.0.1 --listening-port="$PORT" \
    --min-port=40000 --max-port=60000 --lt-cred-mech --user=alice:s3cret --realm=mesh.test \
    --fingerprint --no-tls --no-dtls --no-cli --allow-loopback-peers --no-multicast-peers \
    --log-file=stdout --simple-log >"$work/coturn.log" 2>&1 &
  echo $!
}

start_meshgate() {
  cat >"$work/gw.toml" <<EOF
listen = "127.0.0.1:$PORT"
role = "gateway"
signal = "off"
log = "warn"
[discovery]
mdns = false
[turn]
realm = "mesh.test"
users = { alice = "s3cret" }
relay_allow = ["127.0.0.0/8"]
relay_ports = "40000-60000"
EOF
  "$BIN" run --config "$work/gw.toml" --state-dir "$work/state" >"$work/meshgate.log" 2>&1 &
  echo $!
}

run_one() {
  local name=$1 pid
  start_"$name" >"$work/$name.pid"
  pid=$(cat "$work/$name.pid")
  pids+=("$pid")
  sleep 1
  kill -0 "$pid" || { echo "$name did not start" >&2; cat "$work/$name.log" >&2; exit 1; }
  local cpu0 t0 t1 cpu1 hwm
  cpu0=$(cpu_s "$pid")
  t0=$(date +%s.%N)
  timeout 300 turnutils_uclient -c -l "$L" -m "$M" -n "$N" -z "$Z" -u alice -w s3cret \
    -e 127.0.0.1 -r "$PEER" -p "$PORT" 127.0.0.1 >"$work/$name.uclient" 2>&1 || true
  t1=$(date +%s.%N)
  cpu1=$(cpu_s "$pid")
  hwm=$(hwm_kib "$pid")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  python3 - "$name" "$work/$name.uclient" "$cpu0" "$cpu1" "$hwm" "$t0" "$t1" <<'PY'
import re, sys
name, path, cpu0, cpu1, hwm, t0, t1 = sys.argv[1:]
text = open(path).read()
recv = [int(m) for m in re.findall(r"start_mclient: msz=\d+, tot_send_msgs=\d+, tot_recv_msgs=(\d+)", text)]
deltas = [b - a for a, b in zip(recv, recv[1:]) if b > a]
total = re.search(r"start_mclient: tot_send_msgs=(\d+), tot_recv_msgs=(\d+)", text)
lost = re.search(r"Total lost packets (\d+) \(([\d.]+)%\)", text)
rtt = re.search(r"Average round trip delay ([\d.]+) ms", text)
sent, got = (int(total.group(1)), int(total.group(2))) if total else (0, 0)
print(f"{name}\t{max(deltas) if deltas else 0}\t{(sum(deltas) / len(deltas)) if deltas else 0:.0f}\t"
      f"{sent}\t{got}\t{lost.group(2) if lost else 'n/a'}\t{rtt.group(1) if rtt else 'n/a'}\t"
      f"{float(cpu1) - float(cpu0):.2f}\t{int(hwm) // 1024}\t{float(t1) - float(t0):.1f}")
PY
}

echo "# $(date -u +%FT%TZ) $(uname -m) $(nproc) cores; uclient -c -l $L -m $M -n $N -z $Z"
printf 'server\tpeak_msg/s\tmean_msg/s\tsent\treceived\tloss_%%\trtt_ms\tcpu_s\tpeak_rss_MiB\twall_s\n'
# Not in $(...): run_one must record server PIDs in this shell, for the cleanup trap.
run_one coturn >"$work/coturn.row"
c=$(cat "$work/coturn.row"); echo "$c"
run_one meshgate >"$work/meshgate.row"
m=$(cat "$work/meshgate.row"); echo "$m"
python3 - "$c" "$m" <<'PY'
import sys
c, m = (l.split("\t") for l in sys.argv[1:])
def ratio(i):
    a, b = float(m[i]), float(c[i])
    return f"{a / b:.2f}" if b else "n/a"
print(f"ratio meshgate/coturn: mean_msg/s {ratio(2)}, cpu_s {ratio(7)}, peak_rss {ratio(8)}")
PY
