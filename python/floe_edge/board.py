"""Board facts at run time: the board model, cores, CPU frequency governors, throttling and temperatures.

    from floe_edge.board import read_board
    board = read_board()                        # this machine
    board = read_board("/tmp/fake-root")        # a copied /proc + /sys tree (tests, a mounted SD card image)
    board.as_dict()                             # JSON-ready, as `floe info --json` prints it under "board"

Every fact comes from a file under `root`: /proc/device-tree/model (the board; the `Hardware` line of /proc/cpuinfo
is wrong on every Pi), /sys/devices/system/cpu/online and cpuN/cpufreq/ (governor, frequencies),
/sys/class/thermal/thermal_zone*/ (temperatures), and the Raspberry Pi firmware's throttling word: `vcgencmd
get_throttled` when `root` is "/" and vcgencmd is installed, else the firmware driver's sysfs file. A missing file is
a fact left out (x86 has no device tree, VMs have no cpufreq); a file with garbage in it is a note in `problems`,
never an exception: a benchmark records the board beside its figures and must not die of a strange kernel.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union

from .host import board_model

__all__ = ["THROTTLE_BITS", "Board", "CpuFreq", "Throttling", "decode_throttled", "model_profile", "read_board"]

# The firmware's get_throttled word (Raspberry Pi documentation, "vcgencmd get_throttled"): bits 0-3 are the state
# now, bits 16-19 the same conditions "has occurred" since boot.
THROTTLE_BITS = {
    0: "under-voltage",
    1: "arm frequency capped",
    2: "throttled",
    3: "soft temperature limit",
}
OCCURRED_SHIFT = 16
# the firmware driver's sysfs attribute (Raspberry Pi kernels): soc/soc:firmware on a Pi 4; the node's parent differs
# between SoCs and kernels, hence the globs
THROTTLED_SYSFS = ("sys/devices/platform/soc/soc:firmware/get_throttled",
                   "sys/devices/platform/*/*firmware*/get_throttled", "sys/devices/platform/*firmware*/get_throttled")

_PI_MODEL = re.compile(r"Raspberry Pi (?:Compute Module )?(\d)")


@dataclass(frozen=True)
class Throttling:
    """The firmware's throttling word, decoded."""

    raw: int
    source: str  # "vcgencmd get_throttled" or the sysfs file it was read from

    @property
    def now(self) -> list[str]:
        """Conditions active at this moment."""
        return [name for bit, name in THROTTLE_BITS.items() if self.raw >> bit & 1]

    @property
    def occurred(self) -> list[str]:
        """Conditions that happened at some point since boot (the sticky bits)."""
        return [name for bit, name in THROTTLE_BITS.items() if self.raw >> (bit + OCCURRED_SHIFT) & 1]

    def describe(self) -> str:
        now, past = ", ".join(self.now) or "none", ", ".join(self.occurred) or "none"
        return f"{self.raw:#x}: now {now}; since boot {past}"

    def as_dict(self) -> dict[str, Any]:
        return {"raw": f"{self.raw:#x}", "now": self.now, "occurred": self.occurred, "source": self.source}


def decode_throttled(text: str) -> int:
    """The throttling word from `vcgencmd get_throttled` ("throttled=0x50005") or the sysfs file ("50005", hex
    without the prefix). ValueError on anything else."""
    value = text.strip().removeprefix("throttled=").strip()
    if not re.fullmatch(r"(0[xX])?[0-9a-fA-F]{1,8}", value):
        raise ValueError(f"not a throttling word: {text.strip()[:60]!r}")
    return int(value, 16)


@dataclass(frozen=True)
class CpuFreq:
    """One core's cpufreq state (frequencies in MHz; None where the kernel does not say)."""

    cpu: int
    governor: str
    cur_mhz: Optional[float] = None
    max_mhz: Optional[float] = None   # cpuinfo_max_freq: what the core can do
    cap_mhz: Optional[float] = None   # scaling_max_freq: what it is allowed now (below max: capped)


