"""Shared test helpers: where the mirrored assets are, and tiny models.

Assets come from ../shared/assets (the mirror beside the checkout) or from
$MINILLAMA_ASSETS.  Outside CI a missing asset skips its test; in CI (CI set)
it fails, because CI must have every asset it needs."""
import os
import sys

import pytest
import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

from minillama.core.config import LlamaConfig, Runtime  # noqa: E402
from minillama.core.model import Llama  # noqa: E402
from minillama.fast import speed_up  # noqa: E402

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
