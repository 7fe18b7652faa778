#!/usr/bin/env bash
# librdkafka-suite.sh — runs librdkafka 2.12.1's own regression tests (tests/ of the rdkafka-sys 4.10.0 crate
# source) against Sluice: a single broker, or a 3-node cluster, started on free loopback ports with temporary data
# directories.
#
# Usage: scripts/librdkafka-suite.sh [--single | --cluster] [TEST_NUMBER...]
#   With no arguments, runs every test listed in tests/interop/librdkafka/passing.txt against one broker, then
#   every test in tests/interop/librdkafka/passing-cluster.txt against a 3-node cluster (the kept lists of tests
#   that pass; they must never shrink). This is what ./test.sh runs.
#   --single    only the single-broker list (or the given tests against one broker)
#   --cluster   only the cluster list (or the given tests against a 3-node cluster)
#   With test numbers and no flag, runs just those tests against one broker (e.g. to try new ones). A test given
#   as NUMBER:noautocreate runs in librdkafka's "noautocreate" scenario (brokers with auto-creation off), as a
#   list line "NUMBER noautocreate" does.
#   Prints one line per test and closes with "N passed, N failed" per mode; exits non-zero if any test failed.
#
# The cluster: 3 nodes, each `process.roles=broker,controller` with a client listener and a CONTROLLER listener,
# `controller.quorum.voters` naming all three, one `cluster.id` (no `sluice storage format` needed) and
# `default.replication.factor=3`, as librdkafka's own CI clusters have. The tests bootstrap from all three;
# BROKER_ADDRESS_1..3 name each node as librdkafka's trivup harness does (0016 connects to BROKER_ADDRESS_2 alone).
# Tests start only when every node's Metadata lists 3 brokers.
#
# Environment:
#   SLUICE_BIN                  broker binary (default: target/debug/sluice)
#   TEST_KAFKA_VERSION          Kafka version whose API versions Sluice advertises (default below)
#   LIBRDKAFKA_TEST_TIMEOUT_S   wall-clock bound per test, seconds (default 300)
#   LIBRDKAFKA_BUILD_DIR        where the source is copied and built (default: target/librdkafka-tests)
#   LIBRDKAFKA_LOG_DIR          where per-test logs go (default: $LIBRDKAFKA_BUILD_DIR/logs; cluster runs in its
#                               cluster/ subdirectory, with the nodes' logs node-1.log..node-3.log)
#   LIBRDKAFKA_CLUSTER_OVERRIDES  more `key=value` settings for the cluster's nodes, space-separated; they come
#                               last, so they win (e.g. "default.replication.factor=1" to try unreplicated topics)
#   LIBRDKAFKA_ONLY_BUILD=1     build (or check the cached build) and exit
#
# The build is cached: a stamp file records the librdkafka version and configure flags; delete the build dir
# to force a rebuild. Quick mode (-Q) is never used: it skips sub-tests. Every broker started is stopped when the
# script ends, also on failure, Ctrl-C or SIGTERM (the running test-runner is stopped too).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RDKAFKA_SYS_VERSION="4.10.0+2.12.1"
BUILD_DIR="${LIBRDKAFKA_BUILD_DIR:-$ROOT/target/librdkafka-tests}"
SRC_DIR="$BUILD_DIR/librdkafka"
LOG_DIR="${LIBRDKAFKA_LOG_DIR:-$BUILD_DIR/logs}"
SLUICE_BIN="${SLUICE_BIN:-$ROOT/target/debug/sluice}"
# Sluice advertises the API version ranges of Apache Kafka 4.0 (ApiVersions v0-4, Metadata v0-12, Produce
# v3-11, Fetch v4-16...: crates/broker/src/apis/mod.rs); librdkafka's tests gate features on this number.
TEST_KAFKA_VERSION="${TEST_KAFKA_VERSION:-4.0.0}"
TEST_TIMEOUT_S="${LIBRDKAFKA_TEST_TIMEOUT_S:-300}"
LIST_FILE="$ROOT/tests/interop/librdkafka/passing.txt"
CLUSTER_LIST_FILE="$ROOT/tests/interop/librdkafka/passing-cluster.txt"
# Nodes of the cluster mode. librdkafka's own CI (trivup) runs 3 brokers; 0016 uses the second one's address.
CLUSTER_SIZE=3
# Any fixed id will do: each run has fresh data directories.
CLUSTER_ID="TGlicmRrYWZrYVN1aXRlQQ"
JOBS="${LIBRDKAFKA_BUILD_JOBS:-2}"

