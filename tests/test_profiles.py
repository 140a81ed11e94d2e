"""Hardware profiles: the shipped files, validation errors naming file and key, detection per device, the CLI."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

import pytest

from floe_edge import kernels
from floe_edge.cli import build_parser, main
from floe_edge.cli.profile import apply_profile
from floe_edge.fusion import PRESETS
from floe_edge.host import Host, board_model, cpu_flags
from floe_edge.profiles import (PROJECTIONS, VARIANTS, Profile, ProfileError, detect, list_profiles, load_profile,
                                parse_profile, profile_dirs)

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

SHIPPED = ["rpi4", "rpi5", "snapdragon-8gen2", "x86-avx2", "x86-avx512"]
RPI4 = Path(__file__).resolve().parents[1] / "targets" / "profiles" / "rpi4.toml"


# -- the shipped profiles --

def test_every_shipped_profile_loads() -> None:
    assert list_profiles() == SHIPPED
    for name in SHIPPED:
        p = load_profile(name)
        assert p.name == name and p.backend == ("litert" if name == "snapdragon-8gen2" else "native")
        assert p.variant in VARIANTS
        assert set(p.lora.targets) <= set(PROJECTIONS) and p.hybrid.fusion in PRESETS
        assert Path(p.source).parent in profile_dirs()


def test_profiles_suit_their_hardware() -> None:
    pi4, pi5, phone = load_profile("rpi4"), load_profile("rpi5"), load_profile("snapdragon-8gen2")
    assert pi4.variant == "neon" and pi4.threads == 4  # the A72 has no dotprod: neon_dotprod would SIGILL
    assert pi5.variant == "neon_dotprod" and pi5.threads == 4
    assert phone.threads == 5  # the big cores only, of 8
    assert load_profile("x86-avx2").variant == "avx2" and load_profile("x86-avx512").variant == "avx512_vnni"
    assert pi4.lora.rank < pi5.lora.rank < load_profile("x86-avx2").lora.rank  # rank grows with the hardware
    assert pi4.lora.scale == pi4.lora.alpha / pi4.lora.rank
    assert pi4.memory_mb < load_profile("x86-avx512").memory_mb


def test_a_profile_by_path_and_as_json(tmp_path: Path) -> None:
    mine = tmp_path / "mine.toml"
    mine.write_text(RPI4.read_text())
    p = load_profile(mine)
    assert p.name == "mine" and p.source == str(mine)
    assert p.as_dict()["lora"]["targets"] == ["q", "v"] and json.loads(json.dumps(p.as_dict()))["threads"] == 4


# -- validation: every error names the file and the key --

def _edited(tmp_path: Path, old: str, new: str) -> Path:
    """rpi4.toml with the line starting with `old` replaced by `new` ("" drops it), in tmp_path."""
    text = RPI4.read_text()
    assert re.search(rf"^{re.escape(old)}", text, re.MULTILINE), old
    path = tmp_path / "rpi4.toml"
    path.write_text(re.sub(rf"^{re.escape(old)}.*$", new, text, count=1, flags=re.MULTILINE))
    return path


@pytest.mark.parametrize("old, new, message", [
    ("rank =", 'rank = "eight"', "lora.rank must be an integer in 1..256, got 'eight'"),
    ("rank =", "rank = 0", "lora.rank must be an integer in 1..256, got 0"),
    ("rank =", "rank = 4.5", "lora.rank must be an integer in 1..256, got 4.5"),
    ("threads =", "threads = true", "threads must be an integer in 1..256, got True"),
    ("threads =", 'threads = "4"', "threads must be an integer in 1..256, got '4'"),
    ("memory_mb =", "memory_mb = 10", "memory_mb must be an integer in 64..1048576, got 10"),
    ("alpha =", "alpha = -1.0", "lora.alpha must be a number in 0.01..4096, got -1.0"),
    ("deadline_ms =", "deadline_ms = 0", "hybrid.deadline_ms must be a number in 1..60000, got 0"),
    ("deadline_ms =", 'deadline_ms = "fast"', "hybrid.deadline_ms must be a number in 1..60000, got 'fast'"),
    ("variant =", 'variant = "sse4"',
     "variant must be one of ref, avx2, avx_vnni, avx512, avx512_vnni, neon, neon_dotprod, neon_i8mm, got 'sse4'"),
    ("backend =", 'backend = "cuda"', "backend must be one of native, litert, got 'cuda'"),
    ("quant =", 'quant = "q5_0"', "quant must be one of f32, f16, q4_0, q4_1, q8_0, got 'q5_0'"),
    ("fusion =", 'fusion = "loud"', "hybrid.fusion must be one of assistant, code, commands, adaptive, got 'loud'"),
    ("description =", "description = 3", "description must be a string, got 3"),
    ("targets =", 'targets = ["q", "qkv"]', "lora.targets must be a non-empty list of distinct names from q, k, v"),
    ("targets =", "targets = []", "lora.targets must be a non-empty list"),
    ("targets =", 'targets = ["q", "q"]', "lora.targets must be a non-empty list"),
    ("targets =", 'targets = "q"', "lora.targets must be a non-empty list"),
    ("rank =", "", "missing key lora.rank"),
    ("quant =", "", "missing key quant"),
    ("[hybrid]", "[hybird]", "unknown key hybird (expected one of: description, backend, variant"),
    ("rank =", "rank = 4\nbias = true", "unknown key lora.bias (expected one of: lora.rank, lora.alpha, lora.targets)"),
    ("threads =", "threads = ", "not valid TOML"),
])
def test_a_bad_key_is_named(tmp_path: Path, old: str, new: str, message: str) -> None:
    path = _edited(tmp_path, old, new)
    with pytest.raises(ProfileError) as e:
        load_profile(path)
    assert str(e.value).startswith(f"{path}: "), str(e.value)
    assert message in str(e.value)
    assert isinstance(e.value, ValueError)


def test_a_table_that_is_not_a_table() -> None:
    data = tomllib.loads(RPI4.read_text())
    data["lora"] = "big"
    with pytest.raises(ProfileError, match="^mine.toml: lora must be a table, got 'big'$"):
        parse_profile(data, name="mine", where="mine.toml")


def test_unreadable_and_unknown_profiles(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match=r"unknown profile 'rpi9'; known: rpi4, rpi5, snapdragon-8gen2"):
        load_profile("rpi9")
    with pytest.raises(ProfileError, match="no profile file '/no/such.toml'"):
        load_profile("/no/such.toml")
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ProfileError, match=f"{binary}: cannot read it"):
        load_profile(binary)


# -- detection: one fake host per kind of device --

PI4_FEATURES = frozenset("fp asimd evtstrm crc32 cpuid".split())
PI5_FEATURES = frozenset("fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop "
                         "asimddp".split())
ARM32_FEATURES = frozenset("half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt lpae evtstrm crc32".split())
SD8G2_FEATURES = PI5_FEATURES | frozenset("sha3 sm3 sm4 asimdfhm flagm ssbs sb paca pacg dcpodp sve2 i8mm bf16".split())
ZEN1_FLAGS = frozenset("fpu sse sse2 ssse3 sse4_1 sse4_2 avx avx2 fma f16c bmi2".split())
AVX512_FLAGS = ZEN1_FLAGS | frozenset("avx512f avx512bw avx512vl avx512_vnni".split())
ARM_DOT, ARM, X86_512, X86_2 = ("neon_dotprod", "neon", "ref"), ("neon", "ref"), ("avx512", "avx2", "ref"), \
    ("avx2", "ref")
ARM_I8MM = ("neon_i8mm", *ARM_DOT)
X86_VNNI = ("avx512_vnni", *X86_512)

HOSTS = {  # id: (host, profile, variant, threads, facts the reasons must mention)
    "pi4": (Host("aarch64", PI4_FEATURES, 4, "Raspberry Pi 4 Model B Rev 1.4", ARM), "rpi4", "neon", 4,
            ["Raspberry Pi 4 Model B Rev 1.4"]),
    "pi5": (Host("aarch64", PI5_FEATURES, 4, "Raspberry Pi 5 Model B Rev 1.0", ARM_DOT), "rpi5", "neon_dotprod", 4,
            ["Raspberry Pi 5 Model B Rev 1.0"]),
    "pi4-armv8l": (Host("armv8l", ARM32_FEATURES, 4, "Raspberry Pi 4 Model B Rev 1.5", ARM), "rpi4", "neon", 4,
                   ["armv8l", "Raspberry Pi 4"]),
    "pi5-armv8l": (Host("armv8l", ARM32_FEATURES, 4, "Raspberry Pi 5 Model B Rev 1.0", ARM), "rpi5", "neon", 4,
                   ["armv8l", "Raspberry Pi 5", "neon_dotprod is not available", "using neon"]),
    "pi400": (Host("aarch64", PI4_FEATURES, 4, "Raspberry Pi 400 Rev 1.0", ARM), "rpi4", "neon", 4, ["Pi 400"]),
    "cm5": (Host("aarch64", PI5_FEATURES, 4, "Raspberry Pi Compute Module 5 Rev 1.0", ARM_DOT), "rpi5",
            "neon_dotprod", 4, ["Compute Module 5"]),
    "pi3": (Host("aarch64", PI4_FEATURES, 4, "Raspberry Pi 3 Model B Plus Rev 1.3", ARM), "rpi4", "neon", 4,
            ["Raspberry Pi 3", "another Raspberry Pi"]),
    "snapdragon": (Host("aarch64", SD8G2_FEATURES, 8, "", ARM_I8MM), "snapdragon-8gen2", "neon_i8mm", 5,
                   ["i8mm", "8 cores"]),
    "i8mm-4-cores": (Host("aarch64", SD8G2_FEATURES, 4, "", ARM_I8MM), "rpi5", "neon_dotprod", 4,
                     ["only 4 cores", "asimddp"]),
    "a53-board": (Host("aarch64", PI4_FEATURES, 4, "", ARM), "rpi4", "neon", 4, ["no asimddp"]),
    "zen1": (Host("x86_64", ZEN1_FLAGS, 8, "", X86_2), "x86-avx2", "avx2", 4, ["AVX2", "without AVX-512"]),
    "avx512-vnni": (Host("x86_64", AVX512_FLAGS, 16, "", X86_VNNI), "x86-avx512", "avx512_vnni", 8,
                    ["avx512 kernels"]),
    "avx512": (Host("x86_64", AVX512_FLAGS, 16, "", X86_512), "x86-avx512", "avx512", 8,  # no VNNI: the fallback
               ["avx512 kernels", "avx512_vnni is not available here", "using avx512"]),
    "avx512-small-vm": (Host("x86_64", AVX512_FLAGS, 2, "", X86_512), "x86-avx512", "avx512", 2,
                        ["threads 8 -> 2", "2 cores"]),
    "avx512f-not-runnable": (Host("x86_64", AVX512_FLAGS, 8, "", X86_2), "x86-avx2", "avx2", 4, ["avx512f"]),
    "no-simd": (Host("x86_64", frozenset("fpu sse sse2".split()), 2, "", ("ref",)), "x86-avx2", "ref", 2,
                ["neither AVX2 nor AVX-512", "using ref"]),
    "riscv": (Host("riscv64", frozenset(), 4, "", ("ref",)), "rpi4", "ref", 4, ["unknown architecture riscv64"]),
}


@pytest.mark.parametrize("case", list(HOSTS))
def test_detect_picks_the_profile_and_says_why(case: str) -> None:
    host, name, variant, threads, facts = HOSTS[case]
    profile, reasons = detect(host)
    assert (profile.name, profile.variant, profile.threads) == (name, variant, threads)
    text = " | ".join(reasons)
    for fact in facts:
        assert fact in text, (fact, reasons)


def test_detect_on_this_machine() -> None:
    profile, reasons = detect()
    assert reasons and profile.variant in kernels.variants() and profile.threads <= (os.cpu_count() or 1)


def test_host_read_from_a_fake_proc(tmp_path: Path) -> None:
    (tmp_path / "proc" / "device-tree").mkdir(parents=True)
    (tmp_path / "proc" / "cpuinfo").write_text("processor\t: 0\nBogoMIPS\t: 108.00\n"
                                               "Features\t: fp asimd evtstrm crc32 cpuid\nCPU part\t: 0xd08\n")
    (tmp_path / "proc" / "device-tree" / "model").write_bytes(b"Raspberry Pi 4 Model B Rev 1.4\x00")
    host = Host.read(str(tmp_path))
    assert host.features == PI4_FEATURES and host.model == "Raspberry Pi 4 Model B Rev 1.4"
    assert host.variants == tuple(kernels.variants()) and host.cores == (os.cpu_count() or 1)
    bare = Host.read(str(tmp_path / "nothing"))  # no /proc at all: empty facts, no crash
    assert bare.features == frozenset() and bare.model == ""


def test_cpuinfo_parsing() -> None:
    x86 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx2 fma\nbugs\t\t: sysret_ss_attrs\n" \
          "processor\t: 1\nflags\t\t: fpu sse2 avx2 fma\n"
    assert cpu_flags(x86) == frozenset({"fpu", "sse2", "avx2", "fma"})
    assert cpu_flags("") == frozenset() and board_model(None) == "" and board_model("Pi\x00") == "Pi"


# -- the command line --

def _args(*argv: str) -> argparse.Namespace:
    args = build_parser().parse_args(list(argv))
    apply_profile(args)
    return args


def _runnable_here() -> str:
    """A shipped native-backend profile whose kernel variant this CPU runs (x86-avx2 on x86, rpi4 on ARM)."""
    runnable = [load_profile(n) for n in SHIPPED]
    return next(p.name for p in runnable if p.backend == "native" and p.variant in kernels.variants())


def test_the_profile_fills_the_flags_left_at_their_defaults() -> None:
    name = _runnable_here()
    p = load_profile(name)
    args = _args("generate", "--prompt", "x", "--profile", name)
    assert (args.threads, args.variant, args.deadline_ms, args.fusion) == \
        (p.threads, p.variant, p.hybrid.deadline_ms, p.hybrid.fusion)


def test_an_explicit_flag_beats_the_profile_even_when_it_equals_the_default() -> None:
    args = _args("generate", "--prompt", "x", "--hw-profile", "x86-avx2", "--threads", "1", "--variant", "ref",
                 "--deadline-ms", "200", "--fusion", "assistant")
    assert (args.threads, args.variant, args.deadline_ms, args.fusion) == \
        (1, "ref", 200.0, "assistant")


def test_without_a_profile_the_defaults_are_plain_values() -> None:
    args = _args("generate", "--prompt", "x")
    values = (args.threads, args.variant, args.deadline_ms, args.fusion)
    assert values == (1, None, 200.0, "assistant")
    assert [type(v) for v in values] == [int, type(None), float, str]


@pytest.mark.parametrize("flag", ["--profile", "--hw-profile"])
def test_demo_takes_the_hardware_profile_as_generate_does_and_the_network_as_net(flag: str) -> None:
    name = _runnable_here()
    p = load_profile(name)
    args = _args("demo", flag, name, "--net", "lte", "--fusion", "code")
    assert (args.hw_profile, args.variant, args.deadline_ms, args.fusion, args.net) == \
        (name, p.variant, p.hybrid.deadline_ms, "code", "lte")


def test_demo_says_when_profile_names_a_network(capsys: pytest.CaptureFixture[str]) -> None:
    """`floe demo --profile lte` (the network, before --net) is a clear error, not "unknown profile"."""
    assert main(["demo", "--profile", "lte"]) == 2
    assert capsys.readouterr().err.endswith("'lte' is a network profile: use --net lte\n")
    with pytest.raises(SystemExit) as e:
        main(["demo", "--net", "dialup"])
    assert e.value.code == 2 and "invalid choice: 'dialup'" in capsys.readouterr().err


def _not_runnable_here() -> str:
    return next(n for n in SHIPPED if load_profile(n).variant not in kernels.variants())


@pytest.mark.parametrize("bad, message", [
    ("nope", "unknown profile 'nope'"),
    ("/no/such.toml", "no profile file '/no/such.toml'"),
    ("NOT-RUNNABLE", "which this CPU cannot run"),
])
def test_a_bad_profile_is_a_one_line_error(bad: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    bad = _not_runnable_here() if bad == "NOT-RUNNABLE" else bad
    for argv in (["generate", "--prompt", "x", "--profile", bad], ["demo", "--profile", bad],
                 ["profile", "show", bad]):
        if message.startswith("which") and argv[0] == "profile":
            continue  # showing a profile for other hardware is fine
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("floe: error: ") and message in err and err.count("\n") == 1, (argv, err)


def test_a_bad_key_on_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _edited(tmp_path, "rank =", 'rank = "eight"')
    assert main(["generate", "--prompt", "x", "--profile", str(path)]) == 2
    assert capsys.readouterr().err == f"floe: error: {path}: lora.rank must be an integer in 1..256, got 'eight'\n"


def test_profile_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", "list"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == SHIPPED
    assert main(["profile", "show", "rpi5", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == load_profile("rpi5").as_dict()
    assert main(["profile", "show", str(RPI4)]) == 0
    assert "lora.targets        q, v" in capsys.readouterr().out
    assert main(["profile", "detect", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    profile, reasons = detect()
    assert found["profile"] == profile.as_dict() and found["reasons"] == reasons
    assert found["host"]["variants"] == kernels.variants()
    assert main(["profile", "detect"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"profile {profile.name}: ") and reasons[0] in out


def test_generate_runs_with_a_profile_file(tmp_path: Path, smollm2_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """A profile of one's own (ref kernels, one thread) drives a real run; greedy output equals the same flags'."""
    mine = _edited(tmp_path, "variant =", 'variant = "ref"')
    mine.write_text(mine.read_text().replace("threads = 4", "threads = 1"))
    common = ["generate", "--model", str(smollm2_path), "--prompt", "The capital of France is", "-n", "4", "--json"]
    assert main([*common, "--profile", str(mine)]) == 0
    with_profile = json.loads(capsys.readouterr().out)
    assert main([*common, "--variant", "ref", "--threads", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["ids"] == with_profile["ids"] and len(with_profile["ids"]) == 4


def test_profile_is_frozen() -> None:
    p: Profile = load_profile("rpi4")
    with pytest.raises(AttributeError):
        p.threads = 8  # type: ignore[misc]


@pytest.mark.parametrize("argv", [["profile"], ["profile", "detect"], ["profile", "show"], ["profile", "list"]])
def test_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith(f"usage: floe {' '.join(argv)}")
