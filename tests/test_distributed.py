"""torch.distributed through torchrun (minillama/distributed.py): 2 gloo processes print
the same epoch losses, train to the same weights (up to float32 rounding) and write the
same predictions as 1 process with the same global batch and seed, dropout off (with
dropout the ranks draw other masks than one process does); shards cover every row once;
bad input is one line, printed once, before anything loads, and every rank exits 2."""
import json
import os
import re
import signal
import subprocess
import sys

import pytest
import torch

from conftest import REPO_ROOT, tiny_model
from minillama import distributed
from minillama.distributed import shard_bounds
from minillama.errors import MinillamaError
from minillama.formats import save_checkpoint
from conftest import course_argv, data_slice, e2e_argv, e2e_slice, multitask_argv


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


def keep_first(data, n):
    """The data slice with its dev and test files cut to their first n rows."""
    for split in ("dev", "test"):
        lines = open(data[split], encoding="utf-8").readlines()[:n]
        open(data[split], "w", encoding="utf-8").writelines(lines)
    return data


@pytest.mark.slow
@pytest.mark.parametrize("option,extra", [("lora", ["--lora_rank", "2"]), ("prefix", ["--prefix_length", "3"]),
                                          ("bottleneck", ["--bottleneck_config", "houlsby"])])
def test_two_gloo_ranks_equal_one_process(tmp_path, ckpt, option, extra):
    """10 train rows in global batches of 4 (the last batch of 2: one row per rank), 7 dev
    and 7 test rows (uneven shards), 2 epochs, dropout off."""
    data = keep_first(data_slice(tmp_path, "sst", n=10), 7)
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
    assert accs1 == accs2 and len(accs1) == 4  # epoch lines and the final dev/test accuracies, printed once
    assert [line.split(",")[0] for line in accs2[:2]] == \
        [line.split(",")[0] for line in accs1[:2]]  # "epoch 0: train loss :: 1.234": the mean over every rank's rows
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
def test_multitask_under_two_gloo_ranks_equals_one_process(tmp_path, ckpt):
    """--task_names sst,cfimdb: 10 + 6 train rows in mixed global batches of 4 (a rank's share may
    hold one task only), 7 and 5 dev rows (uneven shards), 2 shared + 3 own positions, dropout off."""
    sst, imdb = keep_first(data_slice(tmp_path, "sst", n=10), 7), keep_first(data_slice(tmp_path, "cfimdb", n=6), 5)
    results = {}
    for nproc in (1, 2):
        out = tmp_path / f"out{nproc}"
        out.mkdir()
        argv = multitask_argv(ckpt, sst, imdb, out, "--batch_size", "4", "--hidden_dropout_prob", "0",
                              "--lr", "1e-2", "--shared_prefix_length", "2", "--prefix_length", "3",
                              "--save_adapter", f"{out}/sst,{out}/imdb")
        proc = launch(argv, nproc, str(out))
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[nproc] = ([line for line in proc.stdout.splitlines() if " acc :: " in line], out)
    (accs1, out1), (accs2, out2) = results[1], results[2]
    assert accs1 == accs2 and len(accs1) == 6  # 2 epoch lines, then dev and test of each task, printed once
    for name in ("sst-dev.txt", "sst-test.txt", "imdb-dev.txt", "imdb-test.txt"):
        assert open(out1 / name).read() == open(out2 / name).read(), name
    from safetensors.torch import load_file
    for name in ("sst", "imdb"):
        a, b = load_file(str(out1 / f"{name}.safetensors")), load_file(str(out2 / f"{name}.safetensors"))
        assert set(a) == set(b) == {"prefix", "head.weight", "head.bias"}
        for k in a:
            torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-5, msg=f"{name} {k}")
    assert sorted(os.listdir(out1)) == sorted(os.listdir(out2))  # rank 0 alone wrote, nothing twice


def epoch_losses(stdout):
    """The printed epochs without their wall times: 'epoch 0: train loss :: 4.360, dev loss :: 4.040'."""
    lines = [line.split("\r")[-1].strip() for line in stdout.splitlines()]
    return [line.rsplit(",", 1)[0] for line in lines if line.startswith("epoch ")]


@pytest.mark.slow
def test_two_gloo_ranks_print_the_same_causal_lm_losses_as_one_process(tmp_path, ckpt):
    """CausalLM weighs each row by its scored tokens, which differ between the ranks' shards:
    the printed train and dev losses are still the means over all of them."""
    data = e2e_slice(tmp_path, rows=(10, 4, 2))
    printed = {}
    for nproc in (1, 2):
        out = tmp_path / f"out{nproc}"
        out.mkdir()
        argv = e2e_argv("lora", ckpt, data, str(out), "--batch_size", "4", "--beam_size", "1",
                        "--max_new_tokens", "2", "--no_java", "--save_adapter", out / "adapter")
        proc = launch(argv, nproc, str(out))
        assert proc.returncode == 0, proc.stderr[-3000:]
        printed[nproc] = epoch_losses(proc.stdout)
    assert len(printed[1]) == 2 and printed[2] == printed[1], printed


