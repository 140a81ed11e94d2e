"""LiteRTSLM: the edge model as an exported `.tflite` (`floe export litert`) on LiteRT, behind the `EdgeModel`
interface, so the hybrid generator runs it unchanged.

The KV cache lives on the host: one array per layer for K and V, passed into the `prefill_<n>` / `decode`
signatures and taken back from their outputs. Every eval writes positions n_past.. and attends to positions up to
its own (the model's causal mask), so truncate() only moves n_past: the stale slots past it are overwritten before
anything reads them. A batched eval is cut into chunks of the prefill lengths, the last one padded (the padding's
slots lie past the real tokens: no real token sees them, the next eval overwrites them).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal, Optional, Sequence, Union

import numpy as np
import numpy.typing as npt

from .. import _native
from ..native_tokens import NativeTokens
from ..sampling import Sampler
from ..slm import GeneratedToken, GenerationStats, ModelClosedError, NativeSLM
from .merged import MergedAdapters
from .runtime import open_interpreter
from .sidecar import LiteRTError, Sidecar, file_sha256, tokenizer_fingerprint

__all__ = ["LiteRTSLM"]

PathLike = Union[str, "os.PathLike[str]"]


@dataclass
class _Signature:
    """One signature's subgraph and tensor indices, used through numpy views of the interpreter's own buffers (the
    SignatureRunner would copy every input in and every output out on each call: the whole KV cache, twice)."""

    interp: Any
    subgraph: int
    inputs: dict[str, int]
    outputs: dict[str, int]

    @classmethod
    def of(cls, interp: Any, name: str) -> "_Signature":
        runner = interp.get_signature_runner(name)
        interp._interpreter.AllocateTensors(runner._subgraph_index)  # allocate_tensors() did the first subgraph only
        return cls(interp, runner._subgraph_index, {k: d["index"] for k, d in runner.get_input_details().items()},
                   {k: d["index"] for k, d in runner.get_output_details().items()})

    def view(self, name: str, output: bool = False) -> npt.NDArray[Any]:
        """A view of the tensor's buffer: use it before the next invoke, never keep it."""
        index = (self.outputs if output else self.inputs)[name]
        return self.interp._interpreter.tensor(self.interp, index, self.subgraph)

    def set(self, name: str, value: npt.NDArray[Any]) -> None:
        self.interp._interpreter.SetTensor(self.inputs[name], value, self.subgraph)

    def zero_inputs(self) -> None:
        for name in self.inputs:
            self.view(name)[...] = 0

    def invoke(self) -> None:
        self.interp._interpreter.Invoke(self.subgraph)


