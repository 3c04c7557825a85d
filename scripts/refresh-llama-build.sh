#!/usr/bin/env bash
# olm builds llama.cpp with its RPC backend (GGML_RPC=ON in .cargo/config.toml).
# cargo does not rebuild llama-cpp-sys-2 when an [env] setting appears, so a
# build directory whose llama.cpp predates that setting would keep a llama.cpp
# without the backend (olm then says "built without llama.cpp's RPC backend").
# This drops such a llama.cpp build; the next cargo build makes it again.
# Quick and idempotent: nothing to do once every build has the backend.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

target="${CARGO_TARGET_DIR:-target}"
for out in "$target"/*/build/llama-cpp-sys-2-*/out; do
  [ -e "$out/lib/libggml.a" ] || continue
  [ -e "$out/lib/libggml-rpc.a" ] && continue
  echo "llama.cpp in $(dirname "$out") was built without its RPC backend: building it again" >&2
  rm -rf "$(dirname "$out")"
done
