#!/usr/bin/env bash
# Set up aioruntime on a fresh Debian 12 machine, as root, in one command:
#
#   sudo ./setup.sh        apt packages, .venv with the package, then a demo container
#   sudo ./setup.sh test   the same install, then the tests and mypy (what .ci/run does)
#
# Idempotent and quick when everything is already there; needs no terminal or stdin.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")"
repo=$PWD

mode=${1:-demo}
case $mode in
    demo | test) ;;
    *) echo "usage: $0 [test]" >&2; exit 2 ;;
esac
if [[ $EUID -ne 0 ]]; then
    echo "setup.sh: run as root (sudo $0 $*): containers need it" >&2
    exit 1
fi

if [[ -t 1 ]]; then log() { printf '\033[1m==> %s\033[0m\n' "$*"; }; else log() { echo "==> $*"; }; fi

# 1. System packages: skipped when dpkg already has every one of them.
packages=(python3 python3-venv python3-dev gcc libffi-dev libseccomp-dev busybox-static runc crun nftables)
missing=()
for p in "${packages[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
    log "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q -o Acquire::Retries=3
    apt-get install -y -q -o Acquire::Retries=3 --no-install-recommends "${packages[@]}" </dev/null
fi

# 2. The venv and the package (editable: the cffi extension is built in place). The
#    install is redone only when the build inputs changed or the extension is missing.
if ! .venv/bin/python -c '' 2>/dev/null; then
    log "python3 -m venv .venv"
    rm -rf .venv
    /usr/bin/python3 -m venv .venv
fi
stamp=.venv/.aioruntime-install
inputs=$(for f in pyproject.toml setup.py aioruntime/cli/front.c aioruntime/_build.py aioruntime/_seccomp_build.py aioruntime/*.[ch]; do
    if [[ -f $f && $f != aioruntime/_native.c ]]; then cat "$f"; fi
done | sha256sum)
if [[ "$(cat "$stamp" 2>/dev/null)" != "$inputs" || ! -x .venv/bin/aioruntime ]] ||
    ! .venv/bin/python -c 'import aioruntime._native' 2>/dev/null; then
    log "pip install -e '.[test]'"
    .venv/bin/python -m pip install -q --config-settings editable_mode=compat -e '.[test]' </dev/null
    echo "$inputs" >"$stamp"
fi
# Bytecode for the CLI, whose start-up a container manager pays on every call; written here
# because PYTHONDONTWRITEBYTECODE may keep Python from caching it by itself.
.venv/bin/python -m compileall -q aioruntime >/dev/null

# 3a. ./setup.sh test: the whole test suite, then the type check; fails if either does.
if [[ $mode == test ]]; then
    # checkpoint/restore tests need a CRIU that works on this kernel (built once, cached)
    log "tools/install-criu.sh"
    AIORUNTIME_CRIU=$(tools/install-criu.sh </dev/null)
    export AIORUNTIME_CRIU
    status=0
    log "pytest"
    .venv/bin/python -m pytest -q tests </dev/null || status=$?
    log "mypy"
    .venv/bin/python -m mypy </dev/null || status=$((status ? status : $?))
    exit "$status"
fi

# 3b. ./setup.sh: build a busybox bundle and run it as a container.
demo=${XDG_CACHE_HOME:-/var/tmp}/aioruntime-demo
log "demo bundle in $demo"
.venv/bin/python tools/busybox_rootfs.py "$demo/rootfs" >/dev/null
rm -f "$demo/config.json"
(cd "$demo" && "$repo/.venv/bin/aioruntime" spec)
.venv/bin/python - "$demo/config.json" <<'EOF'
import json, sys
path = sys.argv[1]
with open(path) as f:
    spec = json.load(f)
spec["process"]["terminal"] = False
spec["process"]["args"] = ["sh", "-c", "echo hello from $(hostname) in a container; uname -a"]
spec["hostname"] = "aioruntime-demo"
with open(path, "w") as f:
    json.dump(spec, f, indent="\t")
EOF
log "aioruntime run -b $demo demo-$$"
exec .venv/bin/aioruntime run -b "$demo" "demo-$$" </dev/null
