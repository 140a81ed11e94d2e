"""Crafted GGUF files for the hardening tests of floe's GGUF reader (src/floe_native/gguf.cpp).

Every malformed file is written byte by byte with `struct`, after the public GGUF vulnerabilities and the
handcrafted cases of llama.cpp's tests/test-gguf.cpp:

* CVE-2024-21802 (TALOS-2024-1912): tensor count / n_dims / dims overflow -> heap overflow in gguf_init_from_file
* CVE-2024-21825 (TALOS-2024-1913): metadata kv count and string-array handling
* CVE-2024-21836 (TALOS-2024-1914): tensor info n_dims overflow (ne[] written past GGML_MAX_DIMS)
* CVE-2024-23496 (TALOS-2024-1915): string length overflow (length + 1 wraps the allocation)
* CVE-2024-23605 (TALOS-2024-1916): array element count overflow (n * element size wraps)
* CVE-2025-49847 (GHSA-8wwf-w4qm-gpqr): vocab token text longer than INT32_MAX (negative length in the copy)
* CVE-2025-53630 (GHSA-vgg9-87g3-85w8): integer overflow in the data size / offset computation; its sibling
  GHSA-96jg-mvhq-q7q7 (n_elements x type size wraps to a tiny byte size)

Valid base files come from the `gguf` package (the reference writer) and from this module's own writer.

`crafted_cases()` returns `Case`s (name, bytes, the error the reader must report, or None for a valid file).
Run as a script to (re)write the corpus used by the native ctest and as the fuzz seed corpus:

    python tests/gguf_crafted.py tests/gguf_corpus

which writes one `<name>.gguf` per case plus MANIFEST.tsv (`file<TAB>ok|error<TAB>expected message substring`).
"""

from __future__ import annotations

import os
import re
import struct
import sys
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Sequence

# GGUF metadata value types.
U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
# ggml tensor types used here.
T_F32, T_F16, T_Q4_0, T_Q4_1, T_Q8_0, T_Q4_K, T_I8, T_I16, T_I32, T_I64, T_F64, T_BF16 = (
    0, 1, 2, 3, 8, 12, 24, 25, 26, 27, 28, 30)
# (block size, bytes per block) of the ggml types this module writes.
TYPE_SIZE = {T_F32: (1, 4), T_F16: (1, 2), T_Q4_0: (32, 18), T_Q4_1: (32, 20), T_Q8_0: (32, 34),
             T_Q4_K: (256, 144), T_I8: (1, 1), T_I16: (1, 2), T_I32: (1, 4), T_I64: (1, 8), T_F64: (1, 8),
             T_BF16: (1, 2)}

MASK64 = (1 << 64) - 1
INT64_MAX = (1 << 63) - 1
INT32_MAX = (1 << 31) - 1

_FMT = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f", BOOL: "<B",
        U64: "<Q", I64: "<q", F64: "<d"}


# ---------------------------------------------------------------------------------------------------------------
# A byte-level GGUF writer that can lie about anything.

def u32(v: int) -> bytes:
    return struct.pack("<I", v & 0xFFFFFFFF)


def u64(v: int) -> bytes:
    return struct.pack("<Q", v & MASK64)


def i64(v: int) -> bytes:
    return struct.pack("<q", v)


def gstr(s: str | bytes, length: Optional[int] = None) -> bytes:
    """A GGUF string: u64 length, then the bytes. `length` overrides the stored length (to lie)."""
    b = s.encode() if isinstance(s, str) else s
    return u64(len(b) if length is None else length) + b


def value(vtype: int, v: Any) -> bytes:
    """The encoding of one value of `vtype` (no type tag)."""
    if vtype == STRING:
        return gstr(v)
    return struct.pack(_FMT[vtype], v)


def kv(key: str | bytes, vtype: int, v: Any) -> bytes:
    return gstr(key) + u32(vtype) + value(vtype, v)


def kv_raw(key: str | bytes, vtype: int, payload: bytes) -> bytes:
    return gstr(key) + u32(vtype) + payload


def kv_array(key: str | bytes, elem_type: int, items: Sequence[Any], count: Optional[int] = None) -> bytes:
    return (gstr(key) + u32(ARRAY) + u32(elem_type) + u64(len(items) if count is None else count)
            + b"".join(value(elem_type, x) for x in items))


def tensor_info(name: str | bytes, dims: Sequence[int], ggml_type: int, offset: int,
                n_dims: Optional[int] = None) -> bytes:
    """A tensor info record; dims in ggml order (dims[0] contiguous). `n_dims` overrides the stored count."""
    return (gstr(name) + u32(len(dims) if n_dims is None else n_dims) + b"".join(i64(d) for d in dims)
            + u32(ggml_type) + u64(offset))


def header(n_tensors: int, n_kv: int, version: int = 3, magic: bytes = b"GGUF") -> bytes:
    return magic + u32(version) + u64(n_tensors) + u64(n_kv)


def pad_to(buf: bytes, alignment: int) -> bytes:
    return buf + b"\0" * (-len(buf) % alignment)


