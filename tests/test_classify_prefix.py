"""run_llama.py --option prefix end to end: the three modes x both heads on a tiny model
and slices of the real course data, adapters saved and re-loaded (identical
predictions, interpolation), bad input, and the --task mmlu route."""
import json
import os
import pathlib
import shutil

import pytest

from conftest import asset, run_unprivileged, tiny_model
from minillama.cli import main
from minillama.formats import save_checkpoint
from conftest import course_argv, data_slice, read_predictions


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    save_checkpoint(tiny_model(vocab_size=512, max_seq_len=256), str(d / "tiny.pt"))
    save_checkpoint(tiny_model(vocab_size=512, max_seq_len=256, dim=32, n_heads=2, n_kv_heads=1), str(d / "other.pt"))
    return {"tiny": str(d / "tiny.pt"), "other": str(d / "other.pt")}


def gold(path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n").split(" ||| ", 1) for line in f]


@pytest.mark.slow
@pytest.mark.parametrize("mode,head", [("prefix", "verbalizer"), ("prompt", "cls"), ("ptuning2", "verbalizer"),
                                       ("prefix", "cls"), ("ptuning2", "mean")])
def test_cli_prefix_end_to_end_and_adapter_round_trip(tmp_path, monkeypatch, capsys, ckpts, mode, head):
    data = data_slice(tmp_path, "sst")
    monkeypatch.chdir(tmp_path)  # default output and adapter names land here
    mlp = ["--prefix_hidden", "32"] if mode == "prefix" else []  # the other modes have no MLP (refused)
    argv = course_argv("prefix", ckpts["tiny"], data, "--prefix_mode", mode, "--prefix_head", head,
                       "--prefix_length", "4", *mlp, "--epochs", "2", "--weight_decay", "0.01", "--patience", "1")
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "trainable parameters" in out and "% of all parameters" in out and "saved adapter" in out
    assert "epoch 0: train loss ::" in out
    preds = {}
    for split in ("dev", "test"):
        preds[split] = read_predictions(tmp_path / f"sst-{split}-prefix-output.txt")
        g = gold(data[split])
        assert len(preds[split]) == len(g) == 40
        assert [s for _, s in preds[split]] == [s.strip() for _, s in g]
        assert all(p in {"0", "1", "2", "3", "4"} for p, _ in preds[split])
    adapter = tmp_path / "sst-prefix-adapter"
    meta = json.loads((tmp_path / "sst-prefix-adapter.json").read_text())
    assert meta["mode"] == mode and meta["length"] == 4 and meta["prefix_head"] == head
    # the folded adapter alone reproduces the predictions, without training (no train file needed)
    reload = course_argv("prefix", ckpts["tiny"], data, "--load_adapter", str(adapter),
                         "--dev_out", str(tmp_path / "dev-re.txt"), "--test_out", str(tmp_path / "test-re.txt"))
    reload[reload.index("--train") + 1] = str(tmp_path / "absent-train.txt")
    assert main(reload) == 0
    assert "epoch 0" not in capsys.readouterr().out
    assert read_predictions(tmp_path / "dev-re.txt") == preds["dev"]
    assert read_predictions(tmp_path / "test-re.txt") == preds["test"]
    # interpolating an adapter with itself at any alpha is that adapter
    mixed = course_argv("prefix", ckpts["tiny"], data, "--load_adapter", str(adapter), str(adapter),
                        "--interpolate", "0.3", "--dev_out", str(tmp_path / "dev-mix.txt"),
                        "--test_out", str(tmp_path / "test-mix.txt"))
    assert main(mixed) == 0
    assert read_predictions(tmp_path / "dev-mix.txt") == preds["dev"]


@pytest.mark.slow
@pytest.mark.parametrize("head", ["cls", "verbalizer"])
def test_cli_llama_adapter_end_to_end_and_round_trip(tmp_path, capsys, ckpts, head):
    """--prefix_mode adapter: trains (count printed), saves, and the saved adapter alone
    reproduces the predictions."""
    data = data_slice(tmp_path, "sst", n=24)
    argv = course_argv("prefix", ckpts["tiny"], data, "--prefix_mode", "adapter", "--prefix_head", head,
                       "--prefix_length", "3", "--adapter_layers", "2", "--epochs", "2", "--lr", "0.05",
                       "--save_adapter", str(tmp_path / "a"), "--dev_out", str(tmp_path / "dev.txt"),
                       "--test_out", str(tmp_path / "test.txt"))
    assert main(argv) == 0
    out = capsys.readouterr().out
    head_params = 325 if head == "cls" else 0  # 5 labels x 64 + 5 biases
    assert (f"LLaMA-Adapter: 3-vector prompts in the top 2 of 2 layers, scalar gates, head {head}: "
            f"386 adapter + {head_params} head parameters") in out  # 2 layers x (3 x 64 prompt + 1 gate)
    assert f"trainable parameters: {386 + head_params} of " in out
    meta = json.loads((tmp_path / "a.json").read_text())
    assert meta["method"] == "adapter" and meta["config"] == {"length": 3, "layers": 2, "gate": "scalar"}
    reload = course_argv("prefix", ckpts["tiny"], data, "--load_adapter", str(tmp_path / "a"),
                         "--dev_out", str(tmp_path / "dev-re.txt"), "--test_out", str(tmp_path / "test-re.txt"))
    assert main(reload) == 0
    assert "load adapter" in capsys.readouterr().out
    assert read_predictions(tmp_path / "dev-re.txt") == read_predictions(tmp_path / "dev.txt")
    assert read_predictions(tmp_path / "test-re.txt") == read_predictions(tmp_path / "test.txt")


@pytest.mark.slow
def test_cli_export_peft_and_load_the_peft_directory(tmp_path, capsys):
    """--export_peft after training: PEFT loads it on the HF base (oracle in
    test_adapters_peft_format.py); --load_adapter of that directory predicts as the
    minillama file does.  A cls head is left out, and says so."""
    from minillama.formats.hf import save_hf_dir
    data = data_slice(tmp_path, "sst", n=16)
    hf_dir = str(tmp_path / "base-hf")
    save_hf_dir(tiny_model(vocab_size=512, max_seq_len=256), hf_dir)
    outs = lambda name: ["--dev_out", str(tmp_path / f"dev-{name}.txt"), "--test_out", str(tmp_path / f"t-{name}.txt")]  # noqa: E731
    argv = course_argv("prefix", hf_dir, data, "--prefix_mode", "ptuning2", "--prefix_head", "verbalizer",
                       "--prefix_length", "3", "--lr", "0.05", "--save_adapter", str(tmp_path / "a"),
                       "--export_peft", str(tmp_path / "peft"), *outs("train"))
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"exported the ptuning2 adapter as a PEFT adapter to {tmp_path / 'peft'}" in out
    assert f"its base is the Hugging Face directory {hf_dir}" in out and "left out" not in out
    cfg = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "PREFIX_TUNING" and cfg["base_model_name_or_path"] == hf_dir
    for name, source in (("mine", str(tmp_path / "a")), ("peft", str(tmp_path / "peft"))):
        assert main(course_argv("prefix", hf_dir, data, "--load_adapter", source, *outs(name))) == 0
    assert read_predictions(tmp_path / "dev-peft.txt") == read_predictions(tmp_path / "dev-mine.txt") == \
        read_predictions(tmp_path / "dev-train.txt")
    # LoRA with the cls head: exported without it, with a note; converting a saved adapter needs no training
    argv = course_argv("lora", hf_dir, data, "--save_adapter", str(tmp_path / "l"), *outs("lora"))
    assert main(argv) == 0
    capsys.readouterr()
    argv = course_argv("lora", hf_dir, data, "--load_adapter", str(tmp_path / "l"), "--export_peft",
                       str(tmp_path / "peft-lora"), *outs("lora-re"))
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "classification head is left out of the PEFT export" in out and "epoch 0" not in out
    assert json.loads((tmp_path / "peft-lora" / "adapter_config.json").read_text())["peft_type"] == "LORA"


@pytest.mark.parametrize("case,message", [
    ("finetune", "--export_peft: --option finetune trains no adapter"), ("file", "is a file"),
    ("no_parent", "does not exist")])
def test_cli_export_peft_bad_input_exits_2_before_loading(tmp_path, capsys, ckpts, case, message):
    data = data_slice(tmp_path, "sst", n=8)
    (tmp_path / "a-file").write_text("")
    target = {"finetune": str(tmp_path / "x"), "file": str(tmp_path / "a-file"),
              "no_parent": str(tmp_path / "missing" / "x")}[case]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    argv = course_argv("finetune" if case == "finetune" else "prefix", ckpts["tiny"], data, "--export_peft", target,
                       "--dev_out", str(out_dir / "dev.txt"), "--test_out", str(out_dir / "test.txt"),
                       "--save_adapter", str(out_dir / "a"))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert os.listdir(out_dir) == [] and not os.path.exists(str(tmp_path / "x"))


def test_cli_adapters_on_their_own_files_in_one_pass(tmp_path, capsys, ckpts):
    """--load_adapter A B --adapter_names: each adapter's predictions on its own files equal
    those of the adapter run alone (one a mean head on SST, one the verbalizer on CFIMDB)."""
    sst, imdb = data_slice(tmp_path, "sst", n=12), data_slice(tmp_path, "cfimdb", n=10)
    alone = {}
    for name, data, mode, head in (("s", sst, "ptuning2", "mean"), ("i", imdb, "prefix", "verbalizer")):
        argv = course_argv("prefix", ckpts["tiny"], data, "--prefix_mode", mode, "--prefix_head", head,
                           "--prefix_length", "3" if name == "s" else "5", "--max_sentence_len", "40",
                           "--lr", "0.05", "--save_adapter", str(tmp_path / name),
                           "--dev_out", str(tmp_path / f"{name}-dev-alone.txt"),
                           "--test_out", str(tmp_path / f"{name}-test-alone.txt"))
        assert main(argv) == 0
        alone[name] = [read_predictions(tmp_path / f"{name}-{split}-alone.txt") for split in ("dev", "test")]
    capsys.readouterr()
    argv = ["--option", "prefix", "--pretrained-model-path", ckpts["tiny"], "--norm", "rmsnorm",
            "--tokenizer", course_argv("prefix", "", sst)[5], "--load_adapter", str(tmp_path / "s"),
            str(tmp_path / "i"), "--adapter_names", "s,i", "--dev", f"{sst['dev']},{imdb['dev']}",
            "--test", f"{sst['test']},{imdb['test']}", "--max_sentence_len", "40", "--batch_size", "5"]
    cwd = os.getcwd()
    os.chdir(tmp_path)  # default outputs: <name>-{dev,test}-prefix-output.txt
    try:
        assert main(argv) == 0
    finally:
        os.chdir(cwd)
    out = capsys.readouterr().out
    lines = {line.split(" (")[0]: line for line in out.splitlines() if line.startswith("adapter ")}
    assert lines["adapter s"].startswith("adapter s (ptuning2") and ": mean head, dev " in lines["adapter s"]
    assert lines["adapter i"].startswith("adapter i (prefix") and ": label names (verbalizer), dev " in lines["adapter i"]
    assert f"i: note: the test labels of {imdb['test']} are placeholders" in out  # as a single run says
    assert "s: note:" not in out
    for name in ("s", "i"):
        mixed = [read_predictions(tmp_path / f"{name}-{split}-prefix-output.txt") for split in ("dev", "test")]
        assert mixed == alone[name], name
        assert f"{name}: dev acc ::" in out and f"{name}: test acc ::" in out
    # one entry per adapter, or one line
    bad = [a if a != f"{sst['test']},{imdb['test']}" else sst["test"] for a in argv]
    assert main(bad) == 2
    err = capsys.readouterr().err
    assert "--test: give one file per adapter (2, for s,i)" in err and len(err.strip().splitlines()) == 1


def test_interpolation_endpoints_select_each_adapter(tmp_path, capsys, ckpts):
    data = data_slice(tmp_path, "sst", n=16)
    paths = {}
    for name, seed in (("a", "1"), ("b", "2")):
        paths[name] = str(tmp_path / name)
        argv = course_argv("prefix", ckpts["tiny"], data, "--prefix_mode", "ptuning2", "--prefix_head", "cls",
                           "--prefix_length", "3", "--seed", seed, "--lr", "0.1", "--save_adapter", paths[name],
                           "--dev_out", str(tmp_path / f"dev-{name}.txt"), "--test_out", str(tmp_path / f"t-{name}.txt"))
        assert main(argv) == 0
    for alpha, name in (("1", "a"), ("0", "b")):
        argv = course_argv("prefix", ckpts["tiny"], data, "--load_adapter", paths["a"], paths["b"],
                           "--interpolate", alpha, "--dev_out", str(tmp_path / f"dev-{alpha}.txt"),
                           "--test_out", str(tmp_path / f"t-{alpha}.txt"))
        assert main(argv) == 0
        assert read_predictions(tmp_path / f"dev-{alpha}.txt") == read_predictions(tmp_path / f"dev-{name}.txt")
    capsys.readouterr()


@pytest.mark.parametrize("case,message", [
    ("other_shape", "adapter made for a model with"), ("missing_adapter", "not found"),
    ("length_0", "--prefix_length must be a positive number of virtual tokens, got 0"), ("two_without_alpha", "--interpolate"),
    ("init_text_missing", "--prefix_init_text"), ("adapter_layers_3", "--adapter_layers 3 is above the model's 2"),
    ("adapter_with_hidden", "--prefix_hidden does nothing with --prefix_mode adapter"),
    ("adapter_layers_for_ptuning2", "--adapter_layers does nothing with --prefix_mode ptuning2")])
def test_cli_prefix_bad_input_exits_2_without_outputs(tmp_path, capsys, ckpts, case, message):
    data = data_slice(tmp_path, "sst", n=8)
    adapter = str(tmp_path / "adapter")
    if case in ("other_shape", "two_without_alpha"):  # a real adapter, trained on the tiny model
        argv = course_argv("prefix", ckpts["tiny"], data, "--prefix_length", "2", "--save_adapter", adapter,
                           "--dev_out", str(tmp_path / "d.txt"), "--test_out", str(tmp_path / "t.txt"))
        assert main(argv) == 0
    extra = {"other_shape": ["--load_adapter", adapter], "missing_adapter": ["--load_adapter", adapter],
             "length_0": ["--prefix_length", "0"], "two_without_alpha": ["--load_adapter", adapter, adapter],
             "init_text_missing": ["--prefix_init", "text"],
             "adapter_layers_3": ["--prefix_mode", "adapter", "--adapter_layers", "3"],
             "adapter_with_hidden": ["--prefix_mode", "adapter", "--prefix_hidden", "8"],
             "adapter_layers_for_ptuning2": ["--prefix_mode", "ptuning2", "--adapter_layers", "1"]}[case]
    ckpt = ckpts["other" if case == "other_shape" else "tiny"]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    capsys.readouterr()
    saves = [] if "--load_adapter" in extra else ["--save_adapter", str(out_dir / "new-adapter")]
    argv = course_argv("prefix", ckpt, data, *extra, "--dev_out", str(out_dir / "dev.txt"),
                       "--test_out", str(out_dir / "test.txt"), *saves)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert os.listdir(out_dir) == []


def test_task_mmlu_routes_to_the_mmlu_prefix_task(monkeypatch):
    from minillama.tasks import mmlu_prefix
    seen = {}
    monkeypatch.setattr(mmlu_prefix, "run", lambda run, cfg: seen.update(mode=cfg.method.method, lr=cfg.training.lr))
    assert main(["--option", "prefix", "--task", "mmlu", "--prefix_mode", "prompt"]) == 0
    assert seen == {"mode": "prompt", "lr": 1e-2}  # prompt tuning's default lr, written out


@pytest.mark.slow
def test_unwritable_save_adapter_fails_before_training(ckpts, tmp_path):
    """--save_adapter into a directory the user may not write: one line, exit 2, before
    any training, and neither predictions nor adapter files appear."""
    work = str(tmp_path)
    data = data_slice(pathlib.Path(work), "sst", n=8)
    shutil.copy(ckpts["tiny"], os.path.join(work, "model.pt"))
    outs, locked = os.path.join(work, "outs"), os.path.join(work, "locked")
    os.mkdir(outs)
    os.mkdir(locked)
    argv = course_argv("prefix", os.path.join(work, "model.pt"), data, "--dev_out", os.path.join(outs, "dev.txt"),
                       "--test_out", os.path.join(outs, "test.txt"), "--save_adapter", os.path.join(locked, "a"))
    proc = run_unprivileged(argv, locked)
    assert proc.returncode == 2, proc.stderr
    assert "--save_adapter" in proc.stderr and "is not writable" in proc.stderr and "epoch" not in proc.stdout
    assert len(proc.stderr.strip().splitlines()) == 1
    assert os.listdir(outs) == [] and os.listdir(locked) == []


def test_a_loaded_adapter_brings_its_label_names_and_outputs_say_where_they_went(tmp_path, monkeypatch, capsys,
                                                                                  ckpts):
    """--load_adapter with neither --label-names nor --train: the names saved with the adapter
    (SST's five, not the default CFIMDB two: SST dev holds labels 3 and 4) apply, the outputs are
    named after --dev's data set, and each output's path is printed; loaded onto another norm, the
    base-mismatch warning is one line naming the setting."""
    data = data_slice(tmp_path, "sst", n=8)
    monkeypatch.chdir(tmp_path)
    assert main(course_argv("prefix", ckpts["tiny"], data, "--prefix_length", "2", "--save_adapter", "sst-ad",
                            "--dev_out", "trained-dev.txt", "--test_out", "trained-test.txt")) == 0
    capsys.readouterr()
    model = ["--pretrained-model-path", ckpts["tiny"], "--tokenizer", asset("llama2c/tok512.model")]
    argv = ["--option", "prefix", *model, "--norm", "rmsnorm", "--load_adapter", "sst-ad",
            "--dev", data["dev"], "--test", data["test"]]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "label names: awful, bad, average, good, excellent (the label names saved with sst-ad)" in out
    assert "wrote dev predictions to sst-dev-prefix-output.txt" in out
    assert "wrote test predictions to sst-test-prefix-output.txt" in out
    assert read_predictions("sst-dev-prefix-output.txt") == read_predictions("trained-dev.txt")
    assert not os.path.exists("cfimdb-dev-prefix-output.txt")
    # the same adapter on the LayerNorm reading of the same weights: warned in one clean line
    argv[argv.index("rmsnorm")] = "layernorm"
    assert main(argv + ["--dev_out", "ln-dev.txt", "--test_out", "ln-test.txt"]) == 0
    err = capsys.readouterr().err
    assert ("warning: sst-ad: adapter was trained on a different base model of the same shape "
            "(settings differ: norm 'rmsnorm' there, 'layernorm' here)\n") in err
    assert err.count("warning") == 1 and ".py:" not in err  # no file:line, no source line
    # zero-shot with SST's names and no --train: outputs named after --dev's data set too
    assert main(["--option", "prompt", *model, "--dev", data["dev"], "--test", data["test"],
                 "--label-names", data["labels"]]) == 0
    assert "wrote dev predictions to sst-dev-prompting-output.txt" in capsys.readouterr().out


@pytest.mark.parametrize("task", ["classify", "mmlu"])
def test_an_export_peft_cannot_do_is_refused_before_anything_loads(tmp_path, monkeypatch, capsys, task):
    """--adapter_gate tanh has no PEFT format: refused from the flags, before the model (absent
    here) loads, and nothing is written."""
    monkeypatch.chdir(tmp_path)
    argv = ["--option", "prefix", "--task", task, "--prefix_mode", "adapter", "--adapter_gate", "tanh",
            "--export_peft", "peft-dir", "--pretrained-model-path", str(tmp_path / "absent.pt")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == ("error: --export_peft: PEFT's AdaptionPrompt has one plain gate per layer; this adapter has "
                   "--adapter_gate tanh: train with --adapter_gate scalar to export it\n")
    assert os.listdir(tmp_path) == []


def test_export_of_a_saved_tanh_adapter_is_refused_before_the_model_loads(tmp_path, monkeypatch, capsys):
    from minillama.adapters import LlamaAdapterConfig, attach, save_adapter
    monkeypatch.chdir(tmp_path)
    save_adapter(attach(tiny_model(), LlamaAdapterConfig(length=2, layers=1, gate="tanh")), "tanh-ad")
    before = sorted(os.listdir(tmp_path))
    argv = ["--option", "prefix", "--load_adapter", "tanh-ad", "--export_peft", "peft-dir",
            "--pretrained-model-path", str(tmp_path / "absent.pt"), "--label-names", asset("coursework/sst-label-mapping.json"),
            "--dev", asset("coursework/sst-dev.txt"), "--test", asset("coursework/sst-test.txt")]
    assert main(argv) == 2
    assert "--adapter_gate tanh: train with --adapter_gate scalar" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == before


def test_a_warmup_longer_than_the_run_is_refused_before_the_model_loads(tmp_path, monkeypatch, capsys):
    data = data_slice(tmp_path, "sst", n=8)
    monkeypatch.chdir(tmp_path)
    before = sorted(os.listdir(tmp_path))
    argv = course_argv("lora", str(tmp_path / "absent.pt"), data, "--warmup_steps", "1000", "--epochs", "2",
                       "--batch_size", "4")
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        "error: --warmup_steps 1000 is longer than this run's 4 optimisation steps (2 epoch(s) x 2 batch(es) of 4): "
        "the lr would climb to 0.4% of --lr 0.001 at most; use --warmup_steps 4 or fewer\n")
    assert sorted(os.listdir(tmp_path)) == before
