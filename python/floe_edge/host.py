"""What this machine is, as hardware profile detection needs it: architecture, CPU flags, cores, board model.

`Host.read()` reads it from the running system; tests build `Host(...)` by hand for every kind of device.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

__all__ = ["Host", "board_model", "cpu_flags"]

ARM_MACHINES = ("aarch64", "arm64", "armv8l", "armv8b", "armv7l", "armv7", "armv6l")
X86_MACHINES = ("x86_64", "amd64", "i386", "i486", "i586", "i686", "x86")


@dataclass(frozen=True)
class Host:
    """A machine as seen by `uname -m`, /proc/cpuinfo, the core count, /proc/device-tree/model and our kernels."""

    machine: str                                     # uname machine: x86_64, aarch64, armv8l (64-bit kernel, 32-bit
    features: frozenset[str] = frozenset()           # userland), armv7l; CPU flags (x86 "flags", ARM "Features")
    cores: int = 1
    model: str = ""                                  # the device-tree board model ("" when there is none)
    variants: tuple[str, ...] = field(default=("ref",))  # the native kernel variants this CPU runs, best first

    @property
    def is_arm(self) -> bool:
        return self.machine.lower() in ARM_MACHINES or self.machine.lower().startswith(("arm", "aarch"))

    @property
    def is_x86(self) -> bool:
        return self.machine.lower() in X86_MACHINES

    @classmethod
    def read(cls, root: str = "/") -> Host:
        """This machine. `root` lets a test point at a fake /proc tree."""
        from . import kernels

        base = Path(root)
        return cls(machine=platform.machine(), features=cpu_flags(_read_text(base / "proc" / "cpuinfo") or ""),
                   cores=os.cpu_count() or 1, model=board_model(_read_text(base / "proc" / "device-tree" / "model")),
                   variants=tuple(kernels.variants()))


def cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The CPU flags of a /proc/cpuinfo text: the first `flags` line (x86) or `Features` line (ARM)."""
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            return frozenset(value.split())
    return frozenset()


def board_model(text: Optional[str]) -> str:
    """The board model from /proc/device-tree/model, which ends in a NUL byte ("" without a device tree)."""
    return (text or "").replace("\x00", "").strip()


def _read_text(path: Path) -> Optional[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:  # no device tree (x86, most VMs), or /proc unreadable in a sandbox
        return None
