"""`run_llama.py --task e2e` end to end (minillama/tasks/e2e.py) on a tiny model and slices
of the real E2E files: outputs per unique test MR, the five metrics, a trained prefix that
changes what generate writes, and bad input."""
import json
import os

import pytest
import torch

from conftest import asset, tiny_model
from minillama.adapters import load_adapter
from minillama.cli import main
from minillama.formats import save_checkpoint
from minillama.lm_data import prompt_ids
from minillama.pairs_data import group_references, read_pairs
from minillama.tokenizer import load_tokenizer

TOK = "llama2c/tok512.model"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(tiny_model(vocab_size=512, max_seq_len=256), str(path))
    return str(path)


def e2e_slice(tmp_path, rows=(40, 20, 25)):
    """The header and the first rows of each real E2E file."""
    paths = {}
    for name, n in zip(("trainset", "devset", "testset_w_refs"), rows):
        with open(asset(f"e2e/{name}.csv"), encoding="utf-8") as f:
            lines = [next(f) for _ in range(n + 1)]
        paths[name] = str(tmp_path / f"{name}.csv")
        open(paths[name], "w", encoding="utf-8").writelines(lines)
    return paths


def e2e_argv(option, ckpt, data, out_dir, *extra):
    """The training flags only when something trains (with --load_adapter they are refused)."""
    training = [] if "--load_adapter" in extra else ["--train", data["trainset"], "--epochs", "2"]
    return ["--option", option, "--task", "e2e", "--pretrained-model-path", ckpt, "--tokenizer", asset(TOK),
            "--norm", "rmsnorm", *training, "--dev", data["devset"],
            "--test", data["testset_w_refs"], "--batch_size", "8", "--beam_size", "3",
            "--max_new_tokens", "12", "--test_out", os.path.join(out_dir, "test.txt"), *extra]


@pytest.mark.parametrize("option,extra", [("finetune", []), ("prefix", ["--prefix_length", "4"]),
                                          ("lora", ["--no_java"]),
                                          ("prefix", ["--prefix_mode", "adapter", "--prefix_length", "4"])])
def test_cli_e2e_end_to_end(tmp_path, capsys, ckpt, option, extra):
    data = e2e_slice(tmp_path)
    out = str(tmp_path / "out")
    os.mkdir(out)
    saves = [] if option == "finetune" else ["--save_adapter", os.path.join(out, "adapter")]  # finetune saves none
    assert main(e2e_argv(option, ckpt, data, out, *saves, *extra)) == 0
    printed = capsys.readouterr().out
    assert "epoch 1: train loss ::" in printed and "dev loss ::" in printed and "BLEU:" in printed
    sources = [s for s, _ in group_references(read_pairs(data["testset_w_refs"]))]
    lines = open(os.path.join(out, "test.txt"), encoding="utf-8").read().split("\n")
    assert len(lines) == len(sources) + 1 and lines[-1] == ""  # one line per unique MR, in order
    report = json.load(open(os.path.join(out, "test-scores.json")))
    scores = report["scores"]["test"]
    assert set(scores) == {"BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr"}
    assert (scores["METEOR"] is None) == (option == "lora") and 0.0 <= scores["BLEU"] <= 1.0
    assert report["config"]["beam_size"] == 3 and report["config"]["lr_schedule"] == "linear"
    has_adapter = os.path.exists(os.path.join(out, "adapter.json"))
    assert has_adapter == (option != "finetune")


