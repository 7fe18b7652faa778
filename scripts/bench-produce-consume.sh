#!/usr/bin/env bash
# bench-produce-consume.sh — produce/consume benchmark of one Sluice broker with librdkafka's rdkafka_performance
# (built from the librdkafka 2.12.1 source in the rdkafka-sys crate by scripts/librdkafka-suite.sh), next to the
# loopback TCP throughput (iperf3) measured in the same run. Not part of CI: it takes about a minute and loads
# the machine.
#
# Usage: scripts/bench-produce-consume.sh
# Environment:
#   SLUICE_BIN        broker binary (default: target/release/sluice; build it with cargo build --release -p sluice-cli)
#   BENCH_RECORDS     records in the throughput phases (default 1000000, 1 KiB each)
#   BENCH_RATE        records/s asked of the fixed-rate latency phase (default 5000; rdkafka_performance's
#                     usleep-based limiter falls short of high rates on a busy machine: the achieved rate is shown)
#   BENCH_RATE_S      seconds of the fixed-rate latency phase (default 10)
#   BENCH_OUT         directory for raw outputs (default: target/bench/<UTC timestamp>)
#
# Phases (1 KiB records, acks=all, one broker, a topic with 4 partitions):
#   0. iperf3 over 127.0.0.1 for 5 s: the loopback TCP baseline.
#   1. produce BENCH_RECORDS as fast as possible: MB/s, records/s.
#   2. consume them back from the beginning of all 4 partitions: MB/s, records/s.
#   3. fixed rate: a consumer tailing the topic while a producer sends ~BENCH_RATE records/s: produce latency
#      (send -> ack) and end-to-end latency (send -> consumed), p50/p99, at a load the broker can sustain.
# Prints a Markdown table with the figures and the ratios to loopback (targets: produce >= 0.5x, consume >= 0.7x).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SLUICE_BIN="${SLUICE_BIN:-$ROOT/target/release/sluice}"
RECORDS="${BENCH_RECORDS:-1000000}"
RATE="${BENCH_RATE:-5000}"
RATE_S="${BENCH_RATE_S:-10}"
OUT="${BENCH_OUT:-$ROOT/target/bench/$(date -u +%Y%m%dT%H%M%SZ)}"
SIZE=1024
PARTITIONS=4

log() { printf '[bench] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 2; }

command -v iperf3 >/dev/null || die "iperf3 not installed (apt-get install iperf3)"
[[ -x "$SLUICE_BIN" ]] || die "broker binary $SLUICE_BIN not found (cargo build --release -p sluice-cli, or set SLUICE_BIN)"
LIBRDKAFKA_ONLY_BUILD=1 "$ROOT/scripts/librdkafka-suite.sh" >&2
PERF="$ROOT/target/librdkafka-tests/librdkafka/examples/rdkafka_performance"
[[ -x "$PERF" ]] || die "rdkafka_performance not built at $PERF"
mkdir -p "$OUT"

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

PIDS=()
DATA_DIR=""
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    [[ -n "$DATA_DIR" ]] && rm -rf "$DATA_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_port() {
    local port=$1 pid=$2 i
    for ((i = 0; i < 200; i++)); do
        kill -0 "$pid" 2>/dev/null || die "process $pid exited before listening on $port"
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.05
    done
    die "nothing listening on 127.0.0.1:$port after 10 s"
}

# --- 0. loopback baseline --------------------------------------------------------------------------------
IPERF_PORT="$(free_port)"
iperf3 -s -1 -p "$IPERF_PORT" >"$OUT/iperf3-server.log" 2>&1 &
IPERF_PID=$!
PIDS+=("$IPERF_PID")
# Not wait_port: a probe connection would be the one-off server's only test.
for ((i = 0; i < 100; i++)); do
    grep -q "Server listening" "$OUT/iperf3-server.log" 2>/dev/null && break
    sleep 0.05
done
log "phase 0: iperf3 loopback, 5 s"
iperf3 -c 127.0.0.1 -p "$IPERF_PORT" -t 5 -J >"$OUT/iperf3.json"
wait "$IPERF_PID" 2>/dev/null || true
LOOPBACK_MBS="$(python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
print("%.1f" % (d["end"]["sum_received"]["bits_per_second"] / 8 / 1e6))' "$OUT/iperf3.json")"

# --- broker ------------------------------------------------------------------------------------------------
PORT="$(free_port)"
DATA_DIR="$(mktemp -d "${TMPDIR:-/tmp}/sluice-bench.XXXXXX")"
"$SLUICE_BIN" server \
    --override "listeners=PLAINTEXT://127.0.0.1:$PORT" \
    --override "log.dirs=$DATA_DIR/data" \
    --override "num.partitions=$PARTITIONS" \
    >"$OUT/broker.log" 2>&1 &
BROKER_PID=$!
PIDS+=("$BROKER_PID")
wait_port "$PORT" "$BROKER_PID"
BS="127.0.0.1:$PORT"
TOPIC="bench-$(date +%s)"

