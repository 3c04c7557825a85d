#!/usr/bin/env bash
# Build llama.cpp's own tools (llama-bench, llama-completion, llama-server)
# from EXACTLY the llama.cpp source that olm links through llama-cpp-sys-2, so
# benchmarks compare olm with llama.cpp on equal terms.
#
# The crate's vendored llama.cpp lacks the tools/ sources. They are taken from
# the PyPI sdist of llama-cpp-python (vendor/llama.cpp), added to a copy of the
# crate's tree WITHOUT replacing any crate file (so ggml/src/common are the
# crate's), then two small source fixes make the older tools/server sources
# compile against the newer library. Nothing from llama.cpp is committed here:
# everything is fetched and assembled at run time into a cache outside the
# clone:
#   ${OLM_BENCH_CACHE:-~/.cache/olm/bench}/llama-src-<sys-version>    source
#   ${OLM_BENCH_CACHE:-~/.cache/olm/bench}/llama-build-<sys-version>  build
#
# Usage:  bin=$(bench/build-llama-tools.sh)
# The bin directory is the ONLY line on stdout; progress goes to stderr.
# Idempotent: when the three binaries exist, are newer than the source stamp
# (llama-src-*/.olm-source-stamp) and were built with the same cmake options
# (llama-build-*/.olm-build-stamp), nothing is done. The tools are linked
# statically (like olm links llama-cpp-sys-2), so bin/ is self-contained.
#
# Environment:
#   OLM_BENCH_CACHE         cache dir (default ~/.cache/olm/bench)
#   OLM_LLAMA_TOOLS_SDIST   pip requirement of the sdist supplying tools/
#                           (default llama-cpp-python==0.3.36)
#   OLM_BENCH_JOBS          parallel build jobs (default: nproc)
#   OLM_LLAMA_SYS_VERSION   force a llama-cpp-sys-2 version (default: Cargo.lock)
#
# Needs: cmake, a C/C++ compiler, python3 with pip (venv), tar; cargo only if
# the crate source is not yet in ~/.cargo/registry.
set -euo pipefail

# Keep the real stdout on fd 3 for the final answer; everything else -> stderr.
exec 3>&1 1>&2

say() { printf 'build-llama-tools: %s\n' "$*" >&2; }
die() { printf 'build-llama-tools: ERROR: %s\n' "$*" >&2; exit 1; }
trap 'rc=$?; say "ERROR: command failed (exit $rc) at line $LINENO: $BASH_COMMAND"' ERR

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${OLM_BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/olm/bench}"
sdist_req="${OLM_LLAMA_TOOLS_SDIST:-llama-cpp-python==0.3.36}"
jobs="${OLM_BENCH_JOBS:-$(nproc 2>/dev/null || echo 2)}"
cargo_home="${CARGO_HOME:-$HOME/.cargo}"
targets=(llama-bench llama-completion llama-server)
# Bump when the assembly or the fixes below change, to force a rebuild.
recipe_rev=1

# --- tools ------------------------------------------------------------------
command -v cmake >/dev/null 2>&1 ||
  die "cmake not found; install it, e.g.: apt-get install -y cmake"
command -v python3 >/dev/null 2>&1 || die "python3 not found"
command -v c++ >/dev/null 2>&1 || command -v g++ >/dev/null 2>&1 ||
  command -v clang++ >/dev/null 2>&1 ||
  die "no C++ compiler found; install one, e.g.: apt-get install -y build-essential"

# --- 1. which llama-cpp-sys-2, and where its llama.cpp is -------------------
lock_version() { # print the llama-cpp-sys-2 version from Cargo.lock, if any
  [ -f "$repo_root/Cargo.lock" ] || return 0
  awk '
    /^\[\[package\]\]/ { in_pkg = 0 }
    /^name = "llama-cpp-sys-2"$/ { in_pkg = 1; next }
    in_pkg && /^version = / { gsub(/^version = "|"$/, ""); print; exit }
  ' "$repo_root/Cargo.lock"
}

