"""Host readings next to the GPUs: /proc/meminfo, CPUs, load, free VRAM over GPUs."""

from __future__ import annotations

from pathlib import Path

from agent.gpu import GpuInfo
from agent.host import HostInfo, parse_meminfo, read_host

MEMINFO = """MemTotal:       24683464 kB
MemFree:         1187356 kB
MemAvailable:   20480000 kB
Buffers:          215656 kB
"""


def test_meminfo() -> None:
    assert parse_meminfo(MEMINFO) == (24104, 20000)
    assert parse_meminfo("MemTotal: 2048 kB\nMemFree: 1024 kB\n") == (2, 1)  # old kernels
    assert parse_meminfo("garbage") == (None, None)


def test_read_host_never_crashes(tmp_path: Path) -> None:
    host = read_host(meminfo=tmp_path / "missing")
    assert host.ram_total_mb is None and host.ram_available_mb is None
    assert host.cpu_count and host.cpu_count >= 1
    real = read_host()
    assert real.ram_total_mb and real.ram_available_mb is not None
    assert set(real.to_json()) == {"hostname", "gpus", "ram_total_mb", "ram_available_mb",
                                   "cpu_count", "load1"}


def test_host_free_vram_sums_known_gpus() -> None:
    gpus = (GpuInfo(0, "a", vram_free_mb=80896), GpuInfo(1, "b", vram_free_mb=40960),
            GpuInfo(2, "c"))
    assert HostInfo("h", gpus).vram_free_mb == 80896 + 40960
    assert HostInfo("h").vram_free_mb is None
