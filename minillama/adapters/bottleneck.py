"""Bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2021), placed as AdapterHub's.

An adapter is a small two-layer network with a residual of its own:

    A(s) = up(f(down(s)))         down: Linear(dim, r), f: the non-linearity, up: Linear(r, dim)
    r = dim // reduction_factor   (both Linear layers with biases)

`up` starts at zero (weight and bias), so A(s) = 0 exactly and the model starts as the base,
bit for bit; `down` starts as nn.Linear does, with a zero bias (AdapterHub's
init_weights="mam_adapter", its zero-up initialisation).

Where the adapters sit, in a pre-norm block  h = x + Attn(norm(x)),  y = h + FFN(norm(h)).
AdapterHub's Llama layer hands each adapter the sublayer's output s and the block's residual
stream r (x, then h); with residual_before_ln=True and no layer norm to re-apply (a pre-norm
block has none after the sum), both configs add s, A(...) and r, and differ in what A reads:

    houlsby  (DoubleSeqBnConfig: original_ln_before=False): A reads the sublayer's output,
             after the attention and after the feed-forward:
                 h = x + s + A_att(s),   s = Attn(norm(x))
                 y = h + f + A_out(f),   f = FFN(norm(h))
    pfeiffer (SeqBnConfig: original_ln_before=True): A reads the sum, after the feed-forward only:
                 y = (h + f) + A_out(h + f)

So a Houlsby adapter wraps a sublayer (s -> s + A(s)) and a Pfeiffer adapter the whole block
(y -> y + A(y)): `Bottlenecked` is both.  AdapterHub's non-linearity defaults: houlsby swish
(SiLU), pfeiffer relu; gelu is the exact (erf) one, as transformers' "gelu".

The base is never modified: `adapted` is a second Llama object sharing every tensor and module
of the base (adapters/sharing.py), whose blocks (houlsby: copies with wrapped sublayers; pfeiffer:
the base's own blocks, wrapped) hold the adapters.  The KV cache, last_only and generate work as
the base's: an adapter acts on each position alone.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import MinillamaError
from ..flags import flag
from .base import AdaptedModel, AdapterConfig
from .checks import check_choice, check_count
from .sharing import sharing_copy

CONFIGS = ("houlsby", "pfeiffer")
NON_LINEARITIES = {"relu": F.relu, "gelu": F.gelu, "swish": F.silu}
DEFAULT_NON_LINEARITY = {"houlsby": "swish", "pfeiffer": "relu"}  # AdapterHub's DoubleSeqBnConfig / SeqBnConfig
SITES = {"houlsby": ("attention", "output"), "pfeiffer": ("output",)}  # AdapterHub's mh_adapter / output_adapter


@dataclass
class BottleneckConfig(AdapterConfig):
    """--option bottleneck: an adapter of width dim // reduction_factor after the attention and
    the feed-forward of every block (houlsby) or after the feed-forward only (pfeiffer);
    non_linearity None: the config's own (houlsby swish, pfeiffer relu), resolved here so
    files record it."""

    method: ClassVar[str] = "bottleneck"
    summary: ClassVar[str] = "bottleneck adapters (Houlsby, Pfeiffer)"
    tasks: ClassVar[Tuple[str, ...]] = ("classify", "mmlu", "e2e")
    # Houlsby et al. searched 3e-5..3e-3 for BERT; a small model whose adapters start at zero
    # effect takes the larger steps LoRA-sized parameter counts usually get.
    default_lr: ClassVar[float] = 1e-3
    config: str = flag("houlsby", "--bottleneck_config", choices=CONFIGS,
                       help="houlsby: an adapter after the attention and after the feed-forward of every block; "
                            "pfeiffer: after the feed-forward only (AdapterHub's DoubleSeqBnConfig / SeqBnConfig; "
                            "default {default})")
    reduction_factor: int = flag(16, "--reduction_factor", help="adapter width = model width / this (default {default})")
    non_linearity: Optional[str] = flag(None, "--non_linearity", choices=list(NON_LINEARITIES),
                                        help="between the down- and up-projection (default: the config's, " +
                                             ", ".join(f"{c} {f}" for c, f in DEFAULT_NON_LINEARITY.items()) + ")")

    def __post_init__(self):
        check_choice(self.config, CONFIGS, "--bottleneck_config")
        check_count(self.reduction_factor, "--reduction_factor",
                    "a positive integer (adapter width = model width / factor)")
        if self.non_linearity is None:
            self.non_linearity = DEFAULT_NON_LINEARITY[self.config]
        check_choice(self.non_linearity, NON_LINEARITIES, "--non_linearity")

    def width(self, dim: int) -> int:
        """The adapter's hidden width r = dim // reduction_factor, checked against the model's width."""
        if self.reduction_factor > dim:
            raise MinillamaError(f"--reduction_factor {self.reduction_factor} is above the model's width {dim}: "
                                 f"choose 1..{dim}")
        return dim // self.reduction_factor


class BottleneckAdapter(nn.Module):
    """A(s) = up(f(down(s))): [..., dim] -> [..., dim]; zero at init (up is zero)."""

    def __init__(self, dim: int, width: int, non_linearity: str, like: torch.Tensor):
        super().__init__()
        self.down = nn.Linear(dim, width, device=like.device, dtype=like.dtype)
        self.up = nn.Linear(width, dim, device=like.device, dtype=like.dtype)
        self.non_linearity = non_linearity
        with torch.no_grad():
            self.down.bias.zero_()
            self.up.weight.zero_()
            self.up.bias.zero_()

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.up(NON_LINEARITIES[self.non_linearity](self.down(s)))


class Bottlenecked(nn.Module):
    """A frozen module (a sublayer, or a whole block) followed by an adapter with its residual:
    out = m(...) + A(m(...)).  Called exactly as the wrapped module is, which it never changes."""

    def __init__(self, module: nn.Module, adapter: BottleneckAdapter):
        super().__init__()
        self.module, self.adapter = module, adapter

    def forward(self, *args, **kwargs) -> torch.Tensor:
        out = self.module(*args, **kwargs)
        return out + self.adapter(out)


class Bottleneck(AdaptedModel):
    """The base, frozen and untouched, run through `adapted`: the same model with bottleneck
    adapters placed as AdapterHub's config `cfg.config` places them.  What trains: the adapters."""

    method = "bottleneck"

    def __init__(self, base: nn.Module, cfg: BottleneckConfig, tokenizer=None):
        super().__init__(base, cfg)
        dim = base.config.dim
        self.width = cfg.width(dim)
        like = base.tok_embeddings.weight

        def adapter() -> BottleneckAdapter:
            return BottleneckAdapter(dim, self.width, cfg.non_linearity, like)

        if cfg.config == "houlsby":  # in order: each block's attention adapter, then its feed-forward's
            blocks = [sharing_copy(b, attention=Bottlenecked(b.attention, adapter()),
                                   feed_forward=Bottlenecked(b.feed_forward, adapter())) for b in base.layers]
        else:
            blocks = [Bottlenecked(b, adapter()) for b in base.layers]
        self.adapted = sharing_copy(base, layers=nn.ModuleList(blocks))

    def describe(self) -> str:
        sites = " and ".join({"attention": "the attention", "output": "the feed-forward"}[s]
                             for s in SITES[self.cfg.config])
        return (f"bottleneck adapters ({self.cfg.config}): width {self.width} (= {self.config.dim} / "
                f"{self.cfg.reduction_factor}), {self.cfg.non_linearity}, after {sites} of each of "
                f"{self.config.n_layers} layers")

    def adapters(self) -> Dict[str, BottleneckAdapter]:
        """'layers.{i}.{site}_adapter' -> its adapter (site: attention, output; AdapterHub's
        mh_adapter and output_adapter)."""
        out = {}
        for i, block in enumerate(self.adapted.layers):
            if self.cfg.config == "houlsby":
                out[f"layers.{i}.attention_adapter"] = block.attention.adapter
                out[f"layers.{i}.output_adapter"] = block.feed_forward.adapter
            else:
                out[f"layers.{i}.output_adapter"] = block.adapter
        return out

    def forward(self, input_ids: torch.Tensor, attention_mask=None, *, cache=None, last_only: bool = False):
        """input_ids, attention_mask: [B, T] -> (logits [B, T, V], hidden [B, T, dim]), as the base."""
        return self.adapted(input_ids, attention_mask, cache=cache, last_only=last_only)

    def adapter_tensors(self) -> Dict[str, torch.Tensor]:
        """layers.{i}.{site}_adapter.{down,up}.{weight,bias} of every adapter:
        down.weight [r, dim], down.bias [r], up.weight [dim, r], up.bias [dim]."""
        return {f"{name}.{key}": t for name, a in self.adapters().items() for key, t in a.state_dict(keep_vars=True).items()}
