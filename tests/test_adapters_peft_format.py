"""Adapters in Hugging Face PEFT's format (minillama/adapters/peft_format.py and the methods'
converters, adapters/<method>_peft.py), with peft itself as the oracle: for LoRA, prefix
tuning / P-tuning v2, prompt tuning and LLaMA-Adapter, minillama -> PEFT
(PeftModel.from_pretrained on the save_hf_dir base) and PEFT -> minillama (--load_adapter on a
directory peft saved), logits equal to 1e-4 in fp32, on a GQA model with Llama 3's RoPE
scaling; base-identity checks and bad directories, one line each."""
import json
import os
import warnings

import pytest
import torch

from conftest import tiny_model
from hf_oracle import LLAMA3_SCALING, transformers
from minillama.adapters import (LlamaAdapterConfig, LoraConfig, PrefixConfig, PrefixTuningConfig,
                                PromptTuningConfig, attach, load_adapter)
from minillama.adapters.peft_format import export_peft
from minillama.adapters.prefix_peft import flat_to_prefix, prefix_to_flat
from minillama.core.config import RopeScaling
from minillama.errors import MinillamaError
from minillama.formats.hf import save_hf_dir
from conftest import padded_batch as left_padded

peft = pytest.importorskip("peft")
ATOL = 1e-4
ALL_TARGETS = ("wq", "wk", "wv", "wo", "w1", "w2", "w3")
HF_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def llama3_style(seed=0, **kw):
    """GQA (4 heads, 2 kv heads), Llama 3 RoPE scaling with a 32-token original context, tied."""
    scaling = RopeScaling(**{k: v for k, v in LLAMA3_SCALING.items() if k != "rope_type"})
    model = tiny_model(seed, **{**dict(n_layers=3, max_seq_len=128, rope_theta=500000.0, rope_scaling=scaling), **kw})
    with torch.no_grad():  # norm gains away from 1, so a norm mix-up would show
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    return model


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    """(minillama base, its save_hf_dir directory)."""
    base = llama3_style()
    path = tmp_path_factory.mktemp("hf") / "base"
    save_hf_dir(base, str(path))
    return base, str(path)


def hf_base(path):
    return transformers.LlamaForCausalLM.from_pretrained(path, attn_implementation="eager").eval()


def right_padded(seed=0, T=10):
    ids, mask = left_padded(seed, T)
    return ids, mask.flip(1)


def peft_logits(pm, method, ids, mask, length):
    """PEFT's logits at the input positions.  Positions count real tokens, as minillama's do
    (PEFT adds the prefix length itself); prompt tuning ignores position_ids, so its
    batches are right-padded, where positions of real tokens agree anyway."""
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    kw = {} if method == "prompt" else {"position_ids": positions}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logits = pm(input_ids=ids, attention_mask=mask, **kw).logits.float()
    return logits[:, length:] if method == "prompt" else logits


def assert_close_at_real(ours, theirs, mask):
    real = mask.bool()
    diff = (ours[real] - theirs[real]).abs().max().item()
    assert diff <= ATOL, f"max |diff| {diff}"


def batch_for(method):
    return right_padded() if method == "prompt" else left_padded()


# -- minillama -> PEFT ---------------------------------------------------------------------
CONFIGS = {"lora": LoraConfig(rank=3, alpha=6.0, targets=ALL_TARGETS),
           "prefix": PrefixTuningConfig(length=4, hidden=16), "ptuning2": PrefixConfig(length=4),
           "prompt": PromptTuningConfig(length=4), "adapter": LlamaAdapterConfig(length=4, layers=2)}