crate_dir_for() { # VERSION -> first registry dir holding that crate version
  local d
  for d in "$cargo_home"/registry/src/*/"llama-cpp-sys-2-$1"; do
    [ -d "$d/llama.cpp" ] && { printf '%s\n' "$d"; return 0; }
  done
  return 1
}

newest_in_registry() {
  local d
  for d in "$cargo_home"/registry/src/*/llama-cpp-sys-2-*; do
    [ -d "$d/llama.cpp" ] && basename "$d"
  done | sed 's/^llama-cpp-sys-2-//' | sort -V | tail -n 1
}

sys_version="${OLM_LLAMA_SYS_VERSION:-$(lock_version)}"
if [ -n "$sys_version" ]; then
  say "llama-cpp-sys-2 version: $sys_version"
  if ! crate_dir="$(crate_dir_for "$sys_version")"; then
    # olm builds a patched copy (scripts/vendor-llama.sh), so cargo never
    # unpacks the crate itself; the tools are built from the crate as
    # published, unpatched: the comparison is with llama.cpp as it is.
    say "crate source absent; unpacking the registry's crate (scripts/vendor-llama.sh fetches it)"
    "$repo_root/scripts/vendor-llama.sh"
    crate_dir="$cache/llama-cpp-sys-2-$sys_version"
    if [ ! -d "$crate_dir/llama.cpp" ]; then
      crate_file="$(ls "$cargo_home"/registry/cache/*/"llama-cpp-sys-2-$sys_version.crate" 2>/dev/null | head -n 1)"
      [ -n "$crate_file" ] || die "llama-cpp-sys-2-$sys_version.crate is not in $cargo_home/registry/cache"
      mkdir -p "$crate_dir"
      tar -xzf "$crate_file" -C "$crate_dir" --strip-components=1
    fi
  fi
else
  sys_version="$(newest_in_registry)"
  [ -n "$sys_version" ] ||
    die "no llama-cpp-sys-2 in Cargo.lock nor in $cargo_home/registry/src"
  say "llama-cpp-sys-2 not in Cargo.lock; using newest in registry: $sys_version"
  crate_dir="$(crate_dir_for "$sys_version")"
fi
crate_llama="$crate_dir/llama.cpp"
[ -f "$crate_llama/CMakeLists.txt" ] || die "no llama.cpp tree in $crate_dir"
say "crate llama.cpp: $crate_llama"

src="$cache/llama-src-$sys_version"
build="$cache/llama-build-$sys_version"
bin="$build/bin"
stamp="$src/.olm-source-stamp"
stamp_text="llama-cpp-sys-2=$sys_version
crate=$crate_llama
sdist=$sdist_req
recipe=$recipe_rev"

mkdir -p "$cache"
# Serialise concurrent runs for the same version.
if command -v flock >/dev/null 2>&1; then
  exec 9>"$cache/.lock-$sys_version"
  flock 9 || die "could not lock $cache/.lock-$sys_version"
fi

# Same CPU flags as olm's build (GGML_NATIVE=ON ~ -C target-cpu=native), and
# static libraries like llama-cpp-sys-2 builds by default (OpenMP is ON in
# both). LLAMA_BUILD_COMMIT only labels the build (llama-bench's
# build_commit field).
cmake_args=(
  -DCMAKE_BUILD_TYPE=Release
  -DGGML_NATIVE=ON
  -DBUILD_SHARED_LIBS=OFF
  -DLLAMA_CURL=OFF
  -DLLAMA_OPENSSL=OFF
  -DLLAMA_BUILD_TESTS=OFF
  -DLLAMA_BUILD_EXAMPLES=OFF
  -DLLAMA_BUILD_APP=OFF
  -DLLAMA_BUILD_UI=OFF
  -DLLAMA_USE_PREBUILT_UI=OFF
  "-DLLAMA_BUILD_COMMIT=llama-cpp-sys-2-$sys_version"
)
build_stamp="$build/.olm-build-stamp"
build_stamp_text="$(printf '%s\n' "${cmake_args[@]}" "targets=${targets[*]}")"

