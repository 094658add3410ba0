"""Classification options: the course prompt, answer readers vs brute force,
learning a separable task, and run_llama.py end to end on real data slices."""
import os

import pytest
import torch
import torch.nn.functional as F

from conftest import asset, tiny_model
from minillama.cli import main
from minillama.formats import save_checkpoint
from minillama.data import Example, Split, left_pad
from minillama.lora import inject_lora, merge_lora
from minillama.tasks.classify import HeadClassifier, VerbalizerClassifier, course_prompt
from minillama.tokenizer import load_tokenizer
from minillama.train import TrainConfig, accuracy, fit, predict


def test_course_prompt_wording():
    assert course_prompt(["bad", "good"]) == "Is this movie bad or good? This movie is "
    assert course_prompt(["awful", "bad", "average", "good", "excellent"]) == \
        "Is this movie awful, bad, average, good, or excellent? This movie is "


def test_left_pad():
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    ids, mask = left_pad(torch.tensor([[5, 6, 0, 0], [1, 2, 3, 4]]), right)
    assert ids.tolist() == [[0, 0, 5, 6], [1, 2, 3, 4]] and mask.tolist() == left.tolist()


def test_head_classifier_reads_last_real_token_with_full_gradients():
    """HeadClassifier (left-pad + last_only: the last block computes one position)
    equals the head on a full forward's last real token, values and gradients."""
    model = tiny_model()
    clf = HeadClassifier(model, 64, 3)
    ids = torch.tensor([[5, 6, 7, 0, 0], [1, 2, 3, 4, 5], [9, 8, 0, 0, 0]])
    mask = (ids != 0).long()
    out = clf(ids, mask)
    out.square().sum().backward()
    fast_grads = {n: p.grad.clone() for n, p in clf.named_parameters()}
    clf.zero_grad()
    _, hidden = model(ids, mask)  # every position, right-padded
    last = mask.sum(1) - 1
    expected = clf.head(hidden[torch.arange(3), last])
    expected.square().sum().backward()
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    for n, p in clf.named_parameters():
        torch.testing.assert_close(fast_grads[n], p.grad, atol=1e-5, rtol=1e-4, msg=n)


def brute_force_scores(model, prompts, label_ids):
    """log P(label | prompt), one unpadded sequence per (prompt, label)."""
    scores = torch.zeros(len(prompts), len(label_ids))
    for i, p in enumerate(prompts):
        for k, lab in enumerate(label_ids):
            seq = torch.tensor([p + lab])
            logits, _ = model(seq)
            logp = F.log_softmax(logits[0].double(), dim=-1)
            scores[i, k] = sum(logp[len(p) - 1 + j, t] for j, t in enumerate(lab))
    return scores


@pytest.mark.parametrize("names", [["awful", "bad", "average", "good", "excellent"], ["bad", "good"]])
def test_verbalizer_equals_brute_force_likelihood(names):
    tok = load_tokenizer(asset("llama2c/tok512.model"))
    model = tiny_model(vocab_size=512, max_seq_len=128)
    label_ids = [tok.encode(n, bos=False) for n in names]
    assert max(len(ids) for ids in label_ids) > 1  # the multi-token path is exercised
    texts = ["a lovely film", "dull and far too long , honestly", "meh"]
    prompts = [tok.encode(f"{t} {course_prompt(names)}", bos=True) for t in texts]
    split = Split([Example(0, t, i + 1) for i, t in enumerate(texts)], prompts, tok.pad_id)
    clf = VerbalizerClassifier(model, label_ids)
    batch = next(split.batches(3))
    with torch.no_grad():
        scores = clf(batch.input_ids, batch.attention_mask)
        expected = brute_force_scores(model, prompts, label_ids)
    assert torch.allclose(scores, expected, atol=1e-4)
    assert predict(clf, split, 2, torch.device("cpu"), progress=False).tolist() == expected.argmax(1).tolist()


def test_verbalizer_single_token_path_equals_brute_force():
    model = tiny_model()
    label_ids = [[11], [12], [13]]  # one token each: a single forward pass scores them all
    prompts = [[1, 40, 41, 42], [1, 50], [1, 60, 61]]
    split = Split([Example(0, "", i + 1) for i in range(3)], prompts, pad_id=0)
    batch = next(split.batches(3))
    with torch.no_grad():
        scores = VerbalizerClassifier(model, label_ids)(batch.input_ids, batch.attention_mask)
        assert torch.allclose(scores, brute_force_scores(model, prompts, label_ids), atol=1e-4)


def synthetic(n, seed, vocab=97, num_labels=3):
    """Random token sentences; label k is marked by token 3 + k at a random position."""
    g = torch.Generator().manual_seed(seed)
    examples, ids = [], []
    for i in range(n):
        label = int(torch.randint(0, num_labels, (1,), generator=g))
        length = int(torch.randint(6, 12, (1,), generator=g))
        seq = torch.randint(10, vocab, (length,), generator=g).tolist()
        seq[int(torch.randint(0, length, (1,), generator=g))] = 3 + label
        examples.append(Example(label, "", i + 1))
        ids.append([1] + seq)
    return Split(examples, ids, pad_id=0)