# Final summary lines of rdkafka_performance:
#   producer: "% N messages produced (B bytes), D delivered (offset O, F failed) in T ms: R msgs/s and X MB/s, ..."
#   consumer: "% N messages (B bytes) consumed in T ms: R msgs/s (X MB/s)"
# summary FILE -> "records msgs_per_s mb_per_s" (records = delivered for the producer).
summary() {
    python3 -c '
import re, sys
text = open(sys.argv[1]).read()
prod = re.findall(r"^% \d+ messages produced \(\d+ bytes\), (\d+) delivered .*? in \d+ms: (\d+) msgs/s and ([\d.]+) MB/s", text, re.M)
cons = re.findall(r"^% (\d+) messages \(\d+ bytes\) consumed in \d+ms: (\d+) msgs/s \(([\d.]+) MB/s\)", text, re.M)
rows = prod or cons
if not rows:
    sys.exit("no rdkafka_performance summary line in " + sys.argv[1])
print(" ".join(rows[-1]))' "$1"
}
percentiles() { # file of per-message latencies in microseconds -> "p50_ms p99_ms count"
    python3 -c '
import sys
v = sorted(int(x) for x in open(sys.argv[1]) if x.strip())
if not v: print("n/a n/a 0"); sys.exit()
p = lambda q: v[min(len(v) - 1, int(q * len(v)))] / 1000.0
print("%.2f %.2f %d" % (p(0.50), p(0.99), len(v)))' "$1"
}

# --- 1. produce throughput -----------------------------------------------------------------------------------
log "phase 1: produce $RECORDS x $SIZE B, acks=all, $PARTITIONS partitions"
# No -l here: latency mode copies and stamps every payload, which costs the client more CPU than the broker
# spends per record on this 2-core machine; latency is measured at a fixed rate in phase 3.
"$PERF" -P -t "$TOPIC" -b "$BS" -s "$SIZE" -c "$RECORDS" -a -1 \
    -X linger.ms=5 -X queue.buffering.max.kbytes=1048576 -i 1000 >"$OUT/produce.log" 2>&1 ||
    die "producer failed: $(tail -n 5 "$OUT/produce.log")"
read -r P_COUNT P_MSGS P_MBS < <(summary "$OUT/produce.log")
[[ "$P_COUNT" -ge "$RECORDS" ]] || die "only $P_COUNT of $RECORDS delivered"
if grep -q "delivery failed" "$OUT/produce.log"; then die "some deliveries failed: see $OUT/produce.log"; fi

# --- 2. consume throughput -----------------------------------------------------------------------------------
log "phase 2: consume $RECORDS from the beginning"
PARTS=()
for ((p = 0; p < PARTITIONS; p++)); do PARTS+=(-p "$p"); done
"$PERF" -C -t "$TOPIC" "${PARTS[@]}" -b "$BS" -o beginning -c "$RECORDS" -i 1000 \
    -X fetch.max.bytes=52428800 >"$OUT/consume.log" 2>&1 ||
    die "consumer failed: $(tail -n 5 "$OUT/consume.log")"
read -r C_COUNT C_MSGS C_MBS < <(summary "$OUT/consume.log")
[[ "$C_COUNT" -ge "$RECORDS" ]] || die "consumed $C_COUNT of $RECORDS"

# --- 3. fixed-rate latency -----------------------------------------------------------------------------------
FIXED=$((RATE * RATE_S))
log "phase 3: $RATE records/s for $RATE_S s with a tailing consumer"
"$PERF" -C -t "$TOPIC" "${PARTS[@]}" -b "$BS" -o end -c "$FIXED" -l -A "$OUT/e2e-latency.txt" -i 1000 \
    -X fetch.wait.max.ms=100 >"$OUT/tail-consume.log" 2>&1 &
TAIL_PID=$!
PIDS+=("$TAIL_PID")
sleep 2
# linger.ms=5 as in phase 1: rdkafka_performance's own default is 1000 ms, which would be all one measured here.
"$PERF" -P -t "$TOPIC" -b "$BS" -s "$SIZE" -c "$FIXED" -a -1 -r "$RATE" -l -A "$OUT/rate-produce-latency.txt" \
    -X linger.ms=5 -i 1000 >"$OUT/rate-produce.log" 2>&1 || die "fixed-rate producer failed"
read -r _ R_ACHIEVED _ < <(summary "$OUT/rate-produce.log")
for ((i = 0; i < 300; i++)); do kill -0 "$TAIL_PID" 2>/dev/null || break; sleep 0.1; done
kill -TERM "$TAIL_PID" 2>/dev/null || true
wait "$TAIL_PID" 2>/dev/null || true
read -r R_P50 R_P99 _ < <(percentiles "$OUT/rate-produce-latency.txt")
read -r E_P50 E_P99 E_N < <(percentiles "$OUT/e2e-latency.txt")

ratio() { python3 -c 'import sys; print("%.2f" % (float(sys.argv[1]) / float(sys.argv[2])))' "$1" "$2"; }
P_RATIO="$(ratio "$P_MBS" "$LOOPBACK_MBS")"
C_RATIO="$(ratio "$C_MBS" "$LOOPBACK_MBS")"

cat <<EOF | tee "$OUT/summary.md"
Run: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, broker $(basename "$SLUICE_BIN") ($SLUICE_BIN), librdkafka 2.12.1 rdkafka_performance, $RECORDS x $SIZE B records, acks=all, $PARTITIONS partitions, one broker, 127.0.0.1.

| measure | MB/s | records/s | p50 ms | p99 ms | ratio to loopback |
|---|---|---|---|---|---|
| loopback TCP (iperf3, 1 stream, 5 s) | $LOOPBACK_MBS | | | | 1.00 |
| produce, as fast as possible | $P_MBS | $P_MSGS | | | $P_RATIO (target >= 0.5) |
| consume from beginning | $C_MBS | $C_MSGS | | | $C_RATIO (target >= 0.7) |
| produce at a fixed rate (asked $RATE/s; send -> ack) | | $R_ACHIEVED | $R_P50 | $R_P99 | |
| end to end at that rate (send -> consumed, $E_N samples) | | $R_ACHIEVED | $E_P50 | $E_P99 | |

Raw outputs: $OUT
EOF
