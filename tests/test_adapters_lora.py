"""LoRA: exactness at B = 0, what trains, merge/unmerge, parameter count, peft as oracle."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import tiny_model
from minillama.errors import MinillamaError
from minillama.adapters.lora import LoRALinear, inject_lora, lora_modules, merge_lora, unmerge_lora
from minillama.core.optimizer import AdamW
from minillama.heads import HeadClassifier


def batch(vocab=97, B=3, T=7, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 5:] = 0
    return ids, mask


def test_zero_B_equals_base_exactly_and_weights_are_shared():
    model = tiny_model()
    ids, mask = batch()
    with torch.no_grad():
        base_logits, base_hidden = model(ids, mask)
    wq = model.layers[0].attention.wq.weight
    injected = inject_lora(model, ("wq", "wv"), rank=4, alpha=8.0)
    assert len(injected) == 2 * model.config.n_layers
    assert model.layers[0].attention.wq.weight is wq  # same Parameter, no copy
    assert all(torch.count_nonzero(m.lora_A) > 0 and torch.count_nonzero(m.lora_B) == 0 for m in injected)
    with torch.no_grad():
        logits, hidden = model(ids, mask)
    assert torch.equal(logits, base_logits) and torch.equal(hidden, base_hidden)


def test_training_step_changes_only_lora_and_head():
    model = tiny_model()
    inject_lora(model, ("wq", "wk", "wv", "wo", "w1", "w2", "w3"), rank=2, alpha=2.0)
    clf = HeadClassifier(model, model.config.dim, 3, dropout=0.0)
    before = {n: p.detach().clone() for n, p in clf.named_parameters()}
    opt = AdamW([p for p in clf.parameters() if p.requires_grad], lr=1e-2)
    ids, mask = batch()
    for _ in range(2):  # two steps: B moves at step 1, so A's gradient is non-zero at step 2
        opt.zero_grad()
        F.cross_entropy(clf(ids, mask), torch.tensor([0, 1, 2])).backward()
        opt.step()
    for name, p in clf.named_parameters():
        changed = not torch.equal(p, before[name])
        assert changed == ("lora_" in name or name.startswith("head.")), name
        assert p.requires_grad == ("lora_" in name or name.startswith("head.")), name


def test_merge_equals_unmerged_and_unmerge_restores():
    torch.manual_seed(0)
    model = tiny_model()
    original = {n: p.detach().clone() for n, p in model.named_parameters()}
    inject_lora(model, ("wq", "wv", "w2"), rank=4, alpha=4.0)
    for m in lora_modules(model):
        nn.init.normal_(m.lora_B, std=0.1)
    ids, mask = batch()
    with torch.no_grad():
        unmerged, _ = model(ids, mask)
        merge_lora(model)
        merged, _ = model(ids, mask)
        assert all(m.merged for m in lora_modules(model))
        assert (merged - unmerged).abs().max() <= 1e-6
        assert not torch.equal(model.layers[0].attention.wq.weight, original["layers.0.attention.wq.weight"])
        unmerge_lora(model)
        again, _ = model(ids, mask)
    assert (again - unmerged).abs().max() <= 1e-6
    w = model.layers[1].feed_forward.w2.weight
    assert torch.allclose(w, original["layers.1.feed_forward.w2.weight"], atol=1e-7)


@pytest.mark.parametrize("targets,count", [(("wq", "wv"), 1344), (("wk",), 576),
                                          (("wq", "wk", "wv", "wo", "w1", "w2", "w3"), 7008)])
def test_parameter_count_formula(targets, count):
    """n_layers * rank * (in + out) per target, here 2 layers at rank 3 with dim 64, kv_dim 32
    (GQA: wk/wv are dim -> dim/2) and hidden 176: wq, wv: 2 * 3 * ((64 + 64) + (64 + 32)) = 1344."""
    model = tiny_model(n_heads=4, n_kv_heads=2)
    injected = inject_lora(model, targets, rank=3)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == sum(m.lora_A.numel() + m.lora_B.numel() for m in injected)
    assert trainable == count


def test_bad_rank_and_targets():
    with pytest.raises(MinillamaError, match="lora_rank"):
        inject_lora(tiny_model(), ("wq",), rank=0)
    with pytest.raises(MinillamaError, match="unknown projection"):
        inject_lora(tiny_model(), ("wz",), rank=2)


def test_matches_peft_lora_on_a_plain_linear():
    import peft  # a dev requirement (requirements-dev.txt): the oracle

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(8, 6, bias=True)

        def forward(self, x):
            return self.proj(x)

    torch.manual_seed(0)
    base = Tiny()
    ours = LoRALinear(base.proj, rank=2, alpha=3.0)
    ref = peft.get_peft_model(Tiny(), peft.LoraConfig(r=2, lora_alpha=3.0, target_modules=["proj"], lora_dropout=0.0))
    nn.init.normal_(ours.lora_B)
    layer = ref.base_model.model.proj
    with torch.no_grad():
        layer.base_layer.weight.copy_(base.proj.weight)
        layer.base_layer.bias.copy_(base.proj.bias)
        layer.lora_A["default"].weight.copy_(ours.lora_A)
        layer.lora_B["default"].weight.copy_(ours.lora_B)
    x = torch.randn(4, 8)
    assert torch.allclose(ours(x), ref(x), atol=1e-6)
    with torch.no_grad():
        ours.merge()
    assert torch.allclose(ours(x), ref(x), atol=1e-6)
