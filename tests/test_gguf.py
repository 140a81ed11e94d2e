"""The GGUF reader is hardened: every crafted file (tests/gguf_crafted.py, after the public GGUF CVEs and
llama.cpp's test-gguf.cpp) raises GGUFError with the right reason, valid files round-trip exactly, every
truncation and random corruption either parses or raises GGUFError, never anything else."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import floe_edge
from floe_edge import _native

import gguf_crafted as gc

GGUFError = _native.GGUFError
GGUFFile = _native.GGUFFile
CASES = gc.crafted_cases()
BAD = [c for c in CASES if c.error is not None]
GOOD = [c for c in CASES if c.error is None]
CORPUS = Path(__file__).parent / "gguf_corpus"


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    path = tmp_path_factory.mktemp("gguf") / "reference.gguf"
    md, tensors = gc.write_reference_file(path, alignment=64)
    return path, md, tensors


def walk(f: Any) -> None:
    """Touch everything a parsed file exposes, and check what must hold for any file the reader accepts."""
    f.metadata
    assert f.alignment > 0 and f.alignment & (f.alignment - 1) == 0
    for t in f.tensors:
        assert 1 <= len(t["shape"]) <= 4 and all(d >= 0 for d in t["shape"])
        assert t["offset"] % f.alignment == 0
        block, size = type_size(t["type"])
        n = int(np.prod(t["shape"], dtype=object))
        assert t["shape"][0] % block == 0 and t["nbytes"] == n // block * size
        data = f.tensor_data(t["name"])
        assert data.dtype == np.uint8 and data.shape == (t["nbytes"],) and not data.flags.writeable
        data.sum()  # read every byte


def type_size(ggml_type: int) -> tuple[int, int]:
    import gguf

    if ggml_type == gguf.GGMLQuantizationType.Q8_1:
        return 32, 36  # gguf-py still lists the old float-scale block (40); ggml's block_q8_1 is 2 halves + 32
    return gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(ggml_type)]


def test_public_alias() -> None:
    assert floe_edge.GGUFError is GGUFError
    assert "GGUFError" in floe_edge.__all__
    assert issubclass(GGUFError, ValueError)


# ---- crafted files ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", BAD, ids=[c.name for c in BAD])
def test_crafted_rejected_from_bytes(case: gc.Case) -> None:
    with pytest.raises(GGUFError, match=case.error) as info:
        GGUFFile.from_bytes(case.data)
    assert str(info.value).startswith("invalid GGUF file: ")
    assert case.needle in str(info.value)


@pytest.mark.parametrize("case", BAD, ids=[c.name for c in BAD])
def test_crafted_rejected_from_path(case: gc.Case, tmp_path: Path) -> None:
    path = tmp_path / f"{case.name}.gguf"
    path.write_bytes(case.data)
    with pytest.raises(floe_edge.GGUFError, match=case.error):
        GGUFFile(str(path))


@pytest.mark.parametrize("case", GOOD, ids=[c.name for c in GOOD])
def test_crafted_valid(case: gc.Case, tmp_path: Path) -> None:
    path = tmp_path / f"{case.name}.gguf"
    path.write_bytes(case.data)
    a, b = GGUFFile.from_bytes(case.data), GGUFFile(str(path))
    walk(a)
    walk(b)
    assert a.metadata == b.metadata and a.tensors == b.tensors and a.file_size == b.file_size == len(case.data)


def test_large_cases() -> None:
    for case in gc.large_cases():
        if case.error is None:
            walk(GGUFFile.from_bytes(case.data))
        else:
            with pytest.raises(GGUFError, match=case.error):
                GGUFFile.from_bytes(case.data)


def test_crafted_details() -> None:
    f = GGUFFile.from_bytes(next(c for c in GOOD if c.name == "ok_zero_dim").data)
    assert {t["name"]: (t["shape"], t["nbytes"]) for t in f.tensors} == {"z": ([32, 0], 0), "w": ([8], 32)}
    assert f.tensor_data("z").shape == (0,)
    f = GGUFFile.from_bytes(next(c for c in GOOD if c.name == "ok_v2").data)
    assert f.version == 2
    f = GGUFFile.from_bytes(next(c for c in GOOD if c.name == "ok_alignment_1").data)
    assert f.alignment == 1 and f.tensor_data("b").tobytes() == gc.pattern(17)[12:]
    f = GGUFFile.from_bytes(next(c for c in GOOD if c.name == "ok_empty_array_and_string").data)
    assert f.metadata == {"general.architecture": "llama", "a.empty": [], "a.s": "", "a.es": ["", ""]}
    with pytest.raises(KeyError):
        f.tensor_data("nope")
    f = GGUFFile.from_bytes(next(c for c in GOOD if c.name == "ok_value_not_utf8").data)
    assert f.metadata["a.bytes"] == b"\xe4\xb8" and f.metadata["a.tokens"] == [b"\xff", "ok"]


def test_paths(tmp_path: Path) -> None:
    with pytest.raises(GGUFError, match="is not a regular file"):
        GGUFFile(str(tmp_path))
    with pytest.raises(GGUFError, match="cannot open .*No such file"):
        GGUFFile(str(tmp_path / "missing.gguf"))
    (tmp_path / "empty.gguf").write_bytes(b"")
    with pytest.raises(GGUFError, match="empty file"):
        GGUFFile(str(tmp_path / "empty.gguf"))
    with pytest.raises(GGUFError, match="is not a regular file"):
        GGUFFile("/dev/null")


def test_every_ggml_type_size() -> None:
    """The reader's type table agrees with ggml for every type the gguf package knows."""
    import gguf

    unsupported = {t for t in gguf.GGMLQuantizationType if t.name in ("NVFP4", "Q1_0")}  # newer than floe
    for t in gguf.GGMLQuantizationType:
        if t not in gguf.GGML_QUANT_SIZES:
            continue
        block, size = type_size(t)
        data = gc.gguf_bytes([gc.ARCH], [gc.tensor_info("w", [2 * block, 3], int(t), 0)], gc.pattern(6 * size))
        if t in unsupported:
            with pytest.raises(GGUFError, match=f"unknown type {int(t)}"):
                GGUFFile.from_bytes(data)
            continue
        (info,) = GGUFFile.from_bytes(data).tensors
        assert info["nbytes"] == 6 * size, t.name
        if block > 1:
            bad = gc.gguf_bytes([gc.ARCH], [gc.tensor_info("w", [block + 1], int(t), 0)], gc.pattern(6 * size))
            with pytest.raises(GGUFError, match=f"not a multiple of the block size {block}"):
                GGUFFile.from_bytes(bad)


