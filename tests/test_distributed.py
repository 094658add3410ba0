"""torch.distributed through torchrun (minillama/distributed.py): 2 gloo processes train
to the same weights and write the same files as 1 process with the same global batch and
seed (dropout off); shards cover every row once; bad input is one line."""
import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO_ROOT, tiny_model
from minillama.distributed import shard_bounds
from minillama.formats import save_checkpoint
from conftest import course_argv, data_slice


def test_shards_cover_every_row_once_and_differ_by_at_most_one():
    for n in range(0, 13):
        for size in (1, 2, 3, 4):
            bounds = [shard_bounds(n, r, size) for r in range(size)]
            assert [b[0] for b in bounds] == [0] + [b[1] for b in bounds[:-1]] and bounds[-1][1] == n
            sizes = [e - s for s, e in bounds]
            assert max(sizes) - min(sizes) <= 1


def launch(argv, nproc, cwd):
    """run_llama.py in one process, or under torchrun with nproc gloo ranks."""
    script = os.path.join(REPO_ROOT, "run_llama.py")
    cmd = [sys.executable, script] if nproc == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", script]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return subprocess.run(cmd + [str(a) for a in argv], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=600)


def error_lines(stderr):
    """Our one-line errors (progress bars share stderr: keep what follows their last \\r);
    torchrun adds its own summary of the failed ranks below."""
    return [line.split("\r")[-1] for line in stderr.splitlines() if line.split("\r")[-1].startswith("error:")]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(tiny_model(vocab_size=512, max_seq_len=256), str(path))
    return str(path)


@pytest.mark.slow
@pytest.mark.parametrize("option,extra", [("lora", ["--lora_rank", "2"]), ("prefix", ["--prefix_length", "3"])])
def test_two_gloo_ranks_equal_one_process(tmp_path, ckpt, option, extra):
    """10 train rows in global batches of 4 (the last batch of 2: one row per rank), 7 dev
    and 7 test rows (uneven shards), 2 epochs, dropout off."""
    data = data_slice(tmp_path, "sst", n=10)
    for split, n in (("dev", 7), ("test", 7)):
        lines = open(data[split], encoding="utf-8").readlines()[:n]
        open(data[split], "w", encoding="utf-8").writelines(lines)
    results = {}
    for nproc in (1, 2):
        out = tmp_path / f"out{nproc}"
        out.mkdir()
        argv = course_argv(option, ckpt, data, *extra, "--epochs", "2", "--batch_size", "4",
                           "--hidden_dropout_prob", "0", "--lr", "1e-2", "--dev_out", out / "dev.txt",
                           "--test_out", out / "test.txt", "--save_adapter", out / "adapter",
                           "--log_jsonl", out / "log.jsonl")
        proc = launch(argv, nproc, str(out))
        assert proc.returncode == 0, proc.stderr[-3000:]
        accs = [line for line in proc.stdout.splitlines() if " acc :: " in line]
        results[nproc] = (proc.stdout, accs, out)
    (_, accs1, out1), (stdout2, accs2, out2) = results[1], results[2]
    assert accs1 == accs2 and len(accs1) >= 4  # epoch lines and the final dev/test accuracies, printed once
    assert all(stdout2.splitlines().count(line) == 1 for line in accs2)  # rank 0 alone prints
    for name in ("dev.txt", "test.txt"):
        assert open(out1 / name).read() == open(out2 / name).read()
    from safetensors.torch import load_file
    a, b = load_file(str(out1 / "adapter.safetensors")), load_file(str(out2 / "adapter.safetensors"))
    assert set(a) == set(b)
    for k in a:
        # the same sums in another order: float32 rounding, relative to the values (a folded prefix reaches ~7)
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-5, msg=k)
    assert [json.loads(l)["event"] for l in open(out2 / "log.jsonl")] == ["epoch", "epoch", "eval"]
    assert sorted(os.listdir(out1)) == sorted(os.listdir(out2))  # rank 0 alone wrote, nothing twice


@pytest.mark.slow
def test_a_batch_the_ranks_cannot_share_evenly_is_one_line(tmp_path, ckpt):
    data = data_slice(tmp_path, "sst", n=6)
    out = tmp_path / "out"
    out.mkdir()
    argv = course_argv("lora", ckpt, data, "--batch_size", "5", "--dev_out", out / "d.txt", "--test_out", out / "t.txt")
    proc = launch(argv, 2, str(out))
    assert proc.returncode != 0
    err = error_lines(proc.stderr)
    assert len(err) == 1 and "must divide evenly among the 2 ranks" in err[0], proc.stderr[-2000:]
    assert os.listdir(out) == []
    if torch.cuda.device_count() < 2:  # --use_gpu with more ranks than GPUs
        proc = launch(argv[:-4] + ["--batch_size", "4", "--use_gpu"], 2, str(out))
        err = error_lines(proc.stderr)
        assert proc.returncode != 0 and len(err) == 1 and "GPU(s)" in err[0], proc.stderr[-2000:]
        assert os.listdir(out) == []
