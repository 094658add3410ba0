"""Training that survives interruption (minillama/resume.py, train.fit): a run SIGKILLed after
a checkpoint and resumed with --resume writes byte-identical predictions, adapters and curves,
and prints the same accuracies, as the same run never interrupted; it loses at most the work
since its last checkpoint; a checkpoint of another run (other settings, or data edited in
place), a missing, damaged or inconsistent one, a directory another run holds, and bad flags
are refused in one line (exit 2) before anything is written; a full disk keeps the previous
checkpoint and says so.

The interrupted runs are the real CLI (run_llama.py) in a subprocess.  Most stop themselves
right after their k-th checkpoint is written (the wrapped resume.save sends itself SIGSTOP)
and are then SIGKILLed by the test, so where they die is known; one is killed from outside
at whatever point it has reached when its first checkpoint appears."""
import errno
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import REPO_ROOT, run_unprivileged, tiny_model
from minillama import resume
from minillama.cli import main
from minillama.formats import save_checkpoint
from conftest import course_argv, data_slice, multitask_argv
from conftest import e2e_argv, e2e_slice

RUN_LLAMA = os.path.join(REPO_ROOT, "run_llama.py")
ENV = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")  # one thread: the same sums in every run

# run_llama.py, its resume.save wrapped to stop the process after the STOP_AFTER_SAVE-th checkpoint
STOPPING = f"""
import os, runpy, signal, sys
sys.path.insert(0, {REPO_ROOT!r})
import minillama.resume as resume
real_save, saves = resume.save, []
def save(*args, **kwargs):
    real_save(*args, **kwargs)
    saves.append(1)
    if len(saves) == int(os.environ["STOP_AFTER_SAVE"]):
        os.kill(os.getpid(), signal.SIGSTOP)
resume.save = save
sys.argv = [{RUN_LLAMA!r}] + sys.argv[1:]
runpy.run_path({RUN_LLAMA!r}, run_name="__main__")
"""


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    save_checkpoint(tiny_model(vocab_size=512, max_seq_len=256), str(d / "tiny.pt"))
    save_checkpoint(tiny_model(seed=1, vocab_size=512, max_seq_len=256), str(d / "other.pt"))
    return {"tiny": str(d / "tiny.pt"), "other": str(d / "other.pt")}


