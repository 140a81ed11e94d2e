"""Board facts (floe_edge.board, `floe info`) read from fake /proc + /sys trees: a Pi 4, a Pi 5, an x86 box without a
device tree, and files full of garbage."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest

from floe_edge.board import Board, Throttling, decode_throttled, model_profile, read_board

PI4_MODEL = b"Raspberry Pi 4 Model B Rev 1.4\x00"
PI5_MODEL = b"Raspberry Pi 5 Model B Rev 1.0\x00"


def write(root: Path, rel: str, data: "str | bytes") -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())


def fake_pi(root: Path, model: bytes, governor: str = "ondemand", max_khz: int = 1800000, cap_khz: int = 1800000,
            throttled: Optional[str] = None, temp: str = "61354") -> Path:
    """A Raspberry Pi's files as its kernel shows them: 4 cores, cpufreq-dt, one thermal zone (cpu-thermal)."""
    write(root, "proc/device-tree/model", model)
    write(root, "sys/devices/system/cpu/online", "0-3\n")
    for cpu in range(4):
        d = f"sys/devices/system/cpu/cpu{cpu}/cpufreq/"
        write(root, d + "scaling_governor", governor + "\n")
        write(root, d + "scaling_driver", "cpufreq-dt\n")
        write(root, d + "scaling_cur_freq", "600000\n")
        write(root, d + "cpuinfo_max_freq", f"{max_khz}\n")
        write(root, d + "scaling_max_freq", f"{cap_khz}\n")
    write(root, "sys/class/thermal/thermal_zone0/type", "cpu-thermal\n")
    write(root, "sys/class/thermal/thermal_zone0/temp", temp + "\n")
    if throttled is not None:
        write(root, "sys/devices/platform/soc/soc:firmware/get_throttled", throttled + "\n")
    return root


def test_pi4(tmp_path: Path) -> None:
    board = read_board(str(fake_pi(tmp_path, PI4_MODEL, throttled="50005")))
    assert board.model == "Raspberry Pi 4 Model B Rev 1.4" and board.model_profile == "rpi4"
    assert board.cores == 4 and board.governors == {"ondemand": [0, 1, 2, 3]} and board.driver == "cpufreq-dt"
    assert {(f.cur_mhz, f.max_mhz, f.cap_mhz) for f in board.cpufreq} == {(600.0, 1800.0, 1800.0)}
    assert board.temperatures == {"cpu-thermal": pytest.approx(61.354)}
    # 0x50005: under-voltage and throttled now; both, plus nothing else, have occurred since boot
    assert board.throttling == Throttling(0x50005, "/sys/devices/platform/soc/soc:firmware/get_throttled")
    assert board.throttling.now == ["under-voltage", "throttled"]
    assert board.throttling.occurred == ["under-voltage", "throttled"]
    assert any("throttled now" in n for n in board.notes) and not board.problems
    data = json.loads(json.dumps(board.as_dict()))
    assert data["throttling"]["raw"] == "0x50005" and data["model_profile"] == "rpi4"
    rows = dict(board.rows())
    assert rows["governor"] == "ondemand (cpu 0-3), driver cpufreq-dt"
    assert rows["cpu_mhz"] == "max 1800, now 600"
    assert rows["throttling"] == "0x50005: now under-voltage, throttled; since boot under-voltage, throttled"


def test_pi5_with_vcgencmd_powersave_and_a_cap(tmp_path: Path) -> None:
    root = fake_pi(tmp_path, PI5_MODEL, governor="powersave", max_khz=2400000, cap_khz=1500000, throttled="0")
    write(root, "sys/devices/system/cpu/cpu3/cpufreq/scaling_cur_freq", "1500000\n")
    board = read_board(str(root), vcgencmd=lambda: "throttled=0x80000\n")  # the command wins over sysfs
    assert dict(board.rows())["cpu_mhz"] == "max 2400, now 600-1500"
    assert board.model_profile == "rpi5" and board.throttling is not None
    assert board.throttling.source == "vcgencmd get_throttled"
    assert board.throttling.now == [] and board.throttling.occurred == ["soft temperature limit"]
    notes = " | ".join(board.notes)
    assert "powersave" in notes and "capped" in notes and "throttled now" not in notes
    # no vcgencmd output (not installed, or no access to /dev/vchiq): the sysfs word
    assert read_board(str(root), vcgencmd=lambda: None).throttling == Throttling(0, "/sys/devices/platform/soc/"
                                                                                    "soc:firmware/get_throttled")