stamp_ok() { [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$stamp_text" ]; }
bins_fresh() {
  local t
  stamp_ok || return 1
  [ -f "$build_stamp" ] && [ "$(cat "$build_stamp")" = "$build_stamp_text" ] || return 1
  for t in "${targets[@]}"; do
    [ -x "$bin/$t" ] && [ "$bin/$t" -nt "$stamp" ] || return 1
  done
}

if bins_fresh; then
  say "up to date: $bin"
  printf '%s\n' "$bin" >&3
  exit 0
fi

# --- 2. assemble the source tree -------------------------------------------
fetch_sdist() { # print path of the sdist tarball (cached)
  local dir="$cache/sdist" venv="$cache/pip-venv" name tgz
  name="${sdist_req%%==*}"
  mkdir -p "$dir"
  tgz="$(find "$dir" -maxdepth 1 -name "$(printf '%s' "$name" | tr - _)-${sdist_req##*==}.tar.gz" | head -n 1)"
  if [ -z "$tgz" ]; then
    # pip prepares an sdist's metadata before saving it: give it the build
    # backend (scikit-build-core) in a private venv and no isolated build env.
    if [ ! -x "$venv/bin/pip" ]; then
      say "creating helper venv $venv"
      python3 -m venv "$venv" >&2
    fi
    if ! "$venv/bin/python" -c 'import scikit_build_core' 2>/dev/null; then
      say "installing scikit-build-core into helper venv"
      "$venv/bin/pip" install --quiet --disable-pip-version-check scikit-build-core >&2
    fi
    say "downloading sdist $sdist_req"
    "$venv/bin/pip" download --quiet --disable-pip-version-check --no-deps \
      --no-build-isolation --no-binary "$name" "$sdist_req" -d "$dir" >&2
    tgz="$(find "$dir" -maxdepth 1 -name "$(printf '%s' "$name" | tr - _)-${sdist_req##*==}.tar.gz" | head -n 1)"
    [ -n "$tgz" ] || die "pip download of $sdist_req produced no .tar.gz in $dir"
  fi
  printf '%s\n' "$tgz"
}

# patch FILE DESCRIPTION PATTERN REPLACEMENT DONE_PATTERN  (Python re syntax)
# Applies the substitution if PATTERN is found; succeeds silently if only
# DONE_PATTERN is found (already applied); otherwise fails loudly.
patch_file() {
  python3 - "$@" <<'PY'
import re, sys
path, desc, pat, repl, done = sys.argv[1:6]
with open(path, encoding="utf-8") as f:
    text = f.read()
new, n = re.subn(pat, repl, text)
if n:
    with open(path, "w", encoding="utf-8") as f:
        f.write(new)
    print(f"build-llama-tools: fix applied ({n}x): {desc}", file=sys.stderr)
elif re.search(done, text):
    print(f"build-llama-tools: fix already present: {desc}", file=sys.stderr)
else:
    sys.exit(f"build-llama-tools: ERROR: pattern for fix '{desc}' not found in {path}")
PY
}

apply_fixes() { # DIR (assembled tree)
  local t="$1" f
  # Fix 1: the crate's mtmd_get_memory_usage() returns a struct; the sdist's
  # server expects the per-device map, now its .backend_mem_usage member.
  f=tools/server/server-context.cpp
  if grep -Eq 'struct[[:space:]]+mtmd_memory_usage[[:space:]]+mtmd_get_memory_usage' "$t/tools/mtmd/mtmd.h"; then
    if [ -f "$crate_llama/$f" ]; then
      say "fix 1 not needed: $f comes from the crate"
    else
      [ -f "$t/$f" ] || die "fix 1: $f missing from the assembled tree"
      patch_file "$t/$f" "mtmd_get_memory_usage(...).backend_mem_usage in $f" \
        '(mtmd_get_memory_usage\s*\((?:[^()]|\([^()]*\))*\))(?!\s*\.backend_mem_usage)' \
        '\1.backend_mem_usage' \
        'mtmd_get_memory_usage\s*\((?:[^()]|\([^()]*\))*\)\s*\.backend_mem_usage'
    fi
  else
    say "fix 1 not needed: crate's mtmd_get_memory_usage has the old signature"
  fi
  # Fix 2: the crate's common/ no longer has fs_open_ifstream(); use a plain
  # std::ifstream in the sdist's MCP config loader (not run by benchmarks).
  f=tools/server/server-mcp.cpp
  if ! grep -q 'fs_open_ifstream' "$t"/common/*.h; then
    if [ -f "$crate_llama/$f" ]; then
      say "fix 2 not needed: $f comes from the crate"
    elif [ -f "$t/$f" ]; then
      patch_file "$t/$f" "fs_open_ifstream -> std::ifstream in $f" \
        'std::ifstream\s+(\w+)\s*=\s*fs_open_ifstream\s*\(' \
        'std::ifstream \1(' \
        'std::ifstream\s+\w+\s*\(\s*params\.mcp_servers_config'
      ! grep -q 'fs_open_ifstream' "$t/$f" ||
        die "fix 2: fs_open_ifstream still used in $f"
    else
      die "fix 2: $f missing from the assembled tree"
    fi
  else
    say "fix 2 not needed: crate's common/ still declares fs_open_ifstream"
  fi
}

if stamp_ok; then
  say "source tree up to date: $src"
else
  tgz="$(fetch_sdist)"
  say "sdist: $tgz"
  top="$(basename "$tgz" .tar.gz)"   # sdists unpack into NAME-VERSION/
  tar -tzf "$tgz" "$top/vendor/llama.cpp/tools/llama-bench/CMakeLists.txt" >/dev/null 2>&1 ||
    die "$tgz has no vendor/llama.cpp/tools; pick another OLM_LLAMA_TOOLS_SDIST"

  tmp="$src.tmp.$$"
  rm -rf "$tmp"
  trap 'rm -rf "$tmp"' EXIT
  say "assembling $src (crate tree + sdist additions)"
  mkdir -p "$tmp"
  cp -R "$crate_llama/." "$tmp/"
  # Add the sdist's files, never replacing one the crate has.
  # (Its .git is a submodule link to a repo that does not exist here: skip it.)
  tar -xzf "$tgz" -C "$tmp" --strip-components=3 --skip-old-files \
    --exclude="$top/vendor/llama.cpp/.git" "$top/vendor/llama.cpp"
  # The library must be exactly the crate's: every crate file unchanged.
  rc=0; diffs="$(diff -rq "$crate_llama" "$tmp")" || rc=$?
  [ "$rc" -le 1 ] || die "diff -rq failed comparing the crate with $tmp"
  bad="$(printf '%s\n' "$diffs" | grep -vF "Only in $tmp" | grep -v '^$' || true)"
  if [ -n "$bad" ]; then
    printf '%s\n' "$bad" >&2
    die "assembled tree differs from the crate's files (see above)"
  fi
  say "check ok: all crate files unchanged, $(printf '%s\n' "$diffs" | grep -cF "Only in $tmp" || true) sdist additions"
  for d in tools/llama-bench tools/completion tools/server; do
    [ -f "$tmp/$d/CMakeLists.txt" ] || die "no $d/CMakeLists.txt after assembly"
  done

  apply_fixes "$tmp"

  rm -rf "$src" "$build"   # new sources: rebuild from scratch
  mv "$tmp" "$src"
  trap - EXIT
  printf '%s\n' "$stamp_text" >"$stamp"
fi

# --- 3. configure and build -------------------------------------------------
if [ ! -f "$build/CMakeCache.txt" ] ||
   ! grep -qx "CMAKE_HOME_DIRECTORY:INTERNAL=$src" "$build/CMakeCache.txt"; then
  rm -rf "$build"
fi
say "configuring $build"
cmake -S "$src" -B "$build" "${cmake_args[@]}" >&2
say "building ${targets[*]} with -j$jobs (several minutes)"
start=$(date +%s)
cmake --build "$build" --config Release -j "$jobs" --target "${targets[@]}" >&2
say "build finished in $(( $(date +%s) - start )) s"

for t in "${targets[@]}"; do
  [ -x "$bin/$t" ] || die "expected binary $bin/$t not found after build"
  touch "$bin/$t"   # newer than the stamp even if make had nothing to do
done
printf '%s\n' "$build_stamp_text" >"$build_stamp"

printf '%s\n' "$bin" >&3
