#!/usr/bin/env bash
# librdkafka-suite.sh — runs librdkafka 2.12.1's own regression tests (tests/ of the rdkafka-sys 4.10.0 crate
# source) against a Sluice broker started on a free loopback port with a temporary data directory.
#
# Usage: scripts/librdkafka-suite.sh [TEST_NUMBER...]
#   With no arguments, runs every test listed in tests/interop/librdkafka/passing.txt (the kept list of tests
#   that pass; it must never shrink). With arguments, runs just those tests (e.g. to try new ones).
#   Prints one line per test and closes with "N passed, N failed"; exits non-zero if any test failed.
#
# Environment:
#   SLUICE_BIN                  broker binary (default: target/debug/sluice)
#   TEST_KAFKA_VERSION          Kafka version whose API versions Sluice advertises (default below)
#   LIBRDKAFKA_TEST_TIMEOUT_S   wall-clock bound per test, seconds (default 300)
#   LIBRDKAFKA_BUILD_DIR        where the source is copied and built (default: target/librdkafka-tests)
#   LIBRDKAFKA_LOG_DIR          where per-test logs go (default: $LIBRDKAFKA_BUILD_DIR/logs)
#   LIBRDKAFKA_ONLY_BUILD=1     build (or check the cached build) and exit
#
# The build is cached: a stamp file records the librdkafka version and configure flags; delete the build dir
# to force a rebuild. Quick mode (-Q) is never used: it skips sub-tests.
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

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

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
        --override "auto.create.topics.enable=true" \
        >>"$BROKER_LOG" 2>&1 &
    BROKER_PID=$!
    local i
    for ((i = 0; i < 200; i++)); do
        if ! kill -0 "$BROKER_PID" 2>/dev/null; then
            tail -n 20 "$BROKER_LOG" >&2
            die "broker exited during start-up (log: $BROKER_LOG)"
        fi
        if (exec 3<>"/dev/tcp/127.0.0.1/$BROKER_PORT") 2>/dev/null; then
            return 0
        fi
        sleep 0.05
    done
    die "broker did not listen on 127.0.0.1:$BROKER_PORT within 10 s"
}

stop_broker() {
    if [[ -n "$BROKER_PID" ]] && kill -0 "$BROKER_PID" 2>/dev/null; then
        kill -TERM "$BROKER_PID" 2>/dev/null || true
        local i
        for ((i = 0; i < 100; i++)); do
            kill -0 "$BROKER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$BROKER_PID" 2>/dev/null || true
        wait "$BROKER_PID" 2>/dev/null || true
    fi
    BROKER_PID=""
    [[ -n "$BROKER_DIR" ]] && rm -rf "$BROKER_DIR"
    BROKER_DIR=""
}
# librdkafka's tests read the broker address from this file. One file per run (never one shared in
# $BUILD_DIR): two runs sharing it sent one run's tests to the other run's broker, which then shut down.
TEST_CONF="$(mktemp "${TMPDIR:-/tmp}/librdkafka-test.XXXXXX.conf")"
on_exit() {
    stop_broker
    rm -f "$TEST_CONF"
}
trap on_exit EXIT
trap 'exit 130' INT TERM

write_test_conf() {
    cat >"$TEST_CONF" <<EOF
# Written by scripts/librdkafka-suite.sh for one run.
bootstrap.servers=127.0.0.1:$BROKER_PORT
test.topic.prefix=rdkafkatest
test.topic.random=true
EOF
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
    local t="$1" raw="$LOG_DIR/$1.raw" out="$LOG_DIR/$1.log" rc=0 verdict reason
    # (The outer braces swallow the shell's own "Aborted" notice: failing tests abort() the test-runner.)
    {
        (
            cd "$SRC_DIR/tests"
            export LD_LIBRARY_PATH="../src:../src-cpp${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
            TESTS="$t" TEST_KAFKA_VERSION="$TEST_KAFKA_VERSION" RDKAFKA_TEST_CONF="$TEST_CONF" \
                exec timeout -k 10 "$TEST_TIMEOUT_S" ./test-runner -p1
        ) >"$raw" 2>&1 || rc=$?
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
    if ! kill -0 "$BROKER_PID" 2>/dev/null; then
        verdict=FAILED reason="broker died during the test (log: $BROKER_LOG); $reason"
        start_broker
        write_test_conf
    fi
    printf '%-5s %-8s %s\n' "$t" "$verdict" "$reason"
    case $verdict in
        PASSED) return 0 ;;
        SKIPPED) return 3 ;;
        *) return 1 ;;
    esac
}

main() {
    local tests=()
    build
    [[ "${LIBRDKAFKA_ONLY_BUILD:-0}" == 1 ]] && { log "build ready in $SRC_DIR"; return 0; }
    if [[ $# -gt 0 ]]; then
        tests=("$@")
    else
        [[ -f "$LIST_FILE" ]] || die "missing $LIST_FILE"
        mapfile -t tests < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$LIST_FILE" | grep -E '^[0-9]{4}$' || true)
    fi
    [[ -x "$SLUICE_BIN" ]] || die "broker binary $SLUICE_BIN not found (build it, or set SLUICE_BIN)"
    mkdir -p "$LOG_DIR"
    : >"$LOG_DIR/broker.log"
    start_broker
    write_test_conf
    log "broker pid $BROKER_PID on 127.0.0.1:$BROKER_PORT; TEST_KAFKA_VERSION=$TEST_KAFKA_VERSION; logs in $LOG_DIR"
    local passed=0 failed=0 skipped=0 t rc
    for t in "${tests[@]}"; do
        rc=0
        run_one "$t" || rc=$?
        case $rc in
            0) passed=$((passed + 1)) ;;
            3) skipped=$((skipped + 1)) ;;
            *) failed=$((failed + 1)) ;;
        esac
    done
    if [[ $# -eq 0 ]]; then
        # A kept test that skips itself no longer proves anything: it counts as a failure.
        failed=$((failed + skipped))
        echo "librdkafka: $passed passed, $failed failed"
    else
        echo "librdkafka: $passed passed, $failed failed, $skipped skipped"
    fi
    [[ $failed -eq 0 ]]
}

main "$@"
