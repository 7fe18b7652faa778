#!/usr/bin/env bash
# Runs every Sluice test on a fresh Debian machine: installs the test dependencies (kcat, a Python venv with
# confluent-kafka / kafka-python / pytest, kafkajs), builds the workspace once (profile `ci`), then runs the
# suites and ends with one line "suites: N passed, N failed" (exit status non-zero if any suite failed).
#
#   ./test.sh                 every suite
#   ./test.sh python js       only the named suites (lint, rust, python, js, librdkafka, fuzz)
#
# Everything is built once with the `ci` profile (release optimizations, debug assertions and overflow checks on).
#
# Suites:
#   lint        cargo fmt --check and cargo clippy --workspace --all-targets -D warnings
#   rust        cargo nextest (unit, property, crash and rdkafka interop tests) over the whole workspace,
#               then the doctests (cargo test --doc)
#   python      pytest tests/interop/python: confluent-kafka, kafka-python, kcat (parallel, pytest-xdist)
#   js          node --test tests/interop/js: kafkajs
#   librdkafka  scripts/librdkafka-suite.sh (librdkafka's own test suite), when present
#   fuzz        scripts/fuzz.sh 60 (request decoder fuzzing, bounded), when present
# The python and js suites run concurrently; each test starts its own broker on a free loopback port.
# Logs of every suite are kept under target/test-logs/.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
ROOT="$PWD"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
LOG_DIR="$TARGET_DIR/test-logs"
export PYTHONDONTWRITEBYTECODE=1
mkdir -p "$LOG_DIR"

ALL_SUITES=(lint rust python js librdkafka fuzz)
if (($#)); then
    SELECTED=("$@")
    for s in "${SELECTED[@]}"; do
        [[ " ${ALL_SUITES[*]} " == *" $s "* ]] || { echo "unknown suite '$s' (known: ${ALL_SUITES[*]})" >&2; exit 2; }
    done
else
    SELECTED=("${ALL_SUITES[@]}")
fi
selected() { [[ " ${SELECTED[*]} " == *" $1 "* ]]; }

# Parallelism of the Python suite (each worker runs one test, with one broker, at a time).
PY_WORKERS="${SLUICE_TEST_PY_WORKERS:-2}"

section() { printf '\n==== %s ==== (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }
START_S=$SECONDS

PASSED=()
FAILED=()
record() { # name exit-code
    if [[ "$2" == 0 ]]; then PASSED+=("$1"); else FAILED+=("$1 (exit $2)"); fi
}

# ---------------------------------------------------------------------------------------------------
section "install test dependencies"
scripts/install-test-deps.sh

# ---------------------------------------------------------------------------------------------------
section "build (profile ci: release + debug assertions, whole workspace, all targets)"
if ! cargo build --profile ci --workspace --all-targets; then
    echo "build failed: no suite run"
    echo "suites: 0 passed, 1 failed"
    exit 1
fi
export SLUICE_BIN="$TARGET_DIR/ci/sluice"
[[ -x "$SLUICE_BIN" ]] || { echo "build did not produce $SLUICE_BIN" >&2; exit 1; }
echo "SLUICE_BIN=$SLUICE_BIN"

# ---------------------------------------------------------------------------------------------------
if selected lint; then
    section "suite lint: cargo fmt --check, cargo clippy -D warnings"
    set +e
    {
        cargo fmt --all --check && cargo clippy --workspace --all-targets -- -D warnings
    } 2>&1 | tee "$LOG_DIR/lint.log"
    code=${PIPESTATUS[0]}
    set -e
    record lint "$code"
fi

# ---------------------------------------------------------------------------------------------------
if selected rust; then
    section "suite rust: cargo nextest"
    # The quorum simulation runs 400 seeds when debug assertions are on (debug builds); the ci profile is optimized.
    export SLUICE_SIM_SEEDS="${SLUICE_SIM_SEEDS:-3000}"
    set +e
    if cargo nextest --version >/dev/null 2>&1; then
        timeout --kill-after=30 1800 cargo nextest run --cargo-profile ci --workspace --no-fail-fast 2>&1 | tee "$LOG_DIR/rust.log"
        code=${PIPESTATUS[0]}
        # nextest does not run doctests.
        timeout --kill-after=30 600 cargo test --profile ci --workspace --doc 2>&1 | tee -a "$LOG_DIR/rust.log"
        doc_code=${PIPESTATUS[0]}
        ((code != 0)) || code=$doc_code
    else
        timeout --kill-after=30 1800 cargo test --profile ci --workspace --no-fail-fast 2>&1 | tee "$LOG_DIR/rust.log"
        code=${PIPESTATUS[0]}
    fi
    set -e
    record rust "$code"
fi

# ---------------------------------------------------------------------------------------------------
# python and js in parallel; their output is printed whole when both are done.
pids=()
names=()
if selected python; then
    section "suite python: pytest (started, $PY_WORKERS workers)"
    (
        cd tests/interop/python
        exec timeout --kill-after=30 1500 "$ROOT/.venv/bin/python" -m pytest -n "$PY_WORKERS" --durations=10 -v
    ) >"$LOG_DIR/python.log" 2>&1 </dev/null &
    pids+=($!)
    names+=(python)
fi
if selected js; then
    section "suite js: node --test (started)"
    (
        cd tests/interop/js
        exec timeout --kill-after=30 600 node --test --test-reporter=spec --test-concurrency=1 kafkajs.test.js
    ) >"$LOG_DIR/js.log" 2>&1 </dev/null &
    pids+=($!)
    names+=(js)
fi
for i in "${!pids[@]}"; do
    set +e
    wait "${pids[$i]}"
    code=$?
    set -e
    section "suite ${names[$i]}: exit $code"
    cat "$LOG_DIR/${names[$i]}.log"
    record "${names[$i]}" "$code"
done

# ---------------------------------------------------------------------------------------------------
if selected librdkafka && [[ -f scripts/librdkafka-suite.sh ]]; then
    section "suite librdkafka: scripts/librdkafka-suite.sh"
    set +e
    timeout --kill-after=30 2400 bash scripts/librdkafka-suite.sh </dev/null 2>&1 | tee "$LOG_DIR/librdkafka.log"
    code=${PIPESTATUS[0]}
    set -e
    record librdkafka "$code"
elif selected librdkafka; then
    section "suite librdkafka: scripts/librdkafka-suite.sh not present, not run"
fi

# ---------------------------------------------------------------------------------------------------
if selected fuzz && [[ -f scripts/fuzz.sh ]]; then
    section "suite fuzz: scripts/fuzz.sh 60"
    set +e
    timeout --kill-after=30 1200 bash scripts/fuzz.sh 60 </dev/null 2>&1 | tee "$LOG_DIR/fuzz.log"
    code=${PIPESTATUS[0]}
    set -e
    record fuzz "$code"
elif selected fuzz; then
    section "suite fuzz: scripts/fuzz.sh not present, not run"
fi

# ---------------------------------------------------------------------------------------------------
section "summary ($((SECONDS - START_S)) s; logs in target/test-logs/)"
for s in "${PASSED[@]}"; do echo "  passed: $s"; done
for s in "${FAILED[@]}"; do echo "  FAILED: $s"; done
echo "suites: ${#PASSED[@]} passed, ${#FAILED[@]} failed"
((${#FAILED[@]} == 0))
