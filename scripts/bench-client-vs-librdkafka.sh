#!/usr/bin/env bash
# bench-client-vs-librdkafka.sh — `sluice bench produce` side by side with librdkafka's `rdkafka_performance -P`
# against the same Sluice broker in the same run (issue: our client should not be the bottleneck, >= 0.8x
# librdkafka). Not part of CI: it loads the machine for a minute or two.
#
# Usage: scripts/bench-client-vs-librdkafka.sh
# Environment:
#   SLUICE_BIN      sluice binary, broker and bench tool (default: target/release/sluice)
#   BENCH_RECORDS   records per run (default 1000000)
#   BENCH_SIZE      record size in bytes (default 100)
#   BENCH_PAIRS     alternating sluice/librdkafka pairs per codec (default 3)
#   BENCH_CODECS    codecs to run (default "none lz4 zstd")
# Both producers: acks=all, linger.ms=5, batch.size 1000000, a fresh 3-partition topic per run.
# Prints a Markdown table of medians and the ratio sluice / librdkafka per codec.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SLUICE_BIN="${SLUICE_BIN:-$ROOT/target/release/sluice}"
RECORDS="${BENCH_RECORDS:-1000000}"
SIZE="${BENCH_SIZE:-100}"
PAIRS="${BENCH_PAIRS:-3}"
CODECS="${BENCH_CODECS:-none lz4 zstd}"

log() { printf '[bench-client] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 2; }

[[ -x "$SLUICE_BIN" ]] || die "$SLUICE_BIN not found (cargo build --release -p sluice-cli, or set SLUICE_BIN)"
LIBRDKAFKA_ONLY_BUILD=1 "$ROOT/scripts/librdkafka-suite.sh" >&2
PERF="$ROOT/target/librdkafka-tests/librdkafka/examples/rdkafka_performance"
[[ -x "$PERF" ]] || die "rdkafka_performance not built at $PERF"

PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')"
DATA_DIR="$(mktemp -d)"
BROKER_PID=""
cleanup() {
    [[ -n "$BROKER_PID" ]] && { kill -TERM "$BROKER_PID" 2>/dev/null || true; wait "$BROKER_PID" 2>/dev/null || true; }
    rm -rf "$DATA_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP  # run the EXIT trap (stop the broker) when killed, too

"$SLUICE_BIN" server --override "listeners=PLAINTEXT://127.0.0.1:$PORT" --override "log.dirs=$DATA_DIR" \
    --override num.partitions=3 >"$DATA_DIR/broker.log" 2>&1 &
BROKER_PID=$!
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    sleep 0.1
done
BOOTSTRAP="127.0.0.1:$PORT"
log "broker on $BOOTSTRAP, $RECORDS x $SIZE B records, $PAIRS pairs per codec: $CODECS"

RESULTS="$DATA_DIR/results.tsv"
: >"$RESULTS"
n=0
for codec in $CODECS; do
    for pair in $(seq "$PAIRS"); do
        n=$((n + 1))
        topic="sluice-$codec-$pair-$n"
        "$SLUICE_BIN" topic create "$topic" --partitions 3 --bootstrap-server "$BOOTSTRAP" >/dev/null
        json="$("$SLUICE_BIN" bench produce --bootstrap-server "$BOOTSTRAP" --output json --topic "$topic" \
            --num-records "$RECORDS" --record-size "$SIZE" --acks all --compression "$codec" \
            --linger-ms 5 --batch-size 1000000)"
        rps="$(python3 -c 'import json,sys; print(int(json.loads(sys.argv[1])["records_per_sec"]))' "$json")"
        printf '%s\tsluice\t%s\n' "$codec" "$rps" >>"$RESULTS"

        topic="rdkafka-$codec-$pair-$n"
        "$SLUICE_BIN" topic create "$topic" --partitions 3 --bootstrap-server "$BOOTSTRAP" >/dev/null
        out="$("$PERF" -P -t "$topic" -b "$BOOTSTRAP" -s "$SIZE" -c "$RECORDS" -a -1 -z "$codec" \
            -X linger.ms=5 -X batch.size=1000000 -X queue.buffering.max.kbytes=1048576 2>&1)"
        rps="$(printf '%s\n' "$out" | python3 -c '
import re, sys
m = re.findall(r"^% \d+ messages produced \(\d+ bytes\), \d+ delivered .*? in \d+ms: (\d+) msgs/s", sys.stdin.read(), re.M)
print(m[-1] if m else 0)')"
        printf '%s\trdkafka\t%s\n' "$codec" "$rps" >>"$RESULTS"
        log "$codec pair $pair: $(tail -2 "$RESULTS" | cut -f2,3 | tr '\t\n' ': ')"
    done
done

python3 - "$RESULTS" "$RECORDS" "$SIZE" <<'EOF'
import statistics, sys
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1]) if line.strip()]
codecs = list(dict.fromkeys(r[0] for r in rows))
print(f"\n{sys.argv[2]} records of {sys.argv[3]} B, acks=all, linger.ms=5; medians of alternating runs\n")
print("| codec | sluice records/s | rdkafka_performance msgs/s | ratio |")
print("|---|---|---|---|")
for c in codecs:
    s = statistics.median(int(r[2]) for r in rows if r[0] == c and r[1] == "sluice")
    k = statistics.median(int(r[2]) for r in rows if r[0] == c and r[1] == "rdkafka")
    print(f"| {c} | {s:,.0f} | {k:,.0f} | {s / k if k else float('nan'):.2f} |")
EOF