def test_use_gpu_with_too_few_gpus_names_what_to_do(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(MinillamaError) as e:
        distributed.init(use_gpu=True)
    assert str(e.value) == ("torchrun started 2 ranks with --use_gpu but this machine has no CUDA GPU: "
                            "drop --use_gpu (gloo on CPU) or run on a machine with GPUs")
    with pytest.raises(MinillamaError) as e:
        distributed.check_gpus(ranks=4, gpus=3)
    assert str(e.value) == ("torchrun started 4 ranks with --use_gpu but this machine has 3 GPU(s), one per "
                            "rank: use --nproc_per_node 3 or fewer, or drop --use_gpu (gloo on CPU)")
    distributed.check_gpus(ranks=2, gpus=2)  # enough: no error


def test_leave_outside_a_distributed_run_returns():
    distributed.leave(0)  # no process group: nothing to end, the caller returns its status
    distributed.leave(2)


LEAVE_SCRIPT = """
import sys, time, torch
from minillama import distributed
distributed.init(use_gpu=False)
net = distributed.wrap(torch.nn.Linear(4, 2), "cpu")  # DDP: the case whose exit could abort
net(torch.ones(3, 4)).sum().backward()
rank = distributed.world()[0]
status = int(sys.argv[1].split(",")[rank])  # this rank's status
if rank == 0:
    time.sleep(1.0)  # rank 0 still at work while rank 1 is done
    print("rank 0 wrote", end="")
distributed.leave(status)
print("unreachable: leave ends the process")
"""


@pytest.mark.slow
@pytest.mark.parametrize("statuses", ["0,0", "3,3", "0,3"])
def test_leave_ends_every_rank_with_its_status(tmp_path, statuses):
    """Each rank leaves with its own status (rank 0's first); rank 0 is still at work when rank 1 is done."""
    script = tmp_path / "leave.py"
    script.write_text(LEAVE_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", PYTHONPATH=REPO_ROOT)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script), statuses], capture_output=True, text=True, env=env, timeout=300)
    if statuses == "0,0":  # rank 0 finished its line though rank 1 was done first; nothing ran after leave
        assert proc.returncode == 0 and proc.stdout == "rank 0 wrote", proc.stderr[-3000:]
    else:  # a failure waits for nobody: torchrun reports rank 1's own status and stops
        assert proc.returncode == 1, proc.stderr[-3000:]
        assert re.search(r"rank\s+: 1 \(local_rank: 1\)\n\s+exitcode\s+: 3 ", proc.stderr), proc.stderr[-3000:]


def test_leave_after_a_success_ends_even_when_another_rank_failed(monkeypatch):
    """Rank 0 done, another rank gone with its failure: the barrier breaks, rank 0 still exits 0."""
    calls = []
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(distributed.dist, "barrier", lambda: (_ for _ in ()).throw(RuntimeError("peer closed")))
    monkeypatch.setattr(distributed.dist, "destroy_process_group", lambda: calls.append("destroy"))
    monkeypatch.setattr(distributed.os, "_exit", lambda status: calls.append(("exit", status)))
    distributed.leave(0)
    assert calls == ["destroy", ("exit", 0)]


def mistakes():
    """(extra flags, words of the one line) of user mistakes under 2 ranks."""
    cases = [(["--batch_size", "5"], "--batch_size 5 is the global batch and must divide evenly among the 2 ranks")]
    if torch.cuda.device_count() < 2:
        cases.append((["--use_gpu"], "with --use_gpu but this machine has "))
    return cases


@pytest.mark.slow
@pytest.mark.parametrize("extra,words", mistakes())
def test_a_mistake_under_torchrun_is_one_line_printed_once_and_every_rank_exits_2(tmp_path, ckpt, extra, words):
    """Decided from the flags before the model or the data load; rank 0 prints the line,
    the other rank exits 2 without repeating it; torchrun then reports both ranks' exit
    code 2 (its own traceback and table) and exits 1."""
    data = data_slice(tmp_path, "sst", n=6)
    out = tmp_path / "out"
    out.mkdir()
    argv = course_argv("lora", ckpt, data, "--batch_size", "4", "--dev_out", out / "d.txt", "--test_out", out / "t.txt")
    proc = launch(argv + extra, 2, str(out))
    err = error_lines(proc.stderr)
    assert len(err) == 1 and words in err[0], proc.stderr[-2000:]
    assert proc.stdout == ""  # nothing loaded ("load model from ..." comes after the checks)
    # rank 0 exits 2; the other rank exits 2 too, unless torchrun, seeing rank 0 gone, stops it
    # first (SIGTERM: exit code -15), which a loaded machine makes likely
    assert proc.returncode == 1 and proc.stderr.count("exitcode  : 2 ") >= 1, proc.stderr[-2000:]
    assert proc.stderr.count("exitcode  : 2 ") + proc.stderr.count("exitcode  : -15 ") == 2, proc.stderr[-2000:]
    assert re.search(r"rank\s+: 0 \(local_rank: 0\)\n\s+exitcode\s+: 2 ", proc.stderr), proc.stderr[-2000:]
    assert os.listdir(out) == []


def test_a_flag_mistake_is_said_by_rank_0_alone_and_by_another_rank_only_if_rank_0_did_not_stop(
        monkeypatch, capsys):
    from minillama.cli import build_parser
    argv = ["--option", "generate", "--no_such_flag"]
    line = "error: unrecognized arguments: --no_such_flag (run_llama.py --help lists every flag)"
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(argv)
    assert e.value.code == 2 and capsys.readouterr().err == line + "\n"
    # rank 1 waits for torchrun to stop it (rank 0 said it); still running after the wait, it says it
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setattr(distributed, "FAILURE_GRACE_S", 0.1)
    on_sigterm = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(SystemExit) as e:
            build_parser().parse_args(argv)
        assert signal.getsignal(signal.SIGTERM) is not on_sigterm  # torchrun's SIGTERM: exit 2, silently
    finally:
        signal.signal(signal.SIGTERM, on_sigterm)
    assert e.value.code == 2 and capsys.readouterr().err == line + " (rank 1)\n"
