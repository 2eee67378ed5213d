#!/usr/bin/env bash
# Set up fastpath-tcp in this checkout: system packages (apt, only what is missing: Python, and
# the lab's iproute2/nftables/ethtool/curl, the conformance suite's tshark and the gateways under
# test haproxy and nginx), .venv, and an editable install with the dev extras.
# Idempotent: a second run changes nothing and is quick.
# Meant for a fresh Debian 12 machine as root; works anywhere python3 >= 3.11 already exists.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

# 1. System packages: ask apt only about what dpkg says is missing (no dpkg: not Debian, skip).
missing=()
if command -v dpkg-query >/dev/null 2>&1; then
    for pkg in python3 python3-venv python3-pip iproute2 nftables ethtool curl tcpdump haproxy wrk graphviz \
        fonts-dejavu-core tshark nginx libnginx-mod-stream; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' \
            || missing+=("$pkg")
    done
fi
if ((${#missing[@]})); then
    [[ $(id -u) -eq 0 ]] || die "missing ${missing[*]}; rerun as root or apt-get install them"
    say "installing ${missing[*]} with apt-get"
    # noninteractive: tshark's debconf question (may non-root users capture?) keeps its default.
    export DEBIAN_FRONTEND=noninteractive
    # A policy-rc.d that exits 101 keeps the packages' services (a system nginx on port 80 of
    # the host) from starting; the conformance suite starts its own in a namespace. Ours is
    # removed afterwards, also on failure; one that was already there is left alone.
    policy=/usr/sbin/policy-rc.d
    made_policy=
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\n# written by fastpath-tcp setup.sh during apt-get install\nexit 101\n' \
            >"$policy"
        chmod 755 "$policy"
        made_policy=1
        trap 'rm -f "$policy"' EXIT
    fi
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    if [[ -n $made_policy ]]; then
        rm -f "$policy"
        trap - EXIT
    fi
else
    say "system packages: nothing to install"
fi

# 2. Interpreter: Debian's own when present, so the venv does not depend on a user's shims.
if [[ -x /usr/bin/python3 ]]; then py=/usr/bin/python3; else py=$(command -v python3 || true); fi
[[ -n $py ]] || die "no python3 found; install Python >= 3.11 and rerun"
"$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "$py is Python $("$py" -c 'import platform; print(platform.python_version())'); \
fastpath-tcp needs >= 3.11, install it and rerun"

# 3. The venv: reuse a working one, rebuild a broken one (e.g. its interpreter was removed).
if .venv/bin/python -m pip --version >/dev/null 2>&1; then
    say ".venv: exists, reused"
else
    "$py" -m venv --clear .venv
    say ".venv: created with $py ($("$py" -c 'import platform; print(platform.python_version())'))"
fi

# 4. Editable install; skipped when pyproject.toml is unchanged since the last successful one.
stamp=.venv/.fastpath-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [[ -f $stamp && $(cat "$stamp") == "$want" && -x .venv/bin/fastpath ]]; then
    say "fastpath-tcp: already installed in .venv (pyproject.toml unchanged)"
else
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
    echo "$want" >"$stamp"
    say "fastpath-tcp: installed into .venv (pip install -e '.[dev]')"
fi
say "done; try .venv/bin/fastpath verify"
