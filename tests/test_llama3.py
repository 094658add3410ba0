"""Llama 3.2 directories: minillama.load_model vs transformers' LlamaForCausalLM on the same weights.

Tiny Llama-3.2-shaped models (GQA, llama3 RoPE scaling with a 32-token original
context so the scaling changes the logits, tied embeddings) and an untied
Llama-2-shaped one are written with save_pretrained, loaded back, and compared
logit by logit on padded random batches."""
import json
import os
import shutil
import warnings

import pytest
import torch

from conftest import asset, tiny_model
from minillama import MinillamaError, load_model, load_tokenizer
from minillama import llama3
from minillama.loading import check_dtype_on_device, check_vocab_match

transformers = pytest.importorskip("transformers")

VOCAB = 300
LLAMA3_SCALING = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 32}


def hf_model(seed: int, llama3_shape: bool, dtype=torch.float32):
    """A random transformers LlamaForCausalLM; weights drawn so that every part matters."""
    kw = dict(hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
              vocab_size=VOCAB, max_position_embeddings=128, rms_norm_eps=1e-5)
    if llama3_shape:
        kw.update(num_key_value_heads=2, rope_theta=500000.0, rope_scaling=dict(LLAMA3_SCALING),
                  tie_word_embeddings=True)
    else:
        kw.update(num_key_value_heads=4, rope_theta=10000.0, tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**kw)).eval()
    with torch.no_grad():
        for p in model.parameters():  # norm gains away from 1 so a norm mix-up shows
            p.normal_(0.0, 0.1) if p.dim() > 1 else p.uniform_(0.5, 1.5)
    return model.to(dtype)


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    """{name: (transformers model, directory)}: tied llama3 (single file and sharded), untied llama2-shaped."""
    root = tmp_path_factory.mktemp("hf")
    out = {}
    l3 = hf_model(0, True)
    l3.save_pretrained(root / "l3")
    l3.save_pretrained(root / "l3_sharded", max_shard_size="100KB")
    l2 = hf_model(1, False)
    l2.save_pretrained(root / "l2")
    out["l3"], out["l3_sharded"], out["l2"] = (l3, root / "l3"), (l3, root / "l3_sharded"), (l2, root / "l2")
    return out


def batch(seed=0, T=40):
    """Random ids [3, T] with left padding in two rows (one row all but 20 padding)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (3, T), generator=g)
    mask = torch.ones(3, T, dtype=torch.long)
    mask[1, :7] = 0
    mask[2, :20] = 0
    return ids, mask


def hf_logits(model, ids, mask):
    """Oracle logits; positions count real tokens, as minillama's do, so rows are comparable."""
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, position_ids=positions).logits.float()


def our_logits(model, ids, mask):
    with torch.no_grad():
        return model(ids, mask)[0].float()


def assert_same_logits(ours, ref, mask, atol=1e-5):
    real = mask.bool()
    diff = (ours[real] - ref[real]).abs().max().item()
    assert diff <= atol, f"max |diff| {diff}"


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
def test_meta_layout_same_logits(hf_dirs, tmp_path, name):
    """Same weights in Meta's layout (params.json + consolidated.00.pth), also under original/."""
    ref_model, path = hf_dirs[name]
    model = load_model(str(path))
    llama3.save_meta_dir(model, str(tmp_path / "meta"))
    llama3.save_meta_dir(model, str(tmp_path / "repo" / "original"))
    params = json.loads((tmp_path / "meta" / "params.json").read_text())
    assert params["use_scaled_rope"] == (name == "l3")
    ids, mask = batch(2)
    ref = hf_logits(ref_model, ids, mask)
    for d in (tmp_path / "meta", tmp_path / "repo"):
        meta = load_model(str(d))
        assert meta.config.hidden_dim == 192 and meta.config.tie_embeddings == (name == "l3")
        assert_same_logits(our_logits(meta, ids, mask), ref, mask)
        torch.testing.assert_close(our_logits(meta, ids, mask), our_logits(model, ids, mask), rtol=0, atol=0)


