#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# test.sh - installs what the tests need (Debian packages, the npm test
# clients), builds with AddressSanitizer and UBSan, and runs every unit and
# integration test through CTest.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/deps.sh --test

# The integration tests' npm clients, pinned by package-lock.json.
if [ -f tests/integration/package-lock.json ]; then
    stamp=tests/integration/node_modules/.o2l-lock
    if ! cmp -s tests/integration/package-lock.json "$stamp" 2>/dev/null; then
        (cd tests/integration &&
            npm ci --no-audit --no-fund --loglevel=error)
        cp tests/integration/package-lock.json "$stamp"
    fi
fi

cmake -S . -B build-test -DCMAKE_BUILD_TYPE=Debug -DO2L_WERROR=ON \
    -DO2L_SANITIZE=address,undefined >/dev/null
cmake --build build-test -j"$(nproc)"
ctest --test-dir build-test --output-on-failure "$@"
