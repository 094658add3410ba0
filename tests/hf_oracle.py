"""transformers as the oracle for the Hugging Face and Meta layouts (test_formats_hf.py,
test_formats_meta.py): random tiny LlamaForCausalLM models written with
save_pretrained, and logits compared position by position on padded batches.

Tiny Llama-3.2-shaped models (GQA, llama3 RoPE scaling with a 32-token original
context so the scaling changes the logits, tied embeddings) and an untied
Llama-2-shaped one.  Importing this module skips the importing tests when
transformers is not installed."""
import pytest
import torch

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