def gguf_bytes(kvs: Iterable[bytes] = (), tensors: Iterable[bytes] = (), data: bytes = b"", *, version: int = 3,
               n_kv: Optional[int] = None, n_tensors: Optional[int] = None, alignment: int = 32,
               magic: bytes = b"GGUF") -> bytes:
    """Header + kvs + tensor infos, padded to `alignment` when there are tensor infos, + data."""
    kvs, tensors = list(kvs), list(tensors)
    out = header(len(tensors) if n_tensors is None else n_tensors, len(kvs) if n_kv is None else n_kv, version,
                 magic) + b"".join(kvs) + b"".join(tensors)
    if tensors or data:
        out = pad_to(out, alignment)
    return out + data


def nbytes(ggml_type: int, dims: Sequence[int]) -> int:
    block, size = TYPE_SIZE[ggml_type]
    n = 1
    for d in dims:
        n *= d
    return n // block * size


def pattern(n: int, seed: int = 0) -> bytes:
    return bytes((seed + 7 * i) % 256 for i in range(n))


# ---------------------------------------------------------------------------------------------------------------
# Cases.

@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    error: Optional[str]  # regex the GGUFError message must match (re.search); None: the file is valid
    ref: str = ""         # what it models

    @property
    def needle(self) -> str:
        """A plain substring of the expected message (for the native test, which has no regex)."""
        if self.error is None:
            return ""
        return max(re.split(r"\.\*|\\.|[\\^$()|?+\[\]]", self.error), key=len)


ARCH = kv("general.architecture", STRING, "llama")  # 45 bytes: keeps the counts below plausible


def _base_tensors(alignment: int = 32) -> tuple[list[bytes], bytes]:
    """Two tensors (F32 [8, 2] and Q4_0 [64]) and their data section."""
    a = nbytes(T_F32, [8, 2])                        # 64
    b_off = (a + alignment - 1) // alignment * alignment
    infos = [tensor_info("blk.0.w", [8, 2], T_F32, 0), tensor_info("blk.0.q", [64], T_Q4_0, b_off)]
    data = pad_to(pattern(a, 1), alignment) + pattern(nbytes(T_Q4_0, [64]), 2)
    return infos, data


def valid_struct_file() -> bytes:
    """A small valid file from this module's writer: a few kvs of several types, two tensors."""
    infos, data = _base_tensors()
    kvs = [ARCH, kv("llama.block_count", U32, 1), kv_array("tokenizer.ggml.tokens", STRING, ["<s>", "</s>", "a"]),
           kv("general.flag", BOOL, 1)]
    return gguf_bytes(kvs, infos, data)


def _truncation_cases() -> list[Case]:
    """Truncation at every section boundary (test-gguf.cpp's 'not enough data' cases and friends)."""
    cases: list[Case] = []

    def cut(name: str, whole: bytes, keep: int, error: str) -> None:
        cases.append(Case(f"trunc_{name}", whole[:keep], error, "truncation (test-gguf.cpp)"))

    # header
    h = header(0, 0)
    cut("header_magic", h, 3, r"truncated while reading magic")
    cut("header_version", h, 6, r"truncated while reading version")
    cut("header_n_tensors", h, 12, r"truncated while reading tensor count")
    cut("header_n_kv", h, 20, r"truncated while reading metadata count")
    cut("header_counts_lie", header(1, 1), 24, r"tensor count 1 is impossible")

    # the second of two kvs is cut (the first one keeps the count plausible)
    def kv2(second: bytes, keep_in_second: int, name: str, error: str) -> None:
        whole = gguf_bytes([ARCH, second])
        cut(name, whole, 24 + len(ARCH) + keep_in_second, error)

    key = "llama.context_length"  # 20 bytes
    kv2(kv(key, U32, 2048), 4, "kv_key_length", r"truncated while reading metadata key")
    kv2(kv(key, U32, 2048), 8 + 10, "kv_key", r"truncated inside metadata key")
    kv2(kv(key, U32, 2048), 8 + 20 + 2, "kv_type", r"truncated while reading value type")
    kv2(kv(key, U32, 2048), 8 + 20 + 4 + 3, "kv_u32", r"truncated while reading u32")
    kv2(kv(key, F64, 1.5), 8 + 20 + 4 + 5, "kv_f64", r"truncated while reading f64")
    kv2(kv(key, STRING, "hello world"), 8 + 20 + 4 + 4, "kv_string_length", r"truncated while reading string value")
    kv2(kv(key, STRING, "hello world"), 8 + 20 + 4 + 8 + 5, "kv_string", r"truncated inside string value")
    arr = kv_array(key, U32, list(range(10)))
    kv2(arr, 8 + 20 + 4 + 2, "kv_array_type", r"truncated while reading array element type")
    kv2(arr, 8 + 20 + 4 + 4 + 6, "kv_array_length", r"truncated while reading array length")
    kv2(arr, 8 + 20 + 4 + 4 + 8 + 20, "kv_array_items", r"array of 10 elements runs past the end of the file")
    sarr = kv_array(key, STRING, ["aa", "bbbb", "cccccccc"])
    kv2(sarr, len(sarr) - 3, "kv_string_array_item", r"truncated inside string value")

    # the only tensor info is cut (the kv keeps the tensor count plausible)
    ti = tensor_info("token_embd.weight", [32, 4], T_F32, 0)  # name 17 bytes; 8+17+4+16+4+8 = 57
    whole = gguf_bytes([ARCH], [ti], pattern(512))
    start = 24 + len(ARCH)
    cut("tensor_name_length", whole, start + 5, r"truncated while reading tensor name")
    cut("tensor_name", whole, start + 8 + 9, r"truncated inside tensor name")
    cut("tensor_n_dims", whole, start + 8 + 17 + 1, r"truncated while reading tensor n_dims")
    cut("tensor_dims", whole, start + 8 + 17 + 4 + 12, r"truncated while reading tensor dim")
    cut("tensor_type", whole, start + 8 + 17 + 4 + 16 + 3, r"truncated while reading tensor type")
    cut("tensor_offset", whole, start + 8 + 17 + 4 + 16 + 4 + 7, r"truncated while reading tensor offset")
    end_infos = start + len(ti)
    assert end_infos % 32 != 0
    cut("before_data_section", whole, end_infos, r"data section starts past the end of the file")
    data_start = (end_infos + 31) // 32 * 32
    cut("data_empty", whole, data_start, r"tensor 'token_embd.weight' data lies outside the file")
    cut("data", whole, data_start + 511, r"tensor 'token_embd.weight' data lies outside the file")
    return cases


