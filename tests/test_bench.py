"""The benches show themselves: bench/progress.py's lines (a run begins, a run ends with the
time so far and an estimate of what remains), and reproduce_table.sh refusing, in one line
and before any run, a checkpoint that is missing."""
import os
import shutil
import subprocess
import sys

from conftest import REPO_ROOT

sys.path.insert(0, os.path.join(REPO_ROOT, "bench"))
import progress  # noqa: E402


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
