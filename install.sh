#!/usr/bin/env bash
# Build olm with this machine's CPU features, install it, and print a first
# answer from a small demo model.
#
#   ./install.sh              # installs to ~/.local/bin (or $PREFIX/bin)
#   ./install.sh --no-demo    # skip the demo answer
#   ./install.sh --uninstall  # remove what this script installed
#
# Idempotent: a second run rebuilds only what changed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

prefix="${PREFIX:-$HOME/.local}"
demo=1
uninstall=0
for arg in "$@"; do
  case "$arg" in
    --no-demo) demo=0 ;;
    --uninstall) uninstall=1 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "error: unknown option $arg (try --help)" >&2; exit 2 ;;
  esac
done

say() { printf '==> %s\n' "$*" >&2; }

if [ "$uninstall" -eq 1 ]; then
  rm -f "$prefix/bin/olm"
  say "removed $prefix/bin/olm (models and settings are kept)"
  exit 0
fi

command -v cargo >/dev/null 2>&1 || {
  echo "error: cargo is missing; install Rust from https://rustup.rs" >&2
  exit 1
}
scripts/setup-build-deps.sh

# A reproducible-build timestamp makes ggml drop to SSE2-only code (5-19x slower).
unset SOURCE_DATE_EPOCH
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/olm-target}"
export OLM_GIT_COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"

say "building olm (release, native CPU features; the first build of llama.cpp takes a few minutes)"
cargo build --release --locked
mkdir -p "$prefix/bin"
install -m 755 "$CARGO_TARGET_DIR/release/olm" "$prefix/bin/olm"
say "installed $prefix/bin/olm"

case ":$PATH:" in
  *":$prefix/bin:"*) ;;
  *) say "add $prefix/bin to your PATH, e.g. echo 'export PATH=\"$prefix/bin:\$PATH\"' >> ~/.bashrc" ;;
esac

if [ "$demo" -eq 1 ]; then
  scripts/fetch-test-models.sh smollm2
  model="tests/models/SmolLM2-135M-Instruct.Q4_1.gguf"
  say "olm run $model \"Name three prime numbers\""
  "$prefix/bin/olm" run "$model" "Name three prime numbers" --temperature 0 -n 64
  say "next: olm run $model --json \"Hi\"   |   echo 'some text' | olm run $model \"Summarize this\""
fi