def test_corpus_is_current(tmp_path: Path) -> None:
    """tests/gguf_corpus (the native ctest's input and the fuzz seeds) is what gguf_crafted.py writes."""
    gc.write_corpus(tmp_path)
    fresh = sorted(p.name for p in tmp_path.iterdir())
    assert fresh == sorted(p.name for p in CORPUS.iterdir()), "run: python tests/gguf_crafted.py tests/gguf_corpus"
    for name in fresh:
        if not name.startswith("ok_reference"):  # those come from the gguf package, whose output may vary
            assert (tmp_path / name).read_bytes() == (CORPUS / name).read_bytes(), name


# ---- valid files from the gguf package -------------------------------------------------------------------------

def test_reference_round_trip(reference: tuple[Path, dict[str, Any], dict[str, Any]]) -> None:
    path, md, tensors = reference
    for f in (GGUFFile(str(path)), GGUFFile.from_bytes(path.read_bytes())):
        assert f.version == 3 and f.alignment == 64 and f.file_size == path.stat().st_size
        got = f.metadata
        assert got == md
        assert all(type(got[k]) is type(v) for k, v in md.items())  # bools stay bools, ints stay ints
        assert [t["name"] for t in f.tensors] == list(tensors)
        for t in f.tensors:
            ggml_type, shape, raw = tensors[t["name"]]
            assert (t["type"], t["shape"], t["nbytes"]) == (ggml_type, shape, len(raw))
            assert t["offset"] % 64 == 0
            assert f.tensor_data(t["name"]).tobytes() == raw
        walk(f)


def test_reference_agrees_with_gguf_reader(reference: tuple[Path, dict[str, Any], dict[str, Any]]) -> None:
    import gguf

    path = reference[0]
    r, f = gguf.GGUFReader(path), GGUFFile(str(path))
    assert [(t.name, int(t.tensor_type), [int(d) for d in t.shape], int(t.n_bytes)) for t in r.tensors] == [
        (t["name"], t["type"], t["shape"], t["nbytes"]) for t in f.tensors]
    raw = path.read_bytes()
    for t in r.tensors:
        assert f.tensor_data(t.name).tobytes() == raw[t.data_offset:t.data_offset + t.n_bytes]


def _truncations_raise(data: bytes, required: int) -> None:
    """Every prefix shorter than `required` raises GGUFError; longer ones parse to the same content."""
    full = GGUFFile.from_bytes(data)
    md, tensors = full.metadata, full.tensors
    blobs = {t["name"]: full.tensor_data(t["name"]).tobytes() for t in tensors}
    for n in range(len(data)):
        try:
            f = GGUFFile.from_bytes(data[:n])
        except GGUFError:
            assert n < required, f"prefix of {n} >= {required} bytes was rejected"
            continue
        assert n >= required, f"prefix of {n} < {required} bytes parsed: {f.tensors}"
        assert f.metadata == md and f.tensors == tensors
        assert {t["name"]: f.tensor_data(t["name"]).tobytes() for t in tensors} == blobs