log() { printf '[librdkafka-suite] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 2; }

# Locates the librdkafka source shipped in the rdkafka-sys crate (fetching it through cargo if needed).
find_source() {
    local manifest
    manifest="$(cd "$ROOT" && cargo metadata --format-version 1 2>/dev/null |
        grep -o "\"manifest_path\":\"[^\"]*rdkafka-sys-${RDKAFKA_SYS_VERSION//+/\\+}/Cargo.toml\"" | head -n1 |
        sed -e 's/^"manifest_path":"//' -e 's/"$//')" || true
    if [[ -z "$manifest" ]]; then
        (cd "$ROOT" && cargo fetch >/dev/null 2>&1) || true
        manifest="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"rdkafka-sys-$RDKAFKA_SYS_VERSION"/Cargo.toml \
            2>/dev/null | head -n1)" || true
    fi
    [[ -n "$manifest" && -d "$(dirname "$manifest")/librdkafka/tests" ]] ||
        die "librdkafka source not found (rdkafka-sys $RDKAFKA_SYS_VERSION); run 'cargo fetch' first"
    printf '%s\n' "$(dirname "$manifest")/librdkafka"
}

configure_flags() {
    local flags=(--no-download --disable-gssapi --disable-curl)
    # zstd is used when its headers are present (libzstd-dev); otherwise the zstd sub-tests are skipped by
    # librdkafka itself, so say so rather than fail the build.
    if ! pkg-config --exists libzstd 2>/dev/null; then
        log "libzstd-dev not found: building without zstd (install libzstd-dev for full codec coverage)"
        flags+=(--disable-zstd)
    fi
    printf '%s\n' "${flags[@]}"
}

build() {
    local src flags stamp_want
    mapfile -t flags < <(configure_flags)
    stamp_want="$RDKAFKA_SYS_VERSION ${flags[*]}"
    # librdkafka's configure builds the tests with RapidJSON (0101 parses the client's statistics with it) when
    # its headers are present (rapidjson-dev); a build without it is redone once they are.
    if [[ -f /usr/include/rapidjson/document.h ]]; then
        stamp_want+=" rapidjson"
    else
        log "rapidjson-dev not found: tests that read statistics (0101) skip themselves"
    fi
    if [[ -f "$BUILD_DIR/.stamp" && "$(cat "$BUILD_DIR/.stamp")" == "$stamp_want" &&
          -x "$SRC_DIR/tests/test-runner" && -x "$SRC_DIR/examples/rdkafka_performance" ]]; then
        return 0
    fi
    src="$(find_source)"
    log "building librdkafka tests from $src into $SRC_DIR (a few minutes, once)"
    rm -rf "$SRC_DIR"
    mkdir -p "$BUILD_DIR"
    cp -a "$src" "$SRC_DIR"
    chmod -R u+w "$SRC_DIR"
    (
        cd "$SRC_DIR"
        ./configure "${flags[@]}" >"$BUILD_DIR/configure.log" 2>&1 ||
            { tail -n 30 "$BUILD_DIR/configure.log" >&2; exit 1; }
        nice make -j"$JOBS" libs >"$BUILD_DIR/make-libs.log" 2>&1 ||
            { tail -n 30 "$BUILD_DIR/make-libs.log" >&2; exit 1; }
        nice make -j"$JOBS" -C tests build >"$BUILD_DIR/make-tests.log" 2>&1 ||
            { tail -n 30 "$BUILD_DIR/make-tests.log" >&2; exit 1; }
        nice make -C examples rdkafka_performance >"$BUILD_DIR/make-examples.log" 2>&1 ||
            { tail -n 30 "$BUILD_DIR/make-examples.log" >&2; exit 1; }
    ) || die "librdkafka build failed (logs in $BUILD_DIR)"
    printf '%s\n' "$stamp_want" >"$BUILD_DIR/.stamp"
}

