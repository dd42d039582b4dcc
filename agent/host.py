"""Host capacity next to the GPUs: RAM from /proc/meminfo, CPUs and load average.

Like the GPU readings, nothing here raises: a value that cannot be read is None.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.gpu import GpuInfo


@dataclass(frozen=True, slots=True)
class HostInfo:
    """The ``host`` of a heartbeat: the machine, with the GPUs read by :mod:`agent.gpu`."""

    hostname: str
    gpus: tuple[GpuInfo, ...] = field(default=())
    ram_total_mb: int | None = None
    ram_available_mb: int | None = None
    cpu_count: int | None = None
    load1: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"hostname": self.hostname, "gpus": [g.to_json() for g in self.gpus],
                "ram_total_mb": self.ram_total_mb, "ram_available_mb": self.ram_available_mb,
                "cpu_count": self.cpu_count, "load1": self.load1}

    @property
    def vram_free_mb(self) -> int | None:
        """Free VRAM over all GPUs, or None when no GPU reports it."""
        free = [g.vram_free_mb for g in self.gpus if g.vram_free_mb is not None]
        return sum(free) if free else None


def parse_meminfo(text: str) -> tuple[int | None, int | None]:
    """(MemTotal, MemAvailable) in MiB from /proc/meminfo text."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if key in ("MemTotal", "MemAvailable", "MemFree") and parts and parts[0].isdigit():
            values[key] = int(parts[0]) // 1024  # kB -> MiB
    available = values.get("MemAvailable", values.get("MemFree"))
    return values.get("MemTotal"), available


def read_host(gpus: tuple[GpuInfo, ...] = (), meminfo: Path = Path("/proc/meminfo")) -> HostInfo:
    """Host RAM, CPUs and load; any value that cannot be read is None."""
    try:
        hostname = socket.gethostname()
    except OSError:
        hostname = ""
    try:
        ram_total, ram_available = parse_meminfo(meminfo.read_text(encoding="ascii",
                                                                    errors="replace"))
    except OSError:
        ram_total = ram_available = None
    try:
        load1: float | None = round(os.getloadavg()[0], 2)
    except OSError:
        load1 = None
    return HostInfo(hostname=hostname, gpus=gpus, ram_total_mb=ram_total,
                    ram_available_mb=ram_available, cpu_count=os.cpu_count(), load1=load1)
