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

if [[ -x "$BIN" && -f "$DEST/.complete" ]]; then
  echo "$BIN"
  exit 0
fi

need_apt=()
for tool in cmake:cmake ninja:ninja-build g++:g++; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || need_apt+=("${tool##*:}")
done
if ((${#need_apt[@]})); then
  echo "llamacpp.sh: installing ${need_apt[*]} with apt-get" >&2
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${need_apt[@]}" >&2
fi

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
echo "$VERSION" > "$DEST.tmp/.complete"
rm -rf "$DEST"
mv "$DEST.tmp" "$DEST"
echo "llamacpp.sh: built in $(( $(date +%s) - start ))s" >&2
echo "$BIN"
