"""Byte-level BPE tokenizer: token ids must equal llama.cpp's (llama-cpp-python) for the same GGUF.

The model is the real SmolLM2-135M-Instruct (pre-tokenizer "smollm"), pulled once by the smollm2_path fixture.
Other pre-tokenizers are checked on copies of its vocabulary with tokenizer.ggml.pre changed.
"""
from __future__ import annotations

import ctypes
import glob
import importlib
import inspect
import os
import pathlib
import random
import struct
import sys
import time
import zlib

import hypothesis
import pytest
from hypothesis import strategies as st

from floe_edge import _native

compared = {"strings": 0}  # how many inputs were checked against llama.cpp (printed at the end with -s)


@pytest.fixture(scope="session")
def model_path(smollm2_path):
    yield smollm2_path
    print(f"\ntest_tokenizer: {compared['strings']} inputs compared with llama.cpp", file=sys.stderr)


@pytest.fixture(scope="session")
def tok(model_path):
    return _native.Tokenizer.from_gguf(str(model_path))


def load_llama(path):
    import llama_cpp  # the reference implementation: a test dependency, never skipped

    return llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)


@pytest.fixture(scope="session")
def llama(model_path):
    return load_llama(model_path)


def assert_same(tok, llama, text, add_bos=False, special=True):
    """Our ids == llama.cpp's for text (str or bytes); on failure show where the split differs."""
    data = text.encode() if isinstance(text, str) else text
    ours = tok.tokenize(data, add_bos=add_bos, special=special)
    ref = llama.tokenize(data, add_bos=add_bos, special=special)
    compared["strings"] += 1
    if ours != ref:
        i = next((k for k, (a, b) in enumerate(zip(ours, ref)) if a != b), min(len(ours), len(ref)))
        lo = max(0, i - 3)
        pieces = lambda ids: [tok.token_bytes(t) for t in ids[lo : i + 4]]  # noqa: E731
        pytest.fail(f"ids differ at {i} for {data[:80]!r}...: ours {pieces(ours)} llama.cpp {pieces(ref)}")


# --- corpus -------------------------------------------------------------------------------------------------

PROSE = [
    "The quick brown fox jumps over the lazy dog.",
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
    "foolishness, it was the epoch of belief, it was the epoch of incredulity.",
    "On-device inference trades accuracy for latency: a 135M-parameter model answers in milliseconds,\n"
    "while the cloud model (roughly 100x larger) takes a network round trip. Floe fuses both per token.",
    "Dr. Smith's lab (est. 1998) published 3 papers in Nature; see https://example.org/a?b=c&d=e#f.",
    "  Leading spaces, trailing spaces  ",
    "ALL CAPS SENTENCE WITH NUMBERS 2024 AND SYMBOLS @#$%",
    "Email me at first.last+tag@example.co.uk or call +1 (555) 010-9999 ext. 42.",
]

WHITESPACE_RUNS = [" ", "  ", "   ", "\t", "\t\t", "\n", "\n\n", "\n\n\n", "\r\n", "\r\n\r\n", "\r", " \n", "\n ",
                   " \t \n", "\t\n\t", "    \n    ", "\u00a0", "\u3000", "\u2009\u200a", "\x0b", "\x0c", "\x85",
                   "\u2028", "\u2029", " \u00a0 ", "\x1c\x1d\x1e\x1f"]
WHITESPACE = ([ws for ws in WHITESPACE_RUNS]
              + [f"a{ws}b" for ws in WHITESPACE_RUNS] + [f"a{ws}" for ws in WHITESPACE_RUNS]
              + [f"{ws}a" for ws in WHITESPACE_RUNS] + [f"x{ws}1{ws}!" for ws in WHITESPACE_RUNS]
              + [f"{ws}{ws}word{ws}" for ws in WHITESPACE_RUNS] + ["def f():\n\tpass\n\n\n", "a \n\n b", "end.   "])

