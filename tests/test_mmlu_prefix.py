"""`run_llama.py --option prefix | bottleneck --task mmlu` (minillama/tasks/mmlu_prefix.py): training
on val minus a held-out part, baseline vs tuned, the saved adapter, the holdout split."""
import json
import os

import pytest
import torch

from conftest import asset, tiny_model
from minillama import mmlu, mmlu_data
from minillama.formats import save_checkpoint
from minillama.cli import main
from minillama.errors import MinillamaError
from minillama.mmlu_data import Question
from minillama.tasks.mmlu_prefix import split_holdout
from minillama.tokenizer import load_tokenizer
from conftest import make_fixture

pytestmark = pytest.mark.filterwarnings("ignore:this tokenizer splits")


def prefix_mmlu_argv(tmp_path, root, ckpt, mode, *extra):
    """The training flags only when something trains (with --load_adapter they are refused)."""
    training = ["--epochs", "3", "--lr", "0.05", "--mmlu_holdout", "0.5", "--weight_decay", "0.01",
                "--prefix_mode", mode, "--prefix_length", "3", "--save_adapter", str(tmp_path / mode)]
    return ["--option", "prefix", "--task", "mmlu", "--pretrained-model-path", ckpt,
            "--tokenizer", asset("llama2c/tok512.model"), "--norm", "rmsnorm", "--mmlu_dir", root,
            "--batch_size", "2", *([] if "--load_adapter" in extra else training),
            "--log_jsonl", str(tmp_path / f"{mode}.jsonl"), "--mmlu_out", str(tmp_path / f"report-{mode}.json"),
            *extra]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["prefix", "prompt", "ptuning2", "adapter"])
def test_prefix_task_mmlu_end_to_end(tmp_path, mode):
    from minillama.adapters import load_adapter
    root = make_fixture(tmp_path / "mmlu")
    ckpt = str(tmp_path / "tiny.pt")
    save_checkpoint(tiny_model(vocab_size=512, max_seq_len=512), ckpt)
    extra = ["--mmlu_mode", "generate", "--mmlu_new_tokens", "2"] if mode == "prefix" else []
    if mode == "adapter":  # the trained adapter also as a PEFT directory
        extra = ["--export_peft", str(tmp_path / "peft")]
    assert main(prefix_mmlu_argv(tmp_path, root, ckpt, mode, *extra)) == 0  # run_llama.py --option prefix --task mmlu
    report = json.load(open(tmp_path / f"report-{mode}.json"))
    assert report["data"]["n_train"] == 2 and report["data"]["n_heldout"] == 3 and report["data"]["n_test"] == 5
    losses = [h["train_loss"] for h in report["history"]]
    assert len(losses) == 3 and losses[-1] < losses[0]  # the answer-letter loss goes down
    log = [json.loads(line) for line in open(tmp_path / f"{mode}.jsonl")]
    assert [r["epoch"] for r in log if r["event"] == "epoch"] == [0, 1, 2]
    modes = ["logits", "generate"] if mode == "prefix" else ["logits"]
    assert {(r["model"], r["mode"]) for r in log if r["event"] == "test"} == \
        {(w, m) for w in ("baseline", "tuned") for m in modes}
    for m in modes:
        assert set(report["baseline"][m]) >= {"micro_accuracy", "macro_accuracy", "refusal_rate"}
    # the prefix changes the letter scores; the saved adapter reproduces the tuned ones
    tok = load_tokenizer(asset("llama2c/tok512.model"))
    qs = mmlu_data.flatten(mmlu_data.load_split(root, "test"))
    base = tiny_model(vocab_size=512, max_seq_len=512)
    prompts, _ = mmlu.encode_questions(tok, qs, {}, 0, False, 509)
    ids = mmlu.letter_token_ids(tok)
    before = mmlu.score_logits(base, prompts, ids, tok.pad_id, progress=False)
    after = mmlu.score_logits(load_adapter(base, str(tmp_path / mode)), prompts, ids, tok.pad_id, progress=False)
    assert (before - after).abs().max() > 1e-3
    assert report["tuned"]["logits"]["correct"] == sum(
        "ABCD"[i] == q.answer for i, q in zip(after.argmax(-1).tolist(), qs))
    if mode == "adapter":
        from_peft = mmlu.score_logits(load_adapter(base, str(tmp_path / "peft")), prompts, ids, tok.pad_id,
                                      progress=False)
        assert torch.allclose(from_peft, after, atol=1e-5)
    # --load_adapter: no training, the saved prefix evaluated against the baseline
    assert main(prefix_mmlu_argv(tmp_path, root, ckpt, mode, "--load_adapter", str(tmp_path / mode))) == 0
    again = json.load(open(tmp_path / f"report-{mode}.json"))
    assert again["history"] == [] and again["tuned"]["logits"]["correct"] == report["tuned"]["logits"]["correct"]
    out = str(tmp_path / "eval.json")  # --option mmlu evaluates the adapter too
    assert main(["--option", "mmlu", "--pretrained-model-path", ckpt, "--tokenizer", asset("llama2c/tok512.model"),
                 "--norm", "rmsnorm", "--mmlu_dir", root, "--load_adapter", str(tmp_path / mode),
                 "--mmlu_out", out]) == 0
    assert json.load(open(out))["correct"] == report["tuned"]["logits"]["correct"]


