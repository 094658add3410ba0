"""The benches show themselves: bench/progress.py's lines (a run begins, a run ends with the
time so far and an estimate of what remains), reproduce_table.sh refusing, in one line
and before any run, a checkpoint that is missing; and efficiency.py's table, from the trained
rows to the prompted ones, each row a run_llama.py command line checked before any row runs."""
import json
import os
import shutil
import subprocess
import sys
from types import SimpleNamespace

import pytest

from conftest import REPO_ROOT, asset, data_slice, tiny_model

sys.path.insert(0, os.path.join(REPO_ROOT, "bench"))
import efficiency  # noqa: E402
import progress  # noqa: E402
from minillama.formats import save_checkpoint  # noqa: E402


def test_runs_say_what_begins_what_ended_and_what_remains(monkeypatch, capsys):
    clock = iter([100.0, 130.0, 160.0, 400.0])  # start; two runs of 30 s; a third of 240 s
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    runs = progress.Runs(3)
    runs.begin("lora seed 1")
    runs.done("lora seed 1")
    runs.done("prefix seed 1")
    runs.done("prompt seed 1")
    assert capsys.readouterr().err.splitlines() == [
        "[0/3 done] lora seed 1 ...",
        "[1/3 done] lora seed 1; 30 s so far, about 60 s left",
        "[2/3 done] prefix seed 1; 60 s so far, about 30 s left",
        "[3/3 done] prompt seed 1; 5.0 min so far"]


def test_reproduce_table_without_its_checkpoint_is_one_line_naming_how_to_get_it(tmp_path):
    (tmp_path / "bench").mkdir()
    for script in ("reproduce_table.sh", "need.sh"):
        shutil.copy(os.path.join(REPO_ROOT, "bench", script), tmp_path / "bench")
    (tmp_path / "assets.tsv").write_text("stories42M.pt\t-\tllama2c/stories42M.pt\thttps://example.org/s42.pt "
                                         "https://example.org/other.pt\n")
    (tmp_path / "tokenizer.model").write_text("")
    proc = subprocess.run(["bash", "bench/reproduce_table.sh"], cwd=tmp_path, capture_output=True, text=True,
                          env=dict(os.environ, PYTHON="false"), timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == ("error: stories42M.pt not found: `bash setup.sh` fetches it (or: curl -fL -o stories42M.pt "
                           "https://example.org/s42.pt); a quick CPU run on the bundled stories260K: see the header "
                           "of bench/reproduce_table.sh\n")
    assert sorted(os.listdir(tmp_path)) == ["assets.tsv", "bench", "tokenizer.model"]  # no output folder


# -- efficiency.py ---------------------------------------------------------------------------------
def test_efficiency_table_has_the_literature_beside_the_share_and_no_step_for_prompting():
    rows = [dict(method="lora", title="LoRA (r 4, all projections)", trains=True, trainable=9669,
                 adapter_trainable=9344, base=125248, disk_bytes=40000, model_bytes=500000, step_s=0.1234,
                 peak_mib=12.4, wall_s=95, dev_acc=0.25, batch=4, padded_tokens=33),
            dict(method="zero_shot", title="Zero-shot prompting", trains=False, trainable=0, adapter_trainable=0,
                 base=125248, disk_bytes=0, model_bytes=500000, step_s=None, peak_mib=3.6, wall_s=4, dev_acc=0.5,
                 batch=4, padded_tokens=48)]
    args = SimpleNamespace(checkpoint="/m/tiny.pt", shape=None, dataset="sst", device="cpu", threads=1, steps=1,
                           no_accuracy=False, epochs=1, train_batch=4, n_train=16, n_dev=8, seed=0)
    assert efficiency.table(rows, args).splitlines() == [
        "tiny.pt on SST (cpu, 1 thread(s)); step time at batch 4 (median padded width 33 tokens), median of 1 "
        "steps (CPU time); dev acc after 1 epoch(s) at batch 4 on 16 training examples (the best dev epoch kept), "
        "8 dev examples, seed 0",
        "",
        "| method | trainable (adapter + head) | share of the model | literature | on disk | vs model | s/step | "
        "peak MiB | wall | dev acc |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        "| LoRA (r 4, all projections) | 9,669 (9,344 + 325) | 7.720% | ~0.5 % | 40.0 KB | 8.000% | 0.123 | 12 | "
        "1.6 min | 0.250 |",
        "| Zero-shot prompting | 0 (0 + 0) | 0.000% |  | 0 B | 0.000% | - | 4 (inference) | 4 s | 0.500 |"]


def bench_inputs(tmp_path, tasks, n):
    """A bench's model and data in tmp_path, made once: a tiny checkpoint (dim 64, 2 layers,
    tok512's vocabulary) and the first n lines of each real split of every task, as --data_dir."""
    ckpt = tmp_path / "tiny.pt"
    if not ckpt.exists():
        save_checkpoint(tiny_model(vocab_size=512, max_seq_len=512), str(ckpt))
        for task in tasks:
            data = data_slice(tmp_path, task, n=n)
            shutil.copy(data["labels"], tmp_path / f"{task}-label-mapping.json")
    return ckpt


def efficiency_run(tmp_path, *extra):
    """bench/efficiency.py on bench_inputs' tiny model and the first 24 lines of each real SST
    split: 16 training and 8 dev examples, batches of 4, one epoch."""
    ckpt = bench_inputs(tmp_path, ("sst",), n=24)
    argv = [sys.executable, os.path.join(REPO_ROOT, "bench", "efficiency.py"), "--checkpoint", str(ckpt),
            "--tokenizer", asset("llama2c/tok512.model"), "--data_dir", str(tmp_path), "--max_train", "16",
            "--max_dev", "8", "--epochs", "1", "--steps", "1", "--batch", "4", "--train_batch", "4", "--threads", "1",
            *extra]
    return subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, timeout=900)