@pytest.mark.parametrize("option,lr", [("finetune", 1e-3), ("lora", 1e-2)])
def test_finetune_and_lora_learn_a_separable_task(option, lr):
    train, dev, test = synthetic(384, 0), synthetic(96, 1), synthetic(128, 2)
    torch.manual_seed(0)
    model = tiny_model()
    if option == "lora":
        inject_lora(model, ("wq", "wv"), rank=4, alpha=8.0)
    clf = HeadClassifier(model, model.config.dim, 3, dropout=0.1)
    fit(clf, train, dev, TrainConfig(epochs=3, lr=lr, batch_size=16, progress=False), log=lambda s: None)  # 72 steps
    if option == "lora":
        merge_lora(model)
    acc = accuracy(predict(clf, test, 64, torch.device("cpu"), progress=False), test.labels)
    assert acc >= 0.95


# -- end to end through the CLI ------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(tiny_model(vocab_size=512, max_seq_len=256), str(path))
    return str(path)


def data_slice(tmp_path, dataset, n=40):
    """The first n lines of each real split, and the real label names."""
    paths = {}
    for split in ("train", "dev", "test"):
        with open(asset(f"coursework/{dataset}-{split}.txt"), encoding="utf-8") as f:
            lines = [next(f) for _ in range(n)]
        paths[split] = tmp_path / f"{dataset}-{split}.txt"
        paths[split].write_text("".join(lines), encoding="utf-8")
    paths["labels"] = asset(f"coursework/{dataset}-label-mapping.json")
    return {k: str(v) for k, v in paths.items()}


def course_argv(option, ckpt, data, *extra):
    return ["--option", option, "--pretrained-model-path", ckpt, "--tokenizer", asset("llama2c/tok512.model"),
            "--norm", "rmsnorm", "--train", data["train"], "--dev", data["dev"], "--test", data["test"],
            "--label-names", data["labels"], "--epochs", "1", "--batch_size", "16", "--lr", "1e-3", *extra]


def read_predictions(path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n").split(" ||| ", 1) for line in f]


@pytest.mark.parametrize("option,word", [("prompt", "prompting"), ("finetune", "finetuning"), ("lora", "lora")])
def test_cli_end_to_end_writes_one_prediction_per_line(tmp_path, monkeypatch, capsys, tiny_ckpt, option, word):
    data = data_slice(tmp_path, "sst")
    monkeypatch.chdir(tmp_path)  # default output names land here
    assert main(course_argv(option, tiny_ckpt, data)) == 0
    out = capsys.readouterr().out
    for split in ("dev", "test"):
        preds = read_predictions(tmp_path / f"sst-{split}-{word}-output.txt")
        with open(data[split], encoding="utf-8") as f:
            gold = [line.rstrip("\n").split(" ||| ", 1) for line in f]
        assert len(preds) == len(gold) == 40
        assert [s for _, s in preds] == [s.strip() for _, s in gold]
        assert all(p in {"0", "1", "2", "3", "4"} for p, _ in preds)
        acc = sum(p == g for (p, _), (g, _) in zip(preds, gold)) / 40
        assert f"{split} acc :: {acc:.3f}" in out
    if option != "prompt":
        assert "trainable parameters:" in out and "epoch 0: train loss ::" in out


def test_cli_cfimdb_placeholder_note_and_seed_repeats(tmp_path, capsys, tiny_ckpt):
    data = data_slice(tmp_path, "cfimdb", n=12)
    outs = []
    for run in range(2):
        argv = course_argv("lora", tiny_ckpt, data, "--max_sentence_len", "48", "--dev_out",
                           str(tmp_path / f"dev{run}.txt"), "--test_out", str(tmp_path / f"test{run}.txt"))
        assert main(argv) == 0
        outs.append(capsys.readouterr().out)
    assert "test labels of" in outs[0] and "placeholders" in outs[0]
    assert (tmp_path / "dev0.txt").read_text() == (tmp_path / "dev1.txt").read_text()
    acc_lines = [[l for l in o.splitlines() if " acc :: " in l] for o in outs]
    assert acc_lines[0] == acc_lines[1] and len(acc_lines[0]) >= 3


@pytest.mark.parametrize("case,message", [
    ("missing_data", "not found"), ("label_outside", "outside the 5 label names"), ("empty_split", "empty split"),
    ("bad_json", "not valid JSON"), ("lora_rank_0", "--lora_rank"), ("negative_lr", "--lr must be >= 0"),
    ("missing_out_dir", "does not exist")])
def test_cli_bad_input_exits_2_without_outputs(tmp_path, capsys, tiny_ckpt, case, message):
    data = data_slice(tmp_path, "sst", n=8)
    option, extra = "lora", []  # lora reads every split and checks every flag
    if case == "missing_data":
        data["dev"] = str(tmp_path / "nope.txt")
    elif case == "label_outside":
        with open(data["dev"], "a", encoding="utf-8") as f:
            f.write("5 ||| six labels?\n")
    elif case == "empty_split":
        open(data["test"], "w").close()
    elif case == "bad_json":
        data["labels"] = str(tmp_path / "labels.json")
        open(data["labels"], "w").write("[awful, bad]")
    elif case == "lora_rank_0":
        extra = ["--lora_rank", "0"]
    elif case == "negative_lr":
        extra = ["--lr=-1e-3"]
    out_dir = tmp_path / ("missing" if case == "missing_out_dir" else "out")
    if case != "missing_out_dir":
        out_dir.mkdir()
    argv = course_argv(option, tiny_ckpt, data, *extra, "--dev_out", str(out_dir / "dev.txt"),
                       "--test_out", str(out_dir / "test.txt"))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out_dir.exists() or os.listdir(out_dir) == []
