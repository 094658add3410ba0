"""Shared test helpers: where the mirrored assets are, and tiny models.

Assets come from ../shared/assets (the mirror beside the checkout) or from
$MINILLAMA_ASSETS.  Outside CI a missing asset skips its test; in CI (CI set)
it fails, because CI must have every asset it needs."""
import csv
import os
import sys

import pytest
import torch
import torch.nn.functional as F

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

from minillama.core.attention import Attention  # noqa: E402
from minillama.core.config import LlamaConfig, Runtime  # noqa: E402
from minillama.core.model import Llama  # noqa: E402
from minillama.fast import speed_up  # noqa: E402
from minillama.formats import save_checkpoint  # noqa: E402

ASSETS = os.environ.get("MINILLAMA_ASSETS") or os.path.join(REPO_ROOT, "..", "shared", "assets")


def asset(relpath: str) -> str:
    """Absolute path of a mirrored asset; skip (outside CI) or fail (in CI) when absent."""
    path = os.path.join(ASSETS, relpath)
    if not os.path.exists(path):
        if os.environ.get("CI"):
            pytest.fail(f"asset {relpath} missing in CI (looked in {ASSETS})")
        pytest.skip(f"asset {relpath} not found in {ASSETS}")
    return path


def run_unprivileged(argv, directory: str):
    """Run `python run_llama.py argv` with `directory` not writable to it: its write bits
    removed and, as root (who may write anywhere), without the capability to override
    file permissions (util-linux setpriv).  Returns the CompletedProcess."""
    import shutil
    import subprocess
    os.chmod(directory, 0o555)
    prefix = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        assert setpriv, "setpriv (util-linux) is needed to drop root's permission override"
        prefix = [setpriv, "--bounding-set", "-dac_override,-dac_read_search"]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run(prefix + [sys.executable, os.path.join(REPO_ROOT, "run_llama.py"), *map(str, argv)],
                          capture_output=True, text=True, cwd=directory, env=env)


def tiny_config(**overrides) -> LlamaConfig:
    """A small GQA config for fast tests."""
    kw = dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=97, max_seq_len=64,
              multiple_of=16, norm="rmsnorm")
    kw.update(overrides)
    return LlamaConfig(**kw)


RUNTIME_KEYS = ("dropout",)  # how a model runs (Runtime), not what it is (LlamaConfig)


def split_runtime(kw: dict) -> Runtime:
    """Pop the Runtime fields out of kw (the rest are LlamaConfig fields)."""
    return Runtime(**{k: kw.pop(k) for k in RUNTIME_KEYS if k in kw})


def tiny_model(seed: int = 0, fast: bool = False, use_sdpa: bool = False, **overrides) -> Llama:
    """A tiny Llama: the plain core, or with fast=True minillama.fast's paths (use_sdpa: with
    torch's attention kernel); dropout overrides go to its Runtime."""
    torch.manual_seed(seed)
    runtime = split_runtime(overrides)
    model = Llama(tiny_config(**overrides), runtime).eval()
    return speed_up(model, sdpa=use_sdpa) if fast or use_sdpa else model


# -- full disks (shared by several test modules) --------------------------------------------------
def disk_full_on(monkeypatch, marker: str):
    """files.write_file writes half of any file whose temporary path holds `marker`, then
    fails as a full disk does."""
    import errno
    from minillama import files
    real = files.write_file

    def write(path, data):
        if marker in path:
            real(path, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device", path)
        real(path, data)
    monkeypatch.setattr(files, "write_file", write)


# -- a tiny task a method must learn (shared by several test modules) -----------------------------
def word_group_task(n_train=32, n_test=64):
    """BOS + 4 words, all from one of two random groups of 8 tokens; the answer is the
    group's label token.  ((x [n, 5], y [n]) for train and test, label token ids [2])."""
    g = torch.Generator().manual_seed(0)
    groups = torch.randperm(500, generator=g)[:16].view(2, 8) + 10  # [2 labels, 8 words]

    def sample(n):
        labels = torch.randint(0, 2, (n,), generator=g)
        words = groups[labels][torch.arange(n)[:, None], torch.randint(0, 8, (n, 4), generator=g)]
        return torch.cat([torch.ones(n, 1, dtype=torch.long), words], dim=1), labels  # [n, 5], [n]

    return sample(n_train), sample(n_test), torch.tensor([300, 301])


# -- a left-padded batch (shared by several test modules) -----------------------------------------
def padded_batch(seed=0, T=9):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 97, (3, T), generator=g)
    mask = torch.ones(3, T, dtype=torch.long)
    mask[1, :3] = 0
    mask[2, :6] = 0
    return ids, mask


