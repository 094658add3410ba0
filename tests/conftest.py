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

from minillama.config import LlamaConfig  # noqa: E402
from minillama.model import Llama  # noqa: E402

ASSETS = os.environ.get("MINILLAMA_ASSETS") or os.path.join(REPO_ROOT, "..", "shared", "assets")


def asset(relpath: str) -> str:
    """Absolute path of a mirrored asset; skip (outside CI) or fail (in CI) when absent."""
    path = os.path.join(ASSETS, relpath)
    if not os.path.exists(path):
        if os.environ.get("CI"):
            pytest.fail(f"asset {relpath} missing in CI (looked in {ASSETS})")
        pytest.skip(f"asset {relpath} not found in {ASSETS}")
    return path


def tiny_config(**overrides) -> LlamaConfig:
    """A small GQA config for fast tests."""
    kw = dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=97, max_seq_len=64,
              multiple_of=16, norm="rmsnorm")
    kw.update(overrides)
    return LlamaConfig(**kw)


def tiny_model(seed: int = 0, **overrides) -> Llama:
    torch.manual_seed(seed)
    return Llama(tiny_config(**overrides)).eval()
