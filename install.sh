#!/usr/bin/env bash
# Build olm with this machine's CPU features, install it, and print a first
# answer from a small demo model.
#
#   ./install.sh              # installs to ~/.local/bin (or $PREFIX/bin)
#   ./install.sh --no-demo    # skip the demo answer
#   ./install.sh --uninstall  # remove what this script installed
#   ./install.sh --cuda       # also build the CUDA backend (needs the CUDA toolkit)
#
# Idempotent: a second run rebuilds only what changed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

prefix="${PREFIX:-$HOME/.local}"
demo=1
uninstall=0
features=()
for arg in "$@"; do
  case "$arg" in
    --no-demo) demo=0 ;;
    --uninstall) uninstall=1 ;;
    --cuda) features=(--features cuda) ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "error: unknown option $arg (try --help)" >&2; exit 2 ;;
  esac
done

say() { printf '==> %s\n' "$*" >&2; }

data_home="${XDG_DATA_HOME:-$HOME/.local/share}"
config_home="${XDG_CONFIG_HOME:-$HOME/.config}"
installed_files() {
  echo "$prefix/bin/olm"
  echo "$data_home/bash-completion/completions/olm"
  echo "$data_home/zsh/site-functions/_olm"
  echo "$config_home/fish/completions/olm.fish"
  for page in man/*.1; do echo "$prefix/share/man/man1/$(basename "$page")"; done
}

if [ "$uninstall" -eq 1 ]; then
  installed_files | while read -r file; do rm -f "$file"; done
  say "removed olm, its completions and man pages (models and settings are kept)"
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
if [ ${#features[@]} -gt 0 ] && ! command -v nvcc >/dev/null 2>&1; then
  echo "error: --cuda needs the CUDA toolkit (nvcc not found); install it or drop --cuda" >&2
  exit 1
fi
scripts/vendor-llama.sh
scripts/refresh-llama-build.sh
cargo build --release --locked "${features[@]}"
install -D -m 755 "$CARGO_TARGET_DIR/release/olm" "$prefix/bin/olm"
install -D -m 644 completions/olm.bash "$data_home/bash-completion/completions/olm"
install -D -m 644 completions/_olm "$data_home/zsh/site-functions/_olm"
install -D -m 644 completions/olm.fish "$config_home/fish/completions/olm.fish"
for page in man/*.1; do install -D -m 644 "$page" "$prefix/share/man/man1/$(basename "$page")"; done
say "installed $prefix/bin/olm, shell completions and man pages (man olm, man olm-run, ...)"

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
