#!/usr/bin/env bash
# Installs everything the interop tests need, idempotently: Debian packages (kcat), a Python venv in
# .venv with the pinned clients from tests/interop/python/requirements.txt, and kafkajs in
# tests/interop/js/node_modules from the committed package-lock.json. A second run with nothing changed
# touches no registry and takes about a second.
#
# Usage: scripts/install-test-deps.sh            (from anywhere; paths are relative to the repo root)
# Env:   SLUICE_SKIP_APT=1  skip the Debian step (e.g. when not root and kcat is already there)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

log() { printf '[install-test-deps] %s\n' "$*" >&2; }

# ---------------------------------------------------------------------------------------------------
# Debian packages. `apt-get update` only when something is actually missing, so the warm path is fast.
# ---------------------------------------------------------------------------------------------------
# kcat for its suite; libzstd-dev, libssl-dev, zlib1g-dev and pkg-config so the rdkafka crate and
# scripts/librdkafka-suite.sh build librdkafka with every codec (zstd is not on a fresh machine); rapidjson-dev so
# librdkafka's tests that read the client's statistics (0101 fetch_from_follower) are built instead of skipped.
APT_PACKAGES=(kcat libzstd-dev libssl-dev zlib1g-dev pkg-config make rapidjson-dev)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done
if ! command -v node >/dev/null 2>&1; then missing+=(nodejs npm); fi
if ! command -v python3 >/dev/null 2>&1; then missing+=(python3 python3-venv); fi

if ((${#missing[@]})) && [[ "${SLUICE_SKIP_APT:-0}" != 1 ]]; then
    log "apt-get install ${missing[*]}"
    SUDO=""
    if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v kcat >/dev/null 2>&1 || { log "kcat is not installed"; exit 1; }

# ---------------------------------------------------------------------------------------------------
# Python venv (.venv) with the pinned requirements; re-run pip only when requirements.txt changes.
# ---------------------------------------------------------------------------------------------------
REQ="tests/interop/python/requirements.txt"
VENV="$ROOT/.venv"
req_sum="$(sha256sum "$REQ" | cut -d' ' -f1)"
stamp="$VENV/.sluice-requirements.sha256"
if [[ ! -x "$VENV/bin/python" ]] || [[ "$(cat "$stamp" 2>/dev/null)" != "$req_sum" ]]; then
    if [[ ! -x "$VENV/bin/python" ]]; then
        log "creating $VENV"
        python3 -m venv "$VENV" || {
            # Debian's python3 needs python3-venv for ensurepip.
            log "python3 -m venv failed; installing python3-venv"
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
            python3 -m venv "$VENV"
        }
    fi
    log "pip install -r $REQ"
    "$VENV/bin/python" -m pip install --disable-pip-version-check -q -r "$REQ"
    echo "$req_sum" >"$stamp"
fi

# ---------------------------------------------------------------------------------------------------
# kafkajs: `npm ci` from the committed lock file; re-run only when the lock file changes.
# ---------------------------------------------------------------------------------------------------
JS="tests/interop/js"
lock_sum="$(sha256sum "$JS/package-lock.json" | cut -d' ' -f1)"
js_stamp="$JS/node_modules/.sluice-lock.sha256"
if [[ "$(cat "$js_stamp" 2>/dev/null)" != "$lock_sum" ]]; then
    log "npm ci in $JS"
    (cd "$JS" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    echo "$lock_sum" >"$js_stamp"
fi

log "ok: kcat $(kcat -V 2>&1 | grep -o "Version [0-9.]*" | head -1), $("$VENV/bin/python" --version), node $(node --version)"
