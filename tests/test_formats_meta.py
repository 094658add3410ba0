"""Meta directories (minillama/formats/meta.py): params.json + consolidated.00.pth,
also under original/, give transformers' logits for the same weights; Meta's
params.json for Llama-3.2-1B; bad directories.  Oracle models in hf_oracle.py."""
import json

import pytest
import torch

from hf_oracle import assert_same_logits, batch, hf_dirs, hf_logits, our_logits  # noqa: F401 (hf_dirs: a fixture)
from minillama import MinillamaError, load_model
from minillama.formats.meta import meta_config, save_meta_dir


@pytest.mark.slow
@pytest.mark.parametrize("name", ["l3", "l2"])
def test_meta_layout_same_logits(hf_dirs, tmp_path, name):
    """Same weights in Meta's layout (params.json + consolidated.00.pth), also under original/."""
    ref_model, path = hf_dirs[name]
    model = load_model(str(path))
    save_meta_dir(model, str(tmp_path / "meta"))
    save_meta_dir(model, str(tmp_path / "repo" / "original"))
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
    c = meta_config({"dim": 2048, "n_layers": 16, "n_heads": 32, "n_kv_heads": 8, "vocab_size": 128256,
                     "ffn_dim_multiplier": 1.5, "multiple_of": 256, "norm_eps": 1e-05,
                     "rope_theta": 500000.0, "use_scaled_rope": True}, "params.json")
    assert (c.hidden_dim, c.head_dim, c.kv_dim) == (8192, 64, 512)
    assert (c.rope_scaling.factor, c.rope_scaling.low_freq_factor, c.rope_scaling.high_freq_factor,
            c.rope_scaling.original_max_position_embeddings) == (32.0, 1.0, 4.0, 8192)


def test_dir_without_weights(tmp_path):
    (tmp_path / "params.json").write_text(json.dumps({"dim": 64, "n_layers": 2, "n_heads": 4, "vocab_size": 300}))
    with pytest.raises(MinillamaError, match="no consolidated.00.pth"):
        load_model(str(tmp_path))


@pytest.mark.parametrize("key,value", [("dim", "64"), ("dim", 64.5), ("n_heads", None), ("vocab_size", -1),
                                       ("norm_eps", "1e-5")])
def test_params_value_of_the_wrong_kind_is_named(tmp_path, key, value):
    params = {"dim": 64, "n_layers": 2, "n_heads": 4, "vocab_size": 300, key: value}
    (tmp_path / "params.json").write_text(json.dumps(params))
    with pytest.raises(MinillamaError, match=f"params.json.*'{key}'") as e:
        load_model(str(tmp_path))
    assert "\n" not in str(e.value)