def test_holdout_split_is_per_subject_disjoint_and_seeded():
    q = lambda s, i: Question(s, f"{s}{i}?", ("a", "b", "c", "d"), "A", f"{s}:{i}")  # noqa: E731
    data = {"x": [q("x", i) for i in range(10)], "y": [q("y", i) for i in range(3)], "z": [q("z", 0)]}
    train, held = split_holdout(data, 0.2, seed=7)
    assert sorted(h.subject for h in held) == ["x", "x", "y"]  # round(0.2 n), at least one; "z" too small
    assert not set(train) & set(held) and set(train) | set(held) == set(mmlu_data.flatten(data))
    assert split_holdout(data, 0.2, seed=7) == (train, held) and split_holdout(data, 0.2, 8) != (train, held)
    with pytest.raises(MinillamaError, match="--mmlu_holdout"):
        split_holdout(data, 1.0, 0)


def test_report_and_saved_adapter_sharing_a_path_are_refused_before_loading(tmp_path, capsys):
    """--mmlu_out mmlu-prefix.json with --save_adapter mmlu-prefix: the adapter's JSON is that
    same file, so the run is refused in one line naming both flags; nothing is written."""
    root = make_fixture(tmp_path / "mmlu")
    out = tmp_path / "out"
    out.mkdir()
    argv = prefix_mmlu_argv(tmp_path, root, str(tmp_path / "absent.pt"), "prompt")
    argv[argv.index("--save_adapter") + 1] = str(out / "mmlu-prefix")
    argv[argv.index("--mmlu_out") + 1] = str(out / "mmlu-prefix.json")
    argv[argv.index("--log_jsonl") + 1] = str(out / "log.jsonl")
    assert main(argv) == 2  # refused before the (absent) model is looked for
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--mmlu_out and --save_adapter (.json) name the same file" in err[0], err
    assert list(out.iterdir()) == []


@pytest.mark.slow
def test_baseline_and_tuned_answers_across_temperatures(tmp_path):
    root = make_fixture(tmp_path / "mmlu")
    ckpt = str(tmp_path / "tiny.pt")
    save_checkpoint(tiny_model(vocab_size=512, max_seq_len=512), ckpt)
    argv = prefix_mmlu_argv(tmp_path, root, ckpt, "ptuning2", "--mmlu_mode", "generate", "--mmlu_new_tokens", "2",
                            "--temperatures", "0,1", "--samples", "2")
    argv[argv.index("--epochs") + 1] = "1"
    assert main(argv) == 0
    report = json.load(open(tmp_path / "report-ptuning2.json"))
    assert set(report["temperatures"]) == {"baseline", "tuned"}
    for which in ("baseline", "tuned"):
        assert list(report["temperatures"][which]) == ["0", "1"]
        greedy = report["temperatures"][which]["0"]
        assert greedy["consistency"] == 1.0 and greedy["accuracy"] == report[which]["generate"]["accuracy"]


