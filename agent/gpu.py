"""GPU capacity: ``nvidia-smi`` / ``rocm-smi`` output (the host's RAM and load are
in :mod:`agent.host`).

Nothing here raises to the caller: a missing tool, a driver error, a hung command
or odd output all turn into an empty GPU list plus an error string the daemon can
log once. Values a tool cannot report (``[N/A]``, ``[Not Supported]``) become None.
Memory is in MiB, as nvidia-smi reports it (the wire keys say ``_mb``).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import math
import os
import re
import shutil
import signal
from dataclasses import dataclass
from typing import Any

NVIDIA_SMI_ARGS = ("--query-gpu=index,name,memory.total,memory.used,memory.free,"
                   "utilization.gpu,temperature.gpu", "--format=csv,noheader,nounits")
ROCM_SMI_ARGS = ("--showmeminfo", "vram", "--showuse", "--showtemp", "--json")
DEFAULT_TIMEOUT_S = 5.0
_MIB = 1024 * 1024
_ERROR_CHARS = 200


class GpuError(Exception):
    """A GPU tool could not be run or its output could not be read."""


@dataclass(frozen=True, slots=True)
class GpuInfo:
    index: int
    name: str
    vram_total_mb: int | None = None
    vram_used_mb: int | None = None
    vram_free_mb: int | None = None
    util_pct: float | None = None
    temp_c: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "name": self.name, "vram_total_mb": self.vram_total_mb,
                "vram_used_mb": self.vram_used_mb, "vram_free_mb": self.vram_free_mb,
                "util_pct": self.util_pct, "temp_c": self.temp_c}


@dataclass(frozen=True, slots=True)
class GpuReading:
    """One read of the GPUs: ``source`` is the tool used (or "none"), ``error`` why
    the list is empty when a tool was expected to work."""

    gpus: tuple[GpuInfo, ...] = ()
    source: str = "none"
    error: str | None = None


# -- value parsing ---------------------------------------------------------------------

_NUMBER_RE = re.compile(r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def _float(value: object) -> float | None:
    """A number from tool output; None for N/A, Not Supported, blanks and junk."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        out = float(value)
    else:
        match = _NUMBER_RE.search(str(value).strip())
        if match is None:
            return None
        out = float(match.group())
    return out if math.isfinite(out) and out >= 0 else None


def _int(value: object) -> int | None:
    out = _float(value)
    return None if out is None else int(out)


def _free(total: int | None, used: int | None, free: int | None) -> int | None:
    if free is not None:
        return free
    if total is not None and used is not None:
        return max(total - used, 0)
    return None


# -- nvidia-smi ------------------------------------------------------------------------


def parse_nvidia_smi(text: str) -> list[GpuInfo]:
    """Rows of ``index, name, total, used, free, util, temp`` (csv, noheader, nounits)."""
    gpus: list[GpuInfo] = []
    for row in csv.reader(text.splitlines(), skipinitialspace=True):
        cells = [c.strip() for c in row]
        if not cells or not any(cells):
            continue
        if len(cells) < 7:
            raise GpuError(f"nvidia-smi: unexpected line {','.join(cells)[:_ERROR_CHARS]!r}")
        if len(cells) > 7:  # a name with a comma in it: everything between index and numbers
            cells = [cells[0], ",".join(cells[1:-5]), *cells[-5:]]
        index = _int(cells[0])
        if index is None:
            raise GpuError(f"nvidia-smi: bad GPU index {cells[0]!r}")
        total, used, free = _int(cells[2]), _int(cells[3]), _int(cells[4])
        gpus.append(GpuInfo(index=index, name=cells[1] or f"GPU {index}",
                            vram_total_mb=total, vram_used_mb=used,
                            vram_free_mb=_free(total, used, free),
                            util_pct=_float(cells[5]), temp_c=_float(cells[6])))
    return gpus


# -- rocm-smi --------------------------------------------------------------------------

_CARD_RE = re.compile(r"^card(\d+)$", re.IGNORECASE)
_TEMP_PREFERENCE = ("edge", "junction", "hotspot")


def _find(card: dict[str, Any], *needles: str, without: str = "") -> Any:
    """The value of the first key containing all ``needles`` (case-insensitive)."""
    for key, value in card.items():
        low = str(key).lower()
        if all(n in low for n in needles) and not (without and without in low):
            return value
    return None


def _rocm_temp(card: dict[str, Any]) -> float | None:
    temps = {str(k).lower(): _float(v) for k, v in card.items()
             if str(k).lower().startswith("temp")}
    for sensor in _TEMP_PREFERENCE:
        for key, value in temps.items():
            if sensor in key and value is not None:
                return value
    return next((v for v in temps.values() if v is not None), None)


