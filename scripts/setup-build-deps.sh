#!/usr/bin/env bash
# Install what building olm needs but a new machine lacks: cmake (llama.cpp's
# build) and libclang (bindgen in llama-cpp-sys-2). Debian/Ubuntu via apt-get;
# elsewhere, say what is missing. Idempotent and quick when all is present.
set -euo pipefail

missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
has_libclang() {
  [ -n "${LIBCLANG_PATH:-}" ] && return 0
  # Only libclang itself: libclang-cpp (which other packages bring) is a
  # different library that bindgen cannot use.
  compgen -G '/usr/lib/llvm-*/lib/libclang.so*' >/dev/null ||
    compgen -G '/usr/lib/llvm-*/lib/libclang-[0-9]*.so*' >/dev/null ||
    compgen -G '/usr/lib/*-linux-gnu/libclang.so*' >/dev/null ||
    compgen -G '/usr/lib/*-linux-gnu/libclang-[0-9]*.so*' >/dev/null ||
    compgen -G '/opt/homebrew/opt/llvm/lib/libclang.dylib' >/dev/null ||
    compgen -G '/usr/local/opt/llvm/lib/libclang.dylib' >/dev/null
}
has_libclang || missing+=(libclang-dev)
command -v c++ >/dev/null 2>&1 || missing+=(g++)
# The chat tests drive `olm chat` through a pseudo-terminal with tmux.
command -v tmux >/dev/null 2>&1 || missing+=(tmux)
# The pull tests run a fake Hugging Face hub (Python stdlib) and `unshare -rn`.
command -v python3 >/dev/null 2>&1 || missing+=(python3)
command -v unshare >/dev/null 2>&1 || missing+=(util-linux)
# The RPC tests put workers in network namespaces joined by veth pairs.
command -v nsenter >/dev/null 2>&1 || missing+=(util-linux)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
# The sandbox tests trace olm's system calls (no connect, the Landlock ruleset
# and seccomp filter installed).
command -v strace >/dev/null 2>&1 || missing+=(strace)
# The README examples that tests run use jq and git.
command -v jq >/dev/null 2>&1 || missing+=(jq)
command -v git >/dev/null 2>&1 || missing+=(git)

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

if command -v apt-get >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing ${missing[*]} with apt-get" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >&2
elif command -v brew >/dev/null 2>&1; then
  echo "installing cmake and llvm with Homebrew" >&2
  brew install cmake llvm tmux >&2
else
  echo "error: olm's build needs: ${missing[*]}; install them with your package manager" >&2
  exit 1
fi
