"""GPU readings: nvidia-smi / rocm-smi parsing and the subprocess path."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from agent.gpu import (
    GpuError,
    GpuInfo,
    GpuReader,
    parse_nvidia_smi,
    parse_rocm_smi,
    run_command,
)

NVIDIA_ONE = "0, NVIDIA L4, 23034, 1200, 21834, 12, 41\n"
NVIDIA_MULTI = (
    "0, NVIDIA A100-SXM4-80GB, 81920, 1024, 80896, 0, 35\n"
    "1, NVIDIA A100-SXM4-80GB, 81920, 40960, 40960, 97, 71\n"
    "2, NVIDIA A100-SXM4-80GB, [N/A], [N/A], [N/A], [N/A], [Not Supported]\n"
)


def test_nvidia_single_gpu() -> None:
    assert parse_nvidia_smi(NVIDIA_ONE) == [GpuInfo(0, "NVIDIA L4", 23034, 1200, 21834,
                                                    12.0, 41.0)]


def test_nvidia_multi_gpu_with_na_and_not_supported() -> None:
    gpus = parse_nvidia_smi(NVIDIA_MULTI)
    assert [g.index for g in gpus] == [0, 1, 2]
    assert gpus[1].vram_used_mb == 40960 and gpus[1].util_pct == 97.0
    assert gpus[2] == GpuInfo(2, "NVIDIA A100-SXM4-80GB")  # every value unknown
    assert gpus[2].to_json()["temp_c"] is None


def test_nvidia_free_derived_when_missing_and_odd_names() -> None:
    text = ("0, Tesla T4, 15360, 360, [N/A], [Not Supported], 30\n"
            "\n"
            "1, Some GPU, with comma, 1000, 100, 900, 5, [N/A]\n")
    gpus = parse_nvidia_smi(text)
    assert gpus[0].vram_free_mb == 15000 and gpus[0].util_pct is None
    assert gpus[1].name == "Some GPU,with comma" and gpus[1].temp_c is None


def test_nvidia_empty_and_garbage() -> None:
    assert parse_nvidia_smi("") == []
    with pytest.raises(GpuError, match="unexpected line"):
        parse_nvidia_smi("No devices were found\n")
    with pytest.raises(GpuError, match="bad GPU index"):
        parse_nvidia_smi("x, A, 1, 1, 1, 1, 1\n")


# Shapes from rocm-smi 5.x/6.x --json output (values are strings, keys vary by release).
ROCM_ONE = json.dumps({"card0": {
    "Temperature (Sensor edge) (C)": "45.0",
    "Temperature (Sensor junction) (C)": "52.0",
    "Temperature (Sensor memory) (C)": "48.0",
    "GPU use (%)": "7",
    "VRAM Total Memory (B)": "21458059264",
    "VRAM Total Used Memory (B)": "27856896",
}})
ROCM_MULTI = json.dumps({
    "card1": {"Temperature (Sensor junction) (C)": "50.0", "GPU use (%)": "N/A",
              "VRAM Total Memory (B)": "17163091968", "VRAM Total Used Memory (B)": "N/A"},
    "card0": {"Temperature (Sensor edge) (C)": "N/A", "GPU use (%)": "99",
              "VRAM Total Used Memory (B)": "17163091968",
              "VRAM Total Memory (B)": "34342961152", "Card Series": "Radeon RX 7900 XT"},
    "system": {"Driver version": "6.8.5"},
})


def test_rocm_single_card() -> None:
    (gpu,) = parse_rocm_smi(ROCM_ONE)
    assert gpu == GpuInfo(0, "AMD GPU 0", 20464, 26, 20438, 7.0, 45.0)


def test_rocm_multi_card_na_and_key_order() -> None:
    gpus = parse_rocm_smi(ROCM_MULTI)
    assert [g.index for g in gpus] == [0, 1]
    assert gpus[0].name == "Radeon RX 7900 XT"
    assert (gpus[0].vram_total_mb, gpus[0].vram_used_mb, gpus[0].vram_free_mb) == \
        (32752, 16368, 16384)
    assert gpus[0].temp_c is None and gpus[0].util_pct == 99.0
    assert gpus[1].temp_c == 50.0  # no edge sensor: junction
    assert gpus[1].vram_used_mb is None and gpus[1].vram_free_mb is None
    assert gpus[1].util_pct is None


def test_rocm_warning_before_json_and_bad_output() -> None:
    text = "WARNING: AMD GPU device(s) is/are in a low-power state. Check power control\n" \
        + ROCM_ONE + "\n"
    assert len(parse_rocm_smi(text)) == 1
    assert parse_rocm_smi("{}") == []
    with pytest.raises(GpuError, match="no JSON"):
        parse_rocm_smi("ERROR: GPU[0] : Unable to get memory use\n")
    with pytest.raises(GpuError, match="not valid JSON"):
        parse_rocm_smi('{"card0": ')


# -- the subprocess path, with fake tools on PATH ------------------------------------


def fake_tool(bindir: Path, name: str, script: str) -> None:
    path = bindir / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)


@pytest.fixture
def bindir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "bin"
    d.mkdir()
    monkeypatch.setenv("PATH", f"{d}:/usr/bin:/bin")
    return d


async def test_fake_nvidia_smi_on_path(bindir: Path) -> None:
    # The fake checks it got exactly the query the agent documents.
    fake_tool(bindir, "nvidia-smi",
              'case "$*" in\n'
              '  "--query-gpu=index,name,memory.total,memory.used,memory.free,'
              'utilization.gpu,temperature.gpu --format=csv,noheader,nounits")\n'
              f"    printf '{NVIDIA_MULTI.replace(chr(10), chr(92) + 'n')}' ;;\n"
              '  *) echo "bad args: $*" >&2; exit 64 ;;\n'
              "esac\n")
    reading = await GpuReader("auto").read()
    assert reading.error is None and reading.source == "nvidia-smi"
    assert [g.index for g in reading.gpus] == [0, 1, 2]


async def test_nvidia_smi_driver_failure(bindir: Path) -> None:
    fake_tool(bindir, "nvidia-smi",
              "echo \"NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA "
              "driver. Make sure that the latest NVIDIA driver is installed and running.\"\n"
              "exit 9\n")
    reading = await GpuReader("nvidia").read()
    assert reading.gpus == ()
    assert reading.error is not None
    assert reading.error.startswith("nvidia-smi: exit status 9: NVIDIA-SMI has failed")


async def test_nvidia_smi_timeout_kills_the_tool(bindir: Path, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    # A wrapper whose child hangs: the whole process group must go.
    fake_tool(bindir, "nvidia-smi", f"sleep 30 &\necho $! > {pidfile}\nwait\n")
    started = time.monotonic()
    reading = await GpuReader("nvidia", timeout_s=0.3).read()
    assert reading.error == "nvidia-smi: timed out after 0.3s"
    assert time.monotonic() - started < 3
    child = int(pidfile.read_text())
    for _ in range(100):
        if not alive(child):
            break
        await asyncio.sleep(0.01)
    else:
        pytest.fail("the hung child of nvidia-smi is still running")


def alive(pid: int) -> bool:
    """Running (a killed orphan may linger as a zombie until init reaps it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


async def test_missing_tools(bindir: Path) -> None:
    assert (await GpuReader("nvidia").read()).error == "nvidia-smi: not found"
    assert (await GpuReader("rocm").read()).error == "rocm-smi: not found"
    auto = await GpuReader("auto").read()
    assert auto == (await GpuReader("none").read())
    assert auto.gpus == () and auto.error is None and auto.source == "none"


async def test_fake_rocm_smi_on_path(bindir: Path) -> None:
    (bindir / "out.json").write_text(ROCM_MULTI)
    fake_tool(bindir, "rocm-smi",
              '[ "$*" = "--showmeminfo vram --showuse --showtemp --json" ] || exit 64\n'
              f"cat {bindir / 'out.json'}\n")
    reading = await GpuReader("auto").read()
    assert reading.source == "rocm-smi" and len(reading.gpus) == 2


async def test_run_command_errors(bindir: Path) -> None:
    with pytest.raises(GpuError, match="not found"):
        await run_command([str(bindir / "nope")], 1)
    (bindir / "noexec").write_text("x")
    with pytest.raises(GpuError, match="cannot run"):
        await run_command([str(bindir / "noexec")], 1)


# -- host ------------------------------------------------------------------------------
