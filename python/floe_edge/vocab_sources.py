"""Vocabularies as the vocabulary map reads them: the `TokenVocab` interface (our `_native.Tokenizer`, a
llama-cpp-python model through `LlamaCppVocab`), and the bytes each token of a source vocabulary adds to the text
(`source_token_bytes`, rule 1 of `vocab_map`): from GGUF metadata (SentencePiece or GPT-2 byte-level), any
`TokenVocab`, or a plain list of bytes.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional, Protocol, Union, runtime_checkable

__all__ = ["LlamaCppVocab", "TokenVocab", "as_edge_vocab", "source_token_bytes"]

_END_TEXTS = frozenset({
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>", "<EOT>", "_<EOT>",
    "<|end_of_text|>", "<end_of_utterance>", "</s>", "<eos>",
})  # end-of-generation texts, as llama.cpp reads them (it also ends Gemma 3 on its user-defined "</s>")


@runtime_checkable
class TokenVocab(Protocol):
    """What a vocabulary must offer (our `_native.Tokenizer` does; `LlamaCppVocab` wraps llama-cpp-python)."""

    @property
    def n_vocab(self) -> int: ...
    def token_bytes(self, id: int) -> bytes: ...
    def is_control(self, id: int) -> bool: ...
    def is_eog(self, id: int) -> bool: ...
    def tokenize(self, text: Union[str, bytes], add_bos: bool = ..., special: bool = ...) -> list[int]: ...


class LlamaCppVocab:
    """A llama-cpp-python model's vocabulary as a `TokenVocab` (any tokenizer llama.cpp has, e.g. Gemma's SPM).

    Load the model with `vocab_only=True` when only the vocabulary is needed."""

    _ATTR_UNKNOWN, _ATTR_UNUSED, _ATTR_CONTROL = 1 << 0, 1 << 1, 1 << 3  # llama_token_attr bits

    def __init__(self, llama: Any) -> None:
        import ctypes

        import llama_cpp

        self._lib = llama_cpp
        self._vocab = llama._model.vocab
        self._llama = llama  # keeps the vocabulary alive
        self._n = int(llama_cpp.llama_vocab_n_tokens(self._vocab))
        self._buf = (llama_cpp.llama_token * 512)()
        self._piece = ctypes.create_string_buffer(1024)
        eot, eos = int(llama_cpp.llama_vocab_eot(self._vocab)), int(llama_cpp.llama_vocab_eos(self._vocab))
        self.eos_id: Optional[int] = eos if eos >= 0 else None
        self.eot_id: Optional[int] = eot if eot >= 0 else None

    @property
    def n_vocab(self) -> int:
        return self._n

    def _check(self, id: int) -> int:
        if not 0 <= id < self._n:
            raise ValueError(f"token id {id} is out of range [0, {self._n})")
        return id

    def token_bytes(self, id: int) -> bytes:
        n = self._lib.llama_token_to_piece(self._vocab, self._check(id), self._piece, len(self._piece), 0, True)
        if n < 0:
            raise ValueError(f"token {id} is longer than {len(self._piece)} bytes")
        return self._piece.raw[:n]

    def is_control(self, id: int) -> bool:
        attr = int(self._lib.llama_vocab_get_attr(self._vocab, self._check(id)))
        return bool(attr & (self._ATTR_CONTROL | self._ATTR_UNKNOWN | self._ATTR_UNUSED))

    def is_eog(self, id: int) -> bool:
        return bool(self._lib.llama_vocab_is_eog(self._vocab, self._check(id)))

    def tokenize(self, text: Union[str, bytes], add_bos: bool = True, special: bool = True) -> list[int]:
        data = text.encode() if isinstance(text, str) else bytes(text)
        n = self._lib.llama_tokenize(self._vocab, data, len(data), self._buf, len(self._buf), add_bos, special)
        if n < 0:
            buf = (self._lib.llama_token * -n)()
            n = self._lib.llama_tokenize(self._vocab, data, len(data), buf, -n, add_bos, special)
            return list(buf[:n])
        return list(self._buf[:n])



def _gpt2_byte_decoder() -> dict[str, int]:
    """GPT-2's bytes_to_unicode, inverted: the character a byte-level vocabulary writes for each byte."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def _is_end_text(text: str) -> bool:
    return text in _END_TEXTS


