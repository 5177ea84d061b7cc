#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# deps.sh - installs the Debian 12 packages the build and tests need, when
# missing. Safe to run again; does nothing when everything is present.
set -euo pipefail

build_pkgs="build-essential cmake pkg-config protobuf-c-compiler
libprotobuf-c-dev libnghttp2-dev libevent-dev libcurl4-openssl-dev
libcjson-dev zlib1g-dev uuid-dev libyaml-dev libsqlite3-dev libssl-dev"
test_pkgs="libcmocka-dev nodejs npm curl openssl"

want="$build_pkgs"
if [ "${1:-}" = "--test" ]; then
    want="$want $test_pkgs"
fi

missing=""
for p in $want; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null |
        grep -q 'install ok installed'; then
        missing="$missing $p"
    fi
done
# A node from outside Debian (nvm, NodeSource) is fine as long as it runs.
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
    missing=$(printf '%s\n' $missing | grep -vxE 'nodejs|npm' | xargs || true)
fi

if [ -n "$missing" ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "deps: missing packages:$missing (run as root to install)" >&2
        exit 1
    fi
    echo "deps: installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# The npm test clients (OpenTelemetry JS 2.x, Langfuse JS) need Node 20.6+.
if [ "${1:-}" = "--test" ]; then
    major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
    if [ "$major" -lt 20 ]; then
        echo "deps: the integration tests need Node.js 20.6 or newer;" \
            "found $(node --version 2>/dev/null || echo none)" >&2
        exit 1
    fi
fi