@dataclass(frozen=True)
class Board:
    model: str                                          # "" without a device tree
    cores: int                                          # online cores
    cpufreq: tuple[CpuFreq, ...] = ()                   # empty without cpufreq (most VMs)
    driver: str = ""                                    # scaling_driver of cpu0 (cpufreq-dt, intel_pstate, ...)
    throttling: Optional[Throttling] = None             # Raspberry Pi firmware only
    temperatures: dict[str, float] = field(default_factory=dict)  # thermal zone type (or zone name) -> degrees C
    problems: tuple[str, ...] = ()                      # files that were there but unreadable or garbage

    @property
    def model_profile(self) -> Optional[str]:
        """The shipped hardware profile this board model is (rpi4, rpi5), None for a board we have none for."""
        return model_profile(self.model)

    @property
    def governors(self) -> dict[str, list[int]]:
        """Governor -> the cores running it."""
        out: dict[str, list[int]] = {}
        for f in self.cpufreq:
            out.setdefault(f.governor, []).append(f.cpu)
        return out

    @property
    def notes(self) -> list[str]:
        """What a reader of benchmark figures should know: slow governors, capped cores, throttling now."""
        notes = []
        # powersave pins cpufreq-dt cores (every Pi) at their lowest frequency; intel_pstate's powersave still scales
        if "powersave" in self.governors and "pstate" not in self.driver:
            notes.append("governor powersave holds the cores at their lowest frequency: set performance or "
                         "ondemand before measuring")
        capped = [f.cpu for f in self.cpufreq if f.cap_mhz and f.max_mhz and f.cap_mhz < f.max_mhz]
        if capped:
            notes.append(f"scaling_max_freq below cpuinfo_max_freq on cpu {_cpu_list(capped)}: the cores are capped")
        if self.throttling and self.throttling.now:
            notes.append(f"throttled now ({', '.join(self.throttling.now)}): figures measured now are low")
        return notes + list(self.problems)

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "model_profile": self.model_profile, "cores": self.cores,
            "governors": self.governors, "driver": self.driver,
            "cpufreq": [vars(f) for f in self.cpufreq],
            "throttling": self.throttling.as_dict() if self.throttling else None,
            "temperatures_c": self.temperatures, "notes": self.notes,
        }

    def rows(self) -> list[tuple[str, str]]:
        """(label, text) lines for `floe info`'s table."""
        rows = [("board", self.model or "(no device tree: not a single-board computer, or a VM)"),
                ("cores_online", str(self.cores))]
        if self.governors:
            govs = "; ".join(f"{g} (cpu {_cpu_list(cpus)})" for g, cpus in self.governors.items())
            rows.append(("governor", govs + (f", driver {self.driver}" if self.driver else "")))
        maxes = sorted({f.max_mhz for f in self.cpufreq if f.max_mhz})
        curs = [f.cur_mhz for f in self.cpufreq if f.cur_mhz]
        if maxes:
            now = f"{min(curs):.0f}" + (f"-{max(curs):.0f}" if max(curs) > min(curs) else "") if curs else ""
            rows.append(("cpu_mhz", "max " + " / ".join(f"{m:.0f}" for m in maxes) + (f", now {now}" if now else "")))
        rows.append(("throttling", self.throttling.describe() if self.throttling else "unknown (no Raspberry Pi "
                                                                                       "firmware here)"))
        if self.temperatures:
            rows.append(("temperatures", ", ".join(f"{k} {v:.1f} C" for k, v in self.temperatures.items())))
        rows += [("note", n) for n in self.notes]
        return rows


def model_profile(model: str) -> Optional[str]:
    """rpi4 / rpi5 for a Raspberry Pi 4 / 5 (Compute Modules included), None otherwise."""
    match = _PI_MODEL.search(model)
    return f"rpi{match.group(1)}" if match and match.group(1) in ("4", "5") else None


def _cpu_list(cpus: list[int]) -> str:
    """0,1,2,3,6 -> "0-3,6"."""
    parts, start = [], None
    for i, c in enumerate(cpus):
        start = c if start is None else start
        if i + 1 == len(cpus) or cpus[i + 1] != c + 1:
            parts.append(f"{start}" if start == c else f"{start}-{c}")
            start = None
    return ",".join(parts)


class _Reader:
    """Files under one root; anything present but unreadable or malformed becomes a problem note."""

    def __init__(self, root: str) -> None:
        self.root = Path(root)
        self.problems: list[str] = []

    def text(self, rel: str) -> Optional[str]:
        path = self.root / rel
        try:
            return path.read_bytes().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return None
        except OSError as e:  # a directory, a permission error, an I/O error of a sysfs attribute
            self.problems.append(f"/{rel}: cannot read it ({e.strerror or e})")
            return None

    def number(self, rel: str, scale: float = 1.0) -> Optional[float]:
        text = self.text(rel)
        if text is None:
            return None
        try:
            return int(text.strip()) / scale
        except ValueError:
            self.problems.append(f"/{rel}: expected an integer, got {text.strip()[:40]!r}")
            return None