def _from_gguf_metadata(md: Mapping[str, Any]) -> tuple[list[Optional[bytes]], list[bool]]:
    model = md.get("tokenizer.ggml.model")
    tokens = md.get("tokenizer.ggml.tokens")
    if not isinstance(tokens, list) or not tokens:
        raise ValueError("GGUF has no tokenizer.ggml.tokens")
    types = md.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    if len(types) != len(tokens):
        raise ValueError("tokenizer.ggml.token_type and tokenizer.ggml.tokens differ in length")
    end_ids = {md.get(f"tokenizer.ggml.{k}_token_id") for k in ("eos", "eot", "eom")}
    out: list[Optional[bytes]] = []
    ends: list[bool] = []
    if model == "llama":  # SentencePiece
        for i, (text, ty) in enumerate(zip(tokens, types)):
            is_end = ty in (3, 4) and (i in end_ids or _is_end_text(text))
            ends.append(is_end)
            if is_end:  # llama.cpp makes end tokens control (Gemma's user-defined "</s>" among them)
                out.append(None)
            elif ty == 1:
                out.append(text.replace("\u2581", " ").encode("utf-8"))
            elif ty == 4:
                out.append(text.encode("utf-8"))
            elif ty == 6 and len(text) == 6 and text.startswith("<0x") and text.endswith(">"):
                out.append(bytes([int(text[3:5], 16)]))
            else:
                out.append(None)
    elif model == "gpt2":
        dec = _gpt2_byte_decoder()
        for i, (text, ty) in enumerate(zip(tokens, types)):
            is_end = ty in (3, 4) and (i in end_ids or _is_end_text(text))
            ends.append(is_end)
            if is_end:
                out.append(None)
            elif ty == 1:
                try:
                    out.append(bytes(dec[c] for c in text))
                except KeyError:  # a character outside the byte map: not a byte-level token
                    out.append(None)
            elif ty == 4:
                out.append(text.encode("utf-8"))
            else:
                out.append(None)
    else:
        raise ValueError(f"unsupported tokenizer model {model!r} (supported: 'llama' SentencePiece, 'gpt2')")
    return out, ends


def _from_vocab(v: TokenVocab) -> tuple[list[Optional[bytes]], list[bool]]:
    out: list[Optional[bytes]] = []
    ends: list[bool] = []
    for i in range(v.n_vocab):
        ends.append(bool(v.is_eog(i)))
        out.append(None if v.is_control(i) else bytes(v.token_bytes(i)) or None)
    return out, ends


def source_token_bytes(source: Any) -> tuple[list[Optional[bytes]], list[bool]]:
    """(bytes of each token or None, is-end-of-generation flags) for a source vocabulary: a GGUF path,
    `_native.GGUFFile`, a `TokenVocab`, a llama_cpp.Llama, or a sequence of bytes/None."""
    from . import _native

    source = _coerce_source(source)
    if isinstance(source, (str, os.PathLike)):
        source = _native.GGUFFile(str(source))
    if isinstance(source, _native.GGUFFile):
        md = source.metadata
        if md.get("tokenizer.ggml.model") == "gpt2":
            try:  # our tokenizer applies llama.cpp's fix-ups (which tokens are control / end)
                return _from_vocab(_native.Tokenizer.from_gguf(source))
            except (ValueError, _native.GGUFError):
                pass
        return _from_gguf_metadata(md)
    if isinstance(source, TokenVocab):
        return _from_vocab(source)
    if isinstance(source, (list, tuple)):
        if not source:
            raise ValueError("empty source vocabulary")
        out = []
        for t in source:
            if t is not None and not isinstance(t, (bytes, bytearray)):
                raise ValueError("a source vocabulary list must hold bytes or None")
            out.append(None if t is None or len(t) == 0 else bytes(t))
        return out, [False] * len(out)
    raise ValueError(f"cannot read a vocabulary from {type(source).__name__}")



def as_edge_vocab(edge: Any) -> TokenVocab:
    """The edge vocabulary of a GPT-2 GGUF path, a TokenVocab, a llama_cpp.Llama or a NativeSLM."""
    from . import _native

    if isinstance(edge, (str, os.PathLike)):
        return _native.Tokenizer.from_gguf(str(edge))
    vocab = _as_token_vocab(edge)
    if vocab is None:
        raise ValueError(f"the edge vocabulary must be a tokenizer (TokenVocab), not {type(edge).__name__}")
    return vocab


def _is_llama(obj: Any) -> bool:
    """A llama_cpp.Llama (not imported unless used)."""
    return type(obj).__name__ == "Llama" and hasattr(obj, "_model") and hasattr(obj, "tokenize")


def _as_token_vocab(obj: Any) -> Optional[TokenVocab]:
    """A TokenVocab, a llama_cpp.Llama or a NativeSLM as a TokenVocab; None for anything else."""
    if isinstance(obj, TokenVocab):
        return obj
    if _is_llama(obj):
        return LlamaCppVocab(obj)
    if isinstance(getattr(obj, "tokenizer", None), TokenVocab):  # a NativeSLM
        return obj.tokenizer
    return None


def _coerce_source(source: Any) -> Any:
    vocab = _as_token_vocab(source)
    return vocab if vocab is not None else source