# Prints $1 distinct free loopback ports, one a line (all bound at once, so no two are the same).
free_ports() {
    python3 - "$1" <<'PY'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print("\n".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
PY
}

free_port() { free_ports 1; }

# Waits (10 s) until something listens on 127.0.0.1:$2; $1 is the broker's pid and $3 its log, for the error.
wait_listening() {
    local pid="$1" port="$2" log_file="$3" i
    for ((i = 0; i < 200; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "$log_file" >&2
            die "broker exited during start-up (log: $log_file)"
        fi
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.05
    done
    die "broker did not listen on 127.0.0.1:$port within 10 s (log: $log_file)"
}

# Stops processes, all at once: SIGTERM, then SIGKILL to those still running after 10 s.
stop_pids() {
    local pid i alive
    for pid in "$@"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for ((i = 0; i < 100; i++)); do
        alive=0
        for pid in "$@"; do
            kill -0 "$pid" 2>/dev/null && alive=1
        done
        ((alive)) || break
        sleep 0.1
    done
    for pid in "$@"; do
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}

# --- single broker ------------------------------------------------------------------------------------------------

BROKER_PID=""
BROKER_DIR=""
BROKER_PORT=""
BROKER_LOG=""

start_broker() {
    BROKER_PORT="$(free_port)"
    BROKER_DIR="$(mktemp -d "${TMPDIR:-/tmp}/sluice-librdkafka.XXXXXX")"
    BROKER_LOG="$LOG_DIR/broker.log"
    "$SLUICE_BIN" server \
        --override "listeners=PLAINTEXT://127.0.0.1:$BROKER_PORT" \
        --override "log.dirs=$BROKER_DIR/data" \
        --override "num.partitions=4" \
        --override "auto.create.topics.enable=$(auto_create)" \
        >>"$BROKER_LOG" 2>&1 &
    BROKER_PID=$!
    wait_listening "$BROKER_PID" "$BROKER_PORT" "$BROKER_LOG"
}

stop_broker() {
    if [[ -n "$BROKER_PID" ]]; then
        stop_pids "$BROKER_PID"
    fi
    BROKER_PID=""
    if [[ -n "$BROKER_DIR" ]]; then
        rm -rf "$BROKER_DIR"
    fi
    BROKER_DIR=""
}

# --- 3-node cluster -----------------------------------------------------------------------------------------------

CLUSTER_PIDS=()
CLUSTER_PORTS=()
CLUSTER_DIR=""

# Node $1's log file.
node_log() { printf '%s/node-%s.log\n' "$LOG_DIR" "$1"; }

# Starts CLUSTER_SIZE combined broker+controller nodes (ids 1..N) at once, since each waits for a quorum of the
# others, and returns when every node's Metadata lists all N brokers.
start_cluster() {
    local ports=() voters="" i client controller extra=() kv
    for kv in ${LIBRDKAFKA_CLUSTER_OVERRIDES:-}; do
        extra+=(--override "$kv")
    done
    mapfile -t ports < <(free_ports $((2 * CLUSTER_SIZE)))
    CLUSTER_PORTS=("${ports[@]:0:CLUSTER_SIZE}")
    CLUSTER_DIR="$(mktemp -d "${TMPDIR:-/tmp}/sluice-librdkafka-cluster.XXXXXX")"
    for ((i = 1; i <= CLUSTER_SIZE; i++)); do
        voters+="${voters:+,}$i@127.0.0.1:${ports[CLUSTER_SIZE + i - 1]}"
    done
    CLUSTER_PIDS=()
    for ((i = 1; i <= CLUSTER_SIZE; i++)); do
        client="PLAINTEXT://127.0.0.1:${CLUSTER_PORTS[i - 1]}"
        controller="CONTROLLER://127.0.0.1:${ports[CLUSTER_SIZE + i - 1]}"
        printf '\n==== node %s starts %s\n' "$i" "$(date -u +%H:%M:%S)" >>"$(node_log "$i")"
        # num.partitions=4 and auto-creation as in the single-broker mode; 4 partitions over 3 nodes give every
        # node a partition to lead. default.replication.factor=3 as in librdkafka's own CI (trivup clusters use
        # min(brokers, 3); 0008 says it needs it): topics the tests create with replication factor -1 and
        # auto-created ones are replicated to all three nodes. No controlled shutdown: the tests never stop a node,
        # the whole cluster is thrown away, and the last node to stop would wait 10 s for a quorum that is gone.
        # Racks RACK1..RACK3 and the rack-aware replica selector as librdkafka's CI (trivup) configures them for
        # 0101 fetch_from_follower (KIP-392); clients without client.rack still fetch from the leaders.
        NO_COLOR=1 "$SLUICE_BIN" server \
            --override "node.id=$i" \
            --override "process.roles=broker,controller" \
            --override "listeners=$client,$controller" \
            --override "advertised.listeners=$client" \
            --override "controller.listener.names=CONTROLLER" \
            --override "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT" \
            --override "controller.quorum.voters=$voters" \
            --override "cluster.id=$CLUSTER_ID" \
            --override "log.dirs=$CLUSTER_DIR/node-$i" \
            --override "num.partitions=4" \
            --override "auto.create.topics.enable=$(auto_create)" \
            --override "default.replication.factor=$CLUSTER_SIZE" \
            --override "controlled.shutdown.enable=false" \
            --override "broker.rack=RACK$i" \
            --override "replica.selector.class=org.apache.kafka.common.replica.RackAwareReplicaSelector" \
            "${extra[@]}" \
            >>"$(node_log "$i")" 2>&1 &
        CLUSTER_PIDS+=($!)
    done
    for ((i = 1; i <= CLUSTER_SIZE; i++)); do
        wait_listening "${CLUSTER_PIDS[i - 1]}" "${CLUSTER_PORTS[i - 1]}" "$(node_log "$i")"
    done
    wait_cluster_brokers
}

# Prints how many brokers each of the given loopback ports lists in its answer to Metadata v1 (no topics).
metadata_broker_counts() {
    python3 - "$@" <<'PY'
import socket, struct, sys

def broker_count(port):
    with socket.create_connection(("127.0.0.1", int(port)), timeout=2) as s:
        client_id = b"librdkafka-suite"
        # Request header v1 (api key 3 = Metadata, version 1, correlation id, client id), then an empty topic array.
        body = struct.pack(">hhih", 3, 1, 1, len(client_id)) + client_id + struct.pack(">i", 0)
        s.sendall(struct.pack(">i", len(body)) + body)
        data = b""
        while len(data) < 12:  # size, correlation id, broker array length
            chunk = s.recv(12 - len(data))
            if not chunk:
                raise EOFError("connection closed")
            data += chunk
        return struct.unpack(">iii", data)[2]

print(" ".join(str(broker_count(p)) for p in sys.argv[1:]))
PY
}

# Waits (60 s) until every node's Metadata lists CLUSTER_SIZE brokers: the quorum has a leader and every broker has
# registered and been unfenced.
wait_cluster_brokers() {
    local i n counts="" want
    want="$(for ((n = 0; n < CLUSTER_SIZE; n++)); do printf '%s\n' "$CLUSTER_SIZE"; done | paste -sd' ')"
    for ((i = 0; i < 300; i++)); do
        counts="$(metadata_broker_counts "${CLUSTER_PORTS[@]}" 2>/dev/null)" || counts=""
        [[ "$counts" == "$want" ]] && return 0
        for ((n = 1; n <= CLUSTER_SIZE; n++)); do
            if ! kill -0 "${CLUSTER_PIDS[n - 1]}" 2>/dev/null; then
                tail -n 20 "$(node_log "$n")" >&2
                die "cluster node $n exited during start-up (log: $(node_log "$n"))"
            fi
        done
        sleep 0.2
    done
    die "the cluster's Metadata did not list $CLUSTER_SIZE brokers within 60 s (brokers listed per node:" \
        "${counts:-no answer}; logs: $LOG_DIR/node-*.log)"
}

stop_cluster() {
    if ((${#CLUSTER_PIDS[@]})); then
        stop_pids "${CLUSTER_PIDS[@]}"
    fi
    CLUSTER_PIDS=()
    if [[ -n "$CLUSTER_DIR" ]]; then
        rm -rf "$CLUSTER_DIR"
    fi
    CLUSTER_DIR=""
}

# --- the brokers of the current mode ------------------------------------------------------------------------------

MODE=""     # single or cluster, while a list runs
SCENARIO="" # librdkafka's test scenario the running brokers are set up for (empty: none running)

# auto.create.topics.enable for the scenario: librdkafka's "noautocreate" tests (0107, 0111...) expect it off,
# as trivup sets up that scenario; the "default" scenario has it on.
auto_create() {
    case $SCENARIO in
        default) echo true ;;
        noautocreate) echo false ;;
        *) die "test scenario '$SCENARIO' is not supported (only default and noautocreate)" ;;
    esac
}

start_brokers() { if [[ $MODE == cluster ]]; then start_cluster; else start_broker; fi; }
stop_brokers() { stop_cluster; stop_broker; }

# Prints why the brokers of the current mode cannot serve the next test (a process died), or nothing.
brokers_down() {
    local i
    if [[ $MODE == cluster ]]; then
        for ((i = 1; i <= ${#CLUSTER_PIDS[@]}; i++)); do
            if ! kill -0 "${CLUSTER_PIDS[i - 1]}" 2>/dev/null; then
                echo "cluster node $i died during the test (log: $(node_log "$i"))"
                return 0
            fi
        done
    elif ! kill -0 "$BROKER_PID" 2>/dev/null; then
        echo "broker died during the test (log: $BROKER_LOG)"
    fi
}

RUNNER_PID=""
# librdkafka's tests read the broker addresses from this file. One file per run (never one shared in
# $BUILD_DIR): two runs sharing it sent one run's tests to the other run's broker, which then shut down.
TEST_CONF="$(mktemp "${TMPDIR:-/tmp}/librdkafka-test.XXXXXX.conf")"
on_exit() {
    # The test-runner runs under `timeout`, in a process group of its own: SIGTERM to `timeout` ends it.
    if [[ -n "$RUNNER_PID" ]]; then
        stop_pids "$RUNNER_PID"
    fi
    stop_brokers
    rm -f "$TEST_CONF"
}
trap on_exit EXIT
trap 'exit 130' INT TERM

write_test_conf() {
    local bootstrap
    if [[ $MODE == cluster ]]; then
        bootstrap="$(printf '127.0.0.1:%s,' "${CLUSTER_PORTS[@]}")"
        bootstrap="${bootstrap%,}"
    else
        bootstrap="127.0.0.1:$BROKER_PORT"
    fi
    cat >"$TEST_CONF" <<EOF
# Written by scripts/librdkafka-suite.sh for one run ($MODE).
bootstrap.servers=$bootstrap
test.topic.prefix=rdkafkatest
test.topic.random=true
EOF
}

# The environment librdkafka's trivup harness gives the tests of a cluster: each broker's address by its id
# (BROKER_ADDRESS_<id>; 0016 connects to BROKER_ADDRESS_2 alone). Nothing for a single broker, as before.
test_env() {
    local i
    if [[ $MODE == cluster ]]; then
        for ((i = 1; i <= ${#CLUSTER_PORTS[@]}; i++)); do
            printf 'BROKER_ADDRESS_%s=127.0.0.1:%s\n' "$i" "${CLUSTER_PORTS[i - 1]}"
        done
    fi
}

# The test-runner's verdict for test number $1 from a de-coloured log $2: PASSED, FAILED, SKIPPED or "". A number can
# select several tests (0031_get_offsets and 0031_get_offsets_mock): any FAILED fails it, else any PASSED passes.
verdict_of() {
    # Summary rows look like "| 0001_multiobj                  |     PASSED |   1.234s |".
    local rows
    rows="$(grep -Eo "^\| *$1_[A-Za-z0-9_]+ *\| *(PASSED|FAILED|SKIPPED)" "$2" | grep -Eo '(PASSED|FAILED|SKIPPED)$' || true)"
    if grep -q FAILED <<<"$rows"; then
        echo FAILED
    elif grep -q PASSED <<<"$rows"; then
        echo PASSED
    elif grep -q SKIPPED <<<"$rows"; then
        echo SKIPPED
    fi
}

# Runs one test; prints its verdict line; returns 0 when it passed, 3 when it skipped itself, 1 otherwise.
run_one() {
    local t="$1" raw="$LOG_DIR/$1.raw" out="$LOG_DIR/$1.log" rc=0 verdict reason down env=()
    mapfile -t env < <(test_env)
    # The runner is waited for in the background so that Ctrl-C or SIGTERM reach the traps at once (bash runs a
    # trap only once a foreground command has ended). The outer braces swallow the shell's own "Aborted" notice:
    # failing tests abort() the test-runner.
    {
        (
            cd "$SRC_DIR/tests"
            export LD_LIBRARY_PATH="../src:../src-cpp${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
            exec env "${env[@]}" TESTS="$t" TEST_SCENARIO="$SCENARIO" TEST_KAFKA_VERSION="$TEST_KAFKA_VERSION" \
                RDKAFKA_TEST_CONF="$TEST_CONF" \
                timeout -k 10 "$TEST_TIMEOUT_S" ./test-runner -p1
        ) >"$raw" 2>&1 </dev/null &
        RUNNER_PID=$!
        wait "$RUNNER_PID" || rc=$?
        RUNNER_PID=""
    } 2>/dev/null
    sed -e 's/\x1b\[[0-9;]*m//g' "$raw" >"$out" && rm -f "$raw"
    rm -f "$SRC_DIR"/tests/stats_*.json
    verdict="$(verdict_of "$t" "$out")"
    reason=""
    if [[ $rc -eq 124 || $rc -eq 137 ]]; then
        verdict=FAILED reason="timed out after ${TEST_TIMEOUT_S}s"
    elif [[ $verdict == PASSED && $rc -ne 0 ]]; then
        verdict=FAILED reason="test-runner exit code $rc"
    elif [[ -z $verdict ]]; then
        verdict=FAILED # aborted before its summary (a failed assertion aborts), or no such test
    fi
    if [[ $verdict == SKIPPED ]]; then
        reason="$(grep -m1 -iE "skip" "$out" | sed -e 's/^\[[^]]*\] *//' | cut -c1-200)"
    elif [[ $verdict == FAILED && -z $reason ]]; then
        # The first failure: '### Test "<name>" failed at <file:line>:<fn>() at <date>: ###' and its message line.
        reason="$(awk '/^### Test ".*" failed at /{ sub(/ at [A-Z][a-z][a-z] [A-Z][a-z][a-z] .*$/, ""); loc=$0;
            getline; print loc ": " $0; exit }' "$out" | sed -e 's/^### Test "[^"]*" failed at //' | tr -s ' ' | cut -c1-300)"
        [[ -z "$reason" ]] && reason="$(grep -m1 -E "Test assertion failed|TEST FAILURE" "$out" | cut -c1-300)"
        [[ -z "$reason" ]] && reason="exit code $rc, no failure message (no such test?)"
    fi
    down="$(brokers_down)"
    if [[ -n $down ]]; then
        # Start afresh, so that the next test does not fail because this one lost a broker.
        verdict=FAILED reason="$down; $reason"
        stop_brokers
        start_brokers
        write_test_conf
    fi
    printf '%-5s %-8s %s\n' "$t" "$verdict" "$reason"
    case $verdict in
        PASSED) return 0 ;;
        SKIPPED) return 3 ;;
        *) return 1 ;;
    esac
}

BASE_LOG_DIR="$LOG_DIR"

# (Re)starts the brokers of the current mode for scenario $1 and writes the test configuration for them.
start_for_scenario() {
    stop_brokers
    SCENARIO="$1"
    auto_create >/dev/null # dies here, not in the brokers' command line, on an unsupported scenario
    start_brokers
    write_test_conf
    if [[ $MODE == cluster ]]; then
        log "$CLUSTER_SIZE-node cluster (scenario $SCENARIO), pids ${CLUSTER_PIDS[*]}," \
            "bootstrap $(grep '^bootstrap' "$TEST_CONF" | cut -d= -f2); TEST_KAFKA_VERSION=$TEST_KAFKA_VERSION;" \
            "logs in $LOG_DIR"
    else
        log "broker pid $BROKER_PID on 127.0.0.1:$BROKER_PORT (scenario $SCENARIO);" \
            "TEST_KAFKA_VERSION=$TEST_KAFKA_VERSION; logs in $LOG_DIR"
    fi
}

# Runs tests against the brokers of mode $1 (single or cluster): the tests after $2, or (none given) those of the
# kept list $2. A test is a number, or NUMBER:SCENARIO for a librdkafka test scenario other than "default" (a list
# line "0107 noautocreate"); the brokers are restarted, fresh, whenever the scenario changes. Prints the summary
# line; returns non-zero if any test failed.
run_mode() {
    local list="$2" label i tests=()
    MODE="$1"
    shift 2
    if [[ $# -gt 0 ]]; then
        tests=("$@")
    else
        [[ -f "$list" ]] || die "missing $list"
        mapfile -t tests < <(sed -e 's/#.*//' "$list" |
            awk '$1 ~ /^[0-9][0-9][0-9][0-9]$/ { print ($2 == "" ? $1 : $1 ":" $2) }')
    fi
    if [[ $MODE == cluster ]]; then
        label="librdkafka ($CLUSTER_SIZE-node cluster)"
        LOG_DIR="$BASE_LOG_DIR/cluster"
        mkdir -p "$LOG_DIR"
        for ((i = 1; i <= CLUSTER_SIZE; i++)); do
            : >"$(node_log "$i")"
        done
    else
        label="librdkafka"
        LOG_DIR="$BASE_LOG_DIR"
        mkdir -p "$LOG_DIR"
        : >"$LOG_DIR/broker.log"
    fi
    SCENARIO=""
    local passed=0 failed=0 skipped=0 entry t scenario rc
    for entry in "${tests[@]}"; do
        t="${entry%%:*}"
        scenario=default
        [[ $entry == *:* ]] && scenario="${entry#*:}"
        [[ $scenario == "$SCENARIO" ]] || start_for_scenario "$scenario"
        rc=0
        run_one "$t" || rc=$?
        case $rc in
            0) passed=$((passed + 1)) ;;
            3) skipped=$((skipped + 1)) ;;
            *) failed=$((failed + 1)) ;;
        esac
    done
    stop_brokers
    SCENARIO=""
    if [[ $# -eq 0 ]]; then
        # A kept test that skips itself no longer proves anything: it counts as a failure.
        failed=$((failed + skipped))
        echo "$label: $passed passed, $failed failed"
    else
        echo "$label: $passed passed, $failed failed, $skipped skipped"
    fi
    [[ $failed -eq 0 ]]
}

main() {
    local modes=(single cluster) mode status=0
    case "${1:-}" in
        --single) modes=(single); shift ;;
        --cluster) modes=(cluster); shift ;;
        -*) die "unknown option $1 (usage: $0 [--single | --cluster] [TEST_NUMBER...])" ;;
        *) [[ $# -gt 0 ]] && modes=(single) ;; # tests to try: against one broker unless --cluster says otherwise
    esac
    build
    [[ "${LIBRDKAFKA_ONLY_BUILD:-0}" == 1 ]] && { log "build ready in $SRC_DIR"; return 0; }
    [[ -x "$SLUICE_BIN" ]] || die "broker binary $SLUICE_BIN not found (build it, or set SLUICE_BIN)"
    for mode in "${modes[@]}"; do
        if [[ $mode == cluster ]]; then
            run_mode cluster "$CLUSTER_LIST_FILE" "$@" || status=1
        else
            run_mode single "$LIST_FILE" "$@" || status=1
        fi
    done
    return "$status"
}

main "$@"
