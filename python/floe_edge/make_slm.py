"""`floe make-slm`: a smaller, faster edge model made of the first N transformer blocks of a base GGUF.

Tensors are copied byte for byte (no requantization), or dequantized to f32 (`f32=True`: exact for the block
formats; what a comparison of runtimes on the same weights needs); the metadata is the base's with block_count = N.
Such a model is a speed option for benchmarks: without healing it is far weaker than the full model.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional, Union

from .files import write_atomic

__all__ = ["make_slm"]

_BLOCK = re.compile(r"^blk\.(\d+)\.")


def make_slm(base: Union[str, os.PathLike], n_layers: Optional[int], out: Union[str, os.PathLike],
             f32: bool = False) -> Path:
    """Write the first n_layers blocks of base (None: all) to out (atomically: a temp file renamed into place),
    every tensor in f32 if `f32`."""
    try:
        import gguf
    except ImportError as e:  # an optional extra: the runtime itself needs only numpy
        raise RuntimeError("make-slm needs the gguf package: pip install 'floe-edge[tools]'") from e
    import numpy as np
    from gguf.quants import dequantize

    reader = gguf.GGUFReader(str(base))
    arch = str(reader.fields["general.architecture"].contents())
    count_key = f"{arch}.block_count"
    n_base = int(reader.fields[count_key].contents())
    n_layers = n_base if n_layers is None else n_layers
    if not 1 <= n_layers <= n_base:
        raise ValueError(f"--layers must be in 1..{n_base} for this model, got {n_layers}")

    def write(tmp: Path) -> None:
        writer = gguf.GGUFWriter(str(tmp), arch)
        for field in reader.fields.values():
            if field.name.startswith("GGUF.") or field.name == "general.architecture":
                continue  # written by GGUFWriter itself
            if f32 and field.name == "general.file_type":
                continue  # no longer the base's
            value = field.contents()
            if field.name == count_key:
                value = n_layers
            elif field.name == "general.name":
                value = f"{value} (first {n_layers} of {n_base} blocks)"
            vtype = field.types[0]
            if vtype == gguf.GGUFValueType.ARRAY:
                writer.add_key_value(field.name, value, vtype, sub_type=field.types[-1])
            else:
                writer.add_key_value(field.name, value, vtype)
        for t in reader.tensors:
            block = _BLOCK.match(t.name)
            if block and int(block.group(1)) >= n_layers:
                continue
            data = np.asarray(t.data)
            if f32:
                writer.add_tensor(t.name, dequantize(data, t.tensor_type).astype(np.float32))
            else:
                writer.add_tensor(t.name, data, raw_shape=data.shape, raw_dtype=t.tensor_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()

    return write_atomic(out, write)
