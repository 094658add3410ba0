"""Classification options: the course prompt, answer readers vs brute force,
learning a separable task, and run_llama.py end to end on real data slices."""
import os

import pytest
import torch

from conftest import tiny_model, data_slice, course_argv, read_predictions
from minillama.cli import main
from minillama.adapters import inject_lora, merge_lora
from minillama.data import Example, Split
from minillama.errors import MinillamaError
from minillama.heads import HeadClassifier
from minillama.runconfig import RunConfig
from minillama.tasks.classify import course_prompt
from minillama.train import TrainConfig, accuracy, fit, predict


def test_course_prompt_wording():
    assert course_prompt(["bad", "good"]) == "Is this movie bad or good? This movie is "
    assert course_prompt(["awful", "bad", "average", "good", "excellent"]) == \
        "Is this movie awful, bad, average, good, or excellent? This movie is "


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


@pytest.mark.slow  # long training
@pytest.mark.parametrize("option,lr", [("finetune", 1e-3), ("lora", 1e-2)])
def test_finetune_and_lora_learn_a_separable_task(option, lr):
    train, dev, test = synthetic(384, 0), synthetic(96, 1), synthetic(128, 2)
    torch.manual_seed(0)
    model = tiny_model()
    if option == "lora":
        inject_lora(model, ("wq", "wv"), rank=4, alpha=8.0)
    clf = HeadClassifier(model, model.config.dim, 3, dropout=0.1)
    fit(clf, train, dev, TrainConfig(epochs=3, lr=lr, batch_size=16), RunConfig(progress=False), log=lambda s: None)  # 72 steps
    if option == "lora":
        merge_lora(model)
    acc = accuracy(predict(clf, test, 64, torch.device("cpu"), progress=False), test.labels)
    assert acc >= 0.95


# -- end to end through the CLI ------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("option,word", [("prompt", "prompting"), ("finetune", "finetuning"), ("lora", "lora"),
                                         ("probe", "probe")])
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
        shares = [line for line in out.splitlines() if "%" in line and "parameters" in line]
        assert len(shares) == 1 and "% of all parameters: base, adapter and head)" in shares[0]  # one figure


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
    ("missing_out_dir", "does not exist"), ("lora_dropout_2", "--lora_dropout must be in [0, 1)"),
    ("weight_decay_negative", "--weight_decay must be >= 0"), ("lr_inf", "--lr must be >= 0 and finite"),
    ("lr_nan", "--lr must be >= 0 and finite"), ("lr_1e10_diverges", "training diverged"),
    ("max_sentence_len_0", "--max_sentence_len")])
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
    elif case in ("lora_dropout_2", "weight_decay_negative", "lr_inf", "lr_nan", "lr_1e10_diverges",
                  "max_sentence_len_0"):
        flag, value = {"lora_dropout_2": ("--lora_dropout", "2"), "weight_decay_negative": ("--weight_decay", "-1"),
                       "lr_inf": ("--lr", "inf"), "lr_nan": ("--lr", "nan"), "lr_1e10_diverges": ("--lr", "1e10"),
                       "max_sentence_len_0": ("--max_sentence_len", "0")}[case]
        extra = [f"{flag}={value}", "--epochs", "5", "--batch_size", "4"]
        option = "finetune" if case == "lr_1e10_diverges" else option  # every weight moves: the loss turns NaN
    out_dir = tmp_path / ("missing" if case == "missing_out_dir" else "out")
    if case != "missing_out_dir":
        out_dir.mkdir()
    argv = course_argv(option, tiny_ckpt, data, *extra, "--dev_out", str(out_dir / "dev.txt"),
                       "--test_out", str(out_dir / "test.txt"))
    assert main(argv) == 2
    err = capsys.readouterr().err
    if case == "lr_1e10_diverges":  # training had started: its progress bars (stderr) come before the error
        err = err.strip().splitlines()[-1]
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out_dir.exists() or os.listdir(out_dir) == []


def test_an_output_naming_an_input_is_refused_and_the_input_kept(tmp_path, capsys, tiny_ckpt):
    """--dev mydev.txt --dev_out ./../<dir>/mydev.txt (the same file, spelled otherwise): one line
    naming both flags, exit 2, the gold labels untouched."""
    data = data_slice(tmp_path, "sst", n=8)
    before = open(data["dev"], "rb").read()
    spelled = os.path.join(str(tmp_path), "..", os.path.basename(str(tmp_path)), "sst-dev.txt")
    argv = course_argv("prompt", tiny_ckpt, data, "--dev_out", spelled, "--test_out", str(tmp_path / "t.txt"))
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--dev and --dev_out name the same file" in err[0], err
    assert open(data["dev"], "rb").read() == before and not os.path.exists(tmp_path / "t.txt")


