#!/usr/bin/env bash
# Splicer side by side with its peers, in one run, inside a private network namespace:
#   direct (no relay), Splicer (+ a minimal front proxy handing it each connection), socat
#   (fork per connection) and HAProxy 2.6 (mode tcp, option splice-auto).
# Reports per relay: iperf3 throughput (1 and 8 streams), relay CPU-seconds per GB (utime+stime
# from /proc/PID/stat), sockperf 64-byte ping-pong latency (p50/p99/p99.9, sockperf's half round
# trip), and memory per idle relayed pair (PSS growth after a warm-up round; for Splicer, whose
# heap is fixed and pre-touched, plus the heap it uses per pair after a full GC). Medians of --runs runs with min-max, and ratios
# of Splicer to HAProxy. Usage: ./warren bench splicer [--seconds N] [--runs N] [--idle N] [--threads N]
set -euo pipefail

SECONDS_PER_RUN=5
RUNS=3
THREADS=""  # Splicer's event loops (config key threads); empty: its default (one per CPU)
IDLE=8000   # the machines here cap RLIMIT_NOFILE at 20,000 (no CAP_SYS_RESOURCE) and HAProxy
            # reserves 2 fds per connection plus its pipes: 8,000 is what both fit
while [[ $# -gt 0 ]]; do
  case "$1" in
    --seconds) SECONDS_PER_RUN=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --idle) IDLE=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench splicer: unknown option '$1' (try --help)" >&2; exit 2 ;;
  esac
done
[[ $(id -u) -eq 0 ]] || { echo "bench splicer: needs root (it creates a network namespace)" >&2; exit 2; }