def cli(argv, cwd):
    """python run_llama.py argv in cwd, to the end: (returncode, stdout)."""
    done = subprocess.run([sys.executable, RUN_LLAMA, *argv], cwd=cwd, env=ENV, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def killed_after_save(argv, cwd, k):
    """Run argv until its k-th checkpoint is whole, then SIGKILL it."""
    proc = subprocess.Popen([sys.executable, "-c", STOPPING, *argv], cwd=cwd, env=dict(ENV, STOP_AFTER_SAVE=str(k)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 600
    while time.time() < deadline:
        pid, status = os.waitpid(proc.pid, os.WUNTRACED | os.WNOHANG)
        if pid and os.WIFSTOPPED(status):
            break
        assert not pid, f"the run ended before its checkpoint {k}: {proc.stderr.read()[-3000:]}"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    proc.stderr.close()


def killed_when_checkpoint_appears(argv, cwd, checkpoint):
    """The plain run_llama.py, SIGKILLed from outside as soon as `checkpoint` exists."""
    proc = subprocess.Popen([sys.executable, RUN_LLAMA, *argv], cwd=cwd, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not os.path.exists(checkpoint):
        assert proc.poll() is None and time.time() < deadline, "the run ended without a checkpoint"
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL  # killed while still training, not after it finished


def saved_position(checkpoint_dir):
    """(epoch, step in epoch) of the checkpoint a killed run left."""
    loop = torch.load(os.path.join(checkpoint_dir, "checkpoint.pt"), weights_only=True)["loop"]
    return loop["epoch"], loop["step_in_epoch"]


def outputs(directory):
    """{name: bytes} of every file a run wrote in its directory (the checkpoint dir aside)."""
    return {f: open(os.path.join(directory, f), "rb").read() for f in sorted(os.listdir(directory))
            if os.path.isfile(os.path.join(directory, f))}


def acc_lines(stdout):
    lines = stdout.splitlines()
    return ([l for l in lines if l.startswith("epoch ")],
            [l for l in lines if l.startswith(("dev acc ::", "test acc ::"))])


def assert_resumed_exactly(reference, resumed, out_ref, out_res, epoch, step, per_epoch, checkpoint_dir):
    files = outputs(out_ref)
    assert {"dev.txt", "test.txt", "dev-curves.png", "adapter.safetensors", "adapter.json", "log.jsonl"} <= set(files)
    assert outputs(out_res) == files  # predictions, adapter, curves: byte for byte
    path = os.path.join(checkpoint_dir, "checkpoint.pt")
    assert f"resumed from {path}: epoch {epoch}, step {step} of {per_epoch}" in resumed
    (ref_epochs, ref_final), (res_epochs, res_final) = acc_lines(reference), acc_lines(resumed)
    assert res_final == ref_final and len(ref_final) == 2
    assert res_epochs == ref_epochs[epoch:]  # the epochs it ran (or finished) print as before


def course_run(option, ckpt, data, out, *extra):
    return course_argv(option, ckpt, data, "--dev_out", os.path.join(out, "dev.txt"),
                       "--log_jsonl", os.path.join(out, "log.jsonl"),
                       "--test_out", os.path.join(out, "test.txt"), "--save_adapter", os.path.join(out, "adapter"),
                       "--max_sentence_len", "32", "--batch_size", "8", "--epochs", "2", *extra)


PREFIX = ("--prefix_length", "4", "--prefix_hidden", "32", "--hidden_dropout_prob", "0.3", "--lr", "1e-2",
          "--head_lr", "3e-3", "--lr_schedule", "cosine", "--warmup_steps", "2", "--weight_decay", "0.01")


@pytest.mark.slow
def test_prefix_killed_after_an_epoch_or_mid_epoch_resumes_exactly(tmp_path, ckpts):
    """--option prefix with dropout on the head: 24 examples, 3 steps an epoch, 2 epochs."""
    data = data_slice(tmp_path, "sst", n=24)
    runs = {name: tmp_path / name for name in ("ref", "epoch", "mid")}
    for d in runs.values():
        d.mkdir()
    reference = cli(course_run("prefix", ckpts["tiny"], data, str(runs["ref"]), *PREFIX), tmp_path)
    # after epoch 0 (its one checkpoint, no --save_every) and after step 2 of epoch 0 (--save_every 2)
    for name, extra, k, position in (("epoch", [], 1, (1, 0)), ("mid", ["--save_every", "2"], 1, (0, 2))):
        ck = str(tmp_path / f"ck-{name}")
        argv = course_run("prefix", ckpts["tiny"], data, str(runs[name]), *PREFIX, "--checkpoint_dir", ck, *extra)
        killed_after_save(argv, tmp_path, k)
        assert saved_position(ck) == position
        assert not any(f.endswith((".txt", ".safetensors")) for f in os.listdir(runs[name]))
        resumed = cli(argv + ["--resume"], tmp_path)
        assert_resumed_exactly(reference, resumed, runs["ref"], runs[name], *position, 3, ck)


@pytest.mark.slow
def test_multitask_killed_after_an_epoch_or_mid_epoch_resumes_exactly(tmp_path, ckpts):
    """--task_names sst,cfimdb (prefix tuning's MLPs, 2 shared + 3 own positions, head dropout): 16 + 8
    rows, 3 mixed steps an epoch, 2 epochs; every task's predictions and adapter byte for byte."""
    sst, imdb = data_slice(tmp_path, "sst", n=16), data_slice(tmp_path, "cfimdb", n=8)
    runs = {name: tmp_path / name for name in ("ref", "epoch", "mid")}

    def argv(out, *more):
        return multitask_argv(ckpts["tiny"], sst, imdb, out, "--prefix_mode", "prefix", "--prefix_hidden", "16",
                              "--shared_prefix_length", "2", "--prefix_length", "3", "--hidden_dropout_prob", "0.3",
                              "--lr", "1e-2", "--lr_schedule", "cosine", "--warmup_steps", "2",
                              "--max_sentence_len", "32", "--save_adapter", f"{out}/sst,{out}/imdb",
                              "--log_jsonl", out / "log.jsonl", *more)

    def finals(stdout):
        return [l for l in stdout.splitlines() if l.startswith(("sst: ", "cfimdb: ")) and " acc :: " in l]
    for d in runs.values():
        d.mkdir()
    reference = cli(argv(runs["ref"]), tmp_path)
    files = outputs(runs["ref"])
    assert {"sst-dev.txt", "imdb-test.txt", "sst.safetensors", "imdb.json", "sst-cfimdb-multitask-curves.png",
            "log.jsonl"} <= set(files)
    assert len(finals(reference)) == 4
    for name, extra, position in (("epoch", [], (1, 0)), ("mid", ["--save_every", "2"], (0, 2))):
        ck = tmp_path / f"ck-{name}"
        run = argv(runs[name], "--checkpoint_dir", ck, *extra)
        killed_after_save(run, tmp_path, 1)
        assert saved_position(ck) == position
        assert not any(f.endswith((".txt", ".safetensors")) for f in os.listdir(runs[name]))
        resumed = cli(run + ["--resume"], tmp_path)
        assert outputs(runs[name]) == files  # predictions, adapters, curves, log: byte for byte
        assert f"resumed from {ck}/checkpoint.pt: epoch {position[0]}, step {position[1]} of 3" in resumed
        assert finals(resumed) == finals(reference)
        assert acc_lines(resumed)[0] == acc_lines(reference)[0][position[0]:]


@pytest.mark.slow
def test_lora_killed_from_outside_mid_epoch_resumes_exactly(tmp_path, ckpts):
    """--option lora with LoRA and head dropout, 2 micro-batches a step, clipping, a checkpoint every step;
    killed wherever it is when its first checkpoint appears (maybe writing the next)."""
    data = data_slice(tmp_path, "sst", n=32)
    ref, res = tmp_path / "ref", tmp_path / "res"
    ref.mkdir(), res.mkdir()
    extra = ("--lora_dropout", "0.1", "--grad_accum", "2", "--max_grad_norm", "0.5", "--lr_schedule", "linear",
             "--epochs", "3")
    reference = cli(course_run("lora", ckpts["tiny"], data, str(ref), *extra), tmp_path)
    ck = str(tmp_path / "ck")
    argv = course_run("lora", ckpts["tiny"], data, str(res), *extra, "--checkpoint_dir", ck, "--save_every", "1")
    killed_when_checkpoint_appears(argv, tmp_path, os.path.join(ck, "checkpoint.pt"))
    epoch, step = saved_position(ck)  # the last whole checkpoint: all the killed run keeps
    assert (epoch, step) < (3, 0)
    resumed = cli(argv + ["--resume"], tmp_path)
    assert_resumed_exactly(reference, resumed, ref, res, epoch, step, 4, ck)


@pytest.mark.slow
def test_lora_killed_after_training_resumes_to_the_same_outputs(tmp_path, ckpts):
    """Killed after its last checkpoint (training done, nothing written yet): --resume trains no
    more and writes what the uninterrupted run wrote."""
    data = data_slice(tmp_path, "sst", n=16)
    ref, res = tmp_path / "ref", tmp_path / "res"
    ref.mkdir(), res.mkdir()
    reference = cli(course_run("lora", ckpts["tiny"], data, str(ref), "--patience", "1"), tmp_path)
    ck = str(tmp_path / "ck")
    argv = course_run("lora", ckpts["tiny"], data, str(res), "--patience", "1", "--checkpoint_dir", ck)
    killed_after_save(argv, tmp_path, 2)
    assert os.listdir(res) == ["log.jsonl"]  # its epochs logged so far; no prediction, adapter or curves yet
    resumed = cli(argv + ["--resume"], tmp_path)
    assert "train-" not in resumed
    assert_resumed_exactly(reference, resumed, ref, res, 2, 0, 2, ck)


@pytest.mark.slow
def test_e2e_killed_mid_epoch_resumes_exactly(tmp_path, ckpts):
    """--task e2e (the CausalLM objective, token-weighted): 16 train rows, 2 steps an epoch."""
    data = e2e_slice(tmp_path, rows=(16, 6, 5))
    ref, res = tmp_path / "ref", tmp_path / "res"
    ref.mkdir(), res.mkdir()
    extra = ("--no_java", "--lora_dropout", "0.1", "--beam_size", "2", "--max_new_tokens", "8", "--lr", "3e-3",
             "--save_adapter")

    def argv(out, *more):
        return e2e_argv("lora", ckpts["tiny"], data, str(out), *extra, os.path.join(out, "adapter"), *more)

    reference = cli(argv(ref), tmp_path)
    ck = str(tmp_path / "ck")
    killed_after_save(argv(res, "--checkpoint_dir", ck, "--save_every", "3"), tmp_path, 2)  # epoch 0, then step 3
    assert saved_position(ck) == (1, 1)
    resumed = cli(argv(res, "--checkpoint_dir", ck, "--save_every", "3", "--resume"), tmp_path)
    assert f"resumed from {os.path.join(ck, 'checkpoint.pt')}: epoch 1, step 1 of 2" in resumed
    files = outputs(ref)
    assert {"test.txt", "test-scores.json", "adapter.safetensors", "test-curves.png"} <= set(files)
    assert outputs(res) == files
    pick = lambda out: [re.sub(r", [0-9.]+ s$", "", l) for l in out.splitlines()  # noqa: E731
                        if l.startswith(("epoch 1:", "BLEU", "NIST"))]  # wall time aside
    assert pick(resumed) == pick(reference) and len(pick(reference)) == 3


# -- refusals: another run's checkpoint, a missing or damaged one, bad flags -------------------------------
@pytest.fixture(scope="module")
def saved_run(tmp_path_factory, ckpts):
    """A finished 1-epoch prefix run with its checkpoint (in process: fast)."""
    d = tmp_path_factory.mktemp("saved")
    data = data_slice(d, "sst", n=8)
    ck = str(d / "ck")
    argv = course_run("prefix", ckpts["tiny"], data, str(d), "--epochs", "1", "--prefix_length", "2",
                      "--prefix_hidden", "8", "--checkpoint_dir", ck)
    assert main(argv) == 0
    return {"data": data, "ck": ck, "argv": argv}


def refused(argv, out_dir, capsys):
    """main(argv) exits 2 with one line on stderr and writes nothing to out_dir: that line."""
    before = sorted(os.listdir(out_dir))
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert sorted(os.listdir(out_dir)) == before
    return err


@pytest.mark.parametrize("change,message", [
    (("--lr", "2e-3"), "training.lr was 0.001, now 0.002"),
    (("--prefix_length", "3"), "method.length was 2, now 3"),
    (("--prefix_hidden", "16"), "method.hidden was 8, now 16"),
    (("--dev", "other"), "dev was"),
    (("--dtype", "bfloat16"), "run.dtype was None, now 'bfloat16'"),
    (("--model", "other"), "model was"),
    (("--seed", "7"), "run.seed was 1337, now 7"),
    (("--hidden_dropout_prob", "0.1"), "hidden_dropout_prob was 0.3, now 0.1"),
    (("--grad_accum", "2"), "training.grad_accum was 1, now 2"),
    (("--epochs", "3"), "training.epochs was 1, now 3"),
    (("--option", "lora"), "option was 'prefix', now 'lora'"),
])
@pytest.mark.slow
def test_a_checkpoint_of_another_run_is_refused_naming_the_setting(tmp_path, capsys, ckpts, saved_run, change,
                                                                   message):
    ck = str(tmp_path / "ck")
    shutil.copytree(saved_run["ck"], ck)
    before = open(os.path.join(ck, "checkpoint.pt"), "rb").read()
    out = tmp_path / "out"
    out.mkdir()
    argv = course_run("prefix", ckpts["tiny"], saved_run["data"], str(out), "--epochs", "1", "--prefix_length", "2",
                      "--prefix_hidden", "8", "--checkpoint_dir", ck, "--resume")
    flag, value = change
    if flag == "--model":
        argv[argv.index("--pretrained-model-path") + 1] = ckpts["other"]
    elif flag == "--option":
        argv[argv.index("--option") + 1] = "lora"
        for prefix_flag in ("--prefix_length", "--prefix_hidden"):  # LoRA has no use for them (refused)
            i = argv.index(prefix_flag)
            del argv[i:i + 2]
    elif flag == "--dev":
        other_dev = tmp_path / "other-dev.txt"  # a different dev set: the train file's copy
        shutil.copy(saved_run["data"]["train"], other_dev)
        argv += [flag, str(other_dev)]
    else:
        argv += [flag, value]  # the last of a repeated flag counts
    err = refused(argv, out, capsys)
    assert "belongs to another run" in err and message in err, err
    assert open(os.path.join(ck, "checkpoint.pt"), "rb").read() == before  # nothing lost


def test_the_same_settings_resume_a_finished_run(tmp_path, capsys, saved_run):
    """The control of the refusals above: unchanged flags are accepted."""
    ck = str(tmp_path / "ck")
    shutil.copytree(saved_run["ck"], ck)
    argv = list(saved_run["argv"])
    argv[argv.index("--checkpoint_dir") + 1] = ck
    assert main(argv + ["--resume"]) == 0
    assert f"resumed from {os.path.join(ck, 'checkpoint.pt')}: epoch 1, step 0 of 1" in capsys.readouterr().out


@pytest.mark.parametrize("case,message", [
    ("no_checkpoint", "--resume: no checkpoint in"),
    ("missing_dir", "--resume: no checkpoint in"),
    ("corrupt", "is damaged (no checksum line and unreadable: truncated or corrupt"),
    ("truncated", "is damaged (no checksum line and unreadable: truncated or corrupt"),
    ("not_a_checkpoint", "is damaged (no checksum line: truncated, or not a minillama training checkpoint)"),
    ("resume_without_dir", "--resume and --save_every need --checkpoint_dir"),
    ("save_every_without_dir", "--resume and --save_every need --checkpoint_dir"),
    ("grad_accum_0", "--grad_accum must be a positive number of micro-batches, got 0"),
    ("grad_accum_past_batch", "--grad_accum 9 splits a batch of 8"),
    ("save_every_0", "--save_every must be a positive number of steps, got 0"),
    ("max_grad_norm_0", "--max_grad_norm must be a finite number > 0, got 0.0"),
    ("head_lr_negative", "--head_lr must be a finite number > 0, got -1.0"),
    ("warmup_negative", "--warmup_steps must be an integer >= 0, got -1"),
    ("checkpoint_dir_is_a_file", "--checkpoint_dir"),
    ("head_lr_without_a_head", "--head_lr"),
])
def test_bad_resume_input_is_one_line_and_loses_nothing(tmp_path, capsys, ckpts, saved_run, case, message):
    ck = tmp_path / "ck"
    ck.mkdir()
    path = ck / "checkpoint.pt"
    whole = open(os.path.join(saved_run["ck"], "checkpoint.pt"), "rb").read()
    extra = ["--checkpoint_dir", str(ck), "--resume"]
    if case == "no_checkpoint":
        pass
    elif case == "missing_dir":
        extra[1] = str(tmp_path / "nowhere")
    elif case == "corrupt":
        path.write_bytes(b"\x00garbage" * 100)
    elif case == "truncated":
        path.write_bytes(whole[:len(whole) // 2])
    elif case == "not_a_checkpoint":
        torch.save({"something": torch.zeros(2)}, str(path))
    elif case in ("resume_without_dir", "save_every_without_dir"):
        extra = ["--resume"] if case == "resume_without_dir" else ["--save_every", "2"]
    elif case == "head_lr_without_a_head":  # the verbalizer trains no head
        extra = ["--prefix_head", "verbalizer", "--head_lr", "1e-3"]
    elif case == "checkpoint_dir_is_a_file":
        (tmp_path / "afile").write_text("mine")
        extra = ["--checkpoint_dir", str(tmp_path / "afile")]
    else:
        flag, value = {"grad_accum_0": ("--grad_accum", "0"), "grad_accum_past_batch": ("--grad_accum", "9"),
                       "save_every_0": ("--save_every", "0"), "max_grad_norm_0": ("--max_grad_norm", "0"),
                       "head_lr_negative": ("--head_lr", "-1"), "warmup_negative": ("--warmup_steps", "-1")}[case]
        extra = ["--checkpoint_dir", str(ck), f"{flag}={value}"]
    before = {f: (ck / f).read_bytes() for f in os.listdir(ck)}
    out = tmp_path / "out"
    out.mkdir()
    argv = course_run("prefix", ckpts["tiny"], saved_run["data"], str(out), "--epochs", "1", "--prefix_length", "2",
                      "--prefix_hidden", "8", *extra)
    err = refused(argv, out, capsys)
    assert message in err, err
    assert {f: (ck / f).read_bytes() for f in os.listdir(ck)} == before  # a damaged checkpoint is not deleted
    if case == "checkpoint_dir_is_a_file":
        assert (tmp_path / "afile").read_text() == "mine"


@pytest.mark.slow
def test_an_unwritable_checkpoint_dir_fails_before_training(tmp_path, ckpts, saved_run):
    locked = tmp_path / "locked"
    locked.mkdir()
    argv = course_run("prefix", ckpts["tiny"], saved_run["data"], str(tmp_path), "--epochs", "1",
                      "--prefix_length", "2", "--prefix_hidden", "8", "--checkpoint_dir", str(locked / "ck"))
    done = run_unprivileged(argv, str(locked))
    os.chmod(locked, 0o755)
    assert done.returncode == 2, done.stderr[-2000:]
    err = done.stderr.strip().splitlines()
    assert err[-1].startswith("error: --checkpoint_dir: cannot create") and "epoch 0" not in done.stdout, done.stderr
    assert os.listdir(locked) == [] and not (tmp_path / "dev.txt").exists()


# -- the data by content, paths by their resolved form ------------------------------------------------------
def small_run(tmp_path, ckpts, data, *extra):
    """The saved_run's flags on `data`, its checkpoint and outputs under tmp_path."""
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    return course_run("prefix", ckpts["tiny"], data, str(out), "--epochs", "1", "--prefix_length", "2",
                      "--prefix_hidden", "8", "--checkpoint_dir", str(tmp_path / "ck"), *extra)


def drop_last_row(path):
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(lines[:-1])


def flip_first_label(path):
    """Another label on the first row, the file's size unchanged (sst labels are 0..4)."""
    text = open(path, encoding="utf-8").read()
    with open(path, "w", encoding="utf-8") as f:
        f.write(("1" if text[0] != "1" else "2") + text[1:])


@pytest.mark.parametrize("edit,change", [
    (drop_last_row, "bytes then, "),
    (flip_first_label, "(the same "),
])
def test_a_training_file_edited_in_place_is_refused_naming_it(tmp_path, capsys, ckpts, edit, change):
    data = data_slice(tmp_path, "sst", n=8)
    argv = small_run(tmp_path, ckpts, data)
    assert main(argv) == 0
    capsys.readouterr()
    before = open(tmp_path / "ck" / "checkpoint.pt", "rb").read()
    size = os.path.getsize(data["train"])
    edit(data["train"])
    err = refused(argv + ["--resume"], tmp_path / "out", capsys)
    assert f"belongs to another run (train: {os.path.realpath(data['train'])} changed since the checkpoint " \
           "was written (" in err, err
    assert change in err and f"{size} bytes" in err, err
    assert open(tmp_path / "ck" / "checkpoint.pt", "rb").read() == before


def test_the_same_files_named_otherwise_resume(tmp_path, capsys, monkeypatch, ckpts):
    """Absolute paths when saved; then '../data/...' from another directory, through a symlinked
    directory, and the dev set copied elsewhere (same bytes): the same run, resumed."""
    (tmp_path / "data").mkdir()
    data = data_slice(tmp_path / "data", "sst", n=8)
    argv = small_run(tmp_path, ckpts, data)
    assert main(argv) == 0
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "data", tmp_path / "linked")
    shutil.copy(data["dev"], tmp_path / "elsewhere" / "dev-copy.txt")
    monkeypatch.chdir(tmp_path / "elsewhere")
    spelled = {"--train": "../data/sst-train.txt", "--dev": "dev-copy.txt", "--test": "../linked/sst-test.txt"}
    for flag, path in spelled.items():
        argv[argv.index(flag) + 1] = path
    capsys.readouterr()
    assert main(argv + ["--resume"]) == 0
    assert f"resumed from {tmp_path / 'ck' / 'checkpoint.pt'}: epoch 1, step 0 of 1" in capsys.readouterr().out


def test_a_checkpoint_of_the_earlier_format_is_refused_in_one_line(tmp_path, capsys, ckpts, saved_run):
    """Format 1 (no checksum line, data known by path) cannot be checked: refused, not a traceback."""
    payload = resume.read_checkpoint(os.path.join(saved_run["ck"], "checkpoint.pt"))
    del payload["format"]
    for key in ("train", "dev", "label_names"):
        payload["fingerprint"][key] = payload["fingerprint"][key]["data"]
    (tmp_path / "ck").mkdir()
    torch.save(payload, str(tmp_path / "ck" / "checkpoint.pt"))
    err = refused(small_run(tmp_path, ckpts, saved_run["data"], "--resume"), tmp_path / "out", capsys)
    assert "checkpoint.pt was written by an earlier minillama (no checksum" in err and "delete it" in err, err


# -- a damaged checkpoint, an inconsistent one ----------------------------------------------------------------
def test_a_checkpoint_with_64_flipped_bytes_is_refused(tmp_path, capsys, ckpts, saved_run):
    ck = tmp_path / "ck"
    shutil.copytree(saved_run["ck"], ck)
    path = ck / "checkpoint.pt"
    damaged = bytearray(path.read_bytes())
    middle = len(damaged) // 2
    damaged[middle:middle + 64] = bytes(b ^ 0xFF for b in damaged[middle:middle + 64])
    path.write_bytes(bytes(damaged))
    err = refused(small_run(tmp_path, ckpts, saved_run["data"], "--resume"), tmp_path / "out", capsys)
    assert err == (f"error: {path} is damaged (its bytes do not match the sha256 written with it): delete it to "
                   "start over, or resume from an undamaged copy")
    assert path.read_bytes() == bytes(damaged) and os.listdir(ck) == ["checkpoint.pt"]


def edited(payload, case):
    """The checkpoint `payload` made inconsistent in one way."""
    first = sorted(payload["weights"])[0]  # backbone.mlp.0.bias, of the prefix MLP
    if case == "weight_shape":
        payload["weights"][first] = torch.zeros(*payload["weights"][first].shape, 2)
    elif case == "missing_weight":
        del payload["weights"][first]
    elif case == "extra_weight":
        payload["weights"]["head.surplus"] = torch.zeros(3)
    elif case == "no_optimizer":
        del payload["optimizer"]
    elif case == "no_moments":
        payload["optimizer"]["state"] = {}
    elif case == "moment_shape":
        payload["optimizer"]["state"][0]["exp_avg"] = torch.zeros(3)
    elif case == "unknown_loop_field":
        payload["loop"]["surprise"] = 1
    elif case == "loop_position":
        payload["loop"]["step_in_epoch"] = 10
    elif case == "bad_torch_rng":
        payload["random"]["torch"] = torch.zeros(10, dtype=torch.uint8)
    elif case == "bad_python_rng":
        payload["random"]["python"][1] = [1, 2, 3]
    elif case == "bad_data_rng":
        payload["loop"]["data_rng"] = torch.zeros(3)
    return payload


@pytest.mark.parametrize("case,message", [
    ("weight_shape", "its weights' backbone.mlp.0.bias has shape [8, 2], this run's is [8]"),
    ("missing_weight", "its weights have no "),
    ("extra_weight", "its weights hold head.surplus, which this run does not train"),
    ("no_optimizer", "it has no optimizer state"),
    ("no_moments", "its optimizer holds no moments after 1 step(s)"),
    ("moment_shape", "its optimizer's exp_avg of parameter 0 has shape [3]"),
    ("unknown_loop_field", "its loop state has an unknown field 'surprise'"),
    ("loop_position", "its loop position (epoch 1, step 10, 1 in all) is not one of this run's 1 epochs of 1 steps"),
    ("bad_torch_rng", "its torch random state does not restore"),
    ("bad_python_rng", "its python random state does not restore"),
    ("bad_data_rng", "its loop.data_rng (the batch order) does not restore"),
])
def test_an_inconsistent_checkpoint_is_refused_naming_what_is_wrong(tmp_path, capsys, ckpts, saved_run, case,
                                                                    message):
    """Each edit re-saved with a valid checksum: the file is whole, its contents do not fit the run."""
    payload = resume.read_checkpoint(os.path.join(saved_run["ck"], "checkpoint.pt"))
    (tmp_path / "ck").mkdir()
    path = tmp_path / "ck" / "checkpoint.pt"
    resume.write_checkpoint(str(path), edited(payload, case))
    before = path.read_bytes()
    err = refused(small_run(tmp_path, ckpts, saved_run["data"], "--resume"), tmp_path / "out", capsys)
    assert err.startswith(f"error: {path} does not fit this run: ") and err.endswith("; delete it to start over")
    assert message in err, err
    assert path.read_bytes() == before


# -- one run per checkpoint directory --------------------------------------------------------------------------
def test_a_second_run_on_a_checkpoint_dir_in_use_is_refused(tmp_path, capsys, ckpts, saved_run):
    ck = tmp_path / "ck"
    shutil.copytree(saved_run["ck"], ck)
    before = (ck / "checkpoint.pt").read_bytes()
    with resume.run_lock(str(ck)):  # another run holds it
        for extra in (["--resume"], []):  # resuming it, or starting over in it
            err = refused(small_run(tmp_path, ckpts, saved_run["data"], *extra), tmp_path / "out", capsys)
            assert err == (f"error: --checkpoint_dir {ck} is in use by another run (pid {os.getpid()}, holding "
                           f"{ck / 'run.lock'}): wait for it to end, or choose another --checkpoint_dir")
    assert (ck / "checkpoint.pt").read_bytes() == before and os.listdir(ck) == ["checkpoint.pt"]


def test_the_lock_of_a_dead_run_is_taken_over(tmp_path, capsys, ckpts, saved_run):
    ck = tmp_path / "ck"
    shutil.copytree(saved_run["ck"], ck)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (ck / "run.lock").write_text(f"{dead.pid}\n")  # left by a run killed while training
    assert main(small_run(tmp_path, ckpts, saved_run["data"], "--resume")) == 0
    assert "resumed from" in capsys.readouterr().out and os.listdir(ck) == ["checkpoint.pt"]


def test_the_lock_is_released_however_the_run_ends(tmp_path, capsys, ckpts, saved_run):
    ck = tmp_path / "ck"
    shutil.copytree(saved_run["ck"], ck)
    refused(small_run(tmp_path, ckpts, saved_run["data"], "--resume", "--lr", "2e-3"), tmp_path / "out", capsys)
    with pytest.raises(KeyboardInterrupt):
        with resume.run_lock(str(ck)):
            assert (ck / "run.lock").read_text() == f"{os.getpid()}\n"
            raise KeyboardInterrupt
    assert os.listdir(ck) == ["checkpoint.pt"]
    with resume.run_lock(str(ck)):  # free again
        pass


# -- a full disk -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("failure,reason", [
    (OSError(errno.ENOSPC, "No space left on device"), "(No space left on device)"),
    (RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file data/0: "
                  "file write failed"), "(torch could not write it, "),
])
def test_a_full_disk_keeps_the_previous_checkpoint_and_says_so(tmp_path, capsys, monkeypatch, ckpts, saved_run,
                                                               failure, reason):
    real_save, calls = torch.save, []

    def save_until_full(*args, **kwargs):  # the first checkpoint fits, the second does not
        calls.append(1)
        if len(calls) > 1:
            raise failure
        real_save(*args, **kwargs)
    monkeypatch.setattr(torch, "save", save_until_full)
    argv = small_run(tmp_path, ckpts, saved_run["data"], "--epochs", "2")
    assert main(argv) == 2
    stderr = capsys.readouterr().err  # tqdm's bars, then the error
    err = stderr.strip().splitlines()[-1]
    path = tmp_path / "ck" / "checkpoint.pt"
    assert "Traceback" not in stderr and stderr.count("error: ") == 1
    assert err.startswith(f"error: --checkpoint_dir: cannot write {path} {reason}"), err
    assert err.endswith("; the previous checkpoint (epoch 1, step 0) is kept and no output was written: "
                        "free some space, then rerun with --resume"), err
    assert os.listdir(tmp_path / "ck") == ["checkpoint.pt"]  # no temporary file, no lock left
    assert resume.read_checkpoint(str(path))["loop"]["epoch"] == 1
    assert sorted(os.listdir(tmp_path / "out")) == ["log.jsonl"]  # epoch 0's record; no prediction, adapter, curves