def test_a_mixed_run_may_share_an_input_but_never_write_over_one(tmp_path):
    """Two adapters may read one dev set; an output naming an input (or another output) is refused."""
    from minillama.errors import MinillamaError
    from minillama.files import check_distinct_paths
    from minillama.tasks.classify import mixed_run_paths
    dev, test = tmp_path / "dev.txt", tmp_path / "test.txt"
    dev.write_text("0 ||| a\n")
    test.write_text("1 ||| b\n")
    inputs = {"dev": [str(dev), str(dev)], "test": [str(test), str(tmp_path / ".." / tmp_path.name / "test.txt")]}
    outs = {"dev": ["a-dev.txt", "b-dev.txt"], "test": ["a-test.txt", "b-test.txt"]}
    check_distinct_paths(mixed_run_paths(["a", "b"], inputs, outs, ["A", "B"]))  # shared inputs: fine
    with pytest.raises(MinillamaError) as e:
        check_distinct_paths(mixed_run_paths(["a", "b"], inputs, {**outs, "test": ["a-test.txt", str(dev)]},
                                             ["A", "B"]))
    assert str(e.value) == f"--dev (a) and --test_out (b) name the same file ({dev}): choose different paths"
    with pytest.raises(MinillamaError, match=r"^--dev_out \(a\) and --dev_out \(b\) name the same file"):
        check_distinct_paths(mixed_run_paths(["a", "b"], inputs, {**outs, "dev": ["x.txt", "x.txt"]}, ["A", "B"]))


def test_an_output_over_the_checkpoint_is_refused_before_loading(tmp_path, capsys, tiny_ckpt):
    data = data_slice(tmp_path, "sst", n=8)
    ck = tmp_path / "ck"
    argv = course_argv("lora", tiny_ckpt, data, "--checkpoint_dir", str(ck), "--dev_out", str(ck / "checkpoint.pt"))
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == (f"error: --dev_out and --checkpoint_dir (checkpoint.pt) name the same "
                                               f"file ({ck / 'checkpoint.pt'}): choose different paths")
    assert not ck.exists()


def test_demonstrations_are_balanced_seeded_and_in_the_zero_shot_template():
    from minillama.tasks.classify import demonstrations
    examples = [Example(0, "dull", 1), Example(0, "flat", 2), Example(1, "fun", 3), Example(0, "slow", 4),
                Example(1, "great", 5)]
    names = ["bad", "good"]
    text = demonstrations(examples, names, 3, seed=0)
    lines = text.splitlines()
    prompt = "Is this movie bad or good? This movie is "
    assert len(lines) == 3 and all(prompt in line for line in lines)
    assert [line.rsplit(" ", 1)[1] for line in lines] == ["bad", "good", "bad"]  # one of each label in turn
    assert text == demonstrations(examples, names, 3, seed=0) and text.endswith("\n")
    seeds = {demonstrations(examples, names, 3, seed=s) for s in range(8)}
    assert len(seeds) > 1  # --seed chooses which examples
    with pytest.raises(MinillamaError, match=r"^--k_shot 6: the training file holds only 5 examples"):
        demonstrations(examples, names, 6, seed=0)


def test_k_shot_prompts_read_the_examples_before_each_sentence(tmp_path, capsys, tiny_ckpt):
    """The encoded input is exactly the text [examples][sentence] [prompt]; a budget too small
    for the examples is one line."""
    from minillama.tokenizer import load_tokenizer
    from minillama.data import encode_examples
    from minillama.tasks.classify import demonstrations
    from conftest import asset
    tok = load_tokenizer(asset("llama2c/tok512.model"))
    shots = demonstrations([Example(0, "dull", 1), Example(1, "fun", 2)], ["bad", "good"], 2, seed=3)
    ids = encode_examples([Example(1, "a fine film", 1)], tok, None, course_prompt(["bad", "good"]), shots)[0]
    assert ids == [tok.bos_id] + tok.encode(shots + "a fine film " + course_prompt(["bad", "good"]), bos=False)
    rows = "".join(f"{i % 2} ||| {'a dull film' if i % 2 == 0 else 'a fun film'} {i}\n" for i in range(40))
    data = {"labels": str(tmp_path / "names.json")}
    (tmp_path / "names.json").write_text('["bad", "good"]')
    for split in ("train", "dev", "test"):
        data[split] = str(tmp_path / f"{split}.txt")
        (tmp_path / f"{split}.txt").write_text(rows)
    out = tmp_path / "out"
    out.mkdir()
    argv = course_argv("prompt", tiny_ckpt, data, "--k_shot", "3", "--dev_out", str(out / "d.txt"),
                       "--test_out", str(out / "t.txt"))
    assert main(argv) == 0
    assert "in-context learning: 3 labelled examples" in capsys.readouterr().out
    assert len(read_predictions(out / "d.txt")) == 40
    assert main(course_argv("prompt", tiny_ckpt, data, "--k_shot", "20", "--dev_out", str(out / "d2.txt"),
                            "--test_out", str(out / "t2.txt"))) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --k_shot 20: the 20 examples take ") and err.endswith(
        "of the model's 256-token context, leaving no room for a sentence: lower --k_shot"), err
    assert not (out / "d2.txt").exists()