def trained_looking(model, seed=3):
    """Move what attach left at zero (LoRA's B, the gates), so every part matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.trainable_parameters().items():
            if name.endswith(("lora_B", "gate")):
                p.copy_(0.3 * torch.randn(p.shape, generator=g) + (0.5 if name.endswith("gate") else 0.0))
    return model


@pytest.mark.parametrize("method", list(CONFIGS))
def test_minillama_to_peft_logits_equal(base_dir, tmp_path, method):
    _, hf_dir = base_dir
    base = llama3_style()  # a fresh copy of the base (LoRA injects into its base)
    torch.manual_seed(1)
    model = trained_looking(attach(base, CONFIGS[method])).eval()
    ids, mask = batch_for(method)
    with torch.no_grad():
        ours = model(ids, mask)[0].float()
    out = str(tmp_path / "peft")
    nbytes = export_peft(model, out, base_path=hf_dir)
    assert sorted(os.listdir(out)) == ["adapter_config.json", "adapter_model.safetensors"] and nbytes > 0
    pm = peft.PeftModel.from_pretrained(hf_base(hf_dir), out).eval()
    assert_close_at_real(ours, peft_logits(pm, method, ids, mask, getattr(model, "length", 0)), mask)
    cfg = json.load(open(os.path.join(out, "adapter_config.json")))
    assert cfg["base_model_name_or_path"] == hf_dir and cfg["task_type"] == "CAUSAL_LM"
    # and back: the exported directory loads into minillama as the same adapter
    again = load_adapter(llama3_style(), out)
    with torch.no_grad():
        assert_close_at_real(again(ids, mask)[0].float(), ours, mask)
    if method == "lora":
        assert sorted(cfg["target_modules"]) == sorted(HF_TARGETS) and cfg["r"] == 3 and cfg["lora_alpha"] == 6.0


# -- PEFT -> minillama ---------------------------------------------------------------------
PEFT_CONFIGS = {
    "lora": lambda: peft.LoraConfig(r=3, lora_alpha=6, target_modules=HF_TARGETS, task_type="CAUSAL_LM"),
    "lora_rslora_some_layers": lambda: peft.LoraConfig(r=4, lora_alpha=3, target_modules=["q_proj", "k_proj"],
                                                       use_rslora=True, layers_to_transform=[0, 2],
                                                       task_type="CAUSAL_LM"),
    "prefix": lambda: peft.PrefixTuningConfig(num_virtual_tokens=4, task_type="CAUSAL_LM"),
    "prefix_projection": lambda: peft.PrefixTuningConfig(num_virtual_tokens=4, prefix_projection=True,
                                                         encoder_hidden_size=16, task_type="CAUSAL_LM"),
    "prompt": lambda: peft.PromptTuningConfig(num_virtual_tokens=4, task_type="CAUSAL_LM"),
    "adapter": lambda: peft.AdaptionPromptConfig(adapter_len=4, adapter_layers=2, task_type="CAUSAL_LM"),
}
MINILLAMA_METHOD = {"lora": "lora", "lora_rslora_some_layers": "lora", "prefix": "ptuning2",
                    "prefix_projection": "ptuning2", "prompt": "prompt", "adapter": "adapter"}


def peft_trained(hf_dir, kind, out, seed=5):
    """A PEFT model of `kind` on the base, its zero-initialised parts moved, saved to out."""
    torch.manual_seed(seed)
    pm = peft.get_peft_model(hf_base(hf_dir), PEFT_CONFIGS[kind]())
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if p.requires_grad and ("lora_B" in name or "adaption_gate" in name or "transform" in name):
                p.copy_(0.3 * torch.randn(p.shape, generator=g) + (0.5 if "gate" in name else 0.0))
    pm.save_pretrained(out)
    return pm.eval()


@pytest.mark.parametrize("kind", list(PEFT_CONFIGS))
def test_peft_to_minillama_logits_equal(base_dir, tmp_path, kind):
    _, hf_dir = base_dir
    base = llama3_style()  # a fresh copy (LoRA injects into its base)
    out = str(tmp_path / kind)
    pm = peft_trained(hf_dir, kind, out)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # same base, so no "different weights" warning
        model = load_adapter(base, out)
    assert model.method == MINILLAMA_METHOD[kind] and model.head_state == {}
    assert not model.trainable_parameters()
    method = "prompt" if kind == "prompt" else kind
    ids, mask = batch_for(method)
    with torch.no_grad():
        ours = model(ids, mask)[0].float()
    assert_close_at_real(ours, peft_logits(pm, method, ids, mask, 4), mask)
    if kind == "lora_rslora_some_layers":
        assert model.cfg.alpha == pytest.approx(3 * 2.0) and model.cfg.targets == ("wq", "wk")


def test_prefix_layout_round_trips_and_permutes_only_keys():
    c = tiny_model().config
    kv = torch.randn(c.n_layers, 2, c.n_kv_heads, 5, c.head_dim)
    flat = prefix_to_flat(kv)
    assert flat.shape == (5, c.n_layers * 2 * c.kv_dim) and torch.equal(flat_to_prefix(flat, c), kv)
    values = flat.view(5, c.n_layers, 2, c.n_kv_heads, c.head_dim)[:, :, 1]
    assert torch.equal(values.permute(1, 2, 0, 3), kv[:, 1])  # values as they are
    keys = flat.view(5, c.n_layers, 2, c.n_kv_heads, c.head_dim)[:, :, 0]
    assert torch.equal(keys[..., 1], kv[:, 0, :, :, 2].permute(2, 0, 1))  # HF's slot 1 holds our pair 1's x


# -- identity and bad input ------------------------------------------------------------------
def one_line(excinfo, *fragments):
    message = str(excinfo.value)
    assert "\n" not in message and all(f in message for f in fragments), message


def test_another_base_is_refused_and_other_weights_are_warned(base_dir, tmp_path):
    base, hf_dir = base_dir
    exported = str(tmp_path / "exported")
    export_peft(trained_looking(attach(base, LlamaAdapterConfig(length=2))), exported, base_path=hf_dir)
    with pytest.raises(MinillamaError) as e:  # minillama's identity in the metadata
        load_adapter(llama3_style(n_layers=4), exported)
    one_line(e, "adapter made for a model with", "n_layers=3", "n_layers=4")
    with pytest.warns(UserWarning, match="different base model"):
        load_adapter(llama3_style(seed=9), exported)
    # a directory peft saved has no such metadata: base_model_name_or_path, a local HF directory here,
    # decides (another shape refused, other weights warned) ...
    trained = str(tmp_path / "peft-lora")
    peft_trained(hf_dir, "lora", trained)
    smaller = dict(dim=32, n_heads=2, n_kv_heads=1)
    with pytest.raises(MinillamaError) as e:
        load_adapter(llama3_style(**smaller), trained)
    one_line(e, f"PEFT adapter made for {hf_dir} (n_layers=3, n_kv_heads=2", "this model has n_layers=3, n_kv_heads=1")
    with pytest.warns(UserWarning, match="whose weights differ"):
        load_adapter(llama3_style(seed=9), trained)
    # ... and where it names nothing here (a hub id), the tensors' shapes do
    path = os.path.join(trained, "adapter_config.json")
    json.dump({**json.load(open(path)), "base_model_name_or_path": "someone/some-llama"}, open(path, "w"))
    for kind, model in (("lora", llama3_style(**smaller)), ("prefix", llama3_style(n_layers=2))):
        if kind == "prefix":
            trained = str(tmp_path / "peft-prefix")
            peft_trained(hf_dir, kind, trained)
            path = os.path.join(trained, "adapter_config.json")
            json.dump({**json.load(open(path)), "base_model_name_or_path": None, "num_layers": None}, open(path, "w"))
        with pytest.raises(MinillamaError) as e:
            load_adapter(model, trained)
        one_line(e, "PEFT adapter made for another base", "load it onto the base it was trained on")


@pytest.mark.parametrize("damage,fragments", [
    (lambda c: c.update(peft_type="IA3"), ["PEFT method IA3 is not supported", "LORA"]),
    (lambda c: c.pop("r"), ["lacks field 'r'"]),
    (lambda c: c.pop("peft_type"), ["lacks field 'peft_type'"]),
    (lambda c: c.update(task_type="SEQ_CLS"), ["SEQ_CLS", "causal-LM"]),
    (lambda c: c.update(use_dora=True), ["use_dora=True"]),
])
def test_bad_lora_config_is_one_line(base_dir, tmp_path, damage, fragments):
    base, hf_dir = base_dir
    out = str(tmp_path / "lora")
    peft_trained(hf_dir, "lora", out)
    path = os.path.join(out, "adapter_config.json")
    cfg = json.load(open(path))
    damage(cfg)
    json.dump(cfg, open(path, "w"))
    with pytest.raises(MinillamaError) as e:
        load_adapter(llama3_style(), out)
    one_line(e, *fragments)


@pytest.mark.parametrize("kind,damage,fragments", [
    ("adapter", lambda c: c.update(adapter_layers=5), ["adapter_layers 5 is above this model's 3 layers"]),
    ("adapter", lambda c: c.pop("adapter_len"), ["lacks field 'adapter_len'"]),
    ("prefix", lambda c: c.pop("num_virtual_tokens"), ["lacks field 'num_virtual_tokens'"]),
    ("prefix", lambda c: c.update(num_virtual_tokens=7), ["shape (4, 192), but adapter_config.json implies (7, 192)",
                                                           "do not belong together"]),
    ("prefix", lambda c: c.update(num_layers=5), ["made for another base: adapter_config.json has num_layers 5"]),
    ("prompt", lambda c: c.update(num_virtual_tokens="four"), ["'num_virtual_tokens' must be a number"]),
])
def test_bad_prompt_method_configs_are_one_line(base_dir, tmp_path, kind, damage, fragments):
    base, hf_dir = base_dir
    out = str(tmp_path / kind)
    peft_trained(hf_dir, kind, out)
    path = os.path.join(out, "adapter_config.json")
    cfg = json.load(open(path))
    damage(cfg)
    json.dump(cfg, open(path, "w"))
    with pytest.raises(MinillamaError) as e:
        load_adapter(base, out)
    one_line(e, *fragments)


def test_export_refusals_are_one_line(base_dir, tmp_path):
    base, _ = base_dir
    with pytest.raises(MinillamaError) as e:
        export_peft(attach(base, LlamaAdapterConfig(gate="tanh")), str(tmp_path / "x"))
    one_line(e, "--adapter_gate tanh")
    from minillama.adapters import FullConfig
    with pytest.raises(MinillamaError) as e:
        export_peft(attach(tiny_model(), FullConfig()), str(tmp_path / "y"))
    one_line(e, "finetune has no PEFT adapter")
    (tmp_path / "file").write_text("")
    with pytest.raises(MinillamaError) as e:
        export_peft(attach(base, PrefixConfig(length=2)), str(tmp_path / "file"))
    one_line(e, "is a file")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_a_method_without_a_converter_is_refused_naming_those_with_one(tmp_path):
    from minillama.adapters import BottleneckConfig
    with pytest.raises(MinillamaError) as e:
        export_peft(attach(tiny_model(), BottleneckConfig(reduction_factor=8)), str(tmp_path / "b"))
    one_line(e, "--export_peft: bottleneck has no PEFT adapter", "lora, prefix, ptuning2, prompt, adapter")
    assert not (tmp_path / "b").exists()


def test_non_finite_tensors_are_refused_naming_the_tensor(base_dir, tmp_path):
    """A PEFT directory whose tensor holds NaN would make every logit NaN: refused in one line."""
    from safetensors.torch import load_file, save_file
    base, hf_dir = base_dir
    exported = str(tmp_path / "exported")
    export_peft(trained_looking(attach(base, PrefixConfig(length=2))), exported, base_path=hf_dir)
    weights = os.path.join(exported, "adapter_model.safetensors")
    tensors = load_file(weights)
    tensors["prompt_embeddings"] = torch.full_like(tensors["prompt_embeddings"], float("nan"))
    save_file(tensors, weights, metadata={"format": "pt"})
    with pytest.raises(MinillamaError) as e:
        load_adapter(llama3_style(), exported)
    n = tensors["prompt_embeddings"].numel()
    one_line(e, f"tensor 'prompt_embeddings' holds {n} non-finite values (NaN or inf) of {n}")
