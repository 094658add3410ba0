"""Hugging Face directories (minillama/formats/hf.py): load_model vs transformers'
LlamaForCausalLM on the same weights, save_hf_dir read back by transformers,
the q/k row permutation, bf16 without a float32 copy, and bad directories.
The oracle models and batches are in hf_oracle.py."""
import json
import os
import shutil
import warnings

import pytest
import torch

from conftest import tiny_model
from hf_oracle import (VOCAB, assert_same_logits, batch, hf_dirs, hf_logits, hf_model,  # noqa: F401 (hf_dirs: a fixture)
                       our_logits, transformers)
from minillama import MinillamaError, load_model
from minillama.formats import hf


@pytest.mark.slow
@pytest.mark.parametrize("name", ["l3", "l3_sharded", "l2"])
def test_hf_dir_logits_equal_transformers(hf_dirs, name):
    ref_model, path = hf_dirs[name]
    if name == "l3_sharded":
        assert len([f for f in os.listdir(path) if f.endswith(".safetensors")]) > 1
    model = load_model(str(path))
    ids, mask = batch()
    assert_same_logits(our_logits(model, ids, mask), hf_logits(ref_model, ids, mask), mask)
    assert model.config.norm == "rmsnorm"


def test_llama3_config_fields(hf_dirs):
    model = load_model(str(hf_dirs["l3"][1]))
    c = model.config
    assert (c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.hidden_dim, c.vocab_size) == (64, 2, 4, 2, 192, VOCAB)
    assert c.rope_theta == 500000.0 and c.rope_scaling.original_max_position_embeddings == 32
    assert c.tie_embeddings and model.output.weight is model.tok_embeddings.weight  # kept tied
    untied = load_model(str(hf_dirs["l2"][1]))
    assert not untied.config.tie_embeddings and untied.config.rope_scaling is None
    assert untied.output.weight.data_ptr() != untied.tok_embeddings.weight.data_ptr()


def test_scaling_matters(hf_dirs):
    """Without the llama3 scaling the logits differ: the test above really checks it."""
    model = load_model(str(hf_dirs["l3"][1]))
    ids, mask = batch()
    scaled = our_logits(model, ids, mask)
    model.config.rope_scaling = None
    model._rope_cache.clear()
    assert (our_logits(model, ids, mask) - scaled).abs().max() > 1e-3


def test_both_config_spellings(hf_dirs, tmp_path):
    """transformers 5 writes rope_parameters; older configs rope_theta + rope_scaling."""
    ref_model, path = hf_dirs["l3"]
    cfg = json.loads((path / "config.json").read_text())
    assert "rope_parameters" in cfg  # what this transformers wrote
    old = dict(cfg)
    params = old.pop("rope_parameters")
    old["rope_theta"] = params.pop("rope_theta")
    old["rope_scaling"] = params
    shutil.copytree(path, tmp_path / "old")
    (tmp_path / "old" / "config.json").write_text(json.dumps(old))
    ids, mask = batch(1)
    ref = hf_logits(ref_model, ids, mask)
    for d in (path, tmp_path / "old"):
        assert_same_logits(our_logits(load_model(str(d)), ids, mask), ref, mask)


@pytest.mark.parametrize("name", ["l3", "l2"])
def test_save_hf_dir_loads_in_transformers(hf_dirs, tmp_path, name):
    """Our writer permutes q/k back: transformers reads our directory to the same logits."""
    ref_model, path = hf_dirs[name]
    hf.save_hf_dir(load_model(str(path)), str(tmp_path))
    reloaded = transformers.LlamaForCausalLM.from_pretrained(str(tmp_path)).eval()
    ids, mask = batch(3)
    assert_same_logits(hf_logits(reloaded, ids, mask), hf_logits(ref_model, ids, mask), mask, atol=1e-6)


@pytest.mark.parametrize("vocab,ids", [(512, (1, 2)), (32000, (1, 2)), (128256, (128000, 128001))])
def test_save_hf_dir_writes_the_model_s_own_bos_eos(tmp_path, vocab, ids):
    """stories260K-sized vocabularies get sentencepiece's <s>=1, </s>=2, not Llama 3's ids;
    transformers reads them from the written config.json."""
    model = tiny_model(vocab_size=vocab, dim=16, n_heads=2, n_kv_heads=1, n_layers=1)
    hf.save_hf_dir(model, str(tmp_path / "default"))
    config = transformers.AutoConfig.from_pretrained(str(tmp_path / "default"))
    assert (config.bos_token_id, config.eos_token_id) == ids
    hf.save_hf_dir(model, str(tmp_path / "given"), bos_id=7, eos_id=9)
    config = transformers.AutoConfig.from_pretrained(str(tmp_path / "given"))
    assert (config.bos_token_id, config.eos_token_id) == (7, 9)


