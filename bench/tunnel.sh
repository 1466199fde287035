#!/usr/bin/env bash
# Benchmark: one TCP stream and STREAMS parallel streams carried, on loopback, by
#   direct   tcpbench source -> tcpbench sink, no relay
#   ssh      ssh -L through a private sshd (this user, temp host key, key auth only, default ciphers)
#   socat    socat TCP-LISTEN:..,fork,reuseaddr TCP:..
#   meshgate two `meshgate run` nodes (release build): A's [[forward]] -> B's [[service]] "sink"
# all in the same run. For each: MB/s (10^6 B/s, from before the first connect() to the sink's
# last ack), the relay processes' CPU seconds (utime+stime of the process and of its children,
# from /proc/PID/stat: ssh client and sshd, socat, meshgate node A and node B separately), their
# peak RSS (VmHWM), and the connect latency: ROUNDS x (connect() + 1 byte + its echo), median and
# p99. "others' CPU s" is what processes outside this benchmark used meanwhile (all CPUs' busy
# time less this script's process tree): well above 0, the row was disturbed. Prints one
# markdown table; record it in BENCHMARKS.md.
#
#   bash bench/tunnel.sh                       # SIZE_MB=1024 (MiB, per row), STREAMS=10, ROUNDS=200
#   SIZE_MB=256 LEGS="direct socat" bash bench/tunnel.sh
#
# On a shared machine each row first waits up to QUIET_WAIT s (60) for the CPUs to be < 10 % busy.
# A leg that does not work reports "failed: <reason>" in its row instead of stopping the run;
# meshgate's nodes get MESH_BOUND seconds (60) to start and carry a first echo.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE_MB=${SIZE_MB:-1024}             # MiB sent by the 1-stream row
PAR_SIZE_MB=${PAR_SIZE_MB:-$SIZE_MB} # MiB sent in all by the STREAMS-stream row
STREAMS=${STREAMS:-10}
ROUNDS=${ROUNDS:-200}                # connect + 1-byte echo rounds
RUN_TIMEOUT=${RUN_TIMEOUT:-300}      # s, bound on each transfer
MESH_BOUND=${MESH_BOUND:-60}         # s, bound on meshgate start + first echo
QUIET_WAIT=${QUIET_WAIT:-60}         # s each row may wait for the machine to be < 10 % busy
LEGS=${LEGS:-direct ssh socat meshgate}