def test_x86_box_without_device_tree(tmp_path: Path) -> None:
    write(tmp_path, "sys/devices/system/cpu/online", "0-7\n")
    for cpu in range(8):
        d = f"sys/devices/system/cpu/cpu{cpu}/cpufreq/"
        write(tmp_path, d + "scaling_governor", "powersave\n")  # intel_pstate's powersave still scales: no note
        write(tmp_path, d + "scaling_driver", "intel_pstate\n")
    write(tmp_path, "sys/class/thermal/thermal_zone0/type", "acpitz\n")
    write(tmp_path, "sys/class/thermal/thermal_zone0/temp", "27800\n")
    write(tmp_path, "sys/class/thermal/thermal_zone10/type", "x86_pkg_temp\n")
    write(tmp_path, "sys/class/thermal/thermal_zone10/temp", "45000\n")
    write(tmp_path, "sys/class/thermal/thermal_zone2/type", "acpitz\n")  # a second zone of the same type
    write(tmp_path, "sys/class/thermal/thermal_zone2/temp", "30000\n")
    board = read_board(str(tmp_path))
    assert board.model == "" and board.model_profile is None and board.cores == 8 and board.throttling is None
    assert list(board.temperatures) == ["acpitz", "acpitz (thermal_zone2)", "x86_pkg_temp"]
    assert board.notes == [] and dict(board.rows())["throttling"].startswith("unknown")
    # a VM: nothing at all under the root, and no fallback to this machine's core count for a foreign root
    empty = read_board(str(tmp_path / "nothing"))
    assert empty == Board(model="", cores=0) and empty.as_dict()["cpufreq"] == []


def test_garbage_is_a_note_not_a_crash(tmp_path: Path) -> None:
    write(tmp_path, "proc/device-tree/model", b"Raspberry Pi 4\x01\x02\xff\x00")
    write(tmp_path, "sys/devices/system/cpu/online", "zero-three\n")
    write(tmp_path, "sys/devices/system/cpu/cpu0/cpufreq/scaling_governor", "schedutil\n")
    write(tmp_path, "sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq", "fast\n")
    (tmp_path / "sys/devices/system/cpu/cpu1/cpufreq/scaling_governor").mkdir(parents=True)  # unreadable
    write(tmp_path, "sys/class/thermal/thermal_zone0/temp", "hot\n")
    write(tmp_path, "sys/devices/platform/soc/soc:firmware/get_throttled", "throttled=lots\n")
    board = read_board(str(tmp_path), vcgencmd=lambda: "error=1 error_msg=\"Command not registered\"")
    problems = " | ".join(board.problems)
    for expected in ("/sys/devices/system/cpu/online: not a cpu list", "scaling_cur_freq: expected an integer",
                     "cpu1/cpufreq/scaling_governor: cannot read it", "thermal_zone0/temp: expected an integer",
                     "vcgencmd get_throttled: not a throttling word", "get_throttled: not a throttling word",
                     "/proc/device-tree/model: not a board name"):
        assert expected in problems, (expected, problems)
    # what could be read still is: the cpus from the cpuN directories, cpu0's governor, the model's printable part
    assert board.cores == 2 and board.governors == {"schedutil": [0]} and board.temperatures == {}
    assert board.model.startswith("Raspberry Pi 4") and board.model.isprintable() and board.model_profile == "rpi4"
    assert board.throttling is None and set(board.problems) <= set(board.notes)
    json.dumps(board.as_dict())


@pytest.mark.parametrize("text,value", [("throttled=0x0", 0), ("throttled=0x50005\n", 0x50005), ("80008", 0x80008),
                                        ("0xF000F", 0xF000F)])
def test_decode_throttled(text: str, value: int) -> None:
    assert decode_throttled(text) == value


@pytest.mark.parametrize("text", ["", "throttled=", "throttled=0x123456789", "-1", "0x5 0x6"])
def test_decode_throttled_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="not a throttling word"):
        decode_throttled(text)


def test_every_condition_decoded() -> None:
    t = Throttling(0xF000F, "test")
    assert t.now == t.occurred == ["under-voltage", "arm frequency capped", "throttled", "soft temperature limit"]


MODELS = [("Raspberry Pi 4 Model B Rev 1.5", "rpi4"), ("Raspberry Pi 400 Rev 1.0", "rpi4"),  # 400: a Pi 4 in a keyboard
          ("Raspberry Pi Compute Module 4 Rev 1.0", "rpi4"), ("Raspberry Pi 5 Model B Rev 1.0", "rpi5"),
          ("Raspberry Pi 3 Model B+", None), ("Pine64 RockPro64", None), ("", None)]


@pytest.mark.parametrize("model,profile", MODELS)
def test_model_profile(model: str, profile: Optional[str]) -> None:
    assert model_profile(model) == profile


def test_this_machine_reads_without_error() -> None:
    board = read_board()
    assert board.cores >= 1 and json.dumps(board.as_dict())


def floe_info(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "floe_edge.cli", "info", *args], capture_output=True, text=True,
                          timeout=60, check=True)


def test_floe_info_on_a_fake_pi4(tmp_path: Path) -> None:
    fake_pi(tmp_path, PI4_MODEL, throttled="0")
    info = json.loads(floe_info("--json", "--root", str(tmp_path)).stdout)
    board = info["board"]
    assert board["model"] == "Raspberry Pi 4 Model B Rev 1.4" and board["model_profile"] == "rpi4"
    assert board["cores"] == 4 and board["governors"] == {"ondemand": [0, 1, 2, 3]}
    assert board["throttling"]["raw"] == "0x0" and board["temperatures_c"] == {"cpu-thermal": 61.354}
    # the profile is chosen for the CPU this runs on, with the board's model and cores
    assert info["profile"] and info["profile_reasons"]
    text = floe_info("--root", str(tmp_path)).stdout
    for line in ("board           Raspberry Pi 4 Model B Rev 1.4", "cores_online    4",
                 "throttling      0x0: now none; since boot none", "temperatures    cpu-thermal 61.4 C", "profile  "):
        assert line in text, (line, text)