def test_qk_permutation_is_an_inverse_pair():
    w = torch.randn(8 * 16, 32)
    assert torch.equal(hf.meta_to_hf_qk(hf.hf_to_meta_qk(w, 8), 8), w)
    # one head of 4 dims: HF rows [r0, r1, i0, i1] -> adjacent pairs [r0, i0, r1, i1]
    head = torch.arange(4.0)[:, None]
    assert hf.hf_to_meta_qk(head, 1).flatten().tolist() == [0.0, 2.0, 1.0, 3.0]


def test_bf16_loads_without_float32_copy(tmp_path, monkeypatch):
    """A bf16 checkpoint loaded as bf16: every weight except the permuted q/k is the very
    tensor safetensors returned (no conversion, no copy); nothing is ever float32."""
    ref = hf_model(0, True, dtype=torch.bfloat16)
    ref.save_pretrained(tmp_path)
    seen = {}
    real_iter = hf.iter_safetensors

    def spy(files):
        for name, t in real_iter(files):
            seen[name] = t
            yield name, t

    monkeypatch.setattr(hf, "iter_safetensors", spy)
    model = load_model(str(tmp_path), dtype="bfloat16")
    assert all(t.dtype == torch.bfloat16 for t in seen.values())
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    read_ptrs = {t.data_ptr() for t in seen.values()}
    for name, p in model.named_parameters():
        if not name.endswith(("wq.weight", "wk.weight")):
            assert p.data_ptr() in read_ptrs, name
    # dtype=None keeps the stored bf16; the logits track the bf16 oracle
    assert next(load_model(str(tmp_path)).parameters()).dtype == torch.bfloat16
    ids, mask = batch()
    ours, theirs = our_logits(model, ids, mask), hf_logits(ref, ids, mask)
    real = mask.bool()
    assert (ours[real] - theirs[real]).abs().max() < 0.1 * theirs[real].abs().max()


def test_dtype_conversion_on_load(hf_dirs):
    ref_model, path = hf_dirs["l3"]
    ids, mask = batch()
    half = load_model(str(path), dtype="float16")
    assert next(half.parameters()).dtype == torch.float16
    assert half.output.weight is half.tok_embeddings.weight
    ref = hf_logits(ref_model, ids, mask)
    real = mask.bool()
    assert (our_logits(half, ids, mask)[real] - ref[real]).abs().max() < 0.02 * ref.abs().max()


def test_layernorm_request_is_overridden_with_warning(hf_dirs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = load_model(str(hf_dirs["l3"][1]), norm="layernorm")
    assert model.config.norm == "rmsnorm" and any("RMSNorm" in str(w.message) for w in caught)


def test_max_seq_len_override(hf_dirs):
    model = load_model(str(hf_dirs["l3"][1]), max_seq_len=48)
    assert model.config.max_seq_len == 48 and model.rope_table("cpu")[0].shape == (48, 8)


# -- bad input: one clear MinillamaError each ----------------------------------------------
def test_dir_without_weights(hf_dirs, tmp_path):
    shutil.copy(hf_dirs["l3"][1] / "config.json", tmp_path / "config.json")
    with pytest.raises(MinillamaError, match="no model.safetensors"):
        load_model(str(tmp_path))


def test_missing_shard_is_named(hf_dirs, tmp_path):
    shutil.copytree(hf_dirs["l3_sharded"][1], tmp_path / "d")
    index = json.loads((tmp_path / "d" / "model.safetensors.index.json").read_text())
    victim = sorted(set(index["weight_map"].values()))[-1]
    (tmp_path / "d" / victim).unlink()
    with pytest.raises(MinillamaError, match=f"shard {victim}"):
        load_model(str(tmp_path / "d"))


def test_corrupt_config_and_unsupported_rope(hf_dirs, tmp_path):
    shutil.copytree(hf_dirs["l3"][1], tmp_path / "d")
    cfg_path = tmp_path / "d" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["rope_parameters"]["rope_type"] = "yarn"
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(MinillamaError, match="yarn"):
        load_model(str(tmp_path / "d"))
    cfg_path.write_text("{not json")
    with pytest.raises(MinillamaError, match="unreadable JSON"):
        load_model(str(tmp_path / "d"))


@pytest.mark.parametrize("key,value", [("hidden_size", "64"), ("hidden_size", 64.5), ("num_hidden_layers", None),
                                       ("vocab_size", True), ("rms_norm_eps", "1e-5")])
def test_config_value_of_the_wrong_kind_is_named(hf_dirs, tmp_path, key, value):
    shutil.copytree(hf_dirs["l2"][1], tmp_path / "d")
    cfg_path = tmp_path / "d" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg[key] = value
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(MinillamaError, match=f"config.json.*'{key}'") as e:
        load_model(str(tmp_path / "d"))
    assert "\n" not in str(e.value)
