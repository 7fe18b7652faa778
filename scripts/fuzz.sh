#!/usr/bin/env bash
# Runs the decode_request fuzz target for a bounded time: scripts/fuzz.sh SECONDS (default 60).
#
# cargo-fuzz needs nightly-only rustc flags (-Zsanitizer=address); on a stable toolchain this script
# sets RUSTC_BOOTSTRAP=1 so stable rustc accepts them. It installs cargo-fuzz if missing, seeds the
# corpus with one valid frame per API and version (from the protocol crate's generated samples), and
# fails if the fuzzer finds a crash, a panic, a leak or an allocation over libFuzzer's malloc limit.
set -euo pipefail

seconds="${1:-60}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

corpus="fuzz/corpus/decode_request"
if [ -z "$(ls -A "$corpus" 2>/dev/null)" ]; then
    mkdir -p "$corpus"
    SLUICE_FUZZ_SEED_DIR="$root/$corpus" cargo test -q -p sluice-protocol --test fuzz_seeds -- --ignored
fi

toolchain_channel="$(rustc --version)"
case "$toolchain_channel" in
    *nightly*) ;;
    *) export RUSTC_BOOTSTRAP=1 ;;
esac

# -max_len: requests up to 64 KiB; -rss_limit_mb/-malloc_limit_mb: any single allocation above 512 MiB
# (the guard's decode budget is 64 MiB plus twice the frame) is reported as a crash.
cargo fuzz run decode_request --fuzz-dir fuzz -s address "$corpus" -- \
    -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 -malloc_limit_mb=512 \
    -print_final_stats=1
