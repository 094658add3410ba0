"""`run_llama.py --option mmlu` end to end (minillama/tasks/mmlu_eval.py)."""
import json
import os

import pytest

from conftest import asset, tiny_model
from minillama.formats import save_checkpoint
from minillama.cli import main
from conftest import make_fixture, write_csv

pytestmark = pytest.mark.filterwarnings("ignore:this tokenizer splits")


def test_cli_option_mmlu_end_to_end(tmp_path, capsys):
    root = make_fixture(tmp_path / "mmlu")
    ckpt = str(tmp_path / "tiny.pt")
    save_checkpoint(tiny_model(vocab_size=512, max_seq_len=512), ckpt)
    common = ["--option", "mmlu", "--pretrained-model-path", ckpt, "--tokenizer", asset("llama2c/tok512.model"),
              "--norm", "rmsnorm", "--mmlu_dir", root, "--batch_size", "2"]
    out = str(tmp_path / "report.json")
    assert main(common + ["--k_shot", "2", "--mmlu_out", out, "--log_jsonl", str(tmp_path / "log.jsonl")]) == 0
    report = json.load(open(out))
    assert report["n"] == 5 and report["k_shot"] == 2 and set(report["subjects"]) == {"alpha_beta", "gamma"}
    assert "mmlu test acc ::" in capsys.readouterr().out
    assert json.loads(open(tmp_path / "log.jsonl").read())["n"] == 5
    lines = str(tmp_path / "report.jsonl")
    assert main(common + ["--subjects", "gamma", "--limit", "1", "--mmlu_mode", "generate",
                          "--mmlu_new_tokens", "2", "--mmlu_out", lines]) == 0
    rows = [json.loads(line) for line in open(lines)]
    assert len(rows) == 2 and rows[0]["subject"] == "gamma" and rows[1]["summary"]["n"] == 1
    # a malformed CSV: one error line, exit 2, no report written
    write_csv(os.path.join(root, "test", "gamma_test.csv"), [["q", "a", "b", "c", "d", "Z"]])
    bad_out = str(tmp_path / "bad.json")
    assert main(common + ["--mmlu_out", bad_out]) == 2
    err = capsys.readouterr().err
    assert "gamma_test.csv:1: answer 'Z'" in err and not os.path.exists(bad_out)


@pytest.mark.slow
def test_answers_across_temperatures_report_accuracy_refusals_and_consistency(tmp_path, capsys):
    """At temperature 0 every sample is the greedy answer: consistency 1, entropy 0 and the
    greedy accuracy; sampled temperatures are seeded (the same run twice gives the same table)."""
    root = make_fixture(tmp_path / "mmlu")
    ckpt = str(tmp_path / "tiny.pt")
    save_checkpoint(tiny_model(vocab_size=512, max_seq_len=512), ckpt)
    common = ["--option", "mmlu", "--pretrained-model-path", ckpt, "--tokenizer", asset("llama2c/tok512.model"),
              "--norm", "rmsnorm", "--mmlu_dir", root, "--batch_size", "2", "--mmlu_mode", "generate",
              "--mmlu_new_tokens", "3", "--temperatures", "0,1.5", "--samples", "3"]
    reports = []
    for name in ("a.json", "b.json"):
        assert main(common + ["--mmlu_out", str(tmp_path / name)]) == 0
        reports.append(json.load(open(tmp_path / name)))
    a, b = reports
    assert a["temperatures"] == b["temperatures"] and list(a["temperatures"]) == ["0", "1.5"]
    greedy = a["temperatures"]["0"]
    assert (greedy["consistency"], greedy["answer_entropy"], greedy["samples"]) == (1.0, 0.0, 3)
    assert greedy["accuracy"] == a["accuracy"] and greedy["refusal_rate"] == a["refusal_rate"]
    hot = a["temperatures"]["1.5"]
    assert 0.0 <= hot["consistency"] <= 1.0 and 0.0 <= hot["answer_entropy"] <= 2.33  # log2(5 answers)
    out = capsys.readouterr().out
    assert "temperature  samples" in out and "consistency" in out


@pytest.mark.parametrize("flags,message", [
    (["--temperatures", "0,1"], "--temperatures samples the answers: it needs --mmlu_mode generate"),
    (["--mmlu_mode", "generate", "--temperatures", "0,hot"], "--temperatures takes numbers separated by commas"),
    (["--mmlu_mode", "generate", "--temperatures", "-1"], "--temperatures must be finite numbers >= 0"),
    (["--mmlu_mode", "generate", "--temperatures", "1", "--samples", "0"], "--samples must be a positive number"),
    (["--mmlu_mode", "generate", "--samples", "4"], "--samples draws answers at each of --temperatures"),
])
def test_bad_temperature_flags_are_one_line(capsys, flags, message):
    assert main(["--option", "mmlu", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {message}") and len(err.splitlines()) == 1, err