def _parse_cpu_ranges(text: str) -> list[int]:
    """The kernel's cpu list format ("0-3,6"); ValueError on garbage."""
    cpus: list[int] = []
    for part in text.strip().split(","):
        lo, _, hi = part.partition("-")
        first, last = int(lo), int(hi or lo)
        if last < first or last > 4095:
            raise ValueError(part)
        cpus.extend(range(first, last + 1))
    return cpus


def _online_cpus(r: _Reader, fallback: bool) -> list[int]:
    text = r.text("sys/devices/system/cpu/online")
    if text is not None:
        try:
            return _parse_cpu_ranges(text)
        except ValueError:
            r.problems.append(f"/sys/devices/system/cpu/online: not a cpu list: {text.strip()[:40]!r}")
    base = r.root / "sys" / "devices" / "system" / "cpu"
    found = sorted(int(p.name[3:]) for p in base.glob("cpu[0-9]*") if p.name[3:].isdigit()) if base.is_dir() else []
    if found:
        return found
    return list(range(os.cpu_count() or 1)) if fallback else []


def _cpufreq(r: _Reader, cpus: list[int]) -> tuple[tuple[CpuFreq, ...], str]:
    out = []
    for cpu in cpus:
        d = f"sys/devices/system/cpu/cpu{cpu}/cpufreq/"
        governor = r.text(d + "scaling_governor")
        if governor is None:
            continue
        mhz = {key: r.number(d + name, 1e3) for key, name in
               (("cur_mhz", "scaling_cur_freq"), ("max_mhz", "cpuinfo_max_freq"), ("cap_mhz", "scaling_max_freq"))}
        out.append(CpuFreq(cpu=cpu, governor=governor.strip() or "?", **mhz))
    driver = (r.text(f"sys/devices/system/cpu/cpu{cpus[0]}/cpufreq/scaling_driver") or "").strip() if cpus else ""
    return tuple(out), driver


def _temperatures(r: _Reader) -> dict[str, float]:
    temps = {}
    base = r.root / "sys" / "class" / "thermal"
    zones = sorted(base.glob("thermal_zone*"), key=lambda p: (len(p.name), p.name)) if base.is_dir() else []
    for zone in zones:
        rel = f"sys/class/thermal/{zone.name}/"
        millideg = r.number(rel + "temp")
        if millideg is None:
            continue
        name = (r.text(rel + "type") or "").strip() or zone.name
        temps[name if name not in temps else f"{name} ({zone.name})"] = millideg / 1000.0
    return temps


def _run_vcgencmd() -> Optional[str]:
    exe = shutil.which("vcgencmd")
    if exe is None:
        return None
    try:
        done = subprocess.run([exe, "get_throttled"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None  # no access to /dev/vchiq: fall back to sysfs


def _throttling(r: _Reader, vcgencmd: Optional[Callable[[], Optional[str]]]) -> Optional[Throttling]:
    out = vcgencmd() if vcgencmd else None
    if out is not None:
        try:
            return Throttling(decode_throttled(out), "vcgencmd get_throttled")
        except ValueError as e:
            r.problems.append(f"vcgencmd get_throttled: {e}")
    for pattern in THROTTLED_SYSFS:
        rels = sorted({str(p.relative_to(r.root)) for p in r.root.glob(pattern)})
        if not rels:
            continue
        rel = rels[0]
        text = r.text(rel)
        if text is None:
            continue
        try:
            return Throttling(decode_throttled(text), "/" + rel)
        except ValueError as e:
            r.problems.append(f"/{rel}: {e}")
    return None


def read_board(root: str = "/", vcgencmd: Union[Callable[[], Optional[str]], None, str] = "auto") -> Board:
    """The board facts under `root`. `vcgencmd`: a callable returning `vcgencmd get_throttled`'s output (None: not
    available); by default the real command when `root` is "/", and none for any other root (it would describe the
    running machine, not the tree)."""
    if isinstance(vcgencmd, str):  # "auto"
        vcgencmd = _run_vcgencmd if os.path.realpath(root) == "/" else None
    r = _Reader(root)
    model_text = r.text("proc/device-tree/model")
    model = board_model(model_text)
    if model_text is not None and not model.isprintable():
        r.problems.append(f"/proc/device-tree/model: not a board name: {model[:40]!r}")
        model = "".join(c for c in model if c.isprintable())
    cpus = _online_cpus(r, fallback=os.path.realpath(root) == "/")
    cpufreq, driver = _cpufreq(r, cpus)
    return Board(model=model, cores=len(cpus), cpufreq=cpufreq, driver=driver, throttling=_throttling(r, vcgencmd),
                 temperatures=_temperatures(r), problems=tuple(r.problems))
