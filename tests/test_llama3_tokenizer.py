"""Llama3Tokenizer vs the Hugging Face `tokenizers` oracle on Llama 3.2's tokenizer.json."""
import json
import time

import pytest

from conftest import asset
from minillama import MinillamaError, load_tokenizer
from minillama.llama3_tokenizer import Llama3Tokenizer, special_token_names, split_long_runs

HOSTILE = [
    "Hello, world!",
    "",
    " ",
    "a",
    "I'm sure they'll say it's fine, we've done what you'd DON'T WON'T I'LL",
    "12345678901234567890 3.14159 1,000,000 007 x2y3 ²³ ١٢٣",
    "naïve café façade Ünïcödé straße ÆØÅ",
    "日本語のテキストと中文文本，한국어 텍스트。",
    "emoji 👋🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️‍🔥 and 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "tabs\tand\t\ttabs\r\nwindows\rmac\nunix\n\n\n  \n \t \n",
    "    leading and trailing spaces    ",
    " " * 1000 + "x" + "\t" * 300 + "\n" * 200,
    "code:\n    def f(x):\n        return x**2  # comment\n",
    "<|begin_of_text|>text<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n",
    "almost special <|eot_id| <|unknown|> <|reserved_special_token_250|>",
    "ZWJ\u200dand\u00a0nbsp\u2028ls\ufeffbom \x00\x01 control",
    "Ωmega ΣΊΣΥΦΟΣ кириллица עברית العربية हिन्दी",
    "a" * 3000,
    "!!!???...,,,;;;---___===+++",
]


@pytest.fixture(scope="module")
def tok():
    return Llama3Tokenizer(asset("llama3/tokenizer.model"))


@pytest.fixture(scope="module")
def hf():
    from tokenizers import Tokenizer

    return Tokenizer.from_file(asset("llama3/tokenizer.json"))


@pytest.fixture(scope="module")
def hf_plain():
    """The oracle without added tokens: special-token text is ordinary text, as with allowed_special=()."""
    from tokenizers import Tokenizer

    with open(asset("llama3/tokenizer.json"), encoding="utf-8") as f:
        spec = json.load(f)
    spec["added_tokens"] = []
    return Tokenizer.from_str(json.dumps(spec))


def test_hello_world(tok):
    assert tok.encode("Hello, world!", bos=False) == [9906, 11, 1917, 0]
    assert tok.encode("Hello, world!") == [128000, 9906, 11, 1917, 0]
    assert tok.encode("Hello, world!", eos=True)[-1] == 128001


@pytest.mark.parametrize("text", HOSTILE)
def test_equals_hf_with_special_tokens_allowed(tok, hf, text):
    assert tok.encode(text, bos=False, allowed_special="all") == hf.encode(text, add_special_tokens=False).ids


@pytest.mark.slow
@pytest.mark.parametrize("text", HOSTILE)
def test_equals_hf_with_special_text_as_plain_text(tok, hf_plain, text):
    assert tok.encode(text, bos=False) == hf_plain.encode(text, add_special_tokens=False).ids


def test_special_text_not_recognised_unless_allowed(tok):
    plain = tok.encode("<|eot_id|>", bos=False)
    assert 128009 not in plain and len(plain) > 1
    assert tok.encode("<|eot_id|>", bos=False, allowed_special="all") == [128009]
    assert tok.encode("<|eot_id|><|eom_id|>", bos=False, allowed_special={"<|eot_id|>"})[0] == 128009
    assert 128008 not in tok.encode("<|eot_id|><|eom_id|>", bos=False, allowed_special={"<|eot_id|>"})


def test_special_tokens_match_tokenizer_json(tok):
    with open(asset("llama3/tokenizer.json"), encoding="utf-8") as f:
        added = {t["id"]: t["content"] for t in json.load(f)["added_tokens"]}
    names = special_token_names()
    assert len(names) == 256
    assert {128000 + i: name for i, name in enumerate(names)} == {i: added[i] for i in range(128000, 128256)}
    assert (tok.vocab_size, tok.bos_id, tok.eos_id, tok.pad_id, tok.eot_id) == (128256, 128000, 128001, 128004, 128009)
    assert tok.stop_ids == [128001, 128008, 128009] and tok.family == "llama3"


@pytest.mark.parametrize("text", HOSTILE)
def test_decode_round_trip(tok, text):
    assert tok.decode(tok.encode(text, bos=False)) == text
    assert tok.decode(tok.encode(text, bos=False, allowed_special="all")) == text


def test_long_runs_are_fast_and_round_trip(tok):
    """Meta's chunking: a 1M-char run encodes quickly, and long space runs are cut at 25k chars."""
    start = time.perf_counter()
    text = "a" * 1_000_000
    assert tok.decode(tok.encode(text, bos=False)) == text
    spaces = " " * 60_000 + "end"
    assert tok.decode(tok.encode(spaces, bos=False)) == spaces
    assert time.perf_counter() - start < 20
    assert [len(p) for p in split_long_runs(" " * 60_000 + "end")] == [25_000, 25_000, 10_003]  # only overlong runs are cut
    assert list(split_long_runs("ab cd")) == ["ab cd"]


def test_chat_format_exact_ids(tok):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "  Hi!\n"}]
    header = lambda role: [128006] + tok.encode(role, bos=False) + [128007, 271]  # 271 = "\n\n"
    expected = ([128000] + header("system") + tok.encode("Be brief.", bos=False) + [128009]
                + header("user") + tok.encode("Hi!", bos=False) + [128009] + header("assistant"))
    assert tok.format_chat(messages) == expected
    assert tok.format_chat(messages, add_generation_prompt=False) == expected[:-len(header("assistant"))]
    assert tok.encode("\n\n", bos=False) == [271] and tok.encode("user", bos=False) == [882]
    # the same ids as the special tokens spelled out in text
    text = ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
    assert tok.format_chat(messages) == tok.encode(text, bos=False, allowed_special="all")


def test_chat_rejects_malformed_message(tok):
    with pytest.raises(MinillamaError, match="role"):
        tok.format_chat([{"content": "no role"}])


@pytest.mark.slow
def test_load_tokenizer_detects_tiktoken_by_content(tmp_path):
    path = asset("llama3/tokenizer.model")
    assert isinstance(load_tokenizer(path), Llama3Tokenizer)
    renamed = tmp_path / "whatever.bin"  # detection reads content, not the file name
    renamed.write_bytes(open(path, "rb").read())
    assert isinstance(load_tokenizer(str(renamed)), Llama3Tokenizer)
    (tmp_path / "original").mkdir()
    (tmp_path / "original" / "tokenizer.model").write_bytes(open(path, "rb").read())
    assert isinstance(load_tokenizer(str(tmp_path)), Llama3Tokenizer)
    assert load_tokenizer(asset("llama2/tokenizer.model")).family == "llama2"


def test_truncated_rank_file_is_one_clear_error(tmp_path):
    bad = tmp_path / "tokenizer.model"
    bad.write_bytes(b"".join(open(asset("llama3/tokenizer.model"), "rb").readlines()[:100]))
    with pytest.raises(MinillamaError, match="128000"):
        Llama3Tokenizer(str(bad))
