#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# run.sh - installs what the build needs, builds the daemon and runs it in
# the current directory with its embedded defaults. Arguments are passed
# to "serve" (e.g. --http-listen 127.0.0.1:4318).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"

bash "$repo/scripts/deps.sh"
cmake -S "$repo" -B "$repo/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DO2L_BUILD_TESTS=OFF >/dev/null
cmake --build "$repo/build" -j"$(nproc)" >/dev/null
exec "$repo/build/otel2langfuse" serve "$@"