# --- tools ---------------------------------------------------------------------------------------
need=()
command -v ssh >/dev/null && command -v ssh-keygen >/dev/null || need+=(openssh-client)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v socat >/dev/null || need+=(socat)
command -v python3 >/dev/null || need+=(python3)
if ((${#need[@]})); then
  [ "$(id -u)" = 0 ] || { echo "needs ${need[*]}: apt-get install ${need[*]} (as root)" >&2; exit 1; }
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi
# sshd (as root) wants its privilege separation directory, which the Debian service creates.
[ "$(id -u)" != 0 ] || [ -d /run/sshd ] || install -d -m 755 /run/sshd

# tcpbench is built with opt-level 3 (the workspace's release profile is opt-level "z" for the
# agent's size); meshgate with the release profile as shipped.
if [[ " $LEGS " == *" meshgate "* ]]; then cargo build --release -p meshgate >&2; fi
CARGO_PROFILE_RELEASE_OPT_LEVEL=3 cargo build --release -p meshgate-tests --bin tcpbench >&2
REL=$(realpath "${CARGO_TARGET_DIR:-target}")/release
TCPBENCH=$REL/tcpbench
MESHGATE=$REL/meshgate

work=$(mktemp -d)
pids=()
stop() { # stop PID...: TERM, then KILL after 3 s; by PID only
  local p i
  for p in "$@"; do kill "$p" 2>/dev/null || true; done
  for p in "$@"; do
    for ((i = 0; i < 30; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
}
cleanup() {
  local i rev=()
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do rev+=("${pids[i]}"); done
  ((${#rev[@]} == 0)) || stop "${rev[@]}"
  rm -rf "$work"
}
trap cleanup EXIT

# --- helpers -------------------------------------------------------------------------------------
# free_ports tcp|udp N: N distinct ports that were free on 127.0.0.1 a moment ago.
free_ports() {
  python3 - "$1" "$2" <<'PY'
import socket, sys
kind = socket.SOCK_STREAM if sys.argv[1] == "tcp" else socket.SOCK_DGRAM
socks = [socket.socket(socket.AF_INET, kind) for _ in range(int(sys.argv[2]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# procstat PID...: per PID one line "cpu_s peak_rss_kib" over the process and its descendants:
# utime+stime of the live ones plus cutime+cstime (the children they have reaped: socat's
# per-connection forks), and the largest VmHWM among them.
cat >"$work/procstat.py" <<'PY'
import os, sys
procs = {}
for d in os.listdir("/proc"):
    if d.isdigit():
        try:
            s = open(f"/proc/{d}/stat").read()
        except OSError:
            continue
        rest = s[s.rindex(")") + 2:].split()  # rest[n - 3] is field n of proc(5)
        procs[int(d)] = (int(rest[1]), sum(int(x) for x in rest[11:15]))
kids = {}
for p, (pp, _) in procs.items():
    kids.setdefault(pp, []).append(p)
def hwm(p):
    try:
        for line in open(f"/proc/{p}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0
tck = os.sysconf("SC_CLK_TCK")
if sys.argv[1:2] == ["--machine"]:
    # "busy_s ours_s": all CPUs' user+nice+system (not irq/softirq: loopback's softirq work may be
    # ours), and the CPU of ROOT's tree
    # (itself, live descendants, and the reaped ones through cutime+cstime).
    cpu = open("/proc/stat").readline().split()[1:]
    busy = sum(int(cpu[i]) for i in (0, 1, 2))
    tree, todo = [], [int(sys.argv[2])]
    while todo:
        p = todo.pop()
        if p in procs:
            tree.append(p)
            todo += kids.get(p, [])
    print(f"{busy / tck:.2f} {sum(procs[p][1] for p in tree) / tck:.2f}")
    sys.exit()
for root in map(int, sys.argv[1:]):
    tree, todo = [], [root]
    while todo:
        p = todo.pop()
        if p in procs:
            tree.append(p)
            todo += kids.get(p, [])
    print(f"{sum(procs[p][1] for p in tree) / tck:.2f} {max((hwm(p) for p in tree), default=0)}")
PY
procstat() { python3 "$work/procstat.py" "$@"; }
# machine: "busy_s ours_s" now; the difference of two is what other processes used meanwhile.
machine() { python3 "$work/procstat.py" --machine $$; }

# listening PORT: whether something listens on 127.0.0.1:PORT (TCP), without connecting to it.
listening() {
  local hex
  hex=$(printf '%04X' "$1")
  grep -qE "^ *[0-9]+: (0100007F|00000000):$hex 00000000:0000 0A" /proc/net/tcp
}

# wait_listen PORT SECONDS PID: until PORT listens; fails if PID exits or time runs out.
wait_listen() {
  local end=$((SECONDS + $2))
  until listening "$1"; do
    kill -0 "$3" 2>/dev/null || return 1
    ((SECONDS < end)) || return 1
    sleep 0.1
  done
}

# reason FILE: the last line of a tool's output, fit for a table cell.
reason() { tail -n 1 "$1" 2>/dev/null | sed -e 's/^error: //' -e 's/|/\//g' | cut -c1-200; }

# busy: percent of all CPUs not idle over one second (others' load skews every figure here).
busy() {
  local a b
  a=$(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6 }' /proc/stat)
  sleep 1
  b=$(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6 }' /proc/stat)
  echo "$a $b" | awk '{ u = $3 - $1; i = $4 - $2; printf "%.0f %%", (u + i) ? 100 * u / (u + i) : 0 }'
}

# quiet: wait (at most QUIET_WAIT s) until others leave the CPUs < 10 % busy for a second.
quiet() {
  local end=$((SECONDS + QUIET_WAIT)) b=""
  ((QUIET_WAIT > 0)) || return 0
  while ((SECONDS < end)); do
    b=$(busy)
    ((${b% *} < 10)) && return 0
  done
  echo "  machine still busy ($b) after ${QUIET_WAIT}s; measuring anyway" >&2
}

rows=()
row() {
  local line="|" cell
  for cell in "$@"; do line+=" $cell |"; done
  rows+=("$line")
}

# measure LEG SINK ECHO [label=pid ...]: latency, then 1 stream and STREAMS streams; adds rows.
measure() {
  local leg=$1 sink=$2 echo=$3 lat="—" k mib before after cells cpu rss total m0 others
  shift 3
  local labels=() rpids=() lp
  for lp in "$@"; do labels+=("${lp%%=*}"); rpids+=("${lp#*=}"); done
  quiet
  m0=$(machine) # the first row's "others" spans the latency rounds too
  if timeout $((RUN_TIMEOUT + 10)) "$TCPBENCH" latency --connect "$echo" --count "$ROUNDS" \
    --timeout 10 >"$work/lat.out" 2>&1; then
    lat=$(awk '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } }
      END { printf "%s / %s", v["median_us"], v["p99_us"] }' "$work/lat.out")
  else
    lat="failed: $(reason "$work/lat.out")"
  fi
  for k in 1 "$STREAMS"; do
    mib=$SIZE_MB
    ((k == 1)) || mib=$PAR_SIZE_MB
    before=$(procstat ${rpids[@]+"${rpids[@]}"})
    ((k == 1)) || { quiet; m0=$(machine); }
    if timeout $((RUN_TIMEOUT + 10)) "$TCPBENCH" source --connect "$sink" --bytes $((mib << 20)) \
      --streams "$k" --timeout "$RUN_TIMEOUT" >"$work/src.out" 2>&1; then
      sleep 0.3 # let socat reap its last fork, so that its CPU is in cutime
      after=$(procstat ${rpids[@]+"${rpids[@]}"})
      others=$(echo "$m0 $(machine)" | awk '{ d = ($3 - $1) - ($4 - $2); printf "%.2f", (d > 0 ? d : 0) }')
      cells=$(paste -d' ' <(echo "$before") <(echo "$after") | awk -v names="${labels[*]}" '
        BEGIN { n = split(names, name, " ") }
        NF == 4 { i++; c = $3 - $1; t += c
          cpu = cpu (i > 1 ? " + " : "") name[i] " " sprintf("%.2f", c)
          rss = rss (i > 1 ? " / " : "") name[i] " " sprintf("%.1f", $4 / 1024) }
        END { if (i == 0) print "—\t—"; else if (i == 1) print cpu "\t" rss
              else printf "%s = %.2f\t%s\n", cpu, t, rss }')
      cpu=${cells%%$'\t'*}
      rss=${cells#*$'\t'}
      total=$(awk '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } }
        END { printf "%s\t%.2f", v["mb_s"], v["elapsed_s"] }' "$work/src.out")
      row "$leg" "$k" "$mib" "${total%%$'\t'*}" "${total#*$'\t'}" "$cpu" "$rss" "$lat" "$others"
    else
      row "$leg" "$k" "$mib" "failed: $(reason "$work/src.out")" "—" "—" "—" "$lat" "—"
    fi
    lat="" # latency is per leg, shown on its first row
  done
}

# --- the sink and echo servers, shared by all legs -----------------------------------------------
"$TCPBENCH" sink --timeout "$RUN_TIMEOUT" >"$work/sink.out" 2>"$work/sink.err" &
pids+=($!)
"$TCPBENCH" echo --timeout "$RUN_TIMEOUT" >"$work/echo.out" 2>"$work/echo.err" &
pids+=($!)
for ((i = 0; i < 50; i++)); do [ -s "$work/sink.out" ] && [ -s "$work/echo.out" ] && break; sleep 0.1; done
SINK=$(awk '{ print $2 }' "$work/sink.out")
ECHO=$(awk '{ print $2 }' "$work/echo.out")
if [ -z "$SINK" ] || [ -z "$ECHO" ]; then echo "tcpbench sink/echo did not start" >&2; exit 1; fi

notes=()
busy_start=$(busy)

leg_direct() { measure direct "$SINK" "$ECHO"; }

leg_ssh() {
  local d=$work/ssh port ls le sshd client cipher
  mkdir -m 700 "$d"
  read -r port ls le <<<"$(free_ports tcp 3)"
  ssh-keygen -q -t ed25519 -N '' -C bench-host -f "$d/host_key"
  ssh-keygen -q -t ed25519 -N '' -C bench-client -f "$d/client_key"
  cp "$d/client_key.pub" "$d/authorized_keys"
  cat >"$d/sshd_config" <<EOF
ListenAddress 127.0.0.1:$port
HostKey $d/host_key
PidFile none
AuthorizedKeysFile $d/authorized_keys
AuthenticationMethods publickey
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin prohibit-password
StrictModes no
AllowTcpForwarding local
X11Forwarding no
LogLevel ERROR
EOF
  /usr/sbin/sshd -t -f "$d/sshd_config" 2>"$d/sshd.log" || { row ssh "1, $STREAMS" "—" "failed: sshd -t: $(reason "$d/sshd.log")" "—" "—" "—" "—" "—"; return; }
  /usr/sbin/sshd -D -e -f "$d/sshd_config" 2>"$d/sshd.log" &
  sshd=$!
  pids+=("$sshd")
  if ! wait_listen "$port" 10 "$sshd"; then
    row ssh "1, $STREAMS" "—" "failed: sshd: $(reason "$d/sshd.log")" "—" "—" "—" "—" "—"
    stop "$sshd"; return
  fi
  local opts=(-F /dev/null -i "$d/client_key" -p "$port" -o StrictHostKeyChecking=no
    -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o ExitOnForwardFailure=yes)
  # Which cipher the defaults negotiate (a separate, short login).
  cipher=$(timeout 20 ssh "${opts[@]}" -v "$(id -un)@127.0.0.1" true 2>&1 |
    sed -n 's/.*kex: client->server cipher: \([^ ]*\).*/\1/p' | head -n 1) || true
  notes+=("ssh: OpenSSH $(ssh -V 2>&1 | sed 's/^OpenSSH_\([^,]*\),.*/\1/'), cipher ${cipher:-unknown}")
  ssh "${opts[@]}" -o LogLevel=ERROR -N -L "127.0.0.1:$ls:$SINK" -L "127.0.0.1:$le:$ECHO" \
    "$(id -un)@127.0.0.1" 2>"$d/ssh.log" &
  client=$!
  pids+=("$client")
  if ! wait_listen "$ls" 20 "$client" || ! wait_listen "$le" 5 "$client"; then
    row ssh "1, $STREAMS" "—" "failed: ssh -L: $(reason "$d/ssh.log")" "—" "—" "—" "—" "—"
  else
    measure "ssh -L" "127.0.0.1:$ls" "127.0.0.1:$le" ssh="$client" sshd="$sshd"
  fi
  stop "$client" "$sshd"
}

leg_socat() {
  local ls le s1 s2
  read -r ls le <<<"$(free_ports tcp 2)"
  socat "TCP-LISTEN:$ls,bind=127.0.0.1,fork,reuseaddr" "TCP:$SINK" 2>"$work/socat1.log" &
  s1=$!
  socat "TCP-LISTEN:$le,bind=127.0.0.1,fork,reuseaddr" "TCP:$ECHO" 2>"$work/socat2.log" &
  s2=$!
  pids+=("$s1" "$s2")
  notes+=("socat: $(socat -V | sed -n 's/^socat version \([^ ]*\).*/\1/p')")
  if ! wait_listen "$ls" 10 "$s1" || ! wait_listen "$le" 10 "$s2"; then
    row socat "1, $STREAMS" "—" "failed: $(reason "$work/socat1.log")" "—" "—" "—" "—" "—"
  else
    # socat's CPU: the listener and its per-connection forks (the sink relay only).
    measure socat "127.0.0.1:$ls" "127.0.0.1:$le" socat="$s1"
  fi
  stop "$s1" "$s2"
}

# meshgate_fail REASON: one row for the whole leg.
meshgate_fail() { row meshgate "1, $STREAMS" "—" "failed: $(echo "$1" | sed 's/|/\//g' | cut -c1-200)" "—" "—" "—" "—" "—"; }

leg_meshgate() {
  local d=$work/mesh end=$((SECONDS + MESH_BOUND)) ua ub apia apib fs fe ida idb a b n
  mkdir -p "$d"
  [ -x "$MESHGATE" ] || { meshgate_fail "no binary at $MESHGATE"; return; }
  for n in a b; do
    if ! timeout 20 "$MESHGATE" id --state-dir "$d/state-$n" --json >"$d/id-$n.json" 2>"$d/id-$n.err" ||
      ! python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["id"])' "$d/id-$n.json" \
        >"$d/id-$n" 2>>"$d/id-$n.err"; then
      meshgate_fail "meshgate id: $(reason "$d/id-$n.err")"; return
    fi
  done
  ida=$(cat "$d/id-a"); idb=$(cat "$d/id-b")
  read -r ua ub <<<"$(free_ports udp 2)"
  read -r apia apib fs fe <<<"$(free_ports tcp 4)"
  cat >"$d/a.toml" <<EOF
listen = "127.0.0.1:$ua"
api = "127.0.0.1:$apia"
signal = "off"
log = "info"
[discovery]
mdns = false
peers = [ { id = "$idb", addr = "127.0.0.1:$ub" } ]
[[forward]]
listen = "127.0.0.1:$fs"
peer = "$idb"
target = "svc:sink"
[[forward]]
listen = "127.0.0.1:$fe"
peer = "$idb"
target = "svc:echo"
EOF
  cat >"$d/b.toml" <<EOF
listen = "127.0.0.1:$ub"
api = "127.0.0.1:$apib"
signal = "off"
log = "info"
[discovery]
mdns = false
peers = [ { id = "$ida", addr = "127.0.0.1:$ua" } ]
[[service]]
name = "sink"
target = "$SINK"
[[service]]
name = "echo"
target = "$ECHO"
EOF
  for n in a b; do
    timeout 20 "$MESHGATE" config check "$d/$n.toml" >"$d/check-$n.log" 2>&1 ||
      { meshgate_fail "config check $n.toml: $(reason "$d/check-$n.log")"; return; }
  done
  "$MESHGATE" run --config "$d/b.toml" --state-dir "$d/state-b" 2>"$d/b.log" &
  b=$!
  "$MESHGATE" run --config "$d/a.toml" --state-dir "$d/state-a" 2>"$d/a.log" &
  a=$!
  pids+=("$b" "$a")
  notes+=("meshgate: $("$MESHGATE" --version 2>&1 | head -n 1), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- agent turn-gw 2>/dev/null || echo ' + local changes')")
  local why=""
  for n in a b; do
    local p=$a log=$d/a.log
    [ "$n" = a ] || { p=$b; log=$d/b.log; }
    until grep -q started "$log"; do
      kill -0 "$p" 2>/dev/null || { why="node $n exited: $(reason "$log")"; break 2; }
      ((SECONDS < end)) || { why="node $n: no start line within ${MESH_BOUND}s"; break 2; }
      sleep 0.1
    done
  done
  if [ -z "$why" ] && ! wait_listen "$fe" $((end - SECONDS)) "$a"; then
    why="node A does not listen on its [[forward]] 127.0.0.1:$fe within ${MESH_BOUND}s"
    kill -0 "$a" 2>/dev/null || why="node A exited: $(reason "$d/a.log")"
  fi
  if [ -z "$why" ] && ! listening "$fs"; then
    why="node A does not listen on its [[forward]] 127.0.0.1:$fs"
  fi
  if [ -z "$why" ] && ! timeout $((end - SECONDS + 10)) "$TCPBENCH" probe --connect "127.0.0.1:$fe" \
    --within $((end - SECONDS > 0 ? end - SECONDS : 0)) >"$d/probe.log" 2>&1; then
    why="no echo through the forward: $(reason "$d/probe.log")"
  fi
  if [ -n "$why" ]; then
    meshgate_fail "$why"
  else
    measure meshgate "127.0.0.1:$fs" "127.0.0.1:$fe" A="$a" B="$b"
  fi
  stop "$a" "$b"
  if [ -n "${KEEP_LOGS:-}" ]; then cp "$d"/*.log "$d"/*.toml "$KEEP_LOGS"/ 2>/dev/null || true; fi
}

for leg in $LEGS; do
  declare -F "leg_$leg" >/dev/null || { echo "unknown leg $leg (direct ssh socat meshgate)" >&2; exit 2; }
  echo "running $leg ..." >&2
  "leg_$leg"
done

echo "# $(date -u +%FT%TZ) $(uname -m) $(nproc) vCPU $(uname -r); CPU busy before: $busy_start, after: $(busy); load average at end $(cut -d' ' -f1-3 /proc/loadavg)"
((${#notes[@]} == 0)) || printf '# %s\n' "${notes[@]}"
echo
echo "| leg | streams | MiB | MB/s | wall s | relay CPU s | relay peak RSS MiB | connect+echo µs median / p99 (×$ROUNDS) | others' CPU s |"
echo "|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
if [ -s "$work/sink.err" ]; then
  echo
  echo "sink errors:"
  sed 's/^/    /' "$work/sink.err" | head -n 20
fi
