#!/usr/bin/env bash
# Create (or bring up to date) the project's virtual environment: pinned CPU torch first, then
# the project with the versions in constraints.txt, then perf_analyzer; and Debian's headless
# browser (chromium + chromium-driver) for the web app's browser tests.
# Idempotent: a second run only checks, and takes seconds.
#
# Usage: scripts/setup.sh [VENV]   (default: .venv in the repository)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${1:-$repo/.venv}
stamp=$venv/.fusionrank-setup

say() { printf 'setup: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

find_python() {
    local candidate
    for candidate in python3.11 python3; do
        if command -v "$candidate" >/dev/null &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
            command -v "$candidate"; return
        fi
    done
    die "Python 3.11 is required (Triton's Python-backend stub here is built for 3.11)"
}

# Triton's Python-backend stub runs on the interpreter's own shared libpython where it has one
# (pyenv builds with --enable-shared; see app/serve.py), else on the system's libpython3.11.
ensure_libpython() {
    local python=$1
    "$python" -c 'import os, sys, sysconfig as s
lib = os.path.join(s.get_config_var("LIBDIR") or "", s.get_config_var("INSTSONAME") or "")
sys.exit(not (s.get_config_var("Py_ENABLE_SHARED") and os.path.isfile(lib)))' && return
    if ldconfig -p | grep -q 'libpython3\.11\.so\.1\.0'; then return; fi
    say "installing libpython3.11 for Triton's Python backend"
    apt-get update -qq && apt-get install -y -qq libpython3.11 >/dev/null ||
        die "$python has no shared libpython and apt could not install libpython3.11"
}

# Debian's chromium and chromedriver, for tests/integration/test_web.py's browser tests. Not
# fatal: without them those tests skip and say why.
ensure_browser() {
    if [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; then return; fi
    local sudo=()
    if [[ $(id -u) != 0 ]]; then
        command -v sudo >/dev/null && sudo=(sudo -n) ||
            { say "warning: chromium not installed (needs root for apt); the browser tests will skip"; return; }
    fi
    say "installing Debian's chromium and chromium-driver (the web app's browser tests)"
    if ! { "${sudo[@]}" apt-get update -qq && \
           "${sudo[@]}" apt-get install -y -qq chromium chromium-driver >/dev/null; }; then
        say "warning: apt could not install chromium and chromium-driver; the browser tests will skip"
    fi
}

# A stamp holding the hash of everything that decides the environment's content.
wanted_state() {
    cat "$repo/pyproject.toml" "$repo/constraints.txt" "$repo/scripts/install_perf_analyzer.sh" |
        sha256sum | cut -d' ' -f1
}

main() {
    if [[ -x $venv/bin/python ]]; then ensure_libpython "$venv/bin/python"
    else ensure_libpython "$(find_python)"; fi
    ensure_browser
    if [[ -f $stamp && $(cat "$stamp") == "$(wanted_state)" && -x $venv/bin/fusionrank ]]; then
        say "environment $venv is up to date"; return
    fi
    [[ -x $venv/bin/python ]] || { say "creating $venv"; "$(find_python)" -m venv "$venv"; }
    local pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
    # torch first and pinned: unpinned, pip would pull a CUDA build of several GB.
    "$venv/bin/python" -c 'import torch, sys; sys.exit(torch.__version__.split("+")[0] != "2.13.0")' \
        2>/dev/null || { say "installing torch 2.13.0 (CPU)"; "${pip[@]}" install torch==2.13.0; }
    say "installing fusionrank and its dependencies"
    "${pip[@]}" install -c "$repo/constraints.txt" -e "$repo[dev]" 2>&1 |
        grep -v "^WARNING: Location" >&2 || true
    "$venv/bin/python" -c 'import fusionrank.app.cli, tritonclient.grpc, onnxruntime, pytriton' ||
        die "the installed environment does not import; see pip's messages above"
    "$repo/scripts/install_perf_analyzer.sh" "$venv"
    wanted_state > "$stamp"
    say "ready: $venv"
}

main
