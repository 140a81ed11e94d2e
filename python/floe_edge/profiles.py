"""Hardware profiles: the settings that suit a device (kernels, threads, quantization, LoRA rank, deadline, fusion).

    from floe_edge.profiles import detect, load_profile
    profile = load_profile("rpi5")                  # a shipped profile by name, or a path to a .toml of your own
    profile, reasons = detect()                     # the profile that fits this machine, and why

Shipped profiles live in targets/profiles/*.toml in the source tree; the wheel carries them as
floe_edge/profiles/*.toml (CMake installs them there). A file with an unknown, missing, mistyped or out-of-range key is
a ProfileError naming the file and the key.
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Optional, Union

from .board import model_profile
from .fusion import PRESETS
from .host import Host

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the same parser, from PyPI before 3.11
    import tomli as tomllib

__all__ = ["BACKENDS", "PROJECTIONS", "QUANTS", "VARIANTS", "HybridSettings", "LoraSettings", "MemoryBudgetError",
           "MemoryEstimate", "Profile", "ProfileError", "check_memory", "detect", "estimate_memory", "list_profiles",
           "load_profile", "parse_profile", "profile_dirs"]

BACKENDS = ("native", "litert")  # litert: an exported .tflite on LiteRT, the NPU/GPU through its delegates
# every native kernel variant, on any CPU
VARIANTS = ("ref", "avx2", "avx_vnni", "avx512", "avx512_vnni", "neon", "neon_dotprod", "neon_i8mm")
QUANTS = ("f32", "f16", "q4_0", "q4_1", "q8_0")  # the weight types the native decoder loads
PROJECTIONS = ("q", "k", "v", "o", "gate", "up", "down")


class ProfileError(ValueError):
    """A profile that cannot be found or read, or a key in it that is wrong."""


@dataclass(frozen=True)
class LoraSettings:
    rank: int
    alpha: float
    targets: tuple[str, ...]  # a subset of PROJECTIONS

    @property
    def scale(self) -> float:
        """alpha / rank: the factor on B·A at user scale 1 (llama.cpp's rule)."""
        return self.alpha / self.rank


@dataclass(frozen=True)
class HybridSettings:
    deadline_ms: float  # per token
    fusion: str  # a floe_edge.fusion.PRESETS name


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    backend: str
    variant: str
    threads: int
    quant: str
    memory_mb: int
    lora: LoraSettings
    hybrid: HybridSettings
    source: str = ""  # the file it was read from

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (lists for tuples)."""
        data = asdict(self)
        data["lora"]["targets"] = list(self.lora.targets)
        return data


# -- finding and reading profile files --

def profile_dirs() -> list[Path]:
    """Where shipped profiles are looked up: the installed package's profiles/, then the source tree's
    targets/profiles (an editable install, or running from a checkout)."""
    dirs = [Path(str(resources.files("floe_edge"))) / "profiles", Path(__file__).resolve().parents[2] / "targets" /
            "profiles"]
    return [d for d in dirs if d.is_dir()]


def list_profiles() -> list[str]:
    """The names of the shipped profiles, sorted."""
    return sorted({p.stem for d in profile_dirs() for p in d.glob("*.toml")})


def _resolve(name_or_path: Union[str, os.PathLike]) -> tuple[Path, str]:
    """The file of a profile name or path, and the name used in error messages."""
    text = os.fspath(name_or_path)
    if text.endswith(".toml") or os.sep in text or "/" in text:
        path = Path(text)
        if not path.is_file():
            raise ProfileError(f"no profile file {text!r}")
        return path, text
    for d in profile_dirs():
        if (d / f"{text}.toml").is_file():
            return d / f"{text}.toml", f"{text}.toml"
    raise ProfileError(f"unknown profile {text!r}; known: {', '.join(list_profiles()) or 'none found'}")


def load_profile(name_or_path: Union[str, os.PathLike]) -> Profile:
    """A shipped profile by name ("rpi4") or any profile file by path; ProfileError when it is missing or wrong."""
    path, where = _resolve(name_or_path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise ProfileError(f"{where}: cannot read it: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ProfileError(f"{where}: not valid TOML: {e}") from None
    return parse_profile(data, name=path.stem, where=where, source=str(path))


# -- validation: every key checked, every error naming the file and the key --

class _Table:
    """One TOML table being validated; `prefix` is its dotted path ("lora.")."""

    def __init__(self, data: dict[str, Any], where: str, prefix: str = "") -> None:
        self.data, self.where, self.prefix = data, where, prefix

    def fail(self, key: str, expected: str) -> ProfileError:
        return ProfileError(f"{self.where}: {self.prefix}{key} must be {expected}, got {self.data[key]!r}")

    def expect_keys(self, keys: tuple[str, ...]) -> None:
        for key in self.data:
            if key not in keys:
                raise ProfileError(f"{self.where}: unknown key {self.prefix}{key} (expected one of: "
                                   f"{', '.join(self.prefix + k for k in keys)})")
        for key in keys:
            if key not in self.data:
                raise ProfileError(f"{self.where}: missing key {self.prefix}{key}")

    def integer(self, key: str, lo: int, hi: int) -> int:
        value = self.data[key]
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise self.fail(key, f"an integer in {lo}..{hi}")
        return value

    def number(self, key: str, lo: float, hi: float) -> float:
        value = self.data[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
            raise self.fail(key, f"a number in {lo:g}..{hi:g}")
        return float(value)

    def text(self, key: str) -> str:
        if not isinstance(self.data[key], str):
            raise self.fail(key, "a string")
        return str(self.data[key])

    def choice(self, key: str, options: tuple[str, ...]) -> str:
        if self.data[key] not in options:
            raise self.fail(key, f"one of {', '.join(options)}")
        return str(self.data[key])

    def subset(self, key: str, options: tuple[str, ...]) -> tuple[str, ...]:
        value = self.data[key]
        if not isinstance(value, list) or not value or any(v not in options for v in value) or \
                len(set(value)) != len(value):
            raise self.fail(key, f"a non-empty list of distinct names from {', '.join(options)}")
        return tuple(value)

    def table(self, key: str) -> _Table:
        if not isinstance(self.data[key], dict):
            raise self.fail(key, "a table")
        return _Table(self.data[key], self.where, f"{self.prefix}{key}.")


def parse_profile(data: dict[str, Any], name: str, where: str, source: str = "") -> Profile:
    """A Profile from parsed TOML; `where` names the file in errors."""
    top = _Table(data, where)
    top.expect_keys(("description", "backend", "variant", "threads", "quant", "memory_mb", "lora", "hybrid"))
    lora, hybrid = top.table("lora"), top.table("hybrid")
    lora.expect_keys(("rank", "alpha", "targets"))
    hybrid.expect_keys(("deadline_ms", "fusion"))
    return Profile(
        name=name, description=top.text("description"), backend=top.choice("backend", BACKENDS),
        variant=top.choice("variant", VARIANTS), threads=top.integer("threads", 1, 256),
        quant=top.choice("quant", QUANTS), memory_mb=top.integer("memory_mb", 64, 1 << 20),
        lora=LoraSettings(rank=lora.integer("rank", 1, 256), alpha=lora.number("alpha", 0.01, 4096.0),
                          targets=lora.subset("targets", PROJECTIONS)),
        hybrid=HybridSettings(deadline_ms=hybrid.number("deadline_ms", 1.0, 60000.0),
                              fusion=hybrid.choice("fusion", tuple(PRESETS))),
        source=source)


# -- the memory budget (memory_mb) --

MIB = 1 << 20
_MAX_BATCH = 64  # tokens per forward pass: the native Decoder's kMaxBatch, which sizes its activation buffers
_TOKENIZER_BYTES_PER_TOKEN = 256  # the native tokenizer's tables: measured ~175 bytes per vocabulary entry
RUNTIME_BYTES = 64 * MIB  # the Python interpreter, numpy and floe_edge: measured 35-57 MiB RSS on x86-64


class MemoryBudgetError(ValueError):
    """The edge would need more memory than its profile's memory_mb."""


@dataclass(frozen=True)
class MemoryEstimate:
    """What the edge process needs at most, in bytes: every part counted at its worst (a full context)."""

    model: int      # the GGUF file, mapped: decode reads every weight each token, so all of it becomes resident
    kv_cache: int   # f16 K and V: n_layers x n_ctx x 2 x kv_dim x 2 bytes
    adapters: int   # LoRA adapter files, mapped like the model
    scratch: int    # activations for one batch, attention scores, logits of a batch, the tokenizer's tables
    runtime: int    # the interpreter and libraries
    n_ctx: int
    kv_per_token: int  # bytes each context position adds (KV cache, scores, token id)

    @property
    def total(self) -> int:
        return self.model + self.kv_cache + self.adapters + self.scratch + self.runtime

    def breakdown(self) -> str:
        parts = [("model", self.model), (f"KV cache for {self.n_ctx} tokens", self.kv_cache),
                 ("adapters", self.adapters), ("scratch", self.scratch), ("runtime", self.runtime)]
        return " + ".join(f"{name} {value / MIB:.0f}" for name, value in parts if value) + " MiB"

    def max_ctx(self, budget: int) -> int:
        """The largest context that fits `budget` bytes (0: not even one token)."""
        fixed = self.total - self.n_ctx * self.kv_per_token
        return max(0, (budget - fixed) // self.kv_per_token)


def estimate_memory(model_path: Union[str, os.PathLike], n_ctx: int, threads: int = 1,
                    adapters: Iterable[Union[str, os.PathLike]] = ()) -> MemoryEstimate:
    """What NativeSLM(model_path, threads, n_ctx) with these adapters needs (the model's shape is read from the GGUF,
    which is mapped, not read)."""
    from . import _native

    c = _native.Model(os.fspath(model_path)).config
    n_layers, dim, ffn, head_dim = (int(c[k]) for k in ("n_layers", "dim", "ffn_dim", "head_dim"))
    kv_dim, group = int(c["n_kv_heads"]) * head_dim, int(c["n_heads"]) // int(c["n_kv_heads"])
    # per position: K and V in f16 per layer, one f32 attention score per thread and query head of a group, the id
    kv_per_token = n_layers * 2 * kv_dim * 2 + 4 * threads * group + 4
    activations = 4 * _MAX_BATCH * (4 * dim + 2 * kv_dim + 2 * ffn + head_dim) + 3 * _MAX_BATCH * max(dim, ffn)
    logits = 4 * _MAX_BATCH * int(c["n_vocab"])  # eval(..., logits="all") of one batch (the hybrid's verify)
    kv_cache = n_layers * n_ctx * 2 * kv_dim * 2
    return MemoryEstimate(
        model=os.path.getsize(model_path), kv_cache=kv_cache, adapters=sum(os.path.getsize(a) for a in adapters),
        scratch=activations + logits + _TOKENIZER_BYTES_PER_TOKEN * int(c["n_vocab"]) + n_ctx * kv_per_token - kv_cache,
        runtime=RUNTIME_BYTES, n_ctx=n_ctx, kv_per_token=kv_per_token)


def check_memory(profile: Profile, estimate: MemoryEstimate, override: str) -> None:
    """MemoryBudgetError (one line, naming the profile, its budget and the estimate, ending with `override`: how to
    run anyway) when the estimate exceeds the profile's memory_mb."""
    budget = profile.memory_mb * MIB
    if estimate.total <= budget:
        return
    fits = estimate.max_ctx(budget)
    room = f"a context of at most {fits} tokens would fit" if fits else "even one token of context does not fit"
    raise MemoryBudgetError(f"profile {profile.name}: the edge needs about {estimate.total / MIB:.0f} MiB "
                            f"({estimate.breakdown()}), over its memory budget memory_mb = {profile.memory_mb}; "
                            f"{room}; {override}")


# -- detection --

def _choose_arm(host: Host) -> tuple[str, list[str]]:
    reasons = []
    if host.machine.lower() == "armv8l":
        reasons.append("machine armv8l: a 64-bit ARM kernel with a 32-bit userland")
    if "Raspberry Pi" in host.model:
        name = model_profile(host.model)
        if name:
            return name, reasons + [f"device-tree model {host.model!r}: a Raspberry Pi {name[3:]}"]
        return "rpi4", reasons + [f"device-tree model {host.model!r}: another Raspberry Pi; rpi4 is the closest "
                                  "profile (NEON, no dotprod)"]
    if "i8mm" in host.features and host.cores >= 8:
        return "snapdragon-8gen2", reasons + [f"i8mm in the CPU Features and {host.cores} cores: a big.LITTLE "
                                              "phone SoC of the Snapdragon 8 Gen 2 class"]
    if "i8mm" in host.features:
        reasons.append(f"i8mm in the CPU Features but only {host.cores} cores (a phone SoC has 8)")
    if "asimddp" in host.features:
        return "rpi5", reasons + ["asimddp (dotprod) in the CPU Features: a Cortex-A76 class core like the Pi 5's"]
    return "rpi4", reasons + ["no asimddp (dotprod) in the CPU Features: NEON only, like the Pi 4's Cortex-A72"]


def _choose_x86(host: Host) -> tuple[str, list[str]]:
    if "avx512" in host.variants:
        return "x86-avx512", [f"x86 machine {host.machine} and the avx512 kernels run here (AVX-512 F/BW/VL)"]
    reasons = []
    if "avx512f" in host.features:
        reasons.append("the CPU flags list avx512f, but the avx512 kernels cannot run here (avx512bw/vl missing, "
                       "or the OS does not enable the AVX-512 state)")
    if "avx2" in host.variants:
        return "x86-avx2", reasons + [f"x86 machine {host.machine} with AVX2 + FMA + F16C, without AVX-512"]
    return "x86-avx2", reasons + [f"x86 machine {host.machine} with neither AVX2 nor AVX-512: x86-avx2 is the "
                                  "closest profile, with the ref kernels"]


def _fit(profile: Profile, host: Host) -> tuple[Profile, list[str]]:
    """The profile adjusted to what this host can run: a kernel variant it has, no more threads than cores."""
    reasons = []
    if profile.variant not in host.variants:
        variant = host.variants[0] if host.variants else "ref"
        reasons.append(f"kernel variant {profile.variant} is not available here "
                       f"(available: {', '.join(host.variants) or 'none'}): using {variant}")
        profile = replace(profile, variant=variant)
    if host.cores < profile.threads:
        reasons.append(f"threads {profile.threads} -> {host.cores}: this machine has {host.cores} cores")
        profile = replace(profile, threads=host.cores)
    return profile, reasons


def detect(host: Optional[Host] = None) -> tuple[Profile, list[str]]:
    """The shipped profile that fits `host` (default: this machine), fitted to it, and the reasons for the choice."""
    host = host if host is not None else Host.read()
    if host.is_arm:
        name, reasons = _choose_arm(host)
    elif host.is_x86:
        name, reasons = _choose_x86(host)
    else:
        name, reasons = "rpi4", [f"unknown architecture {host.machine}: rpi4, the most conservative profile"]
    profile, fitted = _fit(load_profile(name), host)
    return profile, reasons + fitted