def test_meta_params_of_llama32_1b():
    """Meta's params.json for Llama-3.2-1B gives the HF config's shapes and scaling."""
    c = llama3.meta_config({"dim": 2048, "n_layers": 16, "n_heads": 32, "n_kv_heads": 8, "vocab_size": 128256,
                            "ffn_dim_multiplier": 1.5, "multiple_of": 256, "norm_eps": 1e-05,
                            "rope_theta": 500000.0, "use_scaled_rope": True}, "params.json")
    assert (c.hidden_dim, c.head_dim, c.kv_dim) == (8192, 64, 512)
    assert (c.rope_scaling.factor, c.rope_scaling.low_freq_factor, c.rope_scaling.high_freq_factor,
            c.rope_scaling.original_max_position_embeddings) == (32.0, 1.0, 4.0, 8192)


@pytest.mark.parametrize("name", ["l3", "l2"])
def test_save_hf_dir_loads_in_transformers(hf_dirs, tmp_path, name):
    """Our writer permutes q/k back: transformers reads our directory to the same logits."""
    ref_model, path = hf_dirs[name]
    llama3.save_hf_dir(load_model(str(path)), str(tmp_path))
    reloaded = transformers.LlamaForCausalLM.from_pretrained(str(tmp_path)).eval()
    ids, mask = batch(3)
    assert_same_logits(hf_logits(reloaded, ids, mask), hf_logits(ref_model, ids, mask), mask, atol=1e-6)


def test_qk_permutation_is_an_inverse_pair():
    w = torch.randn(8 * 16, 32)
    assert torch.equal(llama3.meta_to_hf_qk(llama3.hf_to_meta_qk(w, 8), 8), w)
    # one head of 4 dims: HF rows [r0, r1, i0, i1] -> adjacent pairs [r0, i0, r1, i1]
    head = torch.arange(4.0)[:, None]
    assert llama3.hf_to_meta_qk(head, 1).flatten().tolist() == [0.0, 2.0, 1.0, 3.0]


def test_bf16_loads_without_float32_copy(tmp_path, monkeypatch):
    """A bf16 checkpoint loaded as bf16: every weight except the permuted q/k is the very
    tensor safetensors returned (no conversion, no copy); nothing is ever float32."""
    ref = hf_model(0, True, dtype=torch.bfloat16)
    ref.save_pretrained(tmp_path)
    seen = {}
    real_iter = llama3.iter_safetensors

    def spy(files):
        for name, t in real_iter(files):
            seen[name] = t
            yield name, t

    monkeypatch.setattr(llama3, "iter_safetensors", spy)
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
def test_dir_without_config(tmp_path):
    with pytest.raises(MinillamaError, match="no config.json"):
        load_model(str(tmp_path))


def test_dir_without_weights(hf_dirs, tmp_path):
    shutil.copy(hf_dirs["l3"][1] / "config.json", tmp_path / "config.json")
    with pytest.raises(MinillamaError, match="no model.safetensors"):
        load_model(str(tmp_path))
    (tmp_path / "config.json").unlink()
    (tmp_path / "params.json").write_text(json.dumps({"dim": 64, "n_layers": 2, "n_heads": 4, "vocab_size": 300}))
    with pytest.raises(MinillamaError, match="no consolidated.00.pth"):
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


def test_tokenizer_of_another_family():
    llama3_model = tiny_model(vocab_size=128256, dim=16, n_heads=2, n_kv_heads=1, n_layers=1)
    with pytest.raises(MinillamaError, match="llama2 tokenizer"):
        check_vocab_match(llama3_model, load_tokenizer(asset("llama2/tokenizer.model")), "llama3-dir", "tok")
    stories = tiny_model(vocab_size=32000, dim=16, n_heads=2, n_kv_heads=1, n_layers=1)
    with pytest.raises(MinillamaError, match="128256 tokens"):
        check_vocab_match(stories, load_tokenizer(asset("llama3/tokenizer.model")), "stories", "tok")
    check_vocab_match(llama3_model, load_tokenizer(asset("llama3/tokenizer.model")), "llama3-dir", "tok")


def test_unusable_device_is_one_clear_error(hf_dirs):
    with pytest.raises(MinillamaError, match="not supported on device|not available"):
        check_dtype_on_device(torch.bfloat16, "no_such_device")
    if not torch.cuda.is_available():
        with pytest.raises(MinillamaError, match="CUDA is not available"):
            load_model(str(hf_dirs["l3"][1]), device="cuda")
    check_dtype_on_device(torch.bfloat16, "cpu")  # bf16 runs on CPU
