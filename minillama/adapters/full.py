"""Full fine-tuning as a method: nothing is added, every base weight trains."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Dict

import torch
from torch import nn

from ..errors import MinillamaError
from .base import AdaptedModel, AdapterConfig


@dataclass
class FullConfig(AdapterConfig):
    """--option finetune: no settings of its own (the course's lr 2e-5 is AdapterConfig's)."""

    method: ClassVar[str] = "finetune"
    summary: ClassVar[str] = "full model"
    output_word: ClassVar[str] = "finetuning"  # the course's sst-dev-finetuning-output.txt
    has_adapter_file: ClassVar[bool] = False  # every weight trains: a whole checkpoint, not an adapter
    task_lr: ClassVar[Dict[str, float]] = {"e2e": 3e-3}  # --task e2e: the lowest dev loss in bench/e2e_accuracy.py's sweep (docs/guide.md, E2E)


class FullFinetune(AdaptedModel):
    method = "finetune"

    def describe(self) -> str:
        return "full fine-tuning"

    def __init__(self, base: nn.Module, cfg: FullConfig, tokenizer=None):
        super().__init__(base, cfg)
        base.requires_grad_(True)

    def adapter_tensors(self) -> Dict[str, torch.Tensor]:
        raise MinillamaError("a fully fine-tuned model has no adapter file: save the whole model with "
                             "minillama.formats.save_checkpoint instead")