def test_a_trained_prefix_changes_what_generate_writes(tmp_path, ckpt):
    """The prefix enters generation through minillama's own KV cache (no dropped prefix)."""
    data = e2e_slice(tmp_path)
    out = str(tmp_path / "out")
    os.mkdir(out)
    assert main(e2e_argv("prefix", ckpt, data, out, "--prefix_length", "4", "--lr", "0.1", "--no_java",
                         "--save_adapter", os.path.join(out, "adapter"))) == 0
    from minillama.formats import load_model
    base = load_model(ckpt, norm="rmsnorm")
    tok = load_tokenizer(asset(TOK))
    ids = torch.tensor([prompt_ids(tok, read_pairs(data["testset_w_refs"])[0].source)])
    plain = base.generate(ids, 12, beam_size=3, eos_id=tok.eos_id)
    tuned = load_adapter(base, os.path.join(out, "adapter")).generate(ids, 12, beam_size=3, eos_id=tok.eos_id)
    assert not torch.equal(plain, tuned)
    first = open(os.path.join(out, "test.txt"), encoding="utf-8").readline().rstrip("\n")
    from minillama.core.sampling import strip_after_stop
    assert first == tok.decode(strip_after_stop(tuned[0, ids.shape[1]:].tolist(), [tok.eos_id])).strip()


def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, ckpt, monkeypatch):
    data = e2e_slice(tmp_path)
    out = str(tmp_path / "out")
    os.mkdir(out)
    long_mr = str(tmp_path / "long.csv")
    open(long_mr, "w").write('mr,ref\n"' + "name[x], " * 200 + '",a text\n')
    no_header = str(tmp_path / "noheader.csv")
    open(no_header, "w").write('"name[x]",a text\n')
    empty_ref = str(tmp_path / "emptyref.csv")
    open(empty_ref, "w").write('mr,ref\n"name[x]",\n')
    cases = [
        (["--beam_size", "0"], "--beam_size must be a positive integer"),
        (["--test", long_mr], "long.csv:2: the source is"),
        (["--train", no_header], "noheader.csv:1: the header has no column 'mr'"),
        (["--dev", empty_ref], "emptyref.csv:2"),
        (["--test_out", os.path.join(out, "missing", "t.txt")], "does not exist"),
        (["--option", "prompt"], "--task e2e trains a generator"),
        (["--test_out", data["testset_w_refs"]], "--test and --test_out name the same file"),
    ]
    for extra, message in cases:
        assert main(e2e_argv("finetune", ckpt, data, out, "--no_java", *extra)) == 2, message
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
        assert os.listdir(out) == [], (message, os.listdir(out))
    monkeypatch.setenv("PATH", str(tmp_path))  # no java on PATH: said before any work, nothing written
    assert main(e2e_argv("finetune", ckpt, data, out)) == 2
    err = capsys.readouterr().err
    assert "need Java" in err and "--no_java" in err and len(err.strip().splitlines()) == 1
    assert os.listdir(out) == []


def test_load_two_adapters_with_interpolate(tmp_path, capsys, ckpt):
    """--task e2e --load_adapter A B --interpolate ALPHA decodes with alpha*A + (1-alpha)*B;
    alpha 1 writes what A alone writes."""
    data = e2e_slice(tmp_path, rows=(16, 8, 6))
    out = str(tmp_path / "out")
    os.mkdir(out)
    for name, seed in (("a", "1"), ("b", "2")):
        assert main(e2e_argv("prefix", ckpt, data, out, "--prefix_mode", "ptuning2", "--prefix_length", "3",
                             "--lr", "0.3", "--epochs", "1", "--no_java", "--seed", seed,
                             "--save_adapter", os.path.join(out, name), "--test_out", os.path.join(out, f"{name}.txt"))) == 0
    adapters = [os.path.join(out, "a"), os.path.join(out, "b")]

    def decode(alpha, name):
        argv = e2e_argv("prefix", ckpt, data, out, "--no_java", "--load_adapter", *adapters, "--interpolate", alpha,
                        "--test_out", os.path.join(out, name))
        capsys.readouterr()
        assert main(argv) == 0
        return capsys.readouterr().out, open(os.path.join(out, name), encoding="utf-8").read()

    printed, _ = decode("0.5", "half.txt")
    assert "interpolated 0.5 : 0.5" in printed
    _, alone_a = decode("1.0", "one.txt")
    assert alone_a == open(os.path.join(out, "a.txt"), encoding="utf-8").read()
