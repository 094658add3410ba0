"""Coursework data: readers, tokenising, batching, prediction files."""
import os

import pytest
import torch

from conftest import asset
from minillama.data import (Example, Split, encode_examples, left_pad, pad_batch, read_examples,
                            read_label_names, write_predictions)
from minillama.errors import MinillamaError
from minillama.tokenizer import load_tokenizer

COUNTS = {"sst-train.txt": 8544, "sst-dev.txt": 1101, "sst-test.txt": 2210,
          "cfimdb-train.txt": 1707, "cfimdb-dev.txt": 245, "cfimdb-test.txt": 488}


@pytest.mark.parametrize("name,count", sorted(COUNTS.items()))
def test_real_files_parse_to_documented_counts(name, count):
    num_labels = 5 if name.startswith("sst") else 2
    examples = read_examples(asset(f"coursework/{name}"), num_labels)
    assert len(examples) == count
    assert {ex.label for ex in examples} <= set(range(num_labels))
    assert all(ex.sentence == ex.sentence.strip() and ex.sentence for ex in examples)
    if name == "cfimdb-test.txt":
        assert {ex.label for ex in examples} == {0}  # placeholders


def test_real_label_names():
    assert read_label_names(asset("coursework/sst-label-mapping.json")) == ["awful", "bad", "average", "good", "excellent"]
    assert read_label_names(asset("coursework/cfimdb-label-mapping.json")) == ["bad", "good"]


def test_first_sst_line_exact():
    ex = read_examples(asset("coursework/sst-train.txt"), 5)[0]
    assert ex.label == 3 and ex.sentence.startswith("The Rock is destined") and ex.line == 1


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("text,line,words", [
    ("1 ||| fine\n0 no separator here\n", 2, "malformed"),
    ("1 ||| fine\nx ||| not a number\n", 2, "not an integer"),
    ("1 ||| fine\n1 ||| ok\n7 ||| too big\n", 3, "outside the 2 label names"),
    ("1 ||| fine\n\n0 ||| blank line above\n", 2, "malformed"),
])
def test_bad_lines_name_file_and_line(tmp_path, text, line, words):
    path = write(tmp_path, "d.txt", text)
    with pytest.raises(MinillamaError, match=rf"d\.txt:{line}: .*{words}"):
        read_examples(path, 2)


def test_empty_split_missing_file_bad_json(tmp_path):
    with pytest.raises(MinillamaError, match="empty split"):
        read_examples(write(tmp_path, "e.txt", "\n\n"), 2)
    with pytest.raises(MinillamaError, match="not found.*nope.txt"):
        read_examples(str(tmp_path / "nope.txt"), 2)
    with pytest.raises(MinillamaError, match="not valid JSON"):
        read_label_names(write(tmp_path, "l.json", '["bad", "good"'))
    with pytest.raises(MinillamaError, match="list of at least two"):
        read_label_names(write(tmp_path, "l2.json", '{"a": 1}'))


def test_trailing_blank_lines_and_separator_in_sentence(tmp_path):
    path = write(tmp_path, "d.txt", "1 ||| a ||| b \n0 |||  c\n\n")
    examples = read_examples(path, 2)
    assert [(e.label, e.sentence) for e in examples] == [(1, "a ||| b"), (0, "c")]


def test_encode_bos_truncation_and_prompt_suffix():
    tok = load_tokenizer(asset("llama2/tokenizer.model"))
    exs = [Example(0, "a b c d e f g h i j", 1), Example(1, "short", 2)]
    ids = encode_examples(exs, tok)
    assert ids[0] == [tok.bos_id] + tok.encode("a b c d e f g h i j", bos=False)
    cut = encode_examples(exs, tok, max_len=3, suffix="This movie is ")
    suffix = tok.encode("This movie is ", bos=False)
    assert cut[0] == [tok.bos_id] + tok.encode("a b c d e f g h i j", bos=False)[:3] + suffix
    # an uncut sentence is joined to the prompt as text, exactly like the course
    assert cut[1] == tok.encode("short This movie is ", bos=True)


def test_pad_batch_right_pads_with_masks():
    ids, mask = pad_batch([[5, 6, 7], [8]], pad_id=2)
    assert ids.tolist() == [[5, 6, 7], [8, 2, 2]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_split_batches_cover_every_example_once():
    exs = [Example(i % 3, f"s{i}", i + 1) for i in range(10)]
    split = Split(exs, [[1] * (i + 1) for i in range(10)], pad_id=0)
    batches = list(split.batches(4, shuffle=True, generator=torch.Generator().manual_seed(0)))
    seen = torch.cat([b.indices for b in batches])
    assert sorted(seen.tolist()) == list(range(10)) and seen.tolist() != list(range(10))
    for b in batches:
        assert b.labels.tolist() == [i % 3 for i in b.indices.tolist()]
        assert b.attention_mask.sum(1).tolist() == [i + 1 for i in b.indices.tolist()]
    assert [len(b.labels) for b in split.batches(4)] == [4, 4, 2]


def test_write_predictions(tmp_path):
    out = tmp_path / "p.txt"
    write_predictions(str(out), [1, 0], ["x y", "z"])
    assert out.read_text() == "1 ||| x y\n0 ||| z\n"
    assert os.listdir(tmp_path) == ["p.txt"]
    with pytest.raises(MinillamaError, match="does not exist"):
        write_predictions(str(tmp_path / "missing" / "p.txt"), [1], ["x"])


def test_left_pad():
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    ids, mask = left_pad(torch.tensor([[5, 6, 0, 0], [1, 2, 3, 4]]), right)
    assert ids.tolist() == [[0, 0, 5, 6], [1, 2, 3, 4]] and mask.tolist() == left.tolist()
