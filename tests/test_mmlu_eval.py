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