class LiteRTSLM(NativeTokens, MergedAdapters):
    """An exported .tflite edge model on LiteRT (XNNPACK on `threads` CPU threads, or a gpu/npu delegate). Its
    adapters are those merged at export (`load_adapter` / `set_adapters` accept exactly those: merged.py).

    `tokenizer`: the GGUF whose tokenizer to use (default: the source GGUF the sidecar names); its fingerprint must
    match the sidecar's. `verify`: check the .tflite's sha256 against the sidecar (its size is always checked)."""

    def __init__(self, path: PathLike, threads: int = 1, *, tokenizer: Optional[PathLike] = None,
                 delegate: str = "none", delegate_library: Optional[str] = None, verify: bool = True) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no model file {self.path}")
        self.card = Sidecar.read(self.path)
        self._check_file(verify)
        self._tokenizer = self._open_tokenizer(tokenizer)
        self._interp: Optional[Any] = open_interpreter(str(self.path), threads, delegate, delegate_library)
        self.delegate = delegate
        sigs = self._interp.get_signature_list()
        missing = [s for s in ["decode", *(f"prefill_{n}" for n in self.card.prefill)] if s not in sigs]
        if missing:
            raise LiteRTError(f"{self.path}: no signature {', '.join(missing)} (has {', '.join(sorted(sigs))})")
        self._sigs = {name: _Signature.of(self._interp, name) for name in sigs}
        self._kv = {name: np.zeros(d["shape"], d["dtype"]) for name, d in
                    self._interp.get_signature_runner("decode").get_input_details().items()
                    if name.startswith("kv_cache_")}
        if not self._kv or any(a.ndim != 4 or a.shape[1] != self.card.kv_cache_max for a in self._kv.values()):
            raise LiteRTError(f"{self.path}: the decode signature has no kv_cache_* inputs of shape (1, "
                              f"{self.card.kv_cache_max}, heads, head_dim)")
        for sig in self._sigs.values():  # the slots past the filled ones are masked, but must not hold NaN bits
            sig.zero_inputs()
        self._tokens: list[int] = []
        self.last_stats = GenerationStats()

    def _check_file(self, verify: bool) -> None:
        size = self.path.stat().st_size
        if size != self.card.tflite_bytes:
            raise LiteRTError(f"{self.path}: {size} bytes, the sidecar says {self.card.tflite_bytes} (truncated or "
                              "replaced? export it again)")
        if verify and file_sha256(self.path) != self.card.tflite_sha256:
            raise LiteRTError(f"{self.path}: its sha256 differs from the sidecar's (corrupt or replaced? export it "
                              "again)")

    def _open_tokenizer(self, tokenizer: Optional[PathLike]) -> "_native.Tokenizer":
        source = Path(tokenizer) if tokenizer is not None else Path(self.card.source)
        if not source.is_file():
            raise LiteRTError(f"{self.path}: its tokenizer's GGUF {source} is not there; pass the source model "
                              "(tokenizer=..., --tokenizer)")
        try:
            tok = _native.Tokenizer.from_gguf(str(source))
        except (ValueError, _native.GGUFError) as e:
            raise LiteRTError(f"{source}: cannot read its tokenizer: {e}") from None
        if tokenizer_fingerprint(tok) != self.card.tokenizer_fingerprint:
            raise LiteRTError(f"{self.path}: exported with another tokenizer than {source}'s (fingerprint "
                              f"{self.card.tokenizer_fingerprint} vs {tokenizer_fingerprint(tok)})")
        return tok

    # -- lifecycle ---------------------------------------------------------------------------------
    def close(self) -> None:
        self._interp = None
        self._sigs = {}

    def __enter__(self) -> "LiteRTSLM":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _live(self) -> Any:
        if self._interp is None:
            raise ModelClosedError(f"model {self.path.name} is closed")
        return self._interp

    # -- properties --------------------------------------------------------------------------------
    @property
    def n_ctx(self) -> int:
        return int(self.card.n_ctx)

    @property
    def n_past(self) -> int:
        return len(self._tokens)

    @property
    def cached_tokens(self) -> list[int]:
        return list(self._tokens)

    # -- evaluation --------------------------------------------------------------------------------
    def eval(self, ids: Sequence[int], logits: Literal["all", "last"] = "all",
             timeout_s: Optional[float] = None) -> npt.NDArray[np.float32]:
        """Evaluate ids after the cached tokens: logits (len(ids), n_vocab), or (n_vocab,) with logits="last".
        ContextOverflowError when they do not fit; _native.Cancelled when timeout_s passes (checked between
        chunks: one interpreter call cannot be interrupted)."""
        arr = self._eval_ids(ids, logits)
        self._live()
        if self.n_past + arr.size > self.n_ctx:
            raise _native.ContextOverflowError(f"{self.n_past} cached + {arr.size} new tokens exceed n_ctx "
                                               f"{self.n_ctx}")
        deadline = None if timeout_s is None else time.perf_counter() + timeout_s
        out = []
        done = 0
        while done < arr.size:
            if deadline is not None and done and time.perf_counter() > deadline:
                raise _native.Cancelled("eval timed out")
            chunk = arr[done:done + max(self.card.prefill)]
            out.append(self._run(chunk))
            self._tokens.extend(int(t) for t in chunk)
            done += chunk.size
        result = np.concatenate(out) if len(out) > 1 else out[0]
        return np.ascontiguousarray(result[-1] if logits == "last" else result, dtype=np.float32)

    def _run(self, chunk: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        """One signature call for `chunk` at positions n_past..: its logits (len(chunk), n_vocab). Only the filled
        part of the KV cache goes in (positions < end) and only the new positions come back: the copies grow with
        the context, not with its maximum."""
        n, start = int(chunk.size), self.n_past
        width = 1 if n == 1 else min(p for p in self.card.prefill if p >= n)
        end = start + width
        tokens = np.zeros((1, width), np.int32)
        tokens[0, :n] = chunk
        sig = self._sigs["decode" if width == 1 else f"prefill_{width}"]
        sig.set("tokens", tokens)
        sig.set("input_pos", np.arange(start, end, dtype=np.int32))
        for name, host in self._kv.items():
            sig.view(name)[:, :end] = host[:, :end]
        sig.invoke()
        for name, host in self._kv.items():
            host[:, start:end] = sig.view(name, output=True)[:, start:end]
        return np.array(sig.view("logits", output=True)[0, :n], np.float32)

    def reset(self) -> None:
        self._live()
        self._tokens.clear()

    def truncate(self, n_past: int) -> None:
        """Forget the positions from n_past on."""
        self._live()
        if not 0 <= n_past <= self.n_past:
            raise ValueError(f"truncate: n_past must be in 0..{self.n_past}, got {n_past}")
        del self._tokens[n_past:]

    def generate(self, prompt: Union[str, Sequence[int]], n: int = 64, sampler: Optional[Sampler] = None,
                 stop_at_eog: bool = True) -> Iterator[GeneratedToken]:
        """NativeSLM's streaming generation (it uses only tokenize, eval, truncate/reset, cached_tokens, n_ctx and
        the tokenizer, which this class has too); stats in last_stats."""
        return NativeSLM.generate(self, prompt, n, sampler, stop_at_eog)  # type: ignore[arg-type]