DIGITS = ["1", "12", "123", "1234", "1234567890", "3.14159", "1,000,000", " 42", "a1b2c3", "x=10**9+7",
          "0x1F", "1e-10", "\u0663\u0664\u0665", "\u2460\u2461", "\u216b", "\u00bd", "\uff12\uff10\uff12\uff14",
          "2024-11-25T06:28:00Z", "v1.2.3", "9" * 50, " 123 456 ", "$100.00"]

PUNCTUATION = ["Hello, world!", "...", "?!?!", "--", "\u00abquoted\u00bb", "\u201csmart quotes\u201d",
               "(a) [b] {c}", "@#$%^&*", "a.b.c", "~`|\\", " !!", "<=>", "->", "...\n\n", "a, b; c: d.",
               "\u2014em dash\u2014", "\u00bfQu\u00e9?", "#include <stdio.h>", "<html><body></body></html>",
               "!\n", " .\r\n", "`code`", "**bold** _it_"]

CONTRACTIONS = ["'s 't 're 've 'm 'll 'd", "'S 'T 'RE 'VE 'M 'LL 'D", "'Re 'rE 'Ll", "I'm", "y'all",
                "rock'n'roll", "'", "''", "'''s", " 's", "it\u2019s", "O'Neil's", "He'S GONE", "can't won't",
                "'\u00e9", "x'", "'1"]

ACCENTED = ["caf\u00e9 na\u00efve r\u00e9sum\u00e9", "Stra\u00dfe \u00fcber M\u00fcnchen",
            "Ti\u1ebfng Vi\u1ec7t c\u00f3 d\u1ea5u", "e\u0301 (combining acute)", "\u0391\u03b8\u03ae\u03bd\u03b1",
            "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440!", "\u0131\u0130 T\u00fcrk\u00e7e",
            "\u00c5ngstr\u00f6m", "\u0645\u0631\u062d\u0628\u0627", "\u05e9\u05dc\u05d5\u05dd",
            "\u0928\u092e\u0938\u094d\u0924\u0947", "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35"]

CJK = ["\u4f60\u597d\uff0c\u4e16\u754c\uff01", "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8",
       "\ud55c\uad6d\uc5b4 \ubb38\uc7a5", "mixed \u4e2d\u6587 and English 123", "\u3042\u3044\u3046\u3048\u304a",
       "\u30ab\u30bf\u30ab\u30ca", "\U00020000\U0002a6d6", "\u300c\u5f15\u7528\u300d"]

EMOJI = ["\U0001f389", "\U0001f44d\U0001f3fd", "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466",
         "\U0001f1ef\U0001f1f5\U0001f1fa\U0001f1f8", "1\ufe0f\u20e3", "\u2764\ufe0f", "I \u2764\ufe0f NY \U0001f5fd",
         "\U0001f3f3\ufe0f\u200d\U0001f308", "\U0001f9d1\u200d\U0001f4bb code", "\U0001f600" * 10]

CONTROL = ["\x00", "\x01\x02\x03", "\x1b[31mred\x1b[0m", "\x7f", "\u200b", "\ufeffBOM", "\u200e\u200f",
           "a\x00b", "\x08\x07", "tab\tand\x0bvt", "\U000e0001", "\ue000 private use", "\U0010ffff",
           "\u0378 unassigned", "\U0001e030 new in 15.0", "\u2ffc new in 15.1"]

SPECIAL = ["<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n", "<|endoftext|>",
           "<|im_end|><|im_start|>", "<|im_start", "<|im_start|", "<<|im_end|>>", "<repo_name>x<reponame>y",
           "a<|endoftext|>b", " <|im_start|> ", "<|im_start|><|im_start|>", "<file_sep><filename>a.py<gh_stars>10",
           "<jupyter_start><jupyter_code>print(1)<jupyter_output>1<empty_output>"]