@pytest.mark.slow
def test_bottleneck_task_mmlu_end_to_end(tmp_path, monkeypatch, capsys):
    """--option bottleneck --task mmlu trains bottleneck adapters as the prefix trains (val minus the
    held-out part, the letter loss, baseline vs tuned), saved by default as mmlu-bottleneck-adapter;
    --option mmlu and --option bottleneck --task mmlu --load_adapter score the saved adapters alike."""
    from minillama.adapters import Bottleneck, load_adapter
    root = make_fixture(tmp_path / "mmlu")
    ckpt = str(tmp_path / "tiny.pt")
    save_checkpoint(tiny_model(vocab_size=512, max_seq_len=512), ckpt)
    monkeypatch.chdir(tmp_path)
    common = ["--pretrained-model-path", ckpt, "--tokenizer", asset("llama2c/tok512.model"), "--norm", "rmsnorm",
              "--mmlu_dir", root, "--batch_size", "2"]
    argv = ["--option", "bottleneck", "--task", "mmlu", *common, "--mmlu_out", "report.json"]
    assert main(argv + ["--epochs", "3", "--lr", "1e-2", "--mmlu_holdout", "0.5", "--reduction_factor", "8",
                        "--log_jsonl", "bn.jsonl"]) == 0
    printed = capsys.readouterr().out
    assert "bottleneck: trainable parameters: 4,384 of " in printed  # 2 layers x 2 adapters x (64*8+8 + 8*64+64)
    assert "saved adapter to mmlu-bottleneck-adapter.safetensors/.json" in printed
    assert os.path.exists("mmlu-bottleneck-adapter-curves.png")
    report = json.load(open("report.json"))
    assert (report["method"], report["config"]) == \
        ("bottleneck", {"config": "houlsby", "reduction_factor": 8, "non_linearity": "swish"})
    assert "prefix_mode" not in report and report["trainable_parameters"] == 4384
    assert report["data"]["n_train"] == 2 and report["data"]["n_heldout"] == 3 and report["data"]["n_test"] == 5
    losses = [h["train_loss"] for h in report["history"]]
    assert len(losses) == 3 and losses[-1] < losses[0]  # the answer-letter loss goes down
    log = [json.loads(line) for line in open("bn.jsonl")]
    assert [r["epoch"] for r in log if r["event"] == "epoch"] == [0, 1, 2]
    assert {r["model"] for r in log if r["event"] == "test"} == {"baseline", "tuned"}
    # the trained adapters change the letter scores (their up-projections started at zero); the
    # saved file reproduces the tuned count
    tok = load_tokenizer(asset("llama2c/tok512.model"))
    qs = mmlu_data.flatten(mmlu_data.load_split(root, "test"))
    base = tiny_model(vocab_size=512, max_seq_len=512)
    prompts, _ = mmlu.encode_questions(tok, qs, {}, 0, False, 512)
    ids = mmlu.letter_token_ids(tok)
    before = mmlu.score_logits(base, prompts, ids, tok.pad_id, progress=False)
    adapter = load_adapter(base, "mmlu-bottleneck-adapter")
    assert isinstance(adapter, Bottleneck)
    after = mmlu.score_logits(adapter, prompts, ids, tok.pad_id, progress=False)
    assert (before - after).abs().max() > 1e-3
    tuned = report["tuned"]["logits"]["correct"]
    assert tuned == sum("ABCD"[i] == q.answer for i, q in zip(after.argmax(-1).tolist(), qs))
    assert main(["--option", "mmlu", *common, "--load_adapter", "mmlu-bottleneck-adapter", "--mmlu_out", "eval.json"]) == 0
    assert json.load(open("eval.json"))["correct"] == tuned
    assert main(argv + ["--load_adapter", "mmlu-bottleneck-adapter"]) == 0  # evaluates, trains nothing
    again = json.load(open("report.json"))
    assert again["history"] == [] and again["tuned"]["logits"]["correct"] == tuned
