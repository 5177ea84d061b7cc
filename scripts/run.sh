#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# run.sh - installs what the build needs, builds the daemon and runs it
# with its embedded defaults (extra arguments are passed to "serve").
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DO2L_BUILD_TESTS=OFF \
    >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
exec ./build/otel2langfuse serve "$@"
