"""LLaMA-Adapter (minillama/adapters/llama_adapter.py): the base exactly at init, the
prompt term against a written-out oracle, only prompts and gates train, the base object
untouched, padding / last_only / the KV cache, a learned task, files, and bad settings.
(PEFT's own implementation as the oracle: tests/test_adapters_peft_format.py.)"""
import math

import pytest
import torch

from conftest import asset, tiny_model, padded_batch
from minillama.adapters import LlamaAdapter, LlamaAdapterConfig, attach, interpolate, load_adapter, save_adapter
from minillama.core.attention import Attention
from minillama.errors import MinillamaError
from minillama.core.optimizer import AdamW
from minillama.core.rope import apply_rope


def opened(model: LlamaAdapter, seed=1, gate=0.7) -> LlamaAdapter:
    """Gates away from zero, so the prompts matter."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for attn in model.prompted().values():
            attn.gate.copy_(gate + 0.3 * torch.randn(attn.gate.shape, generator=g))
    return model


@pytest.mark.parametrize("gate", ["scalar", "tanh"])
def test_at_init_equals_the_base_bit_for_bit(gate):
    base = tiny_model(n_layers=4).requires_grad_(False)  # frozen as attach leaves it: the same kernels run
    ids, mask = padded_batch()
    want = base(ids, mask)
    want_last = base(ids, mask, last_only=True)
    model = attach(base, LlamaAdapterConfig(length=5, gate=gate))
    got = model(ids, mask)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    got_last = model(ids, mask, last_only=True)
    assert torch.equal(got_last[0], want_last[0]) and torch.equal(got_last[1], want_last[1])
    assert torch.equal(model.generate(ids, 6, attention_mask=mask), base.generate(ids, 6, attention_mask=mask))


def test_default_layers_parameters_and_the_base_object_untouched():
    base = tiny_model(n_layers=5)
    blocks = list(base.layers)
    model = attach(base, LlamaAdapterConfig(length=3))
    assert sorted(model.prompted()) == [2, 3, 4] and model.cfg.layers == 3  # all but the first two
    trainable = model.trainable_parameters()
    assert sorted(trainable) == sorted(f"adapted.layers.{i}.attention.{p}" for i in (2, 3, 4) for p in ("prompt", "gate"))
    assert model.num_parameters(trainable_only=True) == 3 * (3 * 64 + 1)
    # the base keeps its own blocks and plain Attention modules; the adapted copies share their tensors
    assert list(base.layers) == blocks and all(type(b.attention) is Attention for b in base.layers)
    assert model.adapted.layers[0] is base.layers[0] and model.adapted.layers[2] is not base.layers[2]
    assert model.adapted.layers[2].attention.attention is base.layers[2].attention
    assert model.adapted.layers[2].feed_forward is base.layers[2].feed_forward
    assert model.adapted.tok_embeddings is base.tok_embeddings
    # a 2-layer model still adapts its top layer; an explicit count is kept
    assert sorted(attach(tiny_model(), LlamaAdapterConfig()).prompted()) == [1]
    assert sorted(attach(tiny_model(n_layers=5), LlamaAdapterConfig(layers=5)).prompted()) == [0, 1, 2, 3, 4]


def oracle_prompt_term(attn, x, positions, gate_kind):
    """The prompt term written out one head and one query at a time (no grouping tricks)."""
    a = attn.attention
    cos_t, sin_t = a_table(x.shape[1] + 8, a.head_dim)
    B, T, _ = x.shape
    out = torch.zeros(B, T, a.n_heads * a.head_dim)
    K = a.wk(attn.prompt).view(-1, a.n_kv_heads, a.head_dim)  # [P, KV, hd]
    V = a.wv(attn.prompt).view(-1, a.n_kv_heads, a.head_dim)
    for b in range(B):
        for t in range(T):
            p = int(positions[b, t])
            q = apply_rope(a.wq(x[b, t]).view(1, 1, a.n_heads, a.head_dim), cos_t[p][None, None], sin_t[p][None, None])[0, 0]
            for h in range(a.n_heads):
                kv = h // (a.n_heads // a.n_kv_heads)
                w = torch.softmax(K[:, kv] @ q[h] / math.sqrt(a.head_dim), dim=0)
                g = torch.tanh(attn.gate[h]) if gate_kind == "tanh" else attn.gate[0]
                out[b, t, h * a.head_dim:(h + 1) * a.head_dim] = g * (w @ V[:, kv])
    return a.wo(out)


def a_table(n, hd):
    from minillama.core.rope import precompute_rope_table
    return precompute_rope_table(hd, n)


@pytest.mark.parametrize("gate", ["scalar", "tanh"])
def test_prompt_term_equals_the_written_out_formula(gate):
    base = tiny_model(n_layers=3)  # GQA: 4 heads, 2 kv heads
    model = opened(attach(base, LlamaAdapterConfig(length=4, layers=1, gate=gate)))
    attn = model.prompted()[2]
    x = torch.randn(2, 5, 64)
    positions = torch.tensor([[0, 1, 2, 3, 4], [3, 4, 5, 6, 7]])
    cos, sin = base.rope_table(x.device)
    with torch.no_grad():
        got = attn.prompt_term(x, cos[positions], sin[positions])
        want = oracle_prompt_term(attn, x, positions, gate)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert got.abs().max() > 1e-2


@pytest.mark.parametrize("gate", ["scalar", "tanh"])
def test_only_prompts_and_gates_train_and_the_base_stays_bit_identical(gate):
    base = tiny_model(n_layers=3)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    model = attach(base, LlamaAdapterConfig(length=4, gate=gate))
    opt = AdamW(list(model.trainable_parameters().values()), lr=1e-2)
    ids, mask = padded_batch()
    for step in range(2):
        opt.zero_grad()
        model(ids, mask)[0].float().pow(2).mean().backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        assert set(grads) == set(model.trainable_parameters())
        gates = [g for n, g in grads.items() if n.endswith("gate")]
        prompts = [g for n, g in grads.items() if n.endswith("prompt")]
        assert all(g.abs().max() > 0 for g in gates)
        # step 0: g = 0 blocks the prompt's gradient exactly (zero-init); from step 1 on it flows
        assert all((g.abs().max() > 0) == (step > 0) for g in prompts)
        opt.step()
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())
    assert (model(ids, mask)[0] - base(ids, mask)[0]).abs().max() > 0


def test_padding_last_only_and_cached_decoding():
    base = tiny_model(n_layers=3)
    torch.manual_seed(2)
    model = opened(attach(base, LlamaAdapterConfig(length=3, layers=2))).eval()
    ids, mask = padded_batch(T=8)
    with torch.no_grad():
        logits, hidden = model(ids, mask)
        for row in range(3):  # a padded row equals the row alone
            real = mask[row].bool()
            alone = model(ids[row:row + 1, real])
            torch.testing.assert_close(logits[row, real], alone[0][0], atol=1e-5, rtol=0)
        last = model(ids, mask, last_only=True)
        torch.testing.assert_close(last[0][:, 0], logits[:, -1], atol=1e-5, rtol=0)
        torch.testing.assert_close(last[1][:, 0], hidden[:, -1], atol=1e-5, rtol=0)
        # the cache holds real tokens only; every decoding step adds the prompt term again
        cache = model.new_cache(3, 12)
        steps = [model(ids[:, :5], mask[:, :5], cache=cache)[0]]
        for t in range(5, 8):
            steps.append(model(ids[:, t:t + 1], mask[:, t:t + 1], cache=cache)[0])
        torch.testing.assert_close(torch.cat(steps, dim=1)[mask.bool()], logits[mask.bool()], atol=1e-5, rtol=0)
    assert cache.length == 8
    cached = model.generate(ids, 5, attention_mask=mask)
    assert torch.equal(cached, model.generate(ids, 5, attention_mask=mask, use_cache=False))
    assert not torch.equal(cached, base.generate(ids, 5, attention_mask=mask))


@pytest.mark.slow  # long training
def test_learns_a_task_above_chance():
    """The verbalizer task of test_adapters_prefix.py on the frozen pretrained stories260K
    (BOS + 4 words from one of two random groups; answer with the group's label token):
    trained on 32 sequences, the adapter must classify 64 unseen ones well above chance."""
    from minillama.formats import load_model
    from conftest import word_group_task
    base = load_model(asset("llama2c/stories260K.bin"), norm="rmsnorm")
    (x, y), (x_test, y_test), label_ids = word_group_task()
    torch.manual_seed(0)
    model = attach(base, LlamaAdapterConfig(length=8))
    # lr 0.1: under Adam a gate moves about lr per step from 0, and 40 steps must open it
    opt = AdamW(list(model.trainable_parameters().values()), lr=0.1)
    for _ in range(40):
        loss = torch.nn.functional.cross_entropy(model(x, last_only=True)[0][:, -1, label_ids], y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        acc = (model(x_test, last_only=True)[0][:, -1, label_ids].argmax(-1) == y_test).float().mean().item()
    assert acc >= 0.85, f"the adapter stayed near chance: {acc:.3f} (loss {loss.item():.3f})"


def test_save_load_round_trip_two_adapters_on_one_base_and_interpolation(tmp_path):
    base = tiny_model(n_layers=3)
    a = opened(attach(base, LlamaAdapterConfig(length=3, layers=2)), seed=1)
    b = opened(attach(base, LlamaAdapterConfig(length=3, layers=2)), seed=2)
    ids, mask = padded_batch()
    with torch.no_grad():
        ya, yb = a(ids, mask)[0], b(ids, mask)[0]
        assert (ya - yb).abs().max() > 1e-3  # side by side on one base, each its own
        assert torch.equal(base(ids, mask)[0], attach(base, LlamaAdapterConfig(length=3))(ids, mask)[0])
    save_adapter(a, str(tmp_path / "a"))
    save_adapter(b, str(tmp_path / "b"))
    la, lb = load_adapter(base, str(tmp_path / "a")), load_adapter(base, str(tmp_path / "b"))
    assert la.cfg == LlamaAdapterConfig(length=3, layers=2) and not la.trainable_parameters()
    with torch.no_grad():
        assert torch.equal(la(ids, mask)[0], ya) and torch.equal(lb(ids, mask)[0], yb)
        half = interpolate(la, lb, 0.5)
        for i, attn in half.prompted().items():
            torch.testing.assert_close(attn.prompt, (la.prompted()[i].prompt + lb.prompted()[i].prompt) / 2)
        assert torch.equal(interpolate(la, lb, 1.0)(ids, mask)[0], ya)
    with pytest.raises(MinillamaError, match="n_layers=3.*n_layers=4"):
        load_adapter(tiny_model(n_layers=4), str(tmp_path / "a"))


@pytest.mark.parametrize("settings,message", [
    (dict(length=0), "--prefix_length must be a positive"), (dict(layers=0), "--adapter_layers must be a positive"),
    (dict(gate="sigmoid"), "--adapter_gate must be one of")])
def test_bad_settings_are_one_line(settings, message):
    with pytest.raises(MinillamaError, match=message) as e:
        LlamaAdapterConfig(**settings)
    assert "\n" not in str(e.value)


def test_adapter_layers_above_the_layer_count_is_one_line():
    with pytest.raises(MinillamaError, match="--adapter_layers 3 is above the model's 2 layers") as e:
        attach(tiny_model(), LlamaAdapterConfig(layers=3))
    assert "\n" not in str(e.value)