def test_truncation_every_offset_reference(reference: tuple[Path, dict[str, Any], dict[str, Any]]) -> None:
    import gguf

    path = reference[0]
    r = gguf.GGUFReader(path)
    required = max(t.data_offset + t.n_bytes for t in r.tensors)
    assert required < path.stat().st_size  # the writer pads after the last tensor: those prefixes are valid
    _truncations_raise(path.read_bytes(), required)


@pytest.mark.parametrize("name", ["ok_struct", "ok_v2", "ok_alignment_1", "ok_zero_dim", "ok_empty_array_and_string"])
def test_truncation_every_offset_crafted(name: str) -> None:
    data = next(c for c in GOOD if c.name == name).data
    _truncations_raise(data, len(data))


def test_truncation_every_offset_from_path(tmp_path: Path) -> None:
    data = gc.valid_struct_file()
    path = tmp_path / "t.gguf"
    for n in range(len(data)):
        path.write_bytes(data[:n])
        with pytest.raises(GGUFError):
            GGUFFile(str(path))


# ---- random corruption -----------------------------------------------------------------------------------------

def _parse_or_reject(data: bytes) -> None:
    try:
        f = GGUFFile.from_bytes(data)
    except GGUFError as e:
        assert str(e).startswith("invalid GGUF file: ")
        return
    walk(f)


_REF: dict[str, Any] = {}


def _reference_bytes() -> tuple[bytes, int]:
    """The reference file and where its data section starts."""
    if not _REF:
        import tempfile

        import gguf

        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / "r.gguf"
            gc.write_reference_file(p, alignment=64)
            _REF["data"], _REF["data_offset"] = p.read_bytes(), gguf.GGUFReader(p).data_offset
    return _REF["data"], _REF["data_offset"]


_FLIPS = st.lists(st.tuples(st.integers(0, 1 << 30), st.integers(0, 255)), min_size=1, max_size=8)


def _mutate(data: bytes, flips: list[tuple[int, int]], limit: int) -> bytes:
    buf = bytearray(data)
    for pos, byte in flips:
        buf[pos % limit] = byte
    return bytes(buf)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flips=_FLIPS, cut=st.one_of(st.none(), st.integers(0, 1 << 30)))
def test_random_flips_reference(flips: list[tuple[int, int]], cut: Optional[int]) -> None:
    data, data_offset = _reference_bytes()
    # three in four examples corrupt only the header, kvs and tensor infos: the interesting part
    mutated = _mutate(data, flips, data_offset if flips[0][0] % 4 else len(data))
    if cut is not None:
        mutated = mutated[: cut % (len(mutated) + 1)]
    _parse_or_reject(mutated)


@settings(max_examples=300, deadline=None)
@given(flips=_FLIPS, which=st.sampled_from([c.name for c in CASES]))
def test_random_flips_crafted(flips: list[tuple[int, int]], which: str) -> None:
    data = next(c for c in CASES if c.name == which).data
    if data:
        _parse_or_reject(_mutate(data, flips, len(data)))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=256))
def test_random_bytes_after_header(tail: bytes) -> None:
    for n_tensors, n_kv in ((0, 1), (1, 1), (1, 0), (2, 3)):
        _parse_or_reject(gc.header(n_tensors, n_kv) + tail)


# ---- a real model ----------------------------------------------------------------------------------------------

def test_smollm2(smollm2_path: Path) -> None:
    import gguf

    f = GGUFFile(str(smollm2_path))
    assert len(f.tensors) == 272
    md = f.metadata
    assert md["general.architecture"] == "llama"
    r = gguf.GGUFReader(smollm2_path)
    assert set(md) == set(r.fields) - {"GGUF.version", "GGUF.tensor_count", "GGUF.kv_count"}
    for key in md:
        want = r.fields[key].contents()
        if isinstance(want, float):
            assert md[key] == pytest.approx(want, rel=1e-7)
        elif isinstance(want, list) and want and isinstance(want[0], float):
            assert md[key] == pytest.approx(want, rel=1e-7)
        else:
            assert md[key] == want, key
    assert [(t.name, int(t.tensor_type), [int(d) for d in t.shape], int(t.n_bytes)) for t in r.tensors] == [
        (t["name"], t["type"], t["shape"], t["nbytes"]) for t in f.tensors]
    for t in (r.tensors[0], r.tensors[1], r.tensors[-1]):
        assert np.array_equal(f.tensor_data(t.name), np.asarray(t.data).view(np.uint8).reshape(-1))
    walk(f)
