"""The run log (minillama/runlog.py): one run's records as whole JSON lines, wandb optional."""
import json
import os

from minillama.runlog import RunLog


def test_wandb_is_optional(capsys, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed: `import wandb` raises ImportError
    from minillama.runlog import RunLog, open_wandb
    assert open_wandb("test", {}) is None
    assert "wandb package is not installed" in capsys.readouterr().err
    assert RunLog(wandb=False).wandb_run is None


def test_each_run_starts_the_file_anew_and_holds_whole_lines(tmp_path):
    path = str(tmp_path / "log.jsonl")
    with open(path, "w") as f:
        f.write('{"event": "epoch", "from": "an earlier run"}\n')
    with RunLog(path) as log:
        log.log("epoch", epoch=0, train_loss=1.5)
        assert [json.loads(line) for line in open(path)] == [{"event": "epoch", "epoch": 0, "train_loss": 1.5}]
        log.log("eval", dev_acc=0.25)
    records = [json.loads(line) for line in open(path)]
    assert records == [{"event": "epoch", "epoch": 0, "train_loss": 1.5}, {"event": "eval", "dev_acc": 0.25}]
    assert [f for f in os.listdir(tmp_path) if ".tmp" in f] == []


def test_no_path_keeps_records_in_memory_only(tmp_path):
    log = RunLog()
    log.log("eval", n=3)
    assert log.records == [{"event": "eval", "n": 3}] and os.listdir(tmp_path) == []
