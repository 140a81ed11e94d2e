"""The text side of the edge backends that run on floe's native tokenizer (NativeSLM on a GGUF, LiteRTSLM on a
.tflite exported from one): ids to and from text, end of generation, streaming detokenization, and the checks of
the ids an eval() is given."""

from __future__ import annotations

from typing import Literal, Sequence, Union

import numpy as np
import numpy.typing as npt

from . import _native

__all__ = ["NativeTokens"]


class NativeTokens:
    """Mixin: the class sets `self._tokenizer` (a `_native.Tokenizer`) before any of these is used."""

    _tokenizer: "_native.Tokenizer"

    @property
    def tokenizer(self) -> "_native.Tokenizer":
        return self._tokenizer

    @property
    def n_vocab(self) -> int:
        return int(self._tokenizer.n_vocab)

    def tokenize(self, text: Union[str, bytes], add_bos: bool = True, special: bool = True) -> list[int]:
        return list(self._tokenizer.tokenize(text, add_bos, special))

    def detokenize(self, ids: Sequence[int], special: bool = False) -> bytes:
        return bytes(self._tokenizer.detokenize(list(ids), special))

    def is_eog(self, id: int) -> bool:
        """Does this token end the generation (end of text, end of turn)?"""
        return bool(self._tokenizer.is_eog(id))

    def text_stream(self) -> "_native.StreamDecoder":
        """A decoder of generated ids to text, as UTF-8 characters complete."""
        return _native.StreamDecoder(self._tokenizer)

    def _eval_ids(self, ids: Sequence[int], logits: Literal["all", "last"]) -> npt.NDArray[np.int64]:
        """ids as a checked 1-D array for eval(): ValueError for a bad `logits`, an empty or nested sequence, or an id
        outside the vocabulary."""
        if logits not in ("all", "last"):
            raise ValueError("logits must be 'all' or 'last'")
        arr = np.asarray(ids, dtype=np.int64)
        if arr.ndim != 1 or arr.size == 0:
            raise ValueError("ids must be a non-empty 1-D sequence of token ids")
        if arr.min() < 0 or arr.max() >= self.n_vocab:
            raise ValueError(f"token ids must be in 0..{self.n_vocab - 1}")
        return arr