@pytest.mark.slow
def test_efficiency_rows_trained_and_prompted_and_resumed(tmp_path):
    png, rows_json = tmp_path / "efficiency.png", tmp_path / "rows.json"
    proc = efficiency_run(tmp_path, "--methods", "lora,houlsby,zero_shot,k_shot", "--png", str(png),
                          "--json", str(rows_json))
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    table = {line.split(" | ")[0][2:]: line.split(" | ")[1:] for line in lines if line.startswith("| ")}
    # trainable (adapter + head), share of the 125,248 weights, the literature's share
    assert table["LoRA (r 4, all projections)"][:3] == ["9,669 (9,344 + 325)", "7.720%", "~0.5 %"]
    assert table["Bottleneck adapters (Houlsby, dim / 16)"][:3] == ["2,645 (2,320 + 325)", "2.112%", "~1 %"]
    for name in ("Zero-shot prompting", "2-shot prompting"):  # nothing trains, nothing saved, no step
        assert table[name][:6] == ["0 (0 + 0)", "0.000%", "", "0 B", "0.000%", "-"]
        assert table[name][6].endswith(" (inference)")
    rows = {r["method"]: r for r in json.loads(rows_json.read_text())}
    assert [rows[m]["step_s"] is None for m in rows] == [False, False, True, True]
    assert [len(rows[m]["dev_per_epoch"]) for m in rows] == [1, 1, 0, 0]
    assert all(0 <= rows[m]["dev_acc"] <= 1 for m in rows)
    assert rows["lora"]["disk_bytes"] > 4 * 9669  # the fp32 adapter and head, and its JSON
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "4 rows in " in proc.stdout
    for row in ("lora", "houlsby", "zero_shot", "k_shot"):
        assert f"done] {row}: " in proc.stderr  # each row's own time
    # the same settings again: every row comes from --json, none runs
    again = efficiency_run(tmp_path, "--methods", "lora,houlsby,zero_shot,k_shot", "--json", str(rows_json),
                           "--resume")
    assert again.returncode == 0, again.stderr[-3000:]
    assert [line for line in again.stdout.splitlines() if line.startswith("| ")] == \
        [line for line in lines if line.startswith("| ")]
    assert again.stderr.count("reused from") == 4 and "done]" not in again.stderr


@pytest.mark.slow
def test_efficiency_row_run_llama_refuses_stops_the_bench_before_any_row(tmp_path):
    proc = efficiency_run(tmp_path, "--methods", "zero_shot,lora", "--lr", "zero_shot=1e-3")
    assert proc.returncode == 1 and proc.stdout == ""
    last = proc.stderr.splitlines()[-1]
    assert last.startswith("row zero_shot: run_llama.py refuses `--option prompt --pretrained-model-path ")
    assert "--lr 1e-3`: --lr does nothing with --option prompt: drop it" in last
    assert "done]" not in proc.stderr  # no row began


@pytest.mark.slow
def test_efficiency_probe_row_is_run_llama_option_probe(tmp_path):
    """The probe row trains the cls head alone (5 x 64 + 5) on the frozen model."""
    proc = efficiency_run(tmp_path, "--methods", "zero_shot,probe")
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = next(line for line in proc.stdout.splitlines() if line.startswith("| Probe "))
    assert row.split(" | ")[1:4] == ["325 (0 + 325)", "0.259%", ""]


@pytest.mark.slow
def test_multitask_bench_compares_one_at_a_time_with_one_run(tmp_path):
    """bench/multitask.py on a tiny model (2 layers, kv width 32: 128 prefix parameters a position)
    and 16/8/8 rows of the real SST and CFIMDB splits: one row for the tasks apart, one per --shared."""
    ckpt = bench_inputs(tmp_path, ("sst", "cfimdb"), n=16)
    argv = [sys.executable, os.path.join(REPO_ROOT, "bench", "multitask.py"), "--checkpoint", str(ckpt),
            "--tokenizer", asset("llama2c/tok512.model"), "--data_dir", str(tmp_path), "--max_train", "16",
            "--max_dev", "8", "--max_test", "8", "--length", "6", "--shared", "0,2", "--batch_size", "4",
            "--max_sentence_len", "64", "--out_dir", str(tmp_path / "out")]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line.split(" | ") for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert rows[0][0] == "| run (1 epoch(s), 6 prefix positions a row)"
    assert rows[0][1:] == ["SST dev", "CFIMDB dev", "SST test", "prefix parameters", "wall time", "CPU time |"]
    names = [r[0] for r in rows[1:]]
    assert names == ["| one at a time (sst, then cfimdb)", "| one run, 0 shared + 6 own positions",
                     "| one run, 2 shared + 4 own positions"]
    assert [r[4] for r in rows[1:]] == ["1,536", "1,536", "1,280"]  # 2 x 6, 2 x 6, 2 + 2 x 4 positions x 128
    assert all(0 <= float(r[k]) <= 1 for r in rows[1:] for k in (1, 2, 3))
    assert rows[2][5].endswith("x)") and rows[3][6].endswith("x) |")  # each joint run as a ratio of the two alone
    for task in ("sst", "cfimdb"):  # each task's adapter from the joint run, and from its run alone
        assert (tmp_path / "out" / "together-2" / f"{task}-adapter.safetensors").exists()
        assert (tmp_path / "out" / task / "adapter.safetensors").exists()
    assert "[4/4 done] together-2: " in proc.stderr
