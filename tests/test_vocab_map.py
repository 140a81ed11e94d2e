"""Cross-vocabulary mapping (floe_edge.vocab_map) between the real SmolLM2-135M (GPT-2 byte-level BPE, 49152) and
Gemma 3 270M (SentencePiece, 262144) vocabularies, both pulled once by session fixtures.

The acceptance test runs each real model on prose and Python code, takes its top-20 log-probs per position,
remaps them into the other vocabulary, and checks how much of the top-20 probability mass survives (printed
with -s: mean and per-position minimum, and how much of it landed on exact single-token matches).
"""
from __future__ import annotations

import logging
import math
import os
import pathlib
import sys
import textwrap

import numpy as np
import pytest

from floe_edge import NativeSLM, _native
from floe_edge.vocab_map import (ABSENT_LOGPROB, Kind, LlamaCppVocab, Remapped, VocabMap, source_token_bytes,
                                 vocab_maps_dir)

PROSE = ("The river had frozen early that year, and the ferry stood idle at the landing while the town waited for "
         "the ice to thicken. Children tested it with sticks; the old men argued about whether it would hold a "
         "cart by Christmas. In the evenings the lamps along the quay made long yellow stripes on the grey "
         "surface, and from the bakery came the smell of bread and cinnamon that everyone remembered.")
CODE = pathlib.Path(textwrap.__file__).read_text()[2000:3500]  # Python source with indentation and docstrings
POSITIONS = 32  # per text, per direction: 64 positions each way


# -- fixtures -----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def vmap_dir(tmp_path_factory) -> pathlib.Path:
    return tmp_path_factory.mktemp("vocab_maps")


@pytest.fixture(scope="session")
def smol_tok(smollm2_path):
    return _native.Tokenizer.from_gguf(str(smollm2_path))


@pytest.fixture(scope="session")
def gemma_vocab(gemma3_path, llama_cpp):
    """Gemma's tokenizer as an edge vocabulary: llama.cpp's (ours is GPT-2 byte-level only)."""
    return LlamaCppVocab(llama_cpp.Llama(str(gemma3_path), vocab_only=True, verbose=False))


@pytest.fixture(scope="session")
def g2s(gemma3_path, smol_tok, vmap_dir) -> VocabMap:
    VocabMap.clear_memory_cache()  # built here, into vmap_dir, even if another test built it already
    return VocabMap.between(gemma3_path, smol_tok, cache_dir=vmap_dir)


@pytest.fixture(scope="session")
def s2g(smollm2_path, gemma_vocab, vmap_dir) -> VocabMap:
    return VocabMap.between(smollm2_path, gemma_vocab, cache_dir=vmap_dir)


@pytest.fixture(scope="session")
def gemma_types(gemma3_path):
    md = _native.GGUFFile(str(gemma3_path)).metadata
    return md["tokenizer.ggml.tokens"], np.asarray(md["tokenizer.ggml.token_type"])