def _valid_cases(infos: list[bytes], data: bytes) -> list[Case]:
    """Valid files from our writer (error None)."""
    C = Case
    return [
        C("ok_minimal", header(0, 0), None, "header only"),
        C("ok_struct", valid_struct_file(), None, "small valid file"),
        C("ok_v2", gguf_bytes([ARCH], infos, data, version=2), None, "GGUF v2"),
        C("ok_alignment_1", gguf_bytes([ARCH, kv("general.alignment", U32, 1)],
                                       [tensor_info("a", [3], T_F32, 0), tensor_info("b", [5], T_I8, 12)],
                                       pattern(17), alignment=1), None, "test-gguf.cpp CUSTOM_ALIGN (alignment 1)"),
        C("ok_zero_dim", gguf_bytes([ARCH], [tensor_info("z", [32, 0], T_F32, 0), tensor_info("w", [8], T_F32, 0)],
                                    pattern(32)), None, "test-gguf.cpp TENSORS_ZERO_DIM (empty tensor)"),
        C("ok_reversed_offsets", gguf_bytes([ARCH], [infos[1].replace(b"blk.0.q", b"blk.0.r"),
                                                     infos[0].replace(b"blk.0.w", b"blk.0.v")], data),
          None, "tensor infos not in offset order"),
        C("ok_empty_array_and_string", gguf_bytes([ARCH, kv_array("a.empty", U32, []), kv("a.s", STRING, ""),
                                                   kv_array("a.es", STRING, ["", ""])]), None, "empty values"),
        C("ok_value_not_utf8", gguf_bytes([ARCH, kv("a.bytes", STRING, b"\xe4\xb8"),
                                           kv_array("a.tokens", STRING, [b"\xff", "ok"])]),
          None, "string values that are not UTF-8 (partial-UTF-8 tokens): kept as bytes"),
        C("ok_trailing_bytes", valid_struct_file() + b"\xff" * 40, None, "bytes after the last tensor"),
    ]