ROOT=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
need=()
for p in iperf3 sockperf socat haproxy jq procps; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if ((${#need[@]})); then
  echo "bench: installing ${need[*]}" >&2
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
  systemctl stop haproxy 2>/dev/null || true   # the package starts one; we run our own
fi
jar=$(ls "$ROOT"/benchmarks/target/benchmarks-*.jar | grep -v tests | head -n1)
CP="$jar:$(cat "$ROOT/benchmarks/target/classpath")"
ulimit -Hn 1048576 2>/dev/null || true
ulimit -n "$(ulimit -Hn)"

NS="wb-splicer-$$"
TMP=$(mktemp -d /tmp/warren-bench-splicer.XXXXXX)
PIDS=()
cleanup() {
  local all=() p
  for p in "${PIDS[@]}"; do all+=("$p" $(pgrep -P "$p" || true)); done  # socat's forked children too
  for p in "${all[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${all[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  ip netns del "$NS" 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

ip netns add "$NS"
ip -n "$NS" link set lo up
inns() { ip netns exec "$NS" "$@"; }
# start CMD...: runs CMD inside the namespace in the background (ip netns exec execs, so $! is the
# program's own pid), remembers it for cleanup and leaves it in LAST_PID.
start() { ip netns exec "$NS" "$@" > "$TMP/$(basename "$1").$RANDOM.log" 2>&1 & LAST_PID=$!; PIDS+=("$LAST_PID"); }
wait_port() {
  # listening, checked with ss: a probe connection would confuse iperf3's one-test-at-a-time server
  for _ in $(seq 1 300); do [[ -n "$(inns ss -Hltn "sport = :$1")" ]] && return 0; sleep 0.1; done
  echo "port $1 never opened; logs:" >&2; tail -n 5 "$TMP"/*.log >&2; exit 1
}
ticks() { awk '{print $14+$15+$16+$17}' "/proc/$1/stat"; }
pss_kb() { awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup"; }
median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) {print "nan"; exit} m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%s %s %s\n", m, a[1], a[NR]}'; }

# upstream servers
IPERF_UP=5201; SOCKPERF_UP=11111; IDLE_UP=7000
start iperf3 -s -p $IPERF_UP
start sockperf server --tcp -i 127.0.0.1 -p $SOCKPERF_UP
start java -cp "$CP" warren.benchmarks.IdleConnections --listen $IDLE_UP
wait_port $IPERF_UP; wait_port $SOCKPERF_UP; wait_port $IDLE_UP

# relays: for each upstream u, relay r listens on port base_r + index(u)
declare -A BASE=([splicer]=6000 [socat]=6100 [haproxy]=6200)
UPS=($IPERF_UP $SOCKPERF_UP $IDLE_UP)
printf 'audit.path = /dev/null\nsplice.idle_timeout = 0\n' > "$TMP/splicer.conf"
[[ -z "$THREADS" ]] || printf 'threads = %s\n' "$THREADS" >> "$TMP/splicer.conf"
# A fixed, pre-touched heap: the memory figure then shows what idle pairs cost beyond it, and the
# heap they use is reported on its own (jcmd GC.heap_info after a full GC).
start java -XX:+UseSerialGC -Xms128m -Xmx128m -XX:+AlwaysPreTouch -cp "$CP" warren.splicer.Main \
  --control "$TMP/splicer.sock" --config "$TMP/splicer.conf"
SPLICER_PID=$LAST_PID
for _ in $(seq 1 300); do [[ -S "$TMP/splicer.sock" ]] && break; sleep 0.1; done
declare -A RELAY_PIDS=([splicer]="$SPLICER_PID" [socat]="" [haproxy]="")
{
  printf 'global\n  maxconn %d\n  maxpipes 512\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 1h\n  timeout server 1h\n  option splice-auto\n' $((IDLE + 200))
  for i in 0 1 2; do
    printf 'frontend f%d\n  bind 127.0.0.1:%d\n  default_backend b%d\nbackend b%d\n  server s 127.0.0.1:%d\n' \
      $i $((BASE[haproxy] + i)) $i $i "${UPS[$i]}"
  done
} > "$TMP/haproxy.cfg"
start haproxy -db -f "$TMP/haproxy.cfg"
RELAY_PIDS[haproxy]=$LAST_PID
for i in 0 1 2; do
  start java -XX:+UseSerialGC -Xmx256m -cp "$CP" warren.benchmarks.SpliceProxy --listen $((BASE[splicer] + i)) \
        --upstream "${UPS[$i]}" --control "$TMP/splicer.sock"
  RELAY_PIDS[splicer]+=" $LAST_PID"
  start socat TCP-LISTEN:$((BASE[socat] + i)),fork,reuseaddr,backlog=4096 TCP:127.0.0.1:"${UPS[$i]}"
  RELAY_PIDS[socat]+=" $LAST_PID"
done
for r in splicer socat haproxy; do for i in 0 1 2; do wait_port $((BASE[$r] + i)); done; done

port_of() { case $1 in direct) echo "$2";; *) echo $((BASE[$1] + $3));; esac; }
relay_ticks() { local t=0 p; for p in ${RELAY_PIDS[$1]}; do t=$((t + $(ticks "$p"))); done; echo $t; }
CLK=$(getconf CLK_TCK)

declare -A R
for run in $(seq 1 "$RUNS"); do
  for r in direct splicer socat haproxy; do
    for streams in 1 8; do
      port=$(port_of $r $IPERF_UP 0)
      [[ $r != direct ]] && t0=$(relay_ticks $r)
      inns iperf3 -c 127.0.0.1 -p "$port" -t "$SECONDS_PER_RUN" -P $streams -J > "$TMP/iperf.json" || true
      if ! jq -e '.end.sum_received.bytes' "$TMP/iperf.json" > /dev/null; then
        echo "iperf3 through $r failed:" >&2; jq -r '.error // .' "$TMP/iperf.json" >&2; exit 1
      fi
      sleep 0.5
      gbps=$(jq '.end.sum_received.bits_per_second / 1e9' "$TMP/iperf.json")
      bytes=$(jq '.end.sum_received.bytes' "$TMP/iperf.json")
      R[$r,tp$streams]+="$gbps "
      if [[ $r != direct ]]; then
        t1=$(relay_ticks $r)
        R[$r,cpu$streams]+="$(awk -v d=$((t1 - t0)) -v c="$CLK" -v b="$bytes" 'BEGIN {printf "%.3f", (d / c) / (b / 1e9)}') "
      fi
    done
    port=$(port_of $r $SOCKPERF_UP 1)
    inns sockperf ping-pong --tcp -i 127.0.0.1 -p "$port" -t "$SECONDS_PER_RUN" -m 64 > "$TMP/sockperf.txt" 2>&1 || true
    for pc in 50.000 99.000 99.900; do
      v=$(awk -v pc="$pc" '$0 ~ "percentile "pc" =" {print $NF}' "$TMP/sockperf.txt" | head -n1)
      R[$r,p$pc]+="${v:-nan} "
    done
  done
  echo "run $run of $RUNS done" >&2
done

# heap in use after a full GC (sum of the generations' "used NNNK")
heap_used_kb() {
  jcmd "$SPLICER_PID" GC.run > /dev/null
  jcmd "$SPLICER_PID" GC.heap_info | grep -o 'used [0-9]*K' | tr -dc '0-9\n' | awk '{s += $1} END {print s}'
}
# memory of idle pairs: PSS of the relay before and after N idle connections through it
idle_pairs() { # relay count -> "bytes-per-pair heap-bytes-per-pair"
  local r=$1 n=$2 before after heap0=0 heap1=0 pids port
  port=$(port_of $r $IDLE_UP 2)
  pids=${RELAY_PIDS[$r]}; [[ $r == splicer ]] && pids=$SPLICER_PID
  sum_pss() { local s=0 q c; for q in $pids; do s=$((s + $(pss_kb "$q"))); for c in $(pgrep -P "$q" || true); do s=$((s + $(pss_kb "$c"))); done; done; echo $s; }
  hold() { # opens $1 idle connections through the relay and keeps them until killed
    ip netns exec "$NS" java -cp "$CP" warren.benchmarks.IdleConnections --connect "$port" --count "$1" \
      > "$TMP/idle.out" 2>&1 &
    HOLDER=$!
    PIDS+=("$HOLDER")
    for _ in $(seq 1 600); do grep -q ready "$TMP/idle.out" 2>/dev/null && break; sleep 0.1; done
    sleep 2
  }
  # warm-up with a tenth of the load (at most 500): one-time costs (JIT, class loading) are not
  # counted, but pools it leaves behind are too small to hide the cost of the n pairs measured
  hold $(( n / 10 < 500 ? n / 10 : 500 )); kill "$HOLDER"; wait "$HOLDER" 2>/dev/null || true; sleep 3
  if [[ $r == splicer ]]; then heap0=$(heap_used_kb); fi
  before=$(sum_pss)
  hold "$n"
  after=$(sum_pss)
  if [[ $r == splicer ]]; then heap1=$(heap_used_kb); fi
  kill "$HOLDER"; wait "$HOLDER" 2>/dev/null || true
  sleep 2
  awk -v a="$after" -v b="$before" -v n="$n" -v h0="$heap0" -v h1="$heap1" \
    'BEGIN {printf "%.0f %.0f\n", (a - b) * 1024 / n, (h1 - h0) * 1024 / n}'
}
MEM_SPLICER=$(idle_pairs splicer "$IDLE")
MEM_HAPROXY=$(idle_pairs haproxy "$IDLE")
SOCAT_IDLE=$(( IDLE < 1000 ? IDLE : 1000 ))
MEM_SOCAT=$(idle_pairs socat "$SOCAT_IDLE")

fmt() { median | awk '{ if ($1 == "nan") print "n/a"; else printf "%.2f (%.2f-%.2f)", $1, $2, $3 }'; }
med() { median | awk '{print $1}'; }
echo
echo "Splicer and peers, $(date -u +%F), $(nproc) cores, kernel $(uname -r), $RUNS runs of ${SECONDS_PER_RUN} s, medians (min-max)"
printf '%-9s | %-20s | %-20s | %-19s | %-11s | %-11s | %-11s | %s\n' relay "1 stream Gbit/s" "8 streams Gbit/s" "CPU-s/GB (1 stream)" "p50 us" "p99 us" "p99.9 us" "idle pair: PSS B (+ heap B)"
for r in direct splicer socat haproxy; do
  mem="-"
  case $r in splicer) mem="$(echo "$MEM_SPLICER" | awk '{printf "%s + %s = %s", $1, $2, $1 + $2}')";; haproxy) mem=$(echo "$MEM_HAPROXY" | awk '{print $1}');; socat) mem="$(echo "$MEM_SOCAT" | awk '{print $1}') (at $SOCAT_IDLE)";; esac
  cpu="-"; [[ $r != direct ]] && cpu=$(echo ${R[$r,cpu1]} | tr ' ' '\n' | fmt)
  printf '%-9s | %-20s | %-20s | %-19s | %-11s | %-11s | %-11s | %s\n' $r \
    "$(echo ${R[$r,tp1]} | tr ' ' '\n' | fmt)" "$(echo ${R[$r,tp8]} | tr ' ' '\n' | fmt)" "$cpu" \
    "$(echo ${R[$r,p50.000]} | tr ' ' '\n' | med)" "$(echo ${R[$r,p99.000]} | tr ' ' '\n' | med)" \
    "$(echo ${R[$r,p99.900]} | tr ' ' '\n' | med)" "$mem"
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0 || a == "" || b == "") print "n/a"; else printf "%.2fx", a / b }'; }
s1=$(echo ${R[splicer,tp1]} | tr ' ' '\n' | med); h1=$(echo ${R[haproxy,tp1]} | tr ' ' '\n' | med)
s8=$(echo ${R[splicer,tp8]} | tr ' ' '\n' | med); h8=$(echo ${R[haproxy,tp8]} | tr ' ' '\n' | med)
sc=$(echo ${R[splicer,cpu1]} | tr ' ' '\n' | med); hc=$(echo ${R[haproxy,cpu1]} | tr ' ' '\n' | med)
sl=$(echo ${R[splicer,p99.900]} | tr ' ' '\n' | med); hl=$(echo ${R[haproxy,p99.900]} | tr ' ' '\n' | med)
echo
echo "Splicer / HAProxy: throughput 1 stream $(ratio "$s1" "$h1") (target >= 1), 8 streams $(ratio "$s8" "$h8") (>= 1);" \
  "CPU per GB $(ratio "$sc" "$hc") (<= 0.7); p99.9 $(ratio "$sl" "$hl") (<= 1);" \
  "idle pair memory (PSS + heap) $(ratio "$(echo "$MEM_SPLICER" | awk '{print $1 + $2}')" "$(echo "$MEM_HAPROXY" | awk '{print $1}')") (<= 0.5)"