CATEGORIES = {"prose": PROSE, "whitespace": WHITESPACE, "digits": DIGITS, "punctuation": PUNCTUATION,
              "contractions": CONTRACTIONS, "accented": ACCENTED, "cjk": CJK, "emoji": EMOJI, "control": CONTROL}
PLAIN = [s for texts in CATEGORIES.values() for s in texts]

STDLIB_MODULES = ["argparse", "textwrap", "json.decoder", "difflib", "string", "dataclasses", "inspect", "typing"]


def stdlib_source(min_chars: int = 0) -> str:
    parts, size = [], 0
    for name in STDLIB_MODULES:
        src = inspect.getsource(importlib.import_module(name))
        parts.append(src)
        size += len(src)
        if min_chars and size >= min_chars:
            break
    return "".join(parts)


def chunks(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


# --- ids equal llama.cpp ------------------------------------------------------------------------------------


@pytest.mark.parametrize("category", list(CATEGORIES))
def test_corpus_matches_llama_cpp(tok, llama, category):
    for text in CATEGORIES[category]:
        for add_bos in (False, True):
            for special in (True, False):
                assert_same(tok, llama, text, add_bos=add_bos, special=special)


def test_python_source_matches_llama_cpp(tok, llama):
    src = stdlib_source()
    for chunk in chunks(src, 1500):
        assert_same(tok, llama, chunk)
    for name in STDLIB_MODULES[:3]:  # whole modules, too
        assert_same(tok, llama, inspect.getsource(importlib.import_module(name)))


def test_special_tokens_in_text(tok, llama):
    for text in SPECIAL:
        for special in (True, False):
            assert_same(tok, llama, text, special=special)
    ids = tok.tokenize("<|im_start|>user\nhi<|im_end|>", add_bos=False)
    assert ids[0] == 1 and ids[-1] == 2 and tok.is_control(1)
    assert 1 not in tok.tokenize("<|im_start|>user", add_bos=False, special=False)


def test_every_special_token_alone(tok, llama):
    specials = [i for i in range(tok.n_vocab) if tok.is_control(i)]
    assert specials, "SmolLM2 has control tokens"
    for i in specials:
        text = tok.token_bytes(i)
        assert tok.tokenize(text, add_bos=False) == [i]
        assert_same(tok, llama, b"x" + text + b" y", special=True)
        assert_same(tok, llama, b"x" + text + b" y", special=False)


def test_empty_string(tok, llama):
    assert tok.tokenize("", add_bos=False) == []
    assert_same(tok, llama, "", add_bos=True)
    assert_same(tok, llama, "", add_bos=False)


def test_add_bos_follows_the_model(tok, llama):
    # llama.cpp's add_special adds BOS only if tokenizer.ggml.add_bos_token allows it; SmolLM2 says false.
    assert tok.add_bos is False and tok.bos_id == 1
    assert tok.tokenize("Hello", add_bos=True) == tok.tokenize("Hello", add_bos=False)
    assert_same(tok, llama, "Hello", add_bos=True)


# llama.cpp reads malformed UTF-8 as U+FFFD per bad byte; overlong forms and surrogates keep their value.
INVALID_UTF8 = [b"\xff", b"\xfe\xff", b"\x80", b"abc\x80def", b"\xc3", b"\xc3(", b"a\xc3", b"\xe2\x82", b"\xe2\x82(",
                b"\xf0\x9f\x98", b"\xf0\x9f\x98 x", b"\xed\xa0\x80", b"\xed\xbf\xbf\xed\xa0\x80", b"\xc0\x80",
                b"\xc1\xbf", b"\xe0\x80\x80", b"\xf0\x80\x80\x80", b"\xf8\x88\x80\x80\x80", b"\xfc\x84\x80\x80\x80\x80",
                b"caf\xe9", b"\x80\x80\x80 1\xff2", b"\xef\xbf\xbd", b"\xe2\x80\xa8\xc2\x85"]


def llama_cpp_aborts_on(data: bytes) -> bool:
    """llama.cpp throws (uncaught: the process aborts) on a 4-byte form above U+10FFFF."""
    i = 0
    while i < len(data):
        b = data[i]
        need = 1 if b >= 0xC0 and b < 0xE0 else 2 if b >= 0xE0 and b < 0xF0 else 3 if b >= 0xF0 and b < 0xF8 else 0
        if need and i + need < len(data) and all(0x80 <= c < 0xC0 for c in data[i + 1 : i + need + 1]):
            if need == 3 and ((b & 7) << 18 | (data[i + 1] & 0x3F) << 12) > 0x10FFFF:
                return True
            i += need + 1
        else:
            i += 1
    return False


def test_invalid_utf8_matches_llama_cpp(tok, llama):
    for data in INVALID_UTF8:
        assert not llama_cpp_aborts_on(data)
        assert_same(tok, llama, data)


def test_codepoints_above_unicode_range_do_not_crash(tok):
    # llama.cpp aborts the process here; we read each byte as U+FFFD like any other malformed sequence.
    for data in (b"\xf4\x90\x80\x80", b"\xf7\xbf\xbf\xbf", b"ok\xf5\x80\x80\x80!"):
        assert llama_cpp_aborts_on(data)
        # Python's decoder also yields one U+FFFD per byte for these sequences.
        assert tok.tokenize(data, add_bos=False) == tok.tokenize(data.decode("utf-8", "replace"), add_bos=False)


def test_very_long_inputs(tok, llama):
    big = stdlib_source(100_000)[:100_000]
    assert_same(tok, llama, big)
    for text in ("a" * 100_000, "1" * 100_000, " " * 100_000, "\n" * 50_000, "\U0001f389" * 25_000,
                 "ab " * 33_000, ("word " * 20_000) + "<|im_end|>"):
        assert_same(tok, llama, text)


def test_tokenize_is_fast(tok):
    src = stdlib_source(100_000)[:100_000].encode()
    best = min(_timed(lambda: tok.tokenize(src, add_bos=False)) for _ in range(5))
    assert best < 0.1, f"100 KB of Python took {best * 1000:.1f} ms"


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# --- round trip and detokenization --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def lost_bytes(tok) -> set[int]:
    """Bytes the vocabulary has no token for: llama.cpp drops them, and so do we (SmolLM2 lacks a few)."""
    single = {tok.token_bytes(i) for i in range(tok.n_vocab) if not tok.is_control(i)}
    return {b for b in range(256) if bytes([b]) not in single}


def test_round_trip(tok, lost_bytes):
    texts = PLAIN + SPECIAL + chunks(stdlib_source(), 3000)
    for text in texts:
        ids = tok.tokenize(text, add_bos=False, special=False)
        expected = bytes(b for b in text.encode() if b not in lost_bytes)
        assert tok.detokenize(ids) == expected, text[:60]


def test_bytes_without_a_token_are_dropped_like_llama_cpp(tok, llama, lost_bytes):
    assert len(lost_bytes) < 32, sorted(lost_bytes)
    for b in lost_bytes:
        assert_same(tok, llama, b"a" + bytes([b]) + b"b")
        assert_same(tok, llama, "\U00040000 \U000f0000")


def test_special_tokens_render_only_when_asked(tok):
    ids = tok.tokenize("<|im_start|>hi<|im_end|>", add_bos=False)
    assert tok.detokenize(ids) == b"hi"
    assert tok.detokenize(ids, special=True) == b"<|im_start|>hi<|im_end|>"
    assert tok.token_bytes(1) == b"<|im_start|>"


def test_token_pieces_match_llama_cpp(tok, llama):
    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(llama.model)
    buf = ctypes.create_string_buffer(256)
    for special in (False, True):
        for i in range(tok.n_vocab):
            n = llama_cpp.llama_token_to_piece(vocab, i, buf, len(buf), 0, special)
            assert 0 <= n <= len(buf)
            assert tok.detokenize([i], special=special) == buf.raw[:n], i


def test_eog_ids_match_llama_cpp(tok, llama):
    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(llama.model)
    assert tok.eog_ids == [i for i in range(tok.n_vocab) if llama_cpp.llama_vocab_is_eog(vocab, i)]
    assert tok.is_eog(tok.eos_id)


def test_bad_ids_raise(tok):
    for bad in (-1, tok.n_vocab, 2**31, -(2**40)):
        with pytest.raises((ValueError, IndexError)):
            tok.detokenize([5, bad])
        with pytest.raises((ValueError, IndexError)):
            tok.token_bytes(bad)
        with pytest.raises((ValueError, IndexError)):
            _native.StreamDecoder(tok).feed(bad)
    with pytest.raises(TypeError):
        tok.tokenize(123)
    with pytest.raises(UnicodeEncodeError):
        tok.tokenize("lone \ud800 surrogate")


def test_metadata(tok, model_path):
    assert (tok.n_vocab, len(tok), tok.bos_id, tok.eos_id, tok.pre) == (49152, 49152, 1, 2, "smollm")
    assert tok.unk_id == 0 and tok.pad_id == 2
    gguf_tok = _native.Tokenizer.from_gguf(_native.GGUFFile(str(model_path)))
    assert gguf_tok.tokenize("same ids") == tok.tokenize("same ids")


def test_not_a_tokenizer_file(tmp_path):
    path = tmp_path / "empty.gguf"
    write_gguf(path, {"general.architecture": "llama"})
    with pytest.raises(ValueError):
        _native.Tokenizer.from_gguf(str(path))


# --- streaming ----------------------------------------------------------------------------------------------


def test_stream_decoder_holds_back_partial_characters(tok):
    text = "h\u00e9llo \u4e16\u754c \U0001f468\u200d\U0001f469\u200d\U0001f467 \U0001f1ef\U0001f1f5 done"
    ids = tok.tokenize(text, add_bos=False)
    pieces = [tok.token_bytes(i) for i in ids]
    assert any(_splits_a_character(p) for p in pieces), "test needs a character split across tokens"
    dec = _native.StreamDecoder(tok)
    out = []
    for i in ids:
        s = dec.feed(i)
        assert "\ufffd" not in s
        out.append(s)
    assert dec.flush() == "" and dec.pending == 0
    assert "".join(out) == text
    # Everything emitted so far is always a prefix of the text, never a broken character.
    assert all(text.startswith("".join(out[:k])) for k in range(len(out) + 1))


def _splits_a_character(piece: bytes) -> bool:
    try:
        piece.decode("utf-8")
        return False
    except UnicodeDecodeError:
        return True


def test_stream_decoder_flush_and_special(tok):
    smile = "\U0001f600".encode()
    byte_ids = tok.tokenize(smile, add_bos=False)
    dec = _native.StreamDecoder(tok)
    first = dec.feed(byte_ids[0])
    if len(byte_ids) > 1:
        assert first == "" and dec.pending > 0
        assert dec.flush() == "\ufffd" and dec.pending == 0  # an incomplete tail comes out as U+FFFD
    shown = _native.StreamDecoder(tok, special=True)
    assert shown.feed(1) == "<|im_start|>"
    assert _native.StreamDecoder(tok).feed(1) == ""


# --- property tests -----------------------------------------------------------------------------------------

# Characters around which the pre-tokenizers make decisions, for denser coverage than random text.
TRICKY = list(" \t\n\r'sStTmMdDlLrReEvV019aZ!.,-_$+<|>`~\u00e9\u4e16\u00a0\u3000\x85\u0663\u00bd\U0001f389\u200d\ufe0f")

PROPERTY = hypothesis.settings(max_examples=300, deadline=None,
                               suppress_health_check=[hypothesis.HealthCheck.too_slow])

@PROPERTY
@hypothesis.given(text=st.text(max_size=200))
def test_random_text_matches_llama_cpp(tok, llama, lost_bytes, text):
    assert_same(tok, llama, text)
    expected = bytes(b for b in text.encode() if b not in lost_bytes)
    assert tok.detokenize(tok.tokenize(text, add_bos=False, special=False)) == expected

@PROPERTY
@hypothesis.given(text=st.text(alphabet=st.sampled_from(TRICKY), max_size=60))
def test_tricky_text_matches_llama_cpp(tok, llama, text):
    assert_same(tok, llama, text)

@PROPERTY
@hypothesis.given(data=st.binary(max_size=100))
def test_random_bytes_match_llama_cpp(tok, llama, data):
    hypothesis.assume(not llama_cpp_aborts_on(data))
    assert_same(tok, llama, data)

@PROPERTY
@hypothesis.given(parts=st.lists(st.one_of(st.sampled_from(SPECIAL + ["<|im_end|>", "<|", "|>", "<"]),
                                           st.text(max_size=8)), max_size=8),
                  special=st.booleans())
def test_text_with_special_tokens_matches_llama_cpp(tok, llama, parts, special):
    assert_same(tok, llama, "".join(parts), special=special)



# --- other pre-tokenizers, on copies of the vocabulary --------------------------------------------------------


def write_gguf(path, kv: dict) -> None:
    """A tensor-less GGUF v3 file. ints are written as u32 (i32 in arrays), floats as f32, as SmolLM2 has them."""
    def string(s):
        b = s if isinstance(s, bytes) else s.encode()
        return struct.pack("<Q", len(b)) + b

    def value(v):
        if isinstance(v, bool):
            return struct.pack("<I", 7), struct.pack("<?", v)
        if isinstance(v, int):
            return struct.pack("<I", 4), struct.pack("<I", v)
        if isinstance(v, float):
            return struct.pack("<I", 6), struct.pack("<f", v)
        if isinstance(v, (str, bytes)):
            return struct.pack("<I", 8), string(v)
        elem = 5 if v and isinstance(v[0], int) else 6 if v and isinstance(v[0], float) else 8
        fmt = {5: "<i", 6: "<f"}.get(elem)
        body = b"".join(struct.pack(fmt, x) if fmt else string(x) for x in v)
        return struct.pack("<I", 9), struct.pack("<IQ", elem, len(v)) + body

    out = [b"GGUF", struct.pack("<IQQ", 3, 0, len(kv))]
    for key, v in kv.items():
        vtype, payload = value(v)
        out += [string(key), vtype, payload]
    pathlib.Path(path).write_bytes(b"".join(out))


VARIANT_PRES = ["default", "gpt-2", "llama-bpe", "dbrx", "qwen2", "starcoder"]


@pytest.fixture(scope="session")
def vocab_metadata(model_path):
    return dict(_native.GGUFFile(str(model_path)).metadata)


# SmolLM2 has no multi-digit tokens, so digit grouping (\p{N} vs \p{N}{1,3}) would not show in its ids; these
# extra tokens make it show. "xyzzy" has no merges: only a pre-tokenizer with ignore_merges yields it whole.
EXTRA_TOKENS = ["12", "123", "45", "xyzzy"]
EXTRA_MERGES = ["1 2", "12 3", "4 5"]
DIGIT_TEXTS = ["12345", "123456789", " 1234 ", "x12y123z", "12\n45", "xyzzy", " xyzzy", "xyzzy!"]


@pytest.fixture(scope="session", params=VARIANT_PRES)
def variant(request, vocab_metadata, tmp_path_factory):
    path = tmp_path_factory.mktemp("vocab") / f"{request.param}.gguf"
    md = vocab_metadata
    write_gguf(path, {**md, "tokenizer.ggml.pre": request.param,
                      "tokenizer.ggml.tokens": md["tokenizer.ggml.tokens"] + EXTRA_TOKENS,
                      "tokenizer.ggml.token_type": md["tokenizer.ggml.token_type"] + [1] * len(EXTRA_TOKENS),
                      "tokenizer.ggml.merges": md["tokenizer.ggml.merges"] + EXTRA_MERGES})
    return _native.Tokenizer.from_gguf(str(path)), load_llama(path)


def random_texts(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    pool = TRICKY + list("abcXYZ0123456789?()[]{}\"#%&*/:;@^\\") + ["\r\n", "   ", "'ll", "'RE", "<|im_end|>"]
    texts = ["".join(rng.choice(pool) for _ in range(rng.randrange(1, 40))) for _ in range(n)]
    wide = [chr(cp) for cp in (rng.randrange(0x20, 0x30000) for _ in range(4000)) if not 0xD800 <= cp < 0xE000]
    texts += ["".join(rng.choice(wide) for _ in range(rng.randrange(1, 20))) for _ in range(n)]
    return texts


def test_other_pretokenizers_match_llama_cpp(variant):
    tok, llama = variant
    texts = PLAIN + SPECIAL + DIGIT_TEXTS + chunks(stdlib_source(), 4000)[:20]
    for text in texts + random_texts(zlib.crc32(tok.pre.encode()), 300):
        assert_same(tok, llama, text)


def test_pretokenizer_splits(variant):
    tok = variant[0]
    single_digits = [b"1", b"2", b"3", b"4", b"5", b" x", b"'ll"]
    words = {"default": [b"123", b"45", b" x", b"'", b"ll"], "gpt-2": [b"12345", b" x", b"'ll"],
             "starcoder": single_digits, "qwen2": single_digits,
             "llama-bpe": [b"123", b"45", b" x", b"'ll"], "dbrx": [b"123", b"45", b" x", b"'ll"]}
    assert tok._split_words("12345 x'll") == words[tok.pre]
    ids = tok.tokenize("xyzzy", add_bos=False)
    assert (ids == [tok.n_vocab - 1]) == (tok.pre == "llama-bpe")  # ignore_merges keeps a token word whole


def test_add_bos_token_true(vocab_metadata, tmp_path):
    path = tmp_path / "bos.gguf"
    write_gguf(path, {**vocab_metadata, "tokenizer.ggml.add_bos_token": True})
    tok, llama = _native.Tokenizer.from_gguf(str(path)), load_llama(path)
    assert tok.add_bos and tok.tokenize("hi", add_bos=True)[0] == tok.bos_id
    assert tok.tokenize("hi", add_bos=False)[0] != tok.bos_id
    for text in ("hi", "", "<|im_start|>x"):
        assert_same(tok, llama, text, add_bos=True)


def test_unsupported_pretokenizer_is_rejected(vocab_metadata, tmp_path):
    path = tmp_path / "bad.gguf"
    write_gguf(path, {**vocab_metadata, "tokenizer.ggml.pre": "no-such-pre"})
    with pytest.raises(ValueError, match="no-such-pre"):
        _native.Tokenizer.from_gguf(str(path))


# --- Unicode tables -----------------------------------------------------------------------------------------


def test_unicode_classes_match_llama_cpp():
    """Our generated code-point classes equal llama.cpp's for every code point (needs its exported symbol)."""
    llama_cpp = pytest.importorskip("llama_cpp")
    libs = glob.glob(os.path.join(os.path.dirname(llama_cpp.__file__), "lib", "libllama.so*"))
    try:
        fn = ctypes.CDLL(libs[0])._Z26unicode_cpt_flags_from_cptj
    except (IndexError, OSError, AttributeError):
        pytest.skip("libllama does not export unicode_cpt_flags_from_cpt")
    fn.restype, fn.argtypes = ctypes.c_uint16, [ctypes.c_uint32]
    ours = _native._unicode_flags_table()
    mismatches = [cp for cp in range(0x110000) if (fn(cp) & 0x1FF) != ours[cp]]
    assert not mismatches, (f"{len(mismatches)} code points differ, first U+{mismatches[0]:04X} (our table: "
                            f"Unicode {_native._unicode_version}; regenerate with tools/gen_unicode_data.py)")