def _header_cases(infos: list[bytes], data: bytes) -> list[Case]:
    """Header."""
    C = Case
    return [
        C("empty", b"", r"empty file", "test-gguf.cpp HEADER_EMPTY"),
        C("bad_magic", b"FUGG" + header(0, 0)[4:], r"bad magic", "test-gguf.cpp HEADER_BAD_MAGIC"),
        C("bad_magic_ggml", b"lmgg" + b"\0" * 60, r"bad magic", "old ggml file"),
        C("bad_magic_short", b"GX", r"bad magic", "short non-GGUF file"),
        C("version_0", header(0, 0, version=0), r"unsupported version 0\b", "test-gguf.cpp HEADER_BAD_VERSION_0"),
        C("version_1", header(0, 0, version=1), r"unsupported version 1\b", "test-gguf.cpp HEADER_BAD_VERSION_1"),
        C("version_4", header(0, 0, version=4), r"unsupported version 4\b", "test-gguf.cpp BAD_VERSION_FUTURE"),
        C("version_huge", header(0, 0, version=0xFFFFFFFF), r"unsupported version 4294967295",
          "version 2^32-1"),
        C("version_big_endian", struct.pack(">4sIQQ", b"GGUF", 3, 0, 0), r"big-endian", "big-endian v3 file"),
        C("n_tensors_max", header(MASK64, 0), r"tensor count 18446744073709551615 is impossible",
          "test-gguf.cpp HEADER_BAD_N_TENSORS; CVE-2024-21802 (n_tensors * sizeof(info) wraps)"),
        C("n_tensors_wrap_calloc", header(1 << 59, 0) + b"\0" * 64, r"tensor count \d+ is impossible",
          "CVE-2024-21802: 2^59 * 32-byte infos wraps to 0"),
        C("n_kv_max", header(0, MASK64), r"metadata count 18446744073709551615 is impossible",
          "test-gguf.cpp HEADER_BAD_N_KV; CVE-2024-21825 (kv count)"),
        C("n_kv_wrap", header(0, (1 << 64) // 24 + 1) + ARCH, r"metadata count \d+ is impossible",
          "CVE-2024-21825: n_kv * sizeof(kv) wraps"),
        C("n_kv_lie_small", gguf_bytes([ARCH], n_kv=5), r"metadata count 5 is impossible", "n_kv larger than the file"),
        C("n_kv_lie_plausible", gguf_bytes([ARCH, ARCH.replace(b"architecture", b"architectur2")], n_kv=3),
          r"truncated while reading metadata key", "n_kv one more than present"),
    ]


def _metadata_cases(infos: list[bytes], data: bytes) -> list[Case]:
    """Metadata keys and values."""
    C = Case
    return [
        C("key_length_max", gguf_bytes([gstr("x", MASK64) + u32(U8) + b"\0" * 8]),
          r"metadata key length 18446744073709551615 exceeds the limit", "test-gguf.cpp KV_BAD_KEY_SIZE"),
        C("key_past_eof", gguf_bytes([gstr("abc", 4000) + u32(U8) + b"\0" * 4]), r"truncated inside metadata key",
          "key length past EOF"),
        C("key_empty", gguf_bytes([kv("", U32, 1)]), r"empty metadata key", "test-gguf.cpp KV_EMPTY_KEY"),
        C("key_not_utf8", gguf_bytes([kv(b"general.\xff\xfe", U32, 1)]), r"metadata key is not valid UTF-8",
          "key bytes that are not text"),
        C("key_utf8_surrogate", gguf_bytes([kv(b"k\xed\xa0\x80", U32, 1)]), r"metadata key is not valid UTF-8",
          "UTF-8-encoded surrogate"),
        C("key_duplicate", gguf_bytes([ARCH, kv("a.b", U32, 1), kv("a.b", U32, 2)]),
          r"duplicate metadata key 'a\.b'", "test-gguf.cpp KV_DUPLICATE_KEY"),
        C("value_type_13", gguf_bytes([kv_raw("a.b", 13, b"\0" * 8)]), r"unknown value type 13",
          "test-gguf.cpp KV_BAD_TYPE (GGUF_TYPE_COUNT)"),
        C("value_type_max", gguf_bytes([kv_raw("a.b", 0xFFFFFFFF, b"\0" * 8)]), r"unknown value type 4294967295",
          "value type -1"),
        C("bool_2", gguf_bytes([kv_raw("a.flag", BOOL, b"\x02")]), r"bool value 2 is neither 0 nor 1",
          "a bool with value 2"),
        C("bool_array_255", gguf_bytes([kv_raw("a.flags", ARRAY, u32(BOOL) + u64(3) + b"\x01\x00\xff")]),
          r"bool value 255 is neither 0 nor 1", "a bool array element with value 255"),
        C("string_length_max", gguf_bytes([kv_raw("a.s", STRING, gstr("abc", MASK64))]),
          r"string value length 18446744073709551615 exceeds the limit",
          "CVE-2024-23496: string length + 1 wraps to 0"),
        C("string_length_over_limit", gguf_bytes([kv_raw("a.s", STRING, gstr("abc", (1 << 24) + 1))]),
          r"string value length 16777217 exceeds the limit", "string longer than the limit"),
        C("string_past_eof", gguf_bytes([kv_raw("a.s", STRING, gstr("abc", 1000))]), r"truncated inside string value",
          "string length past EOF"),
        C("array_elem_type_13", gguf_bytes([kv_raw("a.arr", ARRAY, u32(13) + u64(1) + b"\0" * 8)]),
          r"unknown array element type 13", "unknown array element type"),
        C("array_nested", gguf_bytes([kv_raw("a.arr", ARRAY, u32(ARRAY) + u64(1) + u32(U8) + u64(1) + b"\0")]),
          r"nested arrays are not supported", "array of arrays"),
        C("array_count_max", gguf_bytes([kv_raw("a.arr", ARRAY, u32(U64) + u64(MASK64) + b"\0" * 16)]),
          r"array length 18446744073709551615 exceeds the limit", "CVE-2024-23605: n * 8 wraps"),
        C("array_count_wrap_u32", gguf_bytes([kv_raw("a.arr", ARRAY, u32(U32) + u64(1 << 62) + b"\0" * 16)]),
          r"array length 4611686018427387904 exceeds the limit", "CVE-2024-23605: 2^62 * 4 wraps to 0"),
        C("array_count_past_eof", gguf_bytes([kv_array("a.arr", I64, [1, 2], count=1 << 20)]),
          r"array of 1048576 elements runs past the end of the file", "array count within limits, past EOF"),
        C("array_string_count_past_eof", gguf_bytes([kv_array("a.arr", STRING, ["x"], count=1 << 24)]),
          r"array of 16777216 elements runs past the end of the file", "CVE-2024-21825: string array count"),
        C("array_string_length_past_eof",
          gguf_bytes([kv_raw("a.arr", ARRAY, u32(STRING) + u64(3) + gstr("ab") + gstr("cd", 1000) + gstr("ef"))]),
          r"truncated inside string value", "CVE-2024-21825: string array with a length past EOF"),
        C("array_string_length_max",
          gguf_bytes([kv_raw("a.arr", ARRAY, u32(STRING) + u64(2) + gstr("ab") + gstr("cd", MASK64))]),
          r"string value length 18446744073709551615 exceeds the limit",
          "CVE-2024-21825 / CVE-2024-23496: string array element length wraps"),
        C("vocab_token_negative_int32",
          gguf_bytes([ARCH, kv("tokenizer.ggml.model", STRING, "gpt2"),
                      kv_raw("tokenizer.ggml.tokens", ARRAY,
                             u32(STRING) + u64(3) + gstr("a") + gstr("b", 1 << 31) + gstr("c"))]),
          r"string value length 2147483648 exceeds the limit",
          "CVE-2025-49847: token text of 2^31 bytes (negative as int32)"),
        C("vocab_token_past_eof",
          gguf_bytes([ARCH, kv_raw("tokenizer.ggml.tokens", ARRAY,
                                   u32(STRING) + u64(3) + gstr("a") + gstr("b") + gstr("c", 100000))]),
          r"truncated inside string value", "CVE-2025-49847: last token's text past EOF"),
        C("vocab_tokens_count_lie",
          gguf_bytes([ARCH, kv_array("tokenizer.ggml.tokens", STRING, ["a", "b"], count=100000)]),
          r"array of 100000 elements runs past the end of the file", "CVE-2025-49847: vocab size lie"),
    ]


def _alignment_cases(infos: list[bytes], data: bytes) -> list[Case]:
    """General.alignment."""
    C = Case
    return [
        C("alignment_0", gguf_bytes([kv("general.alignment", U32, 0)]), r"general\.alignment 0 is not a power of two",
          "test-gguf.cpp KV_BAD_ALIGN"),
        C("alignment_13", gguf_bytes([kv("general.alignment", U32, 13)]), r"general\.alignment 13 is not a power",
          "test-gguf.cpp TENSORS_BAD_ALIGN / DATA_BAD_ALIGN (13)"),
        C("alignment_3", gguf_bytes([kv("general.alignment", U32, 3)]), r"general\.alignment 3 is not a power",
          "alignment not a power of two"),
        C("alignment_2_31", gguf_bytes([kv("general.alignment", U32, 1 << 31)]),
          r"general\.alignment 2147483648 is not a power of two up to 65536", "alignment that wraps GGML_PAD"),
        C("alignment_i32", gguf_bytes([kv("general.alignment", I32, 32)]), r"general\.alignment must be a u32",
          "test-gguf.cpp KV_WRONG_TYPE_ALIGN"),
        C("alignment_u64", gguf_bytes([kv("general.alignment", U64, 32)]), r"general\.alignment must be a u32",
          "alignment with a wrong type"),
        C("alignment_string", gguf_bytes([kv("general.alignment", STRING, "32")]),
          r"general\.alignment must be a u32", "alignment as a string"),
        C("alignment_array", gguf_bytes([kv_array("general.alignment", U32, [32])]),
          r"general\.alignment must be a u32", "alignment as an array"),
    ]


def _tensor_infos_cases(infos: list[bytes], data: bytes) -> list[Case]:
    """Tensor infos."""
    C = Case
    return [
        C("tensor_name_length_max", gguf_bytes([ARCH], [gstr("w", MASK64) + b"\0" * 40]),
          r"tensor name length 18446744073709551615 exceeds the limit", "tensor name length wraps"),
        C("tensor_name_64", gguf_bytes([ARCH], [tensor_info("t" * 64, [4], T_F32, 0)], pattern(16)),
          r"tensor name length 64 exceeds the limit", "test-gguf.cpp TENSORS_BAD_NAME_SIZE (>= GGML_MAX_NAME)"),
        C("tensor_name_empty", gguf_bytes([ARCH], [tensor_info("", [4], T_F32, 0)], pattern(16)),
          r"empty tensor name", "empty tensor name"),
        C("tensor_name_not_utf8", gguf_bytes([ARCH], [tensor_info(b"w\xc3(", [4], T_F32, 0)], pattern(16)),
          r"tensor name is not valid UTF-8", "tensor name bytes that are not text"),
        C("n_dims_0", gguf_bytes([ARCH], [tensor_info("w", [], T_F32, 0)], pattern(16)), r"'w' has 0 dims",
          "n_dims 0"),
        C("n_dims_5", gguf_bytes([ARCH], [tensor_info("w", [1, 1, 1, 1, 1], T_F32, 0)], pattern(16)),
          r"'w' has 5 dims", "test-gguf.cpp TENSORS_BAD_N_DIMS; CVE-2024-21836"),
        C("n_dims_max", gguf_bytes([ARCH], [tensor_info("w", [4], T_F32, 0, n_dims=0xFFFFFFFF)], pattern(16)),
          r"'w' has 4294967295 dims", "CVE-2024-21836: n_dims = 2^32-1, ne[] written out of bounds"),
        C("dim_negative", gguf_bytes([ARCH], [tensor_info("w", [-1], T_F32, 0)], pattern(16)),
          r"'w' has a negative dimension", "test-gguf.cpp TENSORS_BAD_SHAPE"),
        C("dim_negative_second", gguf_bytes([ARCH], [tensor_info("w", [4, -(1 << 62)], T_F32, 0)], pattern(16)),
          r"'w' has a negative dimension", "negative dim that makes a small positive product"),
        C("dims_product_overflow", gguf_bytes([ARCH], [tensor_info("w", [4 * INT32_MAX, 4 * INT32_MAX], T_F32, 0)],
                                              pattern(16)),
          r"'w' has too many elements", "test-gguf.cpp TENSORS_NE_TOO_BIG; CVE-2024-21802"),
        C("dims_product_wraps_to_small",
          gguf_bytes([ARCH], [tensor_info("w", [1 << 32, 1 << 32, 2], T_F32, 0)], pattern(16)),
          r"'w' has too many elements", "CVE-2024-21802: 2^32 * 2^32 * 2 wraps to 0 elements"),
        C("dims_product_int64_max", gguf_bytes([ARCH], [tensor_info("w", [INT64_MAX, 3], T_I8, 0)], pattern(16)),
          r"'w' has too many elements", "product above INT64_MAX"),
        C("nbytes_wraps_to_zero", gguf_bytes([ARCH], [tensor_info("w", [1 << 62], T_F32, 0)], pattern(16)),
          r"'w' byte size overflows", "CVE-2025-53630 / GHSA-96jg: 2^62 f32 elements = 2^64 bytes wraps to 0"),
        C("nbytes_wraps_i64", gguf_bytes([ARCH], [tensor_info("w", [1 << 31, 1 << 30], T_I64, 0)], pattern(64)),
          r"'w' byte size overflows", "test-gguf.cpp TENSORS_NBYTES_TOO_BIG (I64)"),
        C("nbytes_wraps_to_small", gguf_bytes([ARCH], [tensor_info("w", [(1 << 62) + 8], T_F32, 0)], pattern(64)),
          r"'w' byte size overflows", "2^62+8 f32 elements = 32 bytes after wrapping"),
        C("stride_overflow_zero_dim", gguf_bytes([ARCH], [tensor_info("w", [1 << 62, 0], T_F32, 0)], pattern(16)),
          r"'w' byte size overflows", "empty tensor whose row stride (2^62 * 4) overflows"),
        C("type_unknown_42", gguf_bytes([ARCH], [tensor_info("w", [32], 42, 0)], pattern(64)),
          r"'w' has unknown type 42", "test-gguf.cpp TENSORS_BAD_TYPE (GGML_TYPE_COUNT)"),
        C("type_removed_4", gguf_bytes([ARCH], [tensor_info("w", [32], 4, 0)], pattern(64)),
          r"'w' has unknown type 4\b", "removed type Q4_2"),
        C("type_max", gguf_bytes([ARCH], [tensor_info("w", [32], 0xFFFFFFFF, 0)], pattern(64)),
          r"'w' has unknown type 4294967295", "type -1 (negative index into the type traits)"),
        C("block_size_q4_0", gguf_bytes([ARCH], [tensor_info("w", [33, 2], T_Q4_0, 0)], pattern(64)),
          r"'w' row of 33 is not a multiple of the block size 32", "ne[0] not a multiple of the block size"),
        C("block_size_q4_k", gguf_bytes([ARCH], [tensor_info("w", [128], T_Q4_K, 0)], pattern(256)),
          r"'w' row of 128 is not a multiple of the block size 256", "ne[0] not a multiple of 256"),
        C("offset_unaligned", gguf_bytes([ARCH], [tensor_info("w", [4], T_F32, 1)], pattern(64)),
          r"'w' offset is not aligned", "offset not aligned"),
        C("offset_inconsistent_align",
          gguf_bytes([ARCH], [tensor_info("a", [3], T_F32, 0), tensor_info("b", [4], T_F32, 12)], pattern(64)),
          r"'b' offset is not aligned", "test-gguf.cpp TENSORS_INCONSISTENT_ALIGN"),
        C("offset_max_aligned", gguf_bytes([ARCH], [tensor_info("w", [4], T_F32, MASK64 - 31)], pattern(64)),
          r"'w' data lies outside the file", "test-gguf.cpp TENSORS_BAD_OFFSET: offset + size wraps"),
        C("offset_wraps_to_start", gguf_bytes([ARCH], [tensor_info("w", [16], T_F32, (1 << 64) - 32)], pattern(64)),
          r"'w' data lies outside the file", "offset + 64 wraps to 32"),
        C("data_outside", gguf_bytes([ARCH], [tensor_info("w", [16], T_F32, 32)], pattern(64)),
          r"'w' data lies outside the file", "tensor data past EOF"),
        C("data_one_byte_short", gguf_bytes([ARCH], infos, data[:-1]),
          r"'blk\.0\.q' data lies outside the file", "test-gguf.cpp DATA_NOT_ENOUGH_DATA"),
        C("data_mem_size_overflow",
          gguf_bytes([ARCH], [tensor_info("a", [0x7FFFFFFFFFFFFFC0], T_I8, 0),
                              tensor_info("b", [0x7FFFFFFFFFFFFFC0], T_I8, 0x7FFFFFFFFFFFFFC0)], pattern(32)),
          r"'a' data lies outside the file", "test-gguf.cpp DATA_MEM_SIZE_OVERFLOW; CVE-2025-53630 (sum wraps)"),
        C("data_size_sum_wraps",
          gguf_bytes([ARCH], [tensor_info("a", [1 << 62], T_I8, 0), tensor_info("b", [1 << 62], T_I8, 1 << 62),
                              tensor_info("c", [1 << 62], T_I8, 2 << 62), tensor_info("d", [1 << 62], T_I8, 3 << 62)],
                     pattern(32)),
          r"'a' data lies outside the file", "CVE-2025-53630: four 2^62-byte tensors sum to 2^64 = 0"),
        C("tensors_overlap", gguf_bytes([ARCH], [tensor_info("a", [16], T_F32, 0), tensor_info("b", [16], T_F32, 32)],
                                        pattern(96)),
          r"tensors 'a' and 'b' overlap", "overlapping tensors"),
        C("tensors_same_offset", gguf_bytes([ARCH], [tensor_info("b", [8], T_F32, 0), tensor_info("a", [8], T_F32, 0)],
                                            pattern(32)),
          r"tensors 'a' and 'b' overlap", "two tensors at the same offset"),
        C("tensor_inside_other", gguf_bytes([ARCH], [tensor_info("big", [64], T_F32, 0),
                                                     tensor_info("small", [8], T_F32, 64)], pattern(256)),
          r"tensors 'big' and 'small' overlap", "a tensor inside another"),
        C("tensor_duplicate_name", gguf_bytes([ARCH], [tensor_info("w", [8], T_F32, 0),
                                                      tensor_info("w", [8], T_F32, 32)],
                                              pattern(64)),
          r"duplicate tensor 'w'", "test-gguf.cpp TENSORS_DUPLICATE_NAME"),
    ]


def crafted_cases() -> list[Case]:
    infos, data = _base_tensors()
    groups = (_valid_cases, _header_cases, _metadata_cases, _alignment_cases, _tensor_infos_cases)
    return [c for group in groups for c in group(infos, data)] + _truncation_cases()


def large_cases() -> list[Case]:
    """Cases that need big files (kept out of the committed corpus): the reader's limits."""
    C = Case
    n = 9_000_000  # u8 elements held as std::variant values (40 bytes on 64-bit, 32 on armv7): over 256 MiB on both
    return [
        C("n_tensors_over_limit", header(1 << 16 | 1, 0) + b"\0" * (40 * ((1 << 16) + 1)),
          r"tensor count 65537 is impossible or exceeds the limit", "more tensors than the limit"),
        C("n_kv_over_limit", header(0, 1 << 16 | 1) + b"\0" * (12 * ((1 << 16) + 1)),
          r"metadata count 65537 is impossible or exceeds the limit", "more kvs than the limit"),
        C("key_length_64k", gguf_bytes([gstr("k" * 65536) + u32(U8) + b"\0"]),
          r"metadata key length 65536 exceeds the limit", "key longer than the spec's 2^16-1"),
        C("key_length_64k_minus_1", gguf_bytes([gstr("k" * 65535) + u32(U8) + b"\0"]), None, "longest key"),
        C("string_at_limit", gguf_bytes([kv("a.s", STRING, "s" * (1 << 24))]), None, "string of 16 MiB"),
        C("metadata_memory", gguf_bytes([kv_raw("a.big", ARRAY, u32(U8) + u64(n) + bytes(n))]),
          r"metadata exceeds the size limit", "array whose in-memory form is too large"),
    ]


# ---------------------------------------------------------------------------------------------------------------
# Valid files written by the reference writer (the `gguf` package).

def write_reference_file(path: str | os.PathLike[str], alignment: int = 64) -> tuple[dict[str, Any], dict[str, Any]]:
    """Write a valid GGUF with the `gguf` package: every value type, arrays of each, several tensors of several
    ggml types (F32, F16, BF16, F64, I8, I16, I32, I64, Q8_0, Q4_0, Q4_1, Q4_K), custom alignment.

    Returns (metadata, tensors): what the reader must report. metadata values are as floe's binding returns them
    (ints, floats, bools, str); tensors map name -> (ggml type, shape in ggml order, raw bytes).
    """
    import gguf
    import numpy as np

    VT = gguf.GGUFValueType
    w = gguf.GGUFWriter(os.fspath(path), "llama")
    if alignment != 32:
        w.add_custom_alignment(alignment)
    md: dict[str, Any] = {"general.architecture": "llama"}
    if alignment != 32:
        md["general.alignment"] = alignment

    f32 = lambda x: float(np.float32(x))  # noqa: E731
    scalars = [("t.u8", 200, VT.UINT8), ("t.i8", -100, VT.INT8), ("t.u16", 60000, VT.UINT16),
               ("t.i16", -30000, VT.INT16), ("t.u32", 4000000000, VT.UINT32), ("t.i32", -2000000000, VT.INT32),
               ("t.f32", 0.1, VT.FLOAT32), ("t.bool", True, VT.BOOL), ("t.bool_false", False, VT.BOOL),
               ("t.string", "héllo, wörld ✓", VT.STRING), ("t.u64", (1 << 64) - 1, VT.UINT64),
               ("t.i64", -(1 << 63), VT.INT64), ("t.f64", 1e300, VT.FLOAT64), ("t.empty_string", "", VT.STRING)]
    for key, val, vt in scalars:
        w.add_key_value(key, val, vt)
        md[key] = f32(val) if vt == VT.FLOAT32 else val
    arrays = [("a.u8", [0, 1, 255], VT.UINT8), ("a.i8", [-128, 0, 127], VT.INT8), ("a.u16", [0, 65535], VT.UINT16),
              ("a.i16", [-32768, 32767], VT.INT16), ("a.u32", [0, 1, 4294967295], VT.UINT32),
              ("a.i32", [-(1 << 31), (1 << 31) - 1], VT.INT32), ("a.f32", [0.5, -1.25, 3.1], VT.FLOAT32),
              ("a.bool", [True, False, True], VT.BOOL), ("a.string", ["", "a", "ünïcode", "<|im_end|>"], VT.STRING),
              ("a.u64", [0, (1 << 64) - 1], VT.UINT64), ("a.i64", [-(1 << 63), (1 << 63) - 1], VT.INT64),
              ("a.f64", [1e-300, -2.5], VT.FLOAT64)]
    for key, val, vt in arrays:
        w.add_key_value(key, val, VT.ARRAY, sub_type=vt)
        md[key] = [f32(x) for x in val] if vt == VT.FLOAT32 else list(val)
    w.add_token_list(["<s>", "</s>", "▁the", "Ġworld"])
    md["tokenizer.ggml.tokens"] = ["<s>", "</s>", "▁the", "Ġworld"]

    rng = np.random.default_rng(7)
    tensors: dict[str, Any] = {}

    def add(name: str, arr: Any, ggml_type: int, shape: list[int], raw_dtype: Any = None) -> None:
        w.add_tensor(name, arr, raw_dtype=raw_dtype)
        tensors[name] = (ggml_type, shape, arr.tobytes())

    add("f32.2d", rng.standard_normal((3, 8)).astype(np.float32), 0, [8, 3])
    add("f16.1d", rng.standard_normal(10).astype(np.float16), 1, [10])
    add("f64.3d", rng.standard_normal((2, 3, 4)), 28, [4, 3, 2])
    add("i8.4d", rng.integers(-128, 127, (2, 1, 3, 5), dtype=np.int8), 24, [5, 3, 1, 2])
    add("i16", rng.integers(-1000, 1000, 7, dtype=np.int16), 25, [7])
    add("i32", rng.integers(-10**9, 10**9, (2, 3), dtype=np.int32), 26, [3, 2])
    add("i64", rng.integers(-10**18, 10**18, 3, dtype=np.int64), 27, [3])
    Q = gguf.GGMLQuantizationType
    add("q8_0", rng.integers(0, 256, (4, 2 * 34), dtype=np.uint8), 8, [64, 4], Q.Q8_0)
    add("q4_0", rng.integers(0, 256, (3, 2 * 18), dtype=np.uint8), 2, [64, 3], Q.Q4_0)
    add("q4_1", rng.integers(0, 256, (2, 20), dtype=np.uint8), 3, [32, 2], Q.Q4_1)
    add("q4_k", rng.integers(0, 256, (2, 144), dtype=np.uint8), 12, [256, 2], Q.Q4_K)
    add("bf16", rng.integers(0, 256, (2, 2 * 6), dtype=np.uint8), 30, [6, 2], Q.BF16)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return md, tensors


def write_corpus(outdir: str | os.PathLike[str]) -> list[str]:
    """Write every crafted case and the reference file(s) into outdir, plus MANIFEST.tsv. Returns file names."""
    os.makedirs(outdir, exist_ok=True)
    rows = []
    for c in crafted_cases():
        fname = f"{c.name}.gguf" if c.error is None else f"bad_{c.name}.gguf"
        with open(os.path.join(outdir, fname), "wb") as fh:
            fh.write(c.data)
        rows.append((fname, "ok" if c.error is None else "error", c.needle))
    for alignment in (64, 32):
        fname = f"ok_reference_align{alignment}.gguf"
        write_reference_file(os.path.join(outdir, fname), alignment=alignment)
        rows.append((fname, "ok", ""))
    with open(os.path.join(outdir, "MANIFEST.tsv"), "w", encoding="utf-8") as fh:
        fh.write("# file\tok|error\texpected substring of the GGUFError message (written by tests/gguf_crafted.py)\n")
        for row in sorted(rows):
            fh.write("\t".join(row) + "\n")
    return [r[0] for r in rows]


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "gguf_corpus")
    names = write_corpus(out)
    print(f"wrote {len(names)} files to {out}")
