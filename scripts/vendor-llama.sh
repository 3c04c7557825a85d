#!/usr/bin/env bash
# olm links llama.cpp through llama-cpp-sys-2 with a few patches of its own
# (patches/llama-cpp-sys-2/*.patch; each says what it changes, why, and what
# it measured). Cargo.toml's [patch.crates-io] points the crate at
# vendor/llama-cpp-sys-2, which this script makes: the crate's own source
# from the registry, its sha256 checked against the one pinned here, with the
# patches applied in order. Nothing of llama.cpp is committed.
#
# Quick and idempotent: a stamp in the folder holds the crate version and the
# patches' hash; when both match, nothing is done. Run it before any cargo
# command on a fresh clone (install.sh and scripts/test.sh do).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Bump both together with Cargo.toml's llama-cpp-sys-2 requirement, and check
# that every patch still applies.
version=0.1.161
sha256=e9bea77fde41bbc15a278891cd5edd2ba07c5260d162614b41080ba1f100b39b

die() { printf 'vendor-llama: error: %s\n' "$*" >&2; exit 1; }

dest=vendor/llama-cpp-sys-2
patches=(patches/llama-cpp-sys-2/*.patch)
want="llama-cpp-sys-2 $version $sha256 patches $(cat "${patches[@]}" | sha256sum | cut -d' ' -f1)"
if [ -f "$dest/.olm-vendor-stamp" ] && [ "$(cat "$dest/.olm-vendor-stamp")" = "$want" ]; then
  exit 0
fi

cargo_home="${CARGO_HOME:-$HOME/.cargo}"
registry_crate() {
  local crate
  for crate in "$cargo_home"/registry/cache/*/"llama-cpp-sys-2-$version.crate"; do
    [ -f "$crate" ] && { printf '%s\n' "$crate"; return 0; }
  done
  return 1
}

if ! crate="$(registry_crate)"; then
  # olm's own manifest cannot be fetched before this folder exists, so a
  # throwaway project asks cargo for the crate (from the configured registry).
  command -v cargo >/dev/null 2>&1 || die "cargo is missing; install Rust from https://rustup.rs"
  scratch="$(mktemp -d)"
  trap 'rm -rf "$scratch"' EXIT
  mkdir -p "$scratch/src"
  : >"$scratch/src/lib.rs"
  printf '[package]\nname = "olm-vendor-fetch"\nversion = "0.0.0"\nedition = "2021"\n\n[dependencies]\nllama-cpp-sys-2 = { version = "=%s", default-features = false }\n' \
    "$version" >"$scratch/Cargo.toml"
  printf 'vendor-llama: fetching llama-cpp-sys-2 %s\n' "$version" >&2
  cargo fetch --quiet --manifest-path "$scratch/Cargo.toml" ||
    die "cannot fetch llama-cpp-sys-2 $version from the crate registry"
  crate="$(registry_crate)" || die "cargo fetched, but llama-cpp-sys-2-$version.crate is not in $cargo_home/registry/cache"
fi

printf '%s  %s\n' "$sha256" "$crate" | sha256sum --check --quiet - >/dev/null 2>&1 ||
  die "$crate does not have the pinned sha256 $sha256; remove it and run this again"

printf 'vendor-llama: making %s (llama-cpp-sys-2 %s and %d patches)\n' "$dest" "$version" "${#patches[@]}" >&2
rm -rf "$dest.new"
mkdir -p "$dest.new"
tar -xzf "$crate" -C "$dest.new" --strip-components=1
for patch_file in "${patches[@]}"; do
  patch --quiet --forward --batch -p1 -d "$dest.new" <"$patch_file" ||
    die "$patch_file does not apply to llama-cpp-sys-2 $version"
done
printf '%s\n' "$want" >"$dest.new/.olm-vendor-stamp"
rm -rf "$dest"
mv "$dest.new" "$dest"
