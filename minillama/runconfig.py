"""What every command shares: which model, on which device, in which precision, seed."""
from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from .core.config import NORMS
from .errors import MinillamaError
from .files import resolve_repo_path
from .flags import flag
from .formats import DTYPES
from .loading import load_model_and_tokenizer


@dataclass
class RunConfig:
    model_path: str = flag("stories42M.pt", "--pretrained-model-path", readers="run",  # where setup.sh puts it
                           help="llama2.c .pt/.bin checkpoint or Llama 3.2 directory (default {default})")
    tokenizer_path: Optional[str] = flag(None, "--tokenizer", readers="run",
                                         help="tokenizer.model (default: the one inside a Llama 3.2 directory, "
                                              "else tokenizer.model)")
    norm: Optional[str] = flag(None, "--norm", readers="run", choices=NORMS,
                               help="norm for stories checkpoints (default layernorm, the course's; rmsnorm "
                                    "reproduces llama2.c)")
    dtype: Optional[str] = flag(None, "--dtype", readers="run", choices=list(DTYPES),
                                help="weights' dtype (default: the checkpoint's)")
    fast: bool = flag(True, "--no_fast", readers="run", action="store_false", dest="fast",
                      help="run the plain hand-written core, without minillama.fast's speed-ups (same results, slower)")
    use_sdpa: bool = flag(False, "--use_sdpa", readers="run", help="opt-in fast path: torch's fused attention")
    device: str = "cpu"  # --use_gpu: cuda when there is one (cli.choose_device)
    bf16: bool = flag(False, "--bf16", readers="bf16", help="bf16 autocast for training/eval (mixed precision)")
    seed: int = flag(1337, "--seed", readers="run", help="default {default}")
    progress: bool = True  # tqdm bars
    bundled_command: Optional[str] = None  # the same job on assets/stories260K, for a missing default model

    def __post_init__(self):
        if self.norm is not None and self.norm not in NORMS:
            raise MinillamaError(f"--norm must be one of {', '.join(NORMS)}, got {self.norm!r}")
        if self.dtype is not None and self.dtype not in DTYPES:
            raise MinillamaError(f"--dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.use_sdpa and not self.fast:
            raise MinillamaError("--use_sdpa is one of the fast paths and --no_fast turns them off: drop one of the two")

    def load(self, chat: bool = False):
        """(model, tokenizer), checked against each other; the tokenizer first (cheap)."""
        if self.bundled_command and not os.path.exists(resolve_repo_path(self.model_path)):
            raise MinillamaError(f"{self.model_path} (the default --pretrained-model-path) not found: `bash setup.sh` "
                                 f"downloads it; the same job on the bundled model, offline: {self.bundled_command}")
        return load_model_and_tokenizer(self.model_path, self.tokenizer_path, norm=self.norm, device=self.device,
                                        dtype=self.dtype, use_sdpa=self.use_sdpa, chat=chat,
                                        fast=self.fast)


def seed_everything(seed: int):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
