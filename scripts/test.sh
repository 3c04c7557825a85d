#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what the build and tests
# need (cmake, libclang for bindgen, tmux, the Python clients), fetches the
# test models, then runs every Rust test.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# A reproducible-build timestamp makes ggml drop to SSE2-only code (5-19x slower).
unset SOURCE_DATE_EPOCH
# Keep the (large) llama.cpp build outside the clone, shared between clones.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/olm-target}"

scripts/setup-build-deps.sh
scripts/vendor-llama.sh
scripts/refresh-llama-build.sh
scripts/fetch-test-models.sh
# The openai and ollama clients for the serve tests (tests/python).
OLM_TEST_PYTHON="$(scripts/setup-python-clients.sh)"
export OLM_TEST_PYTHON

cargo test --locked --all-targets -- --test-threads 2
