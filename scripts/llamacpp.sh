#!/usr/bin/env bash
# Build llama.cpp's `llama-server` (CPU only) from the source vendored in the
# llama-cpp-python sdist, and cache it under ~/.cache/spokehub/ keyed by version.
#
# Usage: scripts/llamacpp.sh            # build if needed, print the binary path
# Env:   SPOKEHUB_LLAMA_CPP_PY_VERSION  (default below), SPOKEHUB_CACHE (default ~/.cache/spokehub)
#        SPOKEHUB_BUILD_JOBS            (default: nproc)
set -euo pipefail

VERSION="${SPOKEHUB_LLAMA_CPP_PY_VERSION:-0.3.36}"
CACHE="${SPOKEHUB_CACHE:-$HOME/.cache/spokehub}"
DEST="$CACHE/llama.cpp-$VERSION"
BIN="$DEST/bin/llama-server"
PYTHON="${PYTHON:-python3}"

# install_tools CMD:PACKAGE...: apt-get install the packages whose command is missing.
install_tools() {
  local need_apt=() tool
  for tool in "$@"; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || need_apt+=("${tool##*:}")
  done
  if ((${#need_apt[@]})); then
    echo "llamacpp.sh: installing ${need_apt[*]} with apt-get" >&2
    local SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
    $SUDO apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${need_apt[@]}" >&2
  fi
}

# set_origin_rpath DIR: make every ELF file in DIR find its shared libraries next to
# itself (RUNPATH $ORIGIN), so llama-server runs by hand without LD_LIBRARY_PATH.
# CMake leaves the build tree's absolute path there, which is gone after the build.
# Each file is patched as a copy and renamed over the original, so a llama-server
# that is running from this cache keeps its old inode and nothing sees half a file.
set_origin_rpath() {
  install_tools patchelf:patchelf
  local f
  for f in "$1"/*; do
    [[ -f "$f" && ! -L "$f" ]] || continue
    [[ "$(head -c 4 "$f")" == $'\x7fELF' ]] || continue
    cp -p "$f" "$f.rpath.$$"
    patchelf --set-rpath '$ORIGIN' "$f.rpath.$$"
    mv -f "$f.rpath.$$" "$f"
  done
  touch "$1/../.rpath-origin"
}

if [[ -x "$BIN" && -f "$DEST/.complete" ]]; then
  # Caches built before the RUNPATH fix: patch them in place, no rebuild.
  [[ -f "$DEST/.rpath-origin" ]] || set_origin_rpath "$DEST/bin" >&2
  echo "$BIN"
  exit 0
fi

install_tools cmake:cmake ninja:ninja-build g++:g++ patchelf:patchelf

work="$(mktemp -d "${TMPDIR:-/tmp}/spokehub-llamacpp.XXXXXX")"
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
echo "llamacpp.sh: fetching llama-cpp-python==$VERSION sdist" >&2
"$PYTHON" -m pip download --quiet --no-binary :all: --no-deps \
  -d "$work" "llama-cpp-python==$VERSION" >&2
tar -xzf "$work"/llama_cpp_python-*.tar.gz -C "$work"
src="$(echo "$work"/llama_cpp_python-*/vendor/llama.cpp)"
[[ -d "$src/tools/server" || -d "$src/examples/server" ]] || { echo "llamacpp.sh: no server source in sdist" >&2; exit 1; }

echo "llamacpp.sh: building llama-server (takes several minutes cold)" >&2
cmake -S "$src" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DGGML_NATIVE=OFF -DLLAMA_BUILD_SERVER=ON >&2
cmake --build "$work/build" --target llama-server -j"${SPOKEHUB_BUILD_JOBS:-$(nproc)}" >&2

rm -rf "$DEST.tmp"
mkdir -p "$DEST.tmp/bin" "$DEST.tmp/vocab"
cp -a "$work/build/bin/." "$DEST.tmp/bin/"
# shared libs may live outside bin/ depending on the version
find "$work/build" -name '*.so*' -exec cp -a {} "$DEST.tmp/bin/" \; 2>/dev/null || true
cp -a "$src"/models/ggml-vocab-*.gguf "$DEST.tmp/vocab/" 2>/dev/null || true
set_origin_rpath "$DEST.tmp/bin" >&2
echo "$VERSION" > "$DEST.tmp/.complete"
rm -rf "$DEST"
mv "$DEST.tmp" "$DEST"
echo "llamacpp.sh: built in $(( $(date +%s) - start ))s" >&2
echo "$BIN"
