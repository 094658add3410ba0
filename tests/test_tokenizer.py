"""The sentencepiece tokenizer wrapper vs sentencepiece itself (Llama 2 and tok512)."""
import os

import pytest
import sentencepiece as spm

from conftest import asset
from minillama import MinillamaError, load_tokenizer
from minillama.tokenizer import SentencePieceTokenizer

TEXTS = ["Hello world", "Once upon a time, there was a little girl named Lily.",
         "  leading spaces, unicode: café – 東京 🙂\nnew line", ""]


@pytest.fixture(scope="module")
def llama2():
    path = asset("llama2/tokenizer.model")
    return load_tokenizer(path), spm.SentencePieceProcessor(model_file=path)


def test_llama2_special_ids_and_vocab(llama2):
    tok, _ = llama2
    assert isinstance(tok, SentencePieceTokenizer) and tok.family == "llama2"
    assert tok.vocab_size == 32000
    assert (tok.bos_id, tok.eos_id) == (1, 2)
    assert tok.pad_id == 2  # Llama 2 has no pad token: pad with eos, masks make it irrelevant
    assert tok.stop_ids == [2]


def test_llama2_encode_matches_sentencepiece_with_bos_eos_flags(llama2):
    tok, sp = llama2
    for text in TEXTS:
        plain = sp.encode(text)
        assert tok.encode(text) == [1] + plain  # bos=True, eos=False by default
        assert tok.encode(text, bos=False) == plain
        assert tok.encode(text, bos=True, eos=True) == [1] + plain + [2]
        assert tok.encode(text, bos=False, eos=True) == plain + [2]
    assert tok.encode("Hello world", bos=False) == [15043, 3186]


def test_llama2_decode_round_trip(llama2):
    tok, sp = llama2
    for text in TEXTS:
        ids = tok.encode(text, bos=True, eos=True)
        assert tok.decode(ids) == sp.decode(sp.encode(text))
        if not text.startswith(" "):  # leading spaces merge with sentencepiece's dummy prefix
            assert tok.decode(ids) == text  # bos/eos are dropped, everything else survives (byte fallback)
    assert tok.decode(tok.encode("Hello world")) == "Hello world"
    import torch
    assert tok.decode(torch.tensor(tok.encode("Hello world"))) == "Hello world"  # tensors of ids work too


def test_tok512_vocab_and_round_trip():
    path = asset("llama2c/tok512.model")
    tok = load_tokenizer(path)
    sp = spm.SentencePieceProcessor(model_file=path)
    assert tok.vocab_size == 512
    assert (tok.bos_id, tok.eos_id) == (sp.bos_id(), sp.eos_id())
    text = "Once upon a time, there was a little girl named Lily."
    ids = tok.encode(text, bos=False)
    assert ids == sp.encode(text) and max(ids) < 512
    assert tok.decode(ids) == text


def test_directory_with_tokenizer_model_is_searched(tmp_path):
    src = asset("llama2c/tok512.model")
    (tmp_path / "original").mkdir()
    os.symlink(src, tmp_path / "original" / "tokenizer.model")
    assert load_tokenizer(str(tmp_path)).vocab_size == 512


def test_missing_file_raises(tmp_path):
    with pytest.raises(MinillamaError, match="not found"):
        load_tokenizer(str(tmp_path / "nope.model"))
    with pytest.raises(MinillamaError):
        load_tokenizer(str(tmp_path))  # a directory without a tokenizer.model


@pytest.mark.parametrize("content", [b"", b"\x00\xff garbage \x13\x37" * 50, os.urandom(2048),
                                     b"abc 12\nxyz\n"])  # looks like a tiktoken file at first
def test_garbage_file_raises(tmp_path, content):
    path = tmp_path / "tokenizer.model"
    path.write_bytes(content)
    with pytest.raises(MinillamaError):
        load_tokenizer(str(path))


def test_checkpoint_passed_as_tokenizer_raises():
    with pytest.raises(MinillamaError):
        load_tokenizer(asset("llama2c/stories260K.bin"))