def top_k(logits: np.ndarray, k: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Top-k ids (int32) and their log-probs (float32, log-softmax over the whole vocabulary) per row."""
    logits = np.asarray(logits, np.float64)
    lp = logits - logits.max(-1, keepdims=True)
    lp -= np.log(np.exp(lp).sum(-1, keepdims=True))
    idx = np.argsort(-lp, -1, kind="stable")[:, :k]
    return idx.astype(np.int32), np.take_along_axis(lp, idx, -1).astype(np.float32)


def mass_report(m: VocabMap, ids: np.ndarray, lps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per position: fraction of the top-k mass kept, and fraction that landed on exact single-token matches."""
    kept, exact = [], []
    for i, lp in zip(ids, lps):
        r = m.remap(i, lp)
        p = np.exp(lp.astype(np.float64))
        assert math.isclose(r.mass, p.sum(), rel_tol=1e-6)
        assert math.isclose(r.mass_kept, np.exp(r.logprobs.astype(np.float64)).sum(), rel_tol=1e-5)
        assert len(set(r.ids.tolist())) == r.ids.size and (r.ids >= 0).all() and (r.ids < m.n_edge).all()
        kept.append(r.kept)
        exact.append(p[m.kinds[i] == Kind.EXACT].sum() / p.sum())
    return np.asarray(kept), np.asarray(exact)


# -- source vocabularies -> bytes -------------------------------------------------------------------------------

def test_gemma_token_bytes_match_llama_cpp(gemma3_path, gemma_vocab):
    """Decoding Gemma's SentencePiece vocabulary from GGUF metadata (U+2581 -> space, <0xNN> -> byte, control /
    unused -> None) gives exactly what llama.cpp outputs for every one of the 262144 tokens."""
    ours, our_ends = source_token_bytes(gemma3_path)
    ref, ref_ends = source_token_bytes(gemma_vocab)
    assert len(ours) == 262144
    assert ours == ref
    assert our_ends == ref_ends
    assert [i for i, e in enumerate(our_ends) if e] == [1, 106, 212]  # <eos>, <end_of_turn>, "</s>" (llama.cpp)
    assert ours[238 + 0xE2] == b"\xe2"  # <0xE2>


def test_smollm2_token_bytes_match_llama_cpp(smollm2_path, llama_cpp):
    ours = source_token_bytes(smollm2_path)
    ref = source_token_bytes(llama_cpp.Llama(str(smollm2_path), vocab_only=True, verbose=False))
    assert ours == ref


def test_gpt2_metadata_decoder_matches_tokenizer(smollm2_path, smol_tok):
    """The pure-Python GPT-2 byte-map decoder (used when our tokenizer cannot load a GGUF) agrees with ours."""
    from floe_edge.vocab_sources import _from_gguf_metadata

    meta, _ = _from_gguf_metadata(_native.GGUFFile(str(smollm2_path)).metadata)
    assert all(meta[i] == smol_tok.token_bytes(i) for i in range(smol_tok.n_vocab) if not smol_tok.is_control(i))


# -- the maps -----------------------------------------------------------------------------------------------------

def _check_rules(m: VocabMap, src: list, edge_bytes, end_id: int, src_ends: list, edge_set: set) -> None:
    """Every entry follows the rule of its kind; edge_set: the bytes of the edge's non-control tokens."""
    for i in range(m.n_source):
        e, kind = int(m.table[i]), Kind(int(m.kinds[i]))
        if kind == Kind.NONE:  # no bytes, or not even their first byte is an edge token
            assert e == -1 and (src[i] is None or not any(src[i][:n] in edge_set for n in range(1, len(src[i]))))
        elif kind == Kind.END:
            assert src_ends[i] and e == end_id
        elif kind == Kind.EXACT:
            assert edge_bytes(e) == src[i]
        else:
            eb = edge_bytes(e)
            assert src[i].startswith(eb) and len(eb) < len(src[i]), (i, src[i], eb)


def test_gemma_to_smollm2_rules(g2s, gemma3_path, smol_tok, gemma_types):
    src, ends = source_token_bytes(gemma3_path)
    assert g2s.n_source == 262144 and g2s.n_edge == 49152
    assert g2s.table.dtype == np.int32 and not g2s.table.flags.writeable and g2s.table.flags.c_contiguous
    edge_set = {smol_tok.token_bytes(i) for i in range(smol_tok.n_vocab) if not smol_tok.is_control(i)}
    _check_rules(g2s, src, smol_tok.token_bytes, smol_tok.eos_id, ends, edge_set)
    s = g2s.stats()
    assert s["exact"] > 40000 and s["end"] == 3
    tokens, types = gemma_types
    none = np.flatnonzero(g2s.table == -1)
    # unmapped: control / unknown / unused tokens, and tokens starting with one of the 21 bytes SmolLM2 has no
    # token for (rare control characters; 0xC0 0xC1 0xF1 0xF2 0xF5-0xFF, invalid or rare in UTF-8)
    missing = {b for b in range(256) if bytes([b]) not in edge_set}
    assert len(missing) == 21 and sorted(src[i][0] for i in none if types[i] == 6) == sorted(missing)
    assert all(types[i] in (2, 3, 5) if src[i] is None else src[i][0] in missing for i in none)
    assert len([i for i in none if types[i] == 1]) == 3  # "\x13", "\x14", U+BFABA
    # first-token rule: a Gemma word SmolLM2 does not have is credited to SmolLM2's first token of it
    gid = tokens.index("\u2581understanding")
    first = smol_tok.tokenize(b" understanding", add_bos=False, special=False)[0]
    assert g2s.table[gid] == first and g2s.kinds[gid] == (Kind.EXACT if len(
        smol_tok.tokenize(b" understanding", add_bos=False, special=False)) == 1 else Kind.PREFIX)
    assert g2s.table[tokens.index("\u2581the")] == smol_tok.tokenize(b" the", add_bos=False, special=False)[0]
    # a byte token of a partial UTF-8 sequence maps to SmolLM2's token for that byte (not to U+FFFD)
    assert smol_tok.token_bytes(int(g2s.table[238 + 0xE2])) == b"\xe2"
    assert g2s.table[tokens.index("<end_of_turn>")] == smol_tok.eos_id == 2  # -> <|im_end|>
    assert g2s.table[tokens.index("<bos>")] == -1 and g2s.table[tokens.index("<pad>")] == -1


def test_smollm2_to_gemma_rules(s2g, smollm2_path, smol_tok, gemma_vocab):
    src, ends = source_token_bytes(smollm2_path)
    assert s2g.n_source == 49152 and s2g.n_edge == 262144
    edge_set = {gemma_vocab.token_bytes(i) for i in range(gemma_vocab.n_vocab) if not gemma_vocab.is_control(i)}
    _check_rules(s2g, src, gemma_vocab.token_bytes, 106, ends, edge_set)
    assert np.flatnonzero(s2g.table == -1).tolist() == [i for i in range(49152) if src[i] is None and not ends[i]]
    assert s2g.stats()["exact"] > 45000
    nl = smol_tok.tokenize(b"\n", add_bos=False, special=False)[0]
    assert s2g.table[nl] == gemma_vocab.tokenize(b"\n", add_bos=False, special=False)[0] == 107  # not <0x0A>
    assert s2g.table[2] == 106  # <|im_end|> -> <end_of_turn>
    # SmolLM2 joins a newline with the indentation after it; Gemma does not: the first token is "\n"
    indent = smol_tok.tokenize(b"x\n        y", add_bos=False, special=False)[1]
    assert smol_tok.token_bytes(indent).startswith(b"\n    ") and s2g.table[indent] == 107
    assert s2g.kinds[indent] == Kind.PREFIX


# -- acceptance: real distributions keep their mass -------------------------------------------------------------

def _report(label: str, kept: np.ndarray, exact: np.ndarray) -> None:
    print(f"\n{label}: top-20 mass kept mean {kept.mean():.4f} min {kept.min():.4f}; on exact matches mean "
          f"{exact.mean():.4f} min {exact.min():.4f} ({kept.size} positions)", file=sys.stderr)


def test_gemma_top20_mapped_to_smollm2_keeps_mass(g2s, gemma3_path, llama_cpp, record_property):
    llm = llama_cpp.Llama(str(gemma3_path), logits_all=True, n_threads=1, n_ctx=256, verbose=False)
    ids, lps = [], []
    for text in (PROSE, CODE):
        toks = llm.tokenize(text.encode(), add_bos=True)[:POSITIONS + 1]
        llm.reset()
        llm.eval(toks)
        i, lp = top_k(np.asarray(llm.scores[1:len(toks)]))  # positions after <bos>
        ids.append(i)
        lps.append(lp)
    ids, lps = np.concatenate(ids), np.concatenate(lps)
    kept, exact = mass_report(g2s, ids, lps)
    _report("Gemma 3 -> SmolLM2", kept, exact)
    record_property("gemma_to_smollm2_kept_mean", float(kept.mean()))
    record_property("gemma_to_smollm2_kept_min", float(kept.min()))
    assert kept.size == 2 * POSITIONS
    assert kept.mean() >= 0.90
    assert exact.mean() >= 0.90  # measured 0.99: most of the mass needs no first-token approximation

    # the same top-20 as an OpenAI-compatible server would send it: keyed by strings, partial UTF-8 as U+FFFD
    src, _ = source_token_bytes(gemma3_path)
    by_string = []
    for i, lp in zip(ids, lps):
        pairs = [((src[t] or b"").decode("utf-8", "replace"), float(x)) for t, x in zip(i.tolist(), lp)]
        r, rs = g2s.remap(i, lp), g2s.map_strings(pairs)
        assert math.isclose(rs.mass, r.mass, rel_tol=1e-5)
        if all(src[t] is not None and "\ufffd" not in p for t, (p, _) in zip(i.tolist(), pairs)):
            assert rs.ids.tolist() == r.ids.tolist()  # clean strings map exactly like ids
        by_string.append(rs.kept)
    print(f"  as strings: kept mean {np.mean(by_string):.4f} min {np.min(by_string):.4f}", file=sys.stderr)
    assert np.mean(by_string) >= 0.90


def test_smollm2_top20_mapped_to_gemma_keeps_mass(s2g, smollm2_path, smol_tok, record_property):
    ids, lps = [], []
    with NativeSLM(smollm2_path, threads=1) as slm:
        for text in (PROSE, CODE):
            toks = smol_tok.tokenize(text, add_bos=False, special=False)[:POSITIONS]
            slm.reset()
            i, lp = top_k(slm.eval(toks))
            ids.append(i)
            lps.append(lp)
    kept, exact = mass_report(s2g, np.concatenate(ids), np.concatenate(lps))
    _report("SmolLM2 -> Gemma 3", kept, exact)
    record_property("smollm2_to_gemma_kept_mean", float(kept.mean()))
    record_property("smollm2_to_gemma_kept_min", float(kept.min()))
    assert kept.size == 2 * POSITIONS
    assert kept.mean() >= 0.90
    assert exact.mean() >= 0.80  # lower on code: SmolLM2's "\n" + indentation tokens are prefix-mapped


# -- remap --------------------------------------------------------------------------------------------------------

def test_remap_merges_drops_and_sorts(g2s, gemma_types, smol_tok):
    tokens, _ = gemma_types
    the = tokens.index("\u2581the")
    # two Gemma tokens with the same first SmolLM2 token (an exact match and a longer word): merged
    b = tokens.index("\u2581under")
    assert g2s.kinds[b] == Kind.EXACT
    a = next(i for i in np.flatnonzero(g2s.table == g2s.table[b]) if i != b)
    ids = np.array([a, the, b, tokens.index("<bos>"), tokens.index("<pad>")], np.int32)
    lps = np.log(np.array([0.25, 0.3, 0.1, 0.05, 1e-9])).astype(np.float32)
    lps[4] = ABSENT_LOGPROB
    r = g2s.remap(ids, lps)
    assert isinstance(r, Remapped) and r.ids.dtype == np.int32 and r.logprobs.dtype == np.float32
    assert r.ids.tolist() == [int(g2s.table[a]), int(g2s.table[the])]
    np.testing.assert_allclose(np.exp(r.logprobs), [0.35, 0.3], rtol=1e-5)
    assert math.isclose(r.mass, 0.7, rel_tol=1e-5) and math.isclose(r.mass_kept, 0.65, rel_tol=1e-5)
    assert math.isclose(r.kept, 0.65 / 0.7, rel_tol=1e-5)
    # -inf is absent too; int64 ids and float64 log-probs are accepted
    r2 = g2s.remap(np.array([the, a], np.int64), np.array([-np.inf, -1.0]))
    assert r2.ids.tolist() == [int(g2s.table[a])] and math.isclose(r2.mass, math.exp(-1), rel_tol=1e-9)
    empty = g2s.remap(np.zeros(0, np.int32), np.zeros(0, np.float32))
    assert empty.ids.size == 0 and empty.kept == 1.0


@pytest.mark.parametrize("ids, lps", [
    (np.array([1.0, 2.0]), np.array([-1.0, -2.0], np.float32)),        # float ids
    (np.array([True, False]), np.array([-1.0, -2.0], np.float32)),     # bool ids
    (np.array([1, 2], np.int32), np.array([-1, -2], np.int32)),        # integer log-probs
    (np.array([[1, 2]], np.int32), np.array([[-1.0, -2.0]], np.float32)),  # 2-D
    (np.array([1, 2, 3], np.int32), np.array([-1.0, -2.0], np.float32)),   # lengths differ
    (np.array([1, 262144], np.int32), np.array([-1.0, -2.0], np.float32)),  # id out of range
    (np.array([-1, 2], np.int32), np.array([-1.0, -2.0], np.float32)),     # negative id
    (np.array([1, 2], np.int32), np.array([np.nan, -2.0], np.float32)),    # NaN
    (np.array([1, 2], np.int32), np.array([0.5, -2.0], np.float32)),       # not a log-prob
    (np.array(["a", "b"]), np.array([-1.0, -2.0], np.float32)),            # strings
    (np.array([1, 2], np.int32), np.array([0.0, 0.0], np.float32)),        # adds up to 2 (llama.cpp + spec.)
])
def test_remap_rejects_bad_input(g2s, ids, lps):
    with pytest.raises(ValueError):
        g2s.remap(ids, lps)


# -- OpenAI-style strings -----------------------------------------------------------------------------------------

def _first(tok, b: bytes) -> int:
    return tok.tokenize(b, add_bos=False, special=False)[0]


def test_map_strings_rules(g2s, smol_tok):
    the, world = _first(smol_tok, b" the"), _first(smol_tok, b" world")
    # SmolLM2 has tokens for partial UTF-8 sequences: the longest one that starts b"\xe2\x96"
    e296 = max((i for i in range(smol_tok.n_vocab) if not smol_tok.is_control(i)
                and b"\xe2\x96".startswith(smol_tok.token_bytes(i))), key=lambda i: len(smol_tok.token_bytes(i)))
    # completions: a dict keyed by strings; -9999 is absent; "" and U+FFFD have no known bytes
    r = g2s.map_strings({" the": math.log(0.4), " world": math.log(0.2), "": math.log(0.1),
                         "\ufffd": math.log(0.05), " nothing": -9999.0, " gone": float("-inf")})
    assert r.ids.tolist() == [the, world]
    np.testing.assert_allclose(np.exp(r.logprobs), [0.4, 0.2], rtol=1e-6)
    assert math.isclose(r.mass, 0.75, rel_tol=1e-9) and math.isclose(r.mass_kept, 0.6, rel_tol=1e-9)
    assert math.isclose(r.undecodable, 0.15, rel_tol=1e-9)
    # pairs: a repeated string (a collision) and a multi-token string merge by log-sum-exp onto one id
    r = g2s.map_strings([(" the", math.log(0.3)), (" the", math.log(0.1)), (" the world", math.log(0.2))])
    assert r.ids.tolist() == [the]
    assert math.isclose(float(np.exp(r.logprobs[0])), 0.6, rel_tol=1e-6)
    # a partial UTF-8 token rendered as "x\ufffd": the known prefix maps; a bytes key is taken as it is
    r = g2s.map_strings([(" the\ufffd", -1.0), (b"\xe2\x96", -2.0), (bytearray(b" world"), -3.0)])
    assert r.ids.tolist() == [the, e296, world]
    # OpenAI chat entries carry bytes; they win over the (lossy) string
    r = g2s.map_strings([{"token": "\ufffd", "logprob": -0.5, "bytes": [0xE2, 0x96]},
                         {"token": " world", "logprob": -1.5, "bytes": None},
                         {"token": "", "logprob": -2.5}])
    assert r.ids.tolist() == [e296, world] and math.isclose(r.undecodable, math.exp(-2.5), rel_tol=1e-9)
    assert g2s.map_strings({}).ids.size == 0


@pytest.mark.parametrize("bad", [
    {" the": float("nan")}, {" the": 0.7}, {" the": "x"}, {" the": True}, {3: -1.0},
    [(" the",)], [{"token": " the"}], [{"token": " the", "logprob": -1.0, "bytes": "abc"}],
    [{"token": " the", "logprob": -1.0, "bytes": [300]}], " the", 5,
    {" the": 0.0, " a": 0.0}, {" the": -0.1, " a": -0.5},  # probabilities adding up to more than 1
])
def test_map_strings_rejects_bad_input(g2s, bad):
    with pytest.raises(ValueError):
        g2s.map_strings(bad)


# -- building from other sources, cache ---------------------------------------------------------------------------

SMALL = [b" the", b"\xe2", None, b"", b"hello world", b"\xe2\x96\x81", b"\x00"]


def test_list_source(smol_tok, tmp_path):
    m = VocabMap.between(SMALL, smol_tok, cache_dir=tmp_path)
    assert m.table[0] == _first(smol_tok, b" the") and m.kinds[0] == Kind.EXACT
    assert smol_tok.token_bytes(int(m.table[1])) == b"\xe2"
    assert m.table[2] == m.table[3] == -1 and m.kinds[2] == m.kinds[3] == Kind.NONE
    assert m.table[4] == _first(smol_tok, b"hello") and m.kinds[4] == Kind.PREFIX
    assert smol_tok.token_bytes(int(m.table[5])) in (b"\xe2\x96\x81", b"\xe2\x96", b"\xe2")
    with pytest.raises(ValueError):
        VocabMap.between([], smol_tok, cache_dir=tmp_path)
    with pytest.raises(ValueError):
        VocabMap.between(["not bytes"], smol_tok, cache_dir=tmp_path)
    with pytest.raises(ValueError):
        VocabMap.between(SMALL, object(), cache_dir=tmp_path)


def test_other_edge_forms(smollm2_path, smol_tok, llama_cpp, tmp_path):
    """A NativeSLM, a GGUF path and llama.cpp's tokenizer of the same model give the same table."""
    ref = VocabMap.between(SMALL, smol_tok, cache=False)
    with NativeSLM(smollm2_path) as slm:
        assert np.array_equal(VocabMap.between(SMALL, slm, cache=False).table, ref.table)
    assert np.array_equal(VocabMap.between(SMALL, smollm2_path, cache=False).table, ref.table)
    llama = llama_cpp.Llama(str(smollm2_path), vocab_only=True, verbose=False)
    assert np.array_equal(VocabMap.between(SMALL, llama, cache=False).table, ref.table)


def test_cache_roundtrip_and_corruption(smol_tok, tmp_path, caplog):
    VocabMap.clear_memory_cache()
    first = VocabMap.between(SMALL, smol_tok, cache_dir=tmp_path)
    files = list(tmp_path.iterdir())
    assert not first.from_cache and [f.name for f in files] == [f"{first.key}.vmap"]
    assert VocabMap.between(SMALL, smol_tok, cache_dir=tmp_path).from_cache  # memory
    VocabMap.clear_memory_cache()
    second = VocabMap.between(SMALL, smol_tok, cache_dir=tmp_path)  # disk
    assert second.from_cache and np.array_equal(second.table, first.table)
    assert np.array_equal(second.kinds, first.kinds)

    path = files[0]
    good = path.read_bytes()
    table_at = len(good) - 32 - 5 * len(SMALL)
    corruptions = {
        "flipped table entry": good[:table_at] + bytes([good[table_at] ^ 1]) + good[table_at + 1:],
        "truncated": good[:-7],
        "empty": b"",
        "not ours": b"\0" * len(good),
    }
    for what, data in corruptions.items():
        path.write_bytes(data)
        VocabMap.clear_memory_cache()
        with caplog.at_level(logging.WARNING, logger="floe_edge.vocab_map"):
            caplog.clear()
            again = VocabMap.between(SMALL, smol_tok, cache_dir=tmp_path)
        assert not again.from_cache, what
        assert np.array_equal(again.table, first.table), what
        assert path.read_bytes() == good, what  # rewritten
        assert "rebuilding" in caplog.text, what
    # a well-formed file for other vocabularies under this name (checksum fine, header wrong) is not trusted
    import hashlib
    import struct

    body = bytearray(good[:-32])
    struct.pack_into("<I", body, 16, 12345)  # n_edge
    path.write_bytes(bytes(body) + hashlib.sha256(bytes(body)).digest())
    VocabMap.clear_memory_cache()
    assert not VocabMap.between(SMALL, smol_tok, cache_dir=tmp_path).from_cache
    assert [f.name for f in tmp_path.iterdir()] == [path.name]  # no temporary files left behind

    # another edge vocabulary gets its own entry
    other = VocabMap.between(SMALL[:3], smol_tok, cache_dir=tmp_path)
    assert other.key != first.key and len(list(tmp_path.iterdir())) == 2
    # cache=False neither reads nor writes
    VocabMap.clear_memory_cache()
    assert not VocabMap.between(SMALL, smol_tok, cache=False, cache_dir=tmp_path / "none").from_cache
    assert not (tmp_path / "none").exists()


def test_unwritable_cache_still_maps(smol_tok, tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_bytes(b"x")
    VocabMap.clear_memory_cache()
    with caplog.at_level(logging.WARNING, logger="floe_edge.vocab_map"):
        m = VocabMap.between(SMALL, smol_tok, cache_dir=blocker / "sub")
    assert m.table[0] == _first(smol_tok, b" the") and "could not write" in caplog.text


def test_cache_location(monkeypatch, tmp_path):
    monkeypatch.setenv("FLOE_HOME", str(tmp_path))
    assert vocab_maps_dir() == tmp_path / "vocab_maps"
    monkeypatch.delenv("FLOE_HOME")
    assert vocab_maps_dir() == pathlib.Path.home() / ".cache" / "floe" / "vocab_maps"


def test_disk_cache_survives_processes(gemma3_path, smol_tok, vmap_dir, g2s):
    """The Gemma -> SmolLM2 table (built once by the g2s fixture) loads from disk and equals the build."""
    VocabMap.clear_memory_cache()
    again = VocabMap.between(gemma3_path, smol_tok, cache_dir=vmap_dir)
    assert again.from_cache and again.key == g2s.key and np.array_equal(again.table, g2s.table)
    assert os.path.getsize(vmap_dir / f"{g2s.key}.vmap") == 88 + 5 * 262144 + 32
