"""llama-server from scripts/llamacpp.sh's cache runs by hand: no LD_LIBRARY_PATH needed.

The binary and its shared libraries carry RUNPATH $ORIGIN. New builds get it right
after the build; caches built before that are patched by the next llamacpp.sh run,
without a rebuild.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.deploy.tools import require, run
from tests.support.llama import llama_server_bin
from tests.support.procs import ROOT

SCRIPT = ROOT / "scripts" / "llamacpp.sh"
# The environment of `env -i`, plus PATH so the loader is the only thing that differs.
CLEAN_ENV = {"PATH": "/usr/bin:/bin"}


def _runpath(path: Path) -> str:
    out = run([require("readelf"), "-d", str(path)])
    assert out.returncode == 0, out.stderr
    lines = [ln for ln in out.stdout.splitlines() if "(RUNPATH)" in ln or "(RPATH)" in ln]
    return lines[0].split("[", 1)[1].rstrip("]") if lines else ""


def _elf_files(bin_dir: Path) -> list[Path]:
    return [p for p in sorted(bin_dir.iterdir())
            if p.is_file() and not p.is_symlink() and p.read_bytes()[:4] == b"\x7fELF"]


def test_cached_llama_server_runs_without_ld_library_path(tmp_path: Path) -> None:
    binary = llama_server_bin()  # runs scripts/llamacpp.sh, which patches an old cache
    out = run([str(binary), "--version"], env=CLEAN_ENV, cwd=tmp_path, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "version:" in out.stdout + out.stderr
    for elf in _elf_files(binary.parent):
        if _runpath(elf):  # a library that needs nothing of ours may have none
            assert _runpath(elf) == "$ORIGIN", elf.name
    assert _runpath(binary) == "$ORIGIN"


def test_old_cache_is_patched_without_a_rebuild(tmp_path: Path) -> None:
    """A cache as the script left it before: RUNPATH pointing into a deleted build
    tree. The next run patches it in place; PYTHON=false makes any attempt to fetch
    the sources and rebuild fail."""
    patchelf = require("patchelf")
    dest = llama_server_bin().parent.parent  # .../llama.cpp-<version>
    version = dest.name.removeprefix("llama.cpp-")
    old = tmp_path / "cache" / dest.name
    (old / "bin").mkdir(parents=True)
    shutil.copy2(dest / ".complete", old / ".complete")
    for item in (dest / "bin").iterdir():
        shutil.copy2(item, old / "bin" / item.name, follow_symlinks=False)
    for elf in _elf_files(old / "bin"):
        assert run([patchelf, "--set-rpath", "/tmp/gone-build-tree/bin:", str(elf)]
                   ).returncode == 0
    binary = old / "bin" / "llama-server"
    broken = run([str(binary), "--version"], env=CLEAN_ENV, cwd=tmp_path, timeout=60)
    assert broken.returncode != 0 and "error while loading shared libraries" in broken.stderr

    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path),
           "SPOKEHUB_CACHE": str(tmp_path / "cache"), "PYTHON": "false",
           "SPOKEHUB_LLAMA_CPP_PY_VERSION": version}
    out = run(["bash", str(SCRIPT)], env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(binary)
    assert (old / ".rpath-origin").exists()
    assert _runpath(binary) == "$ORIGIN"
    fixed = run([str(binary), "--version"], env=CLEAN_ENV, cwd=tmp_path, timeout=60)
    assert fixed.returncode == 0, fixed.stderr
    # A second run finds the stamp and leaves the files alone.
    before = binary.stat().st_ino
    again = run(["bash", str(SCRIPT)], env=env, timeout=60)
    assert again.returncode == 0 and binary.stat().st_ino == before