def parse_rocm_smi(text: str) -> list[GpuInfo]:
    """``rocm-smi --showmeminfo vram --showuse --showtemp --json``.

    The output is ``{"card0": {"VRAM Total Memory (B)": "...", "VRAM Total Used Memory
    (B)": "...", "GPU use (%)": "...", "Temperature (Sensor edge) (C)": "..."}, ...}``;
    key names have changed between ROCm releases, so keys are matched by substring and
    any warning text printed before the JSON is skipped.
    """
    start = text.find("{")
    if start < 0:
        raise GpuError(f"rocm-smi: no JSON in output {text.strip()[:_ERROR_CHARS]!r}")
    try:
        doc, _ = json.JSONDecoder().raw_decode(text[start:])
    except ValueError:
        raise GpuError("rocm-smi: output is not valid JSON") from None
    if not isinstance(doc, dict):
        raise GpuError("rocm-smi: JSON output is not an object")
    gpus: list[GpuInfo] = []
    for key, card in doc.items():
        match = _CARD_RE.match(str(key))
        if match is None or not isinstance(card, dict):
            continue  # e.g. "system"
        index = int(match.group(1))
        total_b = _int(_find(card, "vram", "total", without="used"))
        used_b = _int(_find(card, "vram", "used"))
        total = None if total_b is None else total_b // _MIB
        used = None if used_b is None else used_b // _MIB
        name = _find(card, "card series") or _find(card, "device name") or _find(
            card, "product name")
        util = card.get("GPU use (%)")
        if util is None:
            util = _find(card, "gpu use") or _find(card, "gfx activity")
        gpus.append(GpuInfo(index=index,
                            name=str(name).strip() if name else f"AMD GPU {index}",
                            vram_total_mb=total, vram_used_mb=used,
                            vram_free_mb=_free(total, used, None),
                            util_pct=_float(util), temp_c=_rocm_temp(card)))
    gpus.sort(key=lambda g: g.index)
    return gpus


# -- running the tools -----------------------------------------------------------------


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


async def run_command(argv: list[str], timeout: float) -> str:
    """stdout of ``argv``; GpuError on a missing binary, non-zero exit or timeout."""
    tool = os.path.basename(argv[0])
    try:
        # Own process group, so a wrapper script and its children can be killed together.
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, start_new_session=True)
    except FileNotFoundError:
        raise GpuError(f"{tool}: not found") from None
    except OSError as exc:
        raise GpuError(f"{tool}: cannot run: {exc.strerror or exc}") from None
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        _kill_group(proc.pid)
        # A tool stuck in the driver may not die at once; do not wait on it forever.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 1.0)
        raise GpuError(f"{tool}: timed out after {timeout:g}s") from None
    except asyncio.CancelledError:
        _kill_group(proc.pid)
        raise
    text = out.decode("utf-8", "replace")
    if proc.returncode != 0:
        detail = (err.decode("utf-8", "replace").strip() or text.strip()).splitlines()
        first = detail[0][:_ERROR_CHARS] if detail else ""
        raise GpuError(f"{tool}: exit status {proc.returncode}" + (f": {first}" if first else ""))
    return text


class GpuReader:
    """Reads the GPUs with the tool ``mode`` asks for (auto: whichever is installed)."""

    def __init__(self, mode: str = "auto", timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        if mode not in ("auto", "nvidia", "rocm", "none"):
            raise ValueError(f"bad GPU mode {mode!r}")
        self.mode = mode
        self.timeout_s = timeout_s

    def _tool(self) -> str | None:
        if self.mode == "nvidia":
            return "nvidia"
        if self.mode == "rocm":
            return "rocm"
        if self.mode == "auto":
            if shutil.which("nvidia-smi"):
                return "nvidia"
            if shutil.which("rocm-smi"):
                return "rocm"
        return None

    async def read(self) -> GpuReading:
        tool = self._tool()
        if tool is None:
            return GpuReading()
        if tool == "nvidia":
            argv, parse, source = ["nvidia-smi", *NVIDIA_SMI_ARGS], parse_nvidia_smi, "nvidia-smi"
        else:
            argv, parse, source = ["rocm-smi", *ROCM_SMI_ARGS], parse_rocm_smi, "rocm-smi"
        try:
            gpus = parse(await run_command(argv, self.timeout_s))
        except GpuError as exc:
            return GpuReading(source=source, error=str(exc))
        return GpuReading(gpus=tuple(gpus), source=source)
