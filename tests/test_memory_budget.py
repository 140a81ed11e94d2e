"""A hardware profile's memory budget (memory_mb): the estimate of what the edge needs, and `floe generate` / `floe
demo` refusing a model that does not fit (unless --ignore-memory-budget)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from floe_edge.cli import main
from floe_edge.demo import EDGE_CTX
from floe_edge.profiles import MIB, RUNTIME_BYTES, MemoryBudgetError, check_memory, estimate_memory, load_profile

RPI4 = Path(__file__).resolve().parents[1] / "targets" / "profiles" / "rpi4.toml"


def profile_file(tmp_path: Path, memory_mb: int) -> Path:
    """rpi4 with kernels any CPU runs, one thread and the given memory_mb."""
    text = RPI4.read_text().replace('variant = "neon"', 'variant = "ref"').replace("threads = 4", "threads = 1")
    text = text.replace("memory_mb = 1024", f"memory_mb = {memory_mb}")
    assert f"memory_mb = {memory_mb}" in text and 'variant = "ref"' in text
    path = tmp_path / f"small{memory_mb}.toml"
    path.write_text(text)
    return path


def test_the_estimate_counts_what_the_decoder_allocates(smollm2_path: Path, tmp_path: Path) -> None:
    """SmolLM2-135M: 30 layers, 3 KV heads of 64: the f16 KV cache is 30 x n_ctx x 2 x 192 x 2 bytes."""
    adapter = tmp_path / "a.gguf"
    adapter.write_bytes(b"\0" * 12345)
    e = estimate_memory(smollm2_path, n_ctx=2048, threads=2, adapters=[adapter])
    assert (e.model, e.kv_cache, e.adapters, e.runtime) == \
        (smollm2_path.stat().st_size, 30 * 2048 * 2 * 192 * 2, 12345, RUNTIME_BYTES)
    assert 12 * MIB < e.scratch < 40 * MIB  # logits of a 64-token batch (12 MiB), tokenizer, activations
    assert e.total == e.model + e.kv_cache + e.adapters + e.scratch + e.runtime
    assert e.kv_per_token == 30 * 2 * 192 * 2 + 4 * 2 * 3 + 4
    twice = estimate_memory(smollm2_path, n_ctx=4096, threads=2, adapters=[adapter])
    assert twice.total - e.total == 2048 * e.kv_per_token


def test_fit_and_no_fit(smollm2_path: Path, tmp_path: Path) -> None:
    e = estimate_memory(smollm2_path, n_ctx=2048)
    check_memory(load_profile("rpi4"), e, "x")  # 1024 MiB: fits
    small = load_profile(profile_file(tmp_path, 64))
    with pytest.raises(MemoryBudgetError) as info:
        check_memory(small, e, "or else")
    message = str(info.value)
    assert message.startswith(f"profile small64: the edge needs about {e.total / MIB:.0f} MiB (model 94 + KV cache "
                              "for 2048 tokens 45 + scratch ")
    assert "over its memory budget memory_mb = 64; even one token of context does not fit; or else" in message
    # the largest context that fits is reported, and it does fit; one more token does not
    budget = load_profile(profile_file(tmp_path, 200))
    with pytest.raises(MemoryBudgetError, match="a context of at most ([0-9]+) tokens would fit") as info:
        check_memory(budget, e, "x")
    fits = e.max_ctx(200 * MIB)
    assert f"at most {fits} tokens" in str(info.value) and 0 < fits < 2048
    check_memory(budget, estimate_memory(smollm2_path, n_ctx=fits), "x")
    with pytest.raises(MemoryBudgetError):
        check_memory(budget, estimate_memory(smollm2_path, n_ctx=fits + 1), "x")


def test_generate_refuses_a_model_over_budget(smollm2_path: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    small = profile_file(tmp_path, 64)
    common = ["generate", "--model", str(smollm2_path), "--prompt", "The capital of France is", "-n", "3", "--json"]
    assert main([*common, "--profile", str(small)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("floe: error: profile small64: the edge needs about ") and err.count("\n") == 1
    assert err.endswith("memory_mb = 64; even one token of context does not fit; use a smaller --ctx, or "
                        "--ignore-memory-budget to run anyway\n")
    assert main([*common, "--profile", str(small), "--ignore-memory-budget"]) == 0
    assert len(json.loads(capsys.readouterr().out)["ids"]) == 3
    assert main([*common, "--profile", str(profile_file(tmp_path, 1024))]) == 0  # fits
    assert len(json.loads(capsys.readouterr().out)["ids"]) == 3
    assert main([*common, "--profile", str(profile_file(tmp_path, 1024)), "--ctx", "1000000"]) == 2
    assert "KV cache for 1000000 tokens" in capsys.readouterr().err
    assert main([*common, "--ctx", "8192"]) == 0  # no profile, no budget
    capsys.readouterr()


def test_demo_refuses_an_edge_over_budget(smollm2_path: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Refused before anything starts (no cloud process, no network proxy)."""
    assert main(["demo", "--edge-model", "smollm2-135m", "--profile", str(profile_file(tmp_path, 64))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("floe: error: profile small64: ") and f"KV cache for {EDGE_CTX} tokens" in err
    assert err.endswith("use a smaller --edge-model, or --ignore-memory-budget to run anyway\n")


# VmHWM: this process image's peak RSS (ru_maxrss would also count the parent's, inherited through fork + exec)
CHILD = """
import json, sys
from floe_edge.cli import main
rc = main(sys.argv[1:])
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"rc": rc, "peak_kib": peak}), file=sys.stderr)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="reads the peak RSS from /proc/self/status")
def test_the_estimate_bounds_the_real_peak(smollm2_path: Path) -> None:
    """A real `floe generate` that fills its whole context peaks below the estimate, and not far below it."""
    prompt = " ".join(f"word{i}" for i in range(70))
    done = subprocess.run([sys.executable, "-c", CHILD, "generate", "--model", str(smollm2_path), "--prompt", prompt,
                           "-n", "8", "--ctx", "256", "--json"], capture_output=True, text=True, timeout=300)
    result = json.loads(done.stderr.strip().splitlines()[-1])
    assert result["rc"] == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["prompt_tokens"] > 128  # most of the context is used
    estimate = estimate_memory(smollm2_path, n_ctx=256).total
    peak = result["peak_kib"] * 1024
    assert 0.6 * estimate < peak <= estimate, (peak / MIB, estimate / MIB)
