"""The JSON sidecar beside an exported `.tflite` (`<model>.tflite.json`): what the model was made from and how.

It names the source GGUF (path and sha256), the LoRA adapters merged into it, the tokenizer's fingerprint (the same
hash the cloud's vocabulary frame carries: `cloud.protocol.vocab_fingerprint`), the KV cache size, the prefill
lengths, the quantization, and the .tflite's own size and sha256, so that a truncated or swapped file is caught
before the interpreter reads it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Union

from ..files import file_sha256

__all__ = ["FORMAT", "LiteRTError", "Sidecar", "file_sha256", "sidecar_path", "tokenizer_fingerprint"]

FORMAT = "floe-litert/1"
PathLike = Union[str, "os.PathLike[str]"]


class LiteRTError(RuntimeError):
    """A LiteRT model that cannot be exported or used: the message names the file and the problem."""


def sidecar_path(model: PathLike) -> Path:
    return Path(os.fspath(model) + ".json")


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """The vocabulary's identity: the fingerprint of its vocabulary frame (every token's bytes, control and
    end-of-generation flags), as `floe cloud serve` reports it for its own vocabulary."""
    from ..cloud.protocol import encode_vocab, vocab_fingerprint

    n = int(tokenizer.n_vocab)
    control = [bool(tokenizer.is_control(i)) for i in range(n)]
    tokens = [None if c else bytes(tokenizer.token_bytes(i)) for i, c in enumerate(control)]
    return vocab_fingerprint(encode_vocab(tokens, control, [bool(tokenizer.is_eog(i)) for i in range(n)]))


@dataclass
class Sidecar:
    source: str  # the GGUF's absolute path when exported (its tokenizer is read from there by default)
    source_sha256: str
    tokenizer_fingerprint: str
    n_vocab: int
    n_ctx: int  # positions a user may fill; the KV cache holds n_ctx + max(prefill) (padding of the last chunk)
    kv_cache_max: int
    prefill: list[int]  # the prefill signatures' lengths: prefill_<n>
    quant: str
    tflite_sha256: str
    tflite_bytes: int
    adapters: list[dict[str, Any]] = field(default_factory=list)  # {"path", "sha256", "scale"}
    config: dict[str, Any] = field(default_factory=dict)  # n_layers, n_kv_heads, head_dim, ...
    export: dict[str, Any] = field(default_factory=dict)  # seconds, peak_rss_mb, litert_torch version
    format: str = FORMAT

    def write(self, model: PathLike) -> Path:
        from ..files import write_atomic

        return write_atomic(sidecar_path(model), (json.dumps(asdict(self), indent=2) + "\n").encode())

    @classmethod
    def read(cls, model: PathLike) -> "Sidecar":
        path = sidecar_path(model)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise LiteRTError(f"{model}: no sidecar {path.name} beside it (export with `floe export litert`)") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise LiteRTError(f"{path}: cannot read the sidecar: {e}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise LiteRTError(f"{path}: not a {FORMAT} sidecar")
        try:
            return cls(**data)
        except TypeError as e:
            raise LiteRTError(f"{path}: malformed sidecar: {e}") from None
