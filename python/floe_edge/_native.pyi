from typing import Optional

import numpy as np
import numpy.typing as npt

def variants() -> list[str]: ...
def active_variant() -> str: ...
def cpu_features() -> dict[str, object]: ...
def quantize(x: npt.NDArray[np.float32], qtype: str, variant: Optional[str] = None) -> npt.NDArray[np.uint8]: ...
def dequantize(buf: npt.NDArray[np.uint8], qtype: str, n: int) -> npt.NDArray[np.float32]: ...
def matvec(
    w_buf: npt.NDArray[np.uint8],
    qtype: str,
    rows: int,
    cols: int,
    x: npt.NDArray[np.float32],
    variant: Optional[str] = None,
    threads: int = 1,
) -> npt.NDArray[np.float32]: ...
def matmul(
    w_buf: npt.NDArray[np.uint8],
    qtype: str,
    rows: int,
    cols: int,
    x: npt.NDArray[np.float32],
    variant: Optional[str] = None,
    threads: int = 1,
) -> npt.NDArray[np.float32]: ...
def rmsnorm(
    x: npt.NDArray[np.float32], weight: npt.NDArray[np.float32], eps: float = 1e-5, variant: Optional[str] = None
) -> npt.NDArray[np.float32]: ...
def softmax(x: npt.NDArray[np.float32], variant: Optional[str] = None) -> npt.NDArray[np.float32]: ...
def swiglu(
    gate: npt.NDArray[np.float32], up: npt.NDArray[np.float32], variant: Optional[str] = None
) -> npt.NDArray[np.float32]: ...
def rope(
    x: npt.NDArray[np.float32], pos: int, base: float = 10000.0, neox: bool = False, variant: Optional[str] = None
) -> npt.NDArray[np.float32]: ...