def left_padded_rows(n, T=9, seed=0):
    """n rows of T random tokens, row r left-padded by (2 r) mod 7 positions: (ids, mask) [n, T]."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 97, (n, T), generator=g)
    mask = torch.ones(n, T, dtype=torch.long)
    for row in range(n):
        mask[row, : (row * 2) % 7] = 0
    return ids, mask


# -- classification runs on real data slices (shared by several test modules) ---------------------
@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(tiny_model(vocab_size=512, max_seq_len=256), str(path))
    return str(path)


def data_slice(tmp_path, dataset, n=40):
    """The first n lines of each real split, and the real label names."""
    paths = {}
    for split in ("train", "dev", "test"):
        with open(asset(f"coursework/{dataset}-{split}.txt"), encoding="utf-8") as f:
            lines = [next(f) for _ in range(n)]
        paths[split] = tmp_path / f"{dataset}-{split}.txt"
        paths[split].write_text("".join(lines), encoding="utf-8")
    paths["labels"] = asset(f"coursework/{dataset}-label-mapping.json")
    return {k: str(v) for k, v in paths.items()}


def course_argv(option, ckpt, data, *extra):
    """The course's command line on `data`; the training flags only where something trains (a
    flag that would do nothing is refused)."""
    trains = option != "prompt" and "--load_adapter" not in extra
    return ["--option", option, "--pretrained-model-path", ckpt, "--tokenizer", asset("llama2c/tok512.model"),
            "--norm", "rmsnorm", "--train", data["train"], "--dev", data["dev"], "--test", data["test"],
            "--label-names", data["labels"], "--batch_size", "16",
            *(["--epochs", "1", "--lr", "1e-3"] if trains else []), *extra]


def multitask_argv(ckpt, sst, imdb, out, *extra):
    """--task_names sst,cfimdb on two data slices, outputs in `out` (tests/test_multitask.py,
    test_resume.py, test_distributed.py)."""
    return ["--option", "prefix", "--pretrained-model-path", ckpt, "--tokenizer", asset("llama2c/tok512.model"),
            "--norm", "rmsnorm", "--task_names", "sst,cfimdb", "--train", f"{sst['train']},{imdb['train']}",
            "--dev", f"{sst['dev']},{imdb['dev']}", "--test", f"{sst['test']},{imdb['test']}",
            "--label-names", f"{sst['labels']},{imdb['labels']}", "--batch_size", "8", "--epochs", "2",
            "--max_sentence_len", "40", "--dev_out", f"{out}/sst-dev.txt,{out}/imdb-dev.txt",
            "--test_out", f"{out}/sst-test.txt,{out}/imdb-test.txt", *map(str, extra)]


def read_predictions(path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n").split(" ||| ", 1) for line in f]


# -- an MMLU directory (shared by several test modules) -------------------------------------------
def write_csv(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)


FIX_TEST = {
    "alpha_beta": [["What is 2 + 2?", "3", "4", "5", "22", "B"],
                   ["Pick the colour, please: which one is red?", "blue", "green", "red, of course", "none", "C"],
                   ["A long question\nspanning two lines?", "x", "y", "z", "w", "A"]],
    "gamma": [["Q1?", "a", "b", "c", "d", "D"],
              ["Is this the second question of gamma, which is rather long compared with the others?",
               "yes", "no", "maybe", "unsure", "A"]],
}


def make_fixture(root, n_dev=5):
    for subject, rows in FIX_TEST.items():
        write_csv(os.path.join(root, "test", f"{subject}_test.csv"), rows)
        write_csv(os.path.join(root, "val", f"{subject}_val.csv"), rows[::-1])
        dev = [[f"Dev question {i} of {subject}?", "one", "two", "three", "four", "ABCD"[i % 4]]
               for i in range(n_dev)]
        write_csv(os.path.join(root, "dev", f"{subject}_dev.csv"), dev)
    return str(root)


# -- E2E runs on real data slices (shared by several test modules) --------------------------------
def e2e_slice(tmp_path, rows=(40, 20, 25)):
    """The header and the first rows of each real E2E file."""
    paths = {}
    for name, n in zip(("trainset", "devset", "testset_w_refs"), rows):
        with open(asset(f"e2e/{name}.csv"), encoding="utf-8") as f:
            lines = [next(f) for _ in range(n + 1)]
        paths[name] = str(tmp_path / f"{name}.csv")
        open(paths[name], "w", encoding="utf-8").writelines(lines)
    return paths


def e2e_argv(option, ckpt, data, out_dir, *extra):
    """The training flags only when something trains (with --load_adapter they are refused)."""
    training = [] if "--load_adapter" in extra else ["--train", data["trainset"], "--epochs", "2"]
    return ["--option", option, "--task", "e2e", "--pretrained-model-path", ckpt, "--tokenizer", asset("llama2c/tok512.model"),
            "--norm", "rmsnorm", *training, "--dev", data["devset"],
            "--test", data["testset_w_refs"], "--batch_size", "8", "--beam_size", "3",
            "--max_new_tokens", "12", "--test_out", os.path.join(out_dir, "test.txt"), *extra]


# -- attention inputs (test_attention.py, test_fast_attention.py) --------------
B, H, KV, T, HD = 2, 4, 2, 7, 16  # batch, query heads, kv heads, tokens, head_dim


def random_qkv(seed=0, T_=T, S=None):
    g = torch.Generator().manual_seed(seed)
    S = S or T_
    q = torch.randn(B, H, T_, HD, generator=g)
    k = torch.randn(B, KV, S, HD, generator=g)
    v = torch.randn(B, KV, S, HD, generator=g)
    return q, k, v


def tiny_attention(**overrides):
    torch.manual_seed(0)
    runtime = split_runtime(overrides)
    return Attention(tiny_config(dim=H * HD, n_heads=H, n_kv_heads=KV, **overrides), runtime).eval()


def sdpa_oracle(q, k, v, key_mask):
    """torch's SDPA with kv heads repeated and a boolean causal+padding mask
    (query t at key index S-T+t sees real keys at index <= its own)."""
    T_, S = q.shape[2], k.shape[2]
    causal = torch.ones(T_, S, dtype=torch.bool).tril(diagonal=S - T_)
    allowed = causal[None] & key_mask[:, None, :]  # [B, T, S]
    k = k.repeat_interleave(H // KV, dim=1)
    v = v.repeat_interleave(H // KV, dim=1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed[:, None])


def padding_masks():
    right = torch.tensor([[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0, 0]], dtype=torch.bool)
    left = torch.tensor([[1, 1, 1, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1, 1]], dtype=torch.bool)
    return {"right": right, "left": left}
